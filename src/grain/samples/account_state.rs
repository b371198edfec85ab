//! The stored state of an account grain and the rules that change it, without I/O.
//!
//! Each method returns a [`Transition`]: the reply, and the new state that the grain must
//! store before it sends that reply. The remembered transfer steps make each step of a
//! transfer apply once, tell a retry of a transfer from another transfer that reuses its id,
//! and let the bank pay a withdrawal back when the deposit was rejected for good.

use std::collections::VecDeque;

use serde::{Deserialize, Deserializer, Serialize};

use crate::grain::GrainError;

/// Balance of every account before its first stored change.
pub const INITIAL_BALANCE: i64 = 1_000;

/// Transfer steps an account remembers, so that a retried step with the same transfer id
/// returns the stored balance instead of being applied again.
///
/// NOTE: a retry that arrives after this many later transfer steps on the same account is
/// applied again. The bound keeps the stored state small: about 80 bytes of JSON per step
/// with short account keys, plus the length of the other account's key.
pub const REMEMBERED_TRANSFERS: usize = 128;

/// Error code of a deposit whose balance would overflow `i64`.
pub const OVERFLOW: &str = "overflow";

/// Error code of a step whose transfer id belongs to another transfer on this account.
pub const TRANSFER_ID_REUSED: &str = "transfer_id_reused";

/// Error code of a transfer that was not made because its deposit was rejected, and whose
/// withdrawal was paid back.
pub const TRANSFER_REFUNDED: &str = "transfer_refunded";

/// The persisted state of an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// The balance.
    pub balance: i64,
    /// The latest transfer steps, oldest first, at most [`REMEMBERED_TRANSFERS`]. State
    /// stored by older versions lists each step as `[transfer id, is withdrawal, balance]`.
    #[serde(default, deserialize_with = "deserialize_steps")]
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

/// One transfer step that an account handled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedStep {
    /// Id of the transfer.
    pub transfer: u64,
    /// Kind of step that the account applied.
    pub kind: StepKind,
    /// Amount and other account of the step, or `None` for a step stored by a version that
    /// did not record them. Any step with the same transfer id and side counts as a retry of
    /// a step without terms.
    #[serde(default)]
    pub terms: Option<StepTerms>,
    /// Balance after the step.
    pub balance: i64,
}

/// Kind of transfer step that an account handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Paid the amount out.
    Withdrawal,
    /// Paid the amount out, then got it back because the deposit was rejected.
    RefundedWithdrawal,
    /// Received the amount.
    Deposit,
    /// Rejected the deposit because the balance would overflow; retries are rejected too.
    RejectedDeposit,
}

impl StepKind {
    fn is_withdrawal(self) -> bool {
        matches!(self, StepKind::Withdrawal | StepKind::RefundedWithdrawal)
    }
}

/// The terms of a transfer step, which a retry must repeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTerms {
    /// Amount of the transfer.
    pub amount: i64,
    /// Key of the other account of the transfer, if the request named it.
    pub account: Option<String>,
}

/// A step of a transfer as a request describes it.
#[derive(Clone, Debug)]
pub struct StepRequest {
    /// Id of the transfer.
    pub transfer: u64,
    /// Amount and other account.
    pub terms: StepTerms,
}

/// The result of a request on an account: the reply, and the state to store before replying
/// when the request changed it.
#[derive(Debug, PartialEq, Eq)]
pub struct Transition {
    /// State to store first, or `None` when nothing changed.
    pub next: Option<AccountState>,
    /// Balance or error to return once `next` is stored.
    pub reply: Result<i64, GrainError>,
}

impl Transition {
    fn reply(reply: Result<i64, GrainError>) -> Self {
        Self { next: None, reply }
    }
}

/// Rejects an amount that is not positive.
pub(super) fn check_amount(amount: i64) -> Result<(), GrainError> {
    if amount <= 0 {
        return Err(GrainError::invalid_argument(
            "invalid_amount",
            format!("invalid amount {amount}: give a positive amount"),
        ));
    }
    Ok(())
}

impl AccountState {
    /// Adds `amount`, once per transfer id when `step` is given.
    pub fn deposit(&self, amount: i64, step: Option<StepRequest>) -> Transition {
        if let Err(error) = check_amount(amount) {
            return Transition::reply(Err(error));
        }
        let Some(step) = step else {
            return match self.balance.checked_add(amount) {
                Some(balance) => self.store(balance, None),
                None => Transition::reply(Err(overflow_error(None))),
            };
        };
        match self.find_step(&step, false) {
            Ok(Some(applied)) if applied.kind == StepKind::RejectedDeposit => {
                return Transition::reply(Err(overflow_error(Some(step.transfer))));
            }
            Ok(Some(applied)) => return Transition::reply(Ok(applied.balance)),
            Ok(None) => {}
            Err(error) => return Transition::reply(Err(error)),
        }
        match self.balance.checked_add(amount) {
            Some(balance) => self.store(balance, Some((step, StepKind::Deposit))),
            // The rejection is stored before it is returned, so that a retry of this transfer
            // that arrives after the balance went down is rejected as well. The bank pays the
            // withdrawal back once it receives the rejection, so a later deposit would create
            // money.
            None => Transition {
                reply: Err(overflow_error(Some(step.transfer))),
                ..self.store(self.balance, Some((step, StepKind::RejectedDeposit)))
            },
        }
    }

    /// Takes `amount` if the balance covers it, once per transfer id when `step` is given.
    pub fn withdraw(&self, amount: i64, step: Option<StepRequest>) -> Transition {
        if let Err(error) = check_amount(amount) {
            return Transition::reply(Err(error));
        }
        if let Some(step) = &step {
            match self.find_step(step, true) {
                Ok(Some(applied)) if applied.kind == StepKind::RefundedWithdrawal => {
                    return Transition::reply(Err(GrainError::new(
                        TRANSFER_REFUNDED,
                        format!(
                            "transfer {} of {amount} was paid back after its deposit was \
                             rejected: use a new id for a new transfer",
                            step.transfer
                        ),
                    )));
                }
                Ok(Some(applied)) => return Transition::reply(Ok(applied.balance)),
                Ok(None) => {}
                Err(error) => return Transition::reply(Err(error)),
            }
        }
        if self.balance < amount {
            return Transition::reply(Err(GrainError::new(
                "insufficient_funds",
                format!("balance {} is below {amount}", self.balance),
            )));
        }
        let balance = self.balance - amount;
        self.store(balance, step.map(|step| (step, StepKind::Withdrawal)))
    }

    /// Pays back the withdrawal of `step`, at most once. This account cannot check that the
    /// deposit will never arrive, so the caller must: the bank sends a refund only after the
    /// receiving account stored its rejection of the deposit, or rejected the id as reused.
    pub fn refund(&self, step: StepRequest) -> Transition {
        let applied = match self.find_step(&step, true) {
            Ok(Some(applied)) => applied,
            Ok(None) => {
                return Transition::reply(Err(GrainError::new(
                    "not_withdrawn",
                    format!(
                        "no withdrawal of transfer {} to pay back: this account applied \
                         none, or it is older than the latest {REMEMBERED_TRANSFERS} steps",
                        step.transfer
                    ),
                )));
            }
            Err(error) => return Transition::reply(Err(error)),
        };
        if applied.kind == StepKind::RefundedWithdrawal {
            return Transition::reply(Ok(applied.balance));
        }
        let Some(balance) = self.balance.checked_add(step.terms.amount) else {
            return Transition::reply(Err(overflow_error(None)));
        };
        let mut next = self.clone();
        next.applied
            .retain(|known| !(known.transfer == step.transfer && known.kind.is_withdrawal()));
        next.balance = balance;
        next.applied.push_back(AppliedStep {
            transfer: step.transfer,
            kind: StepKind::RefundedWithdrawal,
            terms: Some(step.terms),
            balance,
        });
        Transition {
            next: Some(next),
            reply: Ok(balance),
        }
    }

    /// Returns the remembered step of the same transfer on the same side (withdrawal or
    /// deposit), or an error if that step has other terms, as when a new transfer reuses an
    /// id.
    fn find_step(
        &self,
        step: &StepRequest,
        withdrawal: bool,
    ) -> Result<Option<&AppliedStep>, GrainError> {
        let Some(applied) = self.applied.iter().find(|applied| {
            applied.transfer == step.transfer && applied.kind.is_withdrawal() == withdrawal
        }) else {
            return Ok(None);
        };
        match &applied.terms {
            Some(terms) if *terms != step.terms => Err(GrainError::invalid_argument(
                TRANSFER_ID_REUSED,
                format!(
                    "transfer id {} is already used by a transfer of {}{} on this account, \
                     not {}{}: use a new id for a new transfer",
                    step.transfer,
                    terms.amount,
                    describe_account(terms.account.as_deref(), withdrawal),
                    step.terms.amount,
                    describe_account(step.terms.account.as_deref(), withdrawal),
                ),
            )),
            _ => Ok(Some(applied)),
        }
    }

    /// Returns the state with `balance` and, when given, the step appended, dropping the
    /// oldest step beyond [`REMEMBERED_TRANSFERS`].
    fn store(&self, balance: i64, step: Option<(StepRequest, StepKind)>) -> Transition {
        let mut next = AccountState {
            balance,
            applied: self.applied.clone(),
        };
        if let Some((step, kind)) = step {
            if next.applied.len() == REMEMBERED_TRANSFERS {
                next.applied.pop_front();
            }
            next.applied.push_back(AppliedStep {
                transfer: step.transfer,
                kind,
                terms: Some(step.terms),
                balance,
            });
        }
        Transition {
            next: Some(next),
            reply: Ok(balance),
        }
    }
}

fn overflow_error(transfer: Option<u64>) -> GrainError {
    let message = match transfer {
        Some(transfer) => {
            format!("balance would overflow i64, so the deposit of transfer {transfer} is rejected")
        }
        None => "balance would overflow i64".to_owned(),
    };
    GrainError::new(OVERFLOW, message)
}

/// Describes the other account of a step for an error message, such as ` to "a-2"`.
fn describe_account(account: Option<&str>, withdrawal: bool) -> String {
    match account {
        Some(account) if withdrawal => format!(" to {account:?}"),
        Some(account) => format!(" from {account:?}"),
        None => String::new(),
    }
}

/// A remembered step as stored by this version or by older ones.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredStep {
    Current(AppliedStep),
    /// `[transfer id, is withdrawal, balance after]`.
    Legacy(u64, bool, i64),
}

fn deserialize_steps<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<VecDeque<AppliedStep>, D::Error> {
    let stored = VecDeque::<StoredStep>::deserialize(deserializer)?;
    let steps = stored.into_iter().map(|step| match step {
        StoredStep::Current(step) => step,
        StoredStep::Legacy(transfer, withdrawal, balance) => AppliedStep {
            transfer,
            kind: if withdrawal {
                StepKind::Withdrawal
            } else {
                StepKind::Deposit
            },
            terms: None,
            balance,
        },
    });
    Ok(steps.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(transfer: u64, amount: i64, account: &str) -> Option<StepRequest> {
        Some(StepRequest {
            transfer,
            terms: StepTerms {
                amount,
                account: Some(account.to_owned()),
            },
        })
    }

    /// Applies `transition` as the grain does and returns its reply.
    fn apply(state: &mut AccountState, transition: Transition) -> Result<i64, GrainError> {
        if let Some(next) = transition.next {
            *state = next;
        }
        transition.reply
    }

    #[test]
    fn withdrawal_retry_applies_once() {
        let mut state = AccountState::default();
        let first = state.withdraw(10, step(7, 10, "x-2"));
        assert_eq!(apply(&mut state, first), Ok(990));

        let retry = state.withdraw(10, step(7, 10, "x-2"));
        assert_eq!(retry.next, None, "a retry stores nothing");
        assert_eq!(retry.reply, Ok(990));
    }

    #[test]
    fn reused_id_with_other_terms_rejected() {
        let mut state = AccountState::default();
        let first = state.withdraw(10, step(7, 10, "x-2"));
        apply(&mut state, first).expect("first withdrawal");

        for (amount, to) in [(900, "x-3"), (900, "x-2"), (10, "x-3")] {
            let reused = state.withdraw(amount, step(7, amount, to));
            assert_eq!(reused.next, None, "{amount} to {to}");
            let error = reused.reply.expect_err("reused id");
            assert_eq!(error.code, TRANSFER_ID_REUSED);
            assert!(error.is_invalid_argument(), "{error:?}");
            assert!(error.message.contains("transfer id 7"), "{}", error.message);
            assert!(
                error.message.contains("use a new id for a new transfer"),
                "{}",
                error.message
            );
        }

        let mut receiver = AccountState::default();
        let deposit = receiver.deposit(10, step(7, 10, "x-1"));
        apply(&mut receiver, deposit).expect("first deposit");
        let reused = receiver.deposit(900, step(7, 900, "x-1"));
        assert_eq!(reused.next, None);
        let error = reused.reply.expect_err("reused id on deposit");
        assert_eq!(error.code, TRANSFER_ID_REUSED);
        assert_eq!(receiver.balance, 1_010);
    }

    #[test]
    fn overflow_rejection_outlives_balance_change() {
        let mut state = AccountState {
            balance: i64::MAX,
            ..AccountState::default()
        };
        let rejected = state.deposit(500, step(99, 500, "y-2"));
        assert!(rejected.next.is_some(), "the rejection is stored");
        assert_eq!(
            apply(&mut state, rejected).map_err(|error| error.code),
            Err(OVERFLOW.to_owned())
        );

        // A retry fails the same way even after the balance went down, because the bank may
        // already have paid the withdrawal back.
        let lowered = state.withdraw(1_000, None);
        apply(&mut state, lowered).expect("withdrawal");
        let retry = state.deposit(500, step(99, 500, "y-2"));
        assert_eq!(retry.next, None);
        assert_eq!(
            retry.reply.map_err(|error| error.code),
            Err(OVERFLOW.to_owned())
        );
        assert_eq!(state.balance, i64::MAX - 1_000);
    }

    #[test]
    fn refund_pays_back_once() {
        let mut state = AccountState::default();
        let withdrawal = state.withdraw(500, step(99, 500, "y-1"));
        assert_eq!(apply(&mut state, withdrawal), Ok(500));

        let refund = state.refund(step(99, 500, "y-1").expect("step"));
        assert_eq!(apply(&mut state, refund), Ok(1_000));
        let retry = state.refund(step(99, 500, "y-1").expect("step"));
        assert_eq!(retry.next, None);
        assert_eq!(retry.reply, Ok(1_000));

        // A retry of the refunded transfer does not withdraw again.
        let withdrawal = state.withdraw(500, step(99, 500, "y-1"));
        assert_eq!(withdrawal.next, None);
        let error = withdrawal.reply.expect_err("refunded transfer");
        assert_eq!(error.code, TRANSFER_REFUNDED);
        assert_eq!(state.balance, 1_000);
        assert_eq!(state.applied.len(), 1, "the refund replaces the withdrawal");
    }

    #[test]
    fn refund_without_withdrawal_rejected() {
        let state = AccountState::default();
        let refund = state.refund(step(5, 10, "z").expect("step"));
        assert_eq!(refund.next, None);
        assert_eq!(
            refund.reply.map_err(|error| error.code),
            Err("not_withdrawn".to_owned())
        );
    }

    #[test]
    fn legacy_steps_still_readable() {
        let stored = r#"{"balance":990,"applied":[[7,true,990],[8,false,1000]]}"#;
        let state: AccountState = serde_json::from_str(stored).expect("legacy state");
        assert_eq!(state.balance, 990);
        assert_eq!(state.applied.len(), 2);
        assert_eq!(state.applied[0].kind, StepKind::Withdrawal);
        assert_eq!(state.applied[1].kind, StepKind::Deposit);

        // A step without terms counts as a retry, as before.
        let retry = state.withdraw(10, step(7, 10, "x-2"));
        assert_eq!(retry.reply, Ok(990));

        let written = serde_json::to_string(&state).expect("encode");
        let read: AccountState = serde_json::from_str(&written).expect("current state");
        assert_eq!(read, state);
        let without_steps: AccountState =
            serde_json::from_str(r#"{"balance":5}"#).expect("state without steps");
        assert!(without_steps.applied.is_empty());
    }
}
