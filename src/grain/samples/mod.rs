//! Sample grain types that `gristmill local` drives: a counter and bank accounts.

mod account;
mod counter;

pub use account::{Account, Balance, Deposit, INITIAL_BALANCE, Transfer, Withdraw};
pub use counter::{Add, Counter, Get};

use super::GrainRegistry;

/// Returns a registry with the sample grain types `counter` and `account`.
pub fn registry() -> GrainRegistry {
    let mut registry = GrainRegistry::new();
    registry.register::<Counter>().register::<Account>();
    registry
}
