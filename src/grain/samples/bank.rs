//! The `bank` grain: a stateless worker that moves money between account grains.
//!
//! Transfers run here rather than in the source account, so that account turns never wait for
//! another account. An account that called another account inside its turn would deadlock
//! (until the deadline) when two transfers in opposite directions meet, because each account
//! handles one turn at a time.

use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use super::account::{Account, Deposit, Withdraw, check_amount};
use crate::grain::{Grain, GrainContext, GrainError, GrainTypeOptions, Handler, Method, Methods};

/// Worker activations per node.
pub const BANK_WORKERS: u32 = 8;

/// A stateless coordinator of transfers; any key works.
#[derive(Debug, Default)]
pub struct Bank;

/// Moves `amount` from account `from` to account `to` and returns the new balance of `from`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Transfer {
    /// Key of the paying account.
    pub from: String,
    /// Key of the receiving account.
    pub to: String,
    /// Amount to move; must be positive.
    pub amount: i64,
}

impl Method for Transfer {
    const NAME: &'static str = "transfer";
    type Response = i64;
}

impl Bank {
    /// Returns the registration options of the bank: a stateless worker.
    pub fn options() -> GrainTypeOptions {
        GrainTypeOptions {
            stateless_worker: NonZeroU32::new(BANK_WORKERS),
            ..GrainTypeOptions::default()
        }
    }
}

impl Grain for Bank {
    const TYPE_NAME: &'static str = "bank";

    async fn activate(_ctx: &mut GrainContext) -> Result<Self, GrainError> {
        Ok(Bank)
    }

    fn register(methods: &mut Methods<Self>) {
        methods.add::<Transfer>();
    }
}

impl Handler<Transfer> for Bank {
    /// Withdraws first, then deposits; if the deposit fails the amount is deposited back into
    /// the source, so the total over all accounts stays the same.
    ///
    /// NOTE: a deposit that times out may still have been applied by the receiver, and the
    /// refund then creates money. Exactly-once transfers need deposits made idempotent by a
    /// transfer id.
    async fn handle(
        &mut self,
        request: Transfer,
        ctx: &mut GrainContext,
    ) -> Result<i64, GrainError> {
        check_amount(request.amount)?;
        if request.from == request.to {
            return Err(GrainError::new(
                "invalid_transfer",
                "cannot transfer to the same account",
            ));
        }
        let source = ctx.grain::<Account>(request.from.clone());
        let balance = source
            .call(Withdraw {
                amount: request.amount,
            })
            .await?;
        let receiver = ctx.grain::<Account>(request.to.clone());
        match receiver
            .call(Deposit {
                amount: request.amount,
            })
            .await
        {
            Ok(_) => Ok(balance),
            Err(error) => {
                source
                    .call(Deposit {
                        amount: request.amount,
                    })
                    .await?;
                Err(GrainError::new(
                    "transfer_failed",
                    format!("deposit into {} failed: {error}", request.to),
                ))
            }
        }
    }
}
