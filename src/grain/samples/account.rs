//! The `account` grain: a bank account whose transfers call another account grain.

use serde::{Deserialize, Serialize};

use crate::grain::{Grain, GrainContext, GrainError, Handler, Method, Methods};

/// Balance of every account when it is first activated.
pub const INITIAL_BALANCE: i64 = 1_000;

/// A bank account; its balance starts at [`INITIAL_BALANCE`].
#[derive(Debug)]
pub struct Account {
    balance: i64,
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

/// Moves `amount` from this account to the account `to` and returns this account's new balance.
#[derive(Debug, Serialize, Deserialize)]
pub struct Transfer {
    /// Key of the receiving account.
    pub to: String,
    /// Amount to move; must be positive.
    pub amount: i64,
}

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

impl Method for Transfer {
    const NAME: &'static str = "transfer";
    type Response = i64;
}

impl Grain for Account {
    const TYPE_NAME: &'static str = "account";

    async fn activate(_ctx: &mut GrainContext) -> Result<Self, GrainError> {
        Ok(Account {
            balance: INITIAL_BALANCE,
        })
    }

    fn register(methods: &mut Methods<Self>) {
        methods
            .add::<Deposit>()
            .add::<Withdraw>()
            .add::<Balance>()
            .add::<Transfer>();
    }
}

fn check_amount(amount: i64) -> Result<(), GrainError> {
    if amount <= 0 {
        return Err(GrainError::new(
            "invalid_amount",
            format!("amount must be positive, got {amount}"),
        ));
    }
    Ok(())
}

impl Handler<Deposit> for Account {
    async fn handle(
        &mut self,
        request: Deposit,
        _ctx: &mut GrainContext,
    ) -> Result<i64, GrainError> {
        check_amount(request.amount)?;
        self.balance += request.amount;
        Ok(self.balance)
    }
}

impl Handler<Withdraw> for Account {
    async fn handle(
        &mut self,
        request: Withdraw,
        _ctx: &mut GrainContext,
    ) -> Result<i64, GrainError> {
        check_amount(request.amount)?;
        if self.balance < request.amount {
            return Err(GrainError::new(
                "insufficient_funds",
                format!("balance {} is below {}", self.balance, request.amount),
            ));
        }
        self.balance -= request.amount;
        Ok(self.balance)
    }
}

impl Handler<Balance> for Account {
    async fn handle(
        &mut self,
        _request: Balance,
        _ctx: &mut GrainContext,
    ) -> Result<i64, GrainError> {
        Ok(self.balance)
    }
}

impl Handler<Transfer> for Account {
    /// Withdraws first, then deposits into the receiver; if the deposit fails the amount is
    /// put back, so the total over all accounts never changes.
    ///
    /// NOTE: a deposit that times out may still have been applied by the receiver; then the
    /// refund makes money appear. Exactly-once transfers need idempotent deposits keyed by a
    /// transfer id, which arrives with persisted state.
    async fn handle(
        &mut self,
        request: Transfer,
        ctx: &mut GrainContext,
    ) -> Result<i64, GrainError> {
        check_amount(request.amount)?;
        if request.to == ctx.key() {
            return Err(GrainError::new(
                "invalid_transfer",
                "cannot transfer to the same account",
            ));
        }
        if self.balance < request.amount {
            return Err(GrainError::new(
                "insufficient_funds",
                format!("balance {} is below {}", self.balance, request.amount),
            ));
        }
        self.balance -= request.amount;
        let receiver = ctx.grain::<Account>(request.to.clone());
        match receiver
            .call(Deposit {
                amount: request.amount,
            })
            .await
        {
            Ok(_) => Ok(self.balance),
            Err(error) => {
                self.balance += request.amount;
                Err(GrainError::new(
                    "transfer_failed",
                    format!("deposit into {} failed: {error}", request.to),
                ))
            }
        }
    }
}
