//! The `bank` grain: a stateless worker that moves money between account grains.
//!
//! Transfers run here rather than in the source account, so that account turns never wait for
//! another account. An account that called another account inside its turn would deadlock
//! (until the deadline) when two transfers in opposite directions meet, because each account
//! handles one turn at a time.

use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use super::account::{Account, Deposit, Refund, Withdraw};
use super::account_state::{OVERFLOW, TRANSFER_ID_REUSED, TRANSFER_REFUNDED, check_amount};
use crate::grain::{
    CallError, Grain, GrainContext, GrainError, GrainTypeOptions, Handler, Method, Methods,
};

/// Worker activations per node.
pub const BANK_WORKERS: u32 = 8;

/// A stateless coordinator of transfers; any key works.
#[derive(Debug, Default)]
pub struct Bank;

/// Moves `amount` from account `from` to account `to` and returns the new balance of `from`.
///
/// Sending a transfer again with the same `id` is safe: each account applies its step of a
/// transfer once, so a retry finishes a transfer that was cut short and repeats nothing. A
/// request that reuses the id of another transfer with other accounts or another amount
/// fails with `transfer_id_reused` when the source account remembers that id, or with
/// `transfer_refunded` when only the receiving account does. Either way no balance changes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Transfer {
    /// Key of the paying account.
    pub from: String,
    /// Key of the receiving account.
    pub to: String,
    /// Amount to move; must be positive.
    pub amount: i64,
    /// Id that makes the transfer safe to retry, unique per transfer. Without one the bank
    /// picks a random id and names it in the error of a transfer that did not finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
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
    /// Withdraws, then deposits, both tagged with the transfer id and terms. If either step
    /// fails without a known outcome, the transfer fails with `transfer_incomplete`, and
    /// sending it again with the same id finishes it. A timed-out deposit is never paid
    /// back, because it may have been applied. A deposit that the receiving account rejected
    /// for good (its balance would overflow, or the id belongs to another deposit there) is
    /// paid back to the source, and the transfer fails with `transfer_refunded`.
    async fn handle(
        &mut self,
        request: Transfer,
        ctx: &mut GrainContext,
    ) -> Result<i64, GrainError> {
        check_amount(request.amount)?;
        // Checked before the withdrawal: a deposit rejected for its key would strand the amount.
        check_account_key("from", &request.from)?;
        check_account_key("to", &request.to)?;
        if request.from == request.to {
            return Err(GrainError::invalid_argument(
                "invalid_transfer",
                format!(
                    "invalid transfer from account {:?} to itself: give \"to\" another account key",
                    request.from
                ),
            ));
        }
        let id = request.id.unwrap_or_else(rand::random);
        let incomplete = |step: &str, error: CallError| {
            GrainError::new(
                "transfer_incomplete",
                format!(
                    "transfer {id} of {} from {} to {} stopped at the {step}: {error}; send it \
                     again with \"id\": {id} to finish it",
                    request.amount, request.from, request.to
                ),
            )
        };
        let source = ctx.grain::<Account>(request.from.clone());
        let withdrawal = source
            .call(Withdraw {
                amount: request.amount,
                transfer: Some(id),
                to: Some(request.to.clone()),
            })
            .await;
        let balance = match withdrawal {
            Ok(balance) => balance,
            // The account replied, so its error (such as insufficient funds) is final.
            Err(error @ (CallError::Grain { .. } | CallError::InvalidRequest { .. })) => {
                return Err(error.into());
            }
            // Nothing ran, so nothing moved: the transfer failed as a whole.
            Err(error @ (CallError::InvalidKey { .. } | CallError::UnknownGrainType { .. })) => {
                return Err(GrainError::invalid_argument(
                    "invalid_transfer",
                    error.to_string(),
                ));
            }
            // A fresh id had no earlier attempt, so nothing moved. A given id may be a retry
            // whose first withdrawal went through, so it must be sent again.
            Err(error) if error.is_before_execution() && request.id.is_none() => {
                return Err(GrainError::new(
                    "transfer_not_started",
                    format!("transfer {id} moved nothing: {error}"),
                ));
            }
            Err(error) => return Err(incomplete("withdrawal", error)),
        };
        let receiver = ctx.grain::<Account>(request.to.clone());
        let deposit = receiver
            .call(Deposit {
                amount: request.amount,
                transfer: Some(id),
                from: Some(request.from.clone()),
            })
            .await;
        let rejection = match deposit {
            Ok(_) => return Ok(balance),
            Err(error) if is_final_rejection(&error) => error,
            Err(error) => return Err(incomplete("deposit", error)),
        };
        tracing::warn!(
            transfer = id,
            from = %request.from,
            to = %request.to,
            amount = request.amount,
            error = %rejection,
            "deposit rejected for good, paying the withdrawal back"
        );
        let refund = source
            .call(Refund {
                transfer: id,
                amount: request.amount,
                to: request.to.clone(),
            })
            .await;
        match refund {
            // FAILED_PRECONDITION even when the receiver rejected a reused id, because
            // INVALID_ARGUMENT promises that no state changed, and the source's balance did.
            Ok(balance) => Err(GrainError::new(
                TRANSFER_REFUNDED,
                format!(
                    "transfer {id} of {} from {} to {} was not made: {rejection}; the {} went \
                     back to {} (balance {balance}). Use a new id for a new transfer",
                    request.amount, request.from, request.to, request.amount, request.from
                ),
            )),
            Err(error) => Err(incomplete("refund", error)),
        }
    }
}

/// Returns whether the receiving account rejected a deposit in a way that no retry of the
/// transfer can change: it stored the overflow rejection, or the transfer id belongs to
/// another deposit there. Other errors, such as a failed store, leave the deposit to a retry.
fn is_final_rejection(error: &CallError) -> bool {
    match error {
        CallError::Grain { error, .. } => error.code == OVERFLOW,
        CallError::InvalidRequest { error, .. } => error.code == TRANSFER_ID_REUSED,
        _ => false,
    }
}

/// Rejects an account key that no account grain can have: empty, or longer than the grain
/// key limit. `field` is the name of the transfer field that contains the key.
fn check_account_key(field: &str, key: &str) -> Result<(), GrainError> {
    let max = crate::runtime::MAX_KEY_BYTES;
    if !key.is_empty() && key.len() <= max {
        return Ok(());
    }
    // A key over the limit can be long, so only its length goes into the message.
    let described = if key.is_empty() {
        "\"\"".to_owned()
    } else {
        format!("of {} bytes", key.len())
    };
    Err(GrainError::invalid_argument(
        "invalid_transfer",
        format!("invalid {field:?} account key {described}: use a key of 1 to {max} bytes"),
    ))
}
