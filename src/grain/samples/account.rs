//! The `account` grain: a persisted bank balance with deposits and withdrawals.

use serde::{Deserialize, Serialize};

use super::account_state::{AccountState, StepRequest, StepTerms, Transition};
use crate::grain::{Grain, GrainContext, GrainError, Handler, Method, Methods};

/// A bank account; its balance starts at [`INITIAL_BALANCE`](super::INITIAL_BALANCE) and is
/// persisted on every change.
#[derive(Debug)]
pub struct Account {
    state: AccountState,
}

/// Adds `amount` to the balance and returns the new balance.
#[derive(Debug, Serialize, Deserialize)]
pub struct Deposit {
    /// Amount to add; must be positive.
    pub amount: i64,
    /// Id of the transfer this deposit belongs to. A deposit of a transfer that the account
    /// applied already changes nothing and returns the balance after the first one. A
    /// deposit with this id and another amount or `from` fails with `transfer_id_reused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<u64>,
    /// Key of the paying account of the transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// Takes `amount` from the balance and returns the new balance; fails with
/// `insufficient_funds` if the balance is smaller.
#[derive(Debug, Serialize, Deserialize)]
pub struct Withdraw {
    /// Amount to take; must be positive.
    pub amount: i64,
    /// Id of the transfer this withdrawal belongs to, with the same effect as in [`Deposit`].
    /// A withdrawal of a transfer that was paid back fails with `transfer_refunded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<u64>,
    /// Key of the receiving account of the transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Pays back the withdrawal of transfer `transfer` and returns the new balance; a retry pays
/// nothing more. The bank sends it only after the receiving account rejected the deposit
/// for good, because a refund of a transfer whose deposit arrived creates money.
#[derive(Debug, Serialize, Deserialize)]
pub struct Refund {
    /// Id of the transfer.
    pub transfer: u64,
    /// Amount of the transfer.
    pub amount: i64,
    /// Key of the receiving account of the transfer.
    pub to: String,
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

impl Method for Refund {
    const NAME: &'static str = "refund";
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
        methods
            .add::<Deposit>()
            .add::<Withdraw>()
            .add::<Refund>()
            .add::<Balance>();
    }
}

impl Account {
    /// Stores the new state of `transition`, if any, and returns its reply. The state in
    /// memory changes only once the store has it.
    async fn apply(
        &mut self,
        transition: Transition,
        ctx: &mut GrainContext,
    ) -> Result<i64, GrainError> {
        if let Some(next) = transition.next {
            ctx.write_state(&next).await?;
            self.state = next;
        }
        transition.reply
    }
}

/// Returns the step of transfer `transfer`, if any, with its terms.
fn step_request(
    transfer: Option<u64>,
    amount: i64,
    account: Option<String>,
) -> Option<StepRequest> {
    transfer.map(|transfer| StepRequest {
        transfer,
        terms: StepTerms { amount, account },
    })
}

impl Handler<Deposit> for Account {
    async fn handle(
        &mut self,
        request: Deposit,
        ctx: &mut GrainContext,
    ) -> Result<i64, GrainError> {
        let step = step_request(request.transfer, request.amount, request.from);
        let transition = self.state.deposit(request.amount, step);
        self.apply(transition, ctx).await
    }
}

impl Handler<Withdraw> for Account {
    async fn handle(
        &mut self,
        request: Withdraw,
        ctx: &mut GrainContext,
    ) -> Result<i64, GrainError> {
        let step = step_request(request.transfer, request.amount, request.to);
        let transition = self.state.withdraw(request.amount, step);
        self.apply(transition, ctx).await
    }
}

impl Handler<Refund> for Account {
    async fn handle(&mut self, request: Refund, ctx: &mut GrainContext) -> Result<i64, GrainError> {
        let step = StepRequest {
            transfer: request.transfer,
            terms: StepTerms {
                amount: request.amount,
                account: Some(request.to),
            },
        };
        let transition = self.state.refund(step);
        self.apply(transition, ctx).await
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
