//! The `account` grain: a persisted bank balance with deposits and withdrawals.

use serde::{Deserialize, Serialize};

use crate::grain::{Grain, GrainContext, GrainError, Handler, Method, Methods};

/// Balance of every account before its first stored change.
pub const INITIAL_BALANCE: i64 = 1_000;

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
}

impl Default for AccountState {
    fn default() -> Self {
        Self {
            balance: INITIAL_BALANCE,
        }
    }
}

/// Adds `amount` to the balance and returns the new balance.
#[derive(Debug, Serialize, Deserialize)]
pub struct Deposit {
    /// Amount to add; must be positive.
    pub amount: i64,
}

/// Takes `amount` from the balance and returns the new balance; fails with
/// `insufficient_funds` if the balance is smaller.
#[derive(Debug, Serialize, Deserialize)]
pub struct Withdraw {
    /// Amount to take; must be positive.
    pub amount: i64,
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
        return Err(GrainError::new(
            "invalid_amount",
            format!("amount must be positive, got {amount}"),
        ));
    }
    Ok(())
}

impl Account {
    async fn store(&mut self, balance: i64, ctx: &mut GrainContext) -> Result<i64, GrainError> {
        ctx.write_state(&AccountState { balance }).await?;
        self.state.balance = balance;
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
        let balance = self
            .state
            .balance
            .checked_add(request.amount)
            .ok_or_else(|| GrainError::new("overflow", "balance would overflow i64"))?;
        self.store(balance, ctx).await
    }
}

impl Handler<Withdraw> for Account {
    async fn handle(
        &mut self,
        request: Withdraw,
        ctx: &mut GrainContext,
    ) -> Result<i64, GrainError> {
        check_amount(request.amount)?;
        if self.state.balance < request.amount {
            return Err(GrainError::new(
                "insufficient_funds",
                format!("balance {} is below {}", self.state.balance, request.amount),
            ));
        }
        self.store(self.state.balance - request.amount, ctx).await
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
