//! Sample grain types that `gristmill local` drives: a counter, bank accounts and transfers.

mod account;
mod account_state;
mod bank;
mod counter;
mod ticker;

pub use account::{Account, Balance, Deposit, Refund, Withdraw};
pub use account_state::{
    AccountState, AppliedStep, INITIAL_BALANCE, OVERFLOW, REMEMBERED_TRANSFERS, StepKind,
    StepTerms, TRANSFER_ID_REUSED, TRANSFER_REFUNDED,
};
pub use bank::{BANK_WORKERS, Bank, Transfer};
pub use counter::{Add, Counter, CounterState, Get};
pub use ticker::{
    Count, MIN_TICK_PERIOD, MIN_TIMER_PERIOD, Start, StartTimer, Stop, TICK_REMINDER, TICK_TIMER,
    Ticker, TickerState, TimerCount,
};

use super::GrainRegistry;

/// Returns a registry with the sample grain types `counter`, `account`, `bank` and `ticker`.
pub fn registry() -> GrainRegistry {
    let mut registry = GrainRegistry::new();
    registry
        .register::<Counter>()
        .register::<Account>()
        .register_with::<Bank>(Bank::options())
        .register::<Ticker>();
    registry
}
