//! The `account` grain: a persisted bank balance with deposits and withdrawals.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::grain::{Grain, GrainContext, GrainError, Handler, Method, Methods};

/// Balance of every account before its first stored change.
pub const INITIAL_BALANCE: i64 = 1_000;

/// Transfer steps an account remembers, so that a retried step with the same transfer id
/// returns the stored balance instead of being applied again.
///
/// NOTE: a retry that arrives after this many later transfer steps on the same account is
/// applied again. The bound keeps the stored state small (about 30 bytes of JSON per step).
pub const REMEMBERED_TRANSFERS: usize = 128;

/// A bank account; its balance starts at [`INITIAL_BALANCE`] and is persisted on every change.
#[derive(Debug)]
pub struct Account {
    state: AccountState,
}

/// The persisted state of an account.
#[derive(Debug, Serialize, Deserialize)]
pub struct AccountState {
    /// The balance.
    pub balance: i64,
    /// The latest transfer steps applied, oldest first, at most [`REMEMBERED_TRANSFERS`].
    #[serde(default)]
    pub applied: VecDeque<AppliedStep>,
}

impl Default for AccountState {
    fn default() -> Self {
        Self {
            balance: INITIAL_BALANCE,
            applied: VecDeque::new(),
        }
    }
}

/// One transfer step that an account applied: `[transfer id, is withdrawal, balance after]`
/// in the stored JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedStep(pub u64, pub bool, pub i64);

/// Adds `amount` to the balance and returns the new balance.
#[derive(Debug, Serialize, Deserialize)]
pub struct Deposit {
    /// Amount to add; must be positive.
    pub amount: i64,
    /// Id of the transfer this deposit belongs to. A deposit of a transfer that the account
    /// applied already changes nothing and returns the balance after the first one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<u64>,
}

/// Takes `amount` from the balance and returns the new balance; fails with
/// `insufficient_funds` if the balance is smaller.
#[derive(Debug, Serialize, Deserialize)]
pub struct Withdraw {
    /// Amount to take; must be positive.
    pub amount: i64,
    /// Id of the transfer this withdrawal belongs to, with the same effect as in [`Deposit`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<u64>,
}

/// Returns the balance.
#[derive(Debug, Serialize, Deserialize)]
pub struct Balance;

impl Method for Deposit {
    const NAME: &'static str = "deposit";
    type Response = i64;
}

impl Method for Withdraw {
    const NAME: &'static str = "withdraw";
    type Response = i64;
}

impl Method for Balance {
    const NAME: &'static str = "balance";
    type Response = i64;
}

impl Grain for Account {
    const TYPE_NAME: &'static str = "account";

    async fn activate(ctx: &mut GrainContext) -> Result<Self, GrainError> {
        Ok(Account {
            state: ctx.read_state().await?,
        })
    }

    fn register(methods: &mut Methods<Self>) {
        methods.add::<Deposit>().add::<Withdraw>().add::<Balance>();
    }
}

pub(super) fn check_amount(amount: i64) -> Result<(), GrainError> {
    if amount <= 0 {
        return Err(GrainError::invalid_argument(
            "invalid_amount",
            format!("invalid amount {amount}: give a positive amount"),
        ));
    }
    Ok(())
}

impl Account {
    /// Returns the balance that the step `withdrawal` of `transfer` left, if the account
    /// applied it already.
    fn applied(&self, transfer: Option<u64>, withdrawal: bool) -> Option<i64> {
        let transfer = transfer?;
        self.state
            .applied
            .iter()
            .find(|step| step.0 == transfer && step.1 == withdrawal)
            .map(|step| step.2)
    }

    /// Stores `balance`, with the step of `transfer` when there is one, and returns it. The
    /// state in memory changes only once the store has it.
    async fn store(
        &mut self,
        balance: i64,
        transfer: Option<u64>,
        withdrawal: bool,
        ctx: &mut GrainContext,
    ) -> Result<i64, GrainError> {
        let mut applied = self.state.applied.clone();
        if let Some(transfer) = transfer {
            if applied.len() == REMEMBERED_TRANSFERS {
                applied.pop_front();
            }
            applied.push_back(AppliedStep(transfer, withdrawal, balance));
        }
        let state = AccountState { balance, applied };
        ctx.write_state(&state).await?;
        self.state = state;
        Ok(balance)
    }
}

impl Handler<Deposit> for Account {
    async fn handle(
        &mut self,
        request: Deposit,
        ctx: &mut GrainContext,
    ) -> Result<i64, GrainError> {
        check_amount(request.amount)?;
        if let Some(balance) = self.applied(request.transfer, false) {
            return Ok(balance);
        }
        let balance = self
            .state
            .balance
            .checked_add(request.amount)
            .ok_or_else(|| GrainError::new("overflow", "balance would overflow i64"))?;
        self.store(balance, request.transfer, false, ctx).await
    }
}

impl Handler<Withdraw> for Account {
    async fn handle(
        &mut self,
        request: Withdraw,
        ctx: &mut GrainContext,
    ) -> Result<i64, GrainError> {
        check_amount(request.amount)?;
        if let Some(balance) = self.applied(request.transfer, true) {
            return Ok(balance);
        }
        if self.state.balance < request.amount {
            return Err(GrainError::new(
                "insufficient_funds",
                format!("balance {} is below {}", self.state.balance, request.amount),
            ));
        }
        let balance = self.state.balance - request.amount;
        self.store(balance, request.transfer, true, ctx).await
    }
}

impl Handler<Balance> for Account {
    async fn handle(
        &mut self,
        _request: Balance,
        _ctx: &mut GrainContext,
    ) -> Result<i64, GrainError> {
        Ok(self.state.balance)
    }
}
