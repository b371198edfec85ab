//! The store identity: a random id kept in the database so nodes can tell whether they share it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Random 128-bit id that a database stores in its one-row `gristmill_store` table.
///
/// The first node to open an empty database creates it, and every later open reads it back,
/// so two nodes report the same id exactly when they use the same database. Nodes gossip it
/// and refuse to form a cluster with a node whose id differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StoreId(pub u128);

impl fmt::Display for StoreId {
    /// Formats the id as 32 lower-case hex digits, the form stored in the database.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A stored store id that is not 32 hex digits.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("store id {value:?} is not 32 hex digits")]
pub struct InvalidStoreId {
    /// The text as stored.
    pub value: String,
}

impl FromStr for StoreId {
    type Err = InvalidStoreId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidStoreId {
            value: text.to_owned(),
        };
        if text.len() != 32 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        u128::from_str_radix(text, 16)
            .map(StoreId)
            .map_err(|_| invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_id_text_round_trips() {
        for id in [
            StoreId(0),
            StoreId(1),
            StoreId(u128::MAX),
            StoreId(0xabc << 64),
        ] {
            let text = id.to_string();
            assert_eq!(text.len(), 32, "{text}");
            assert_eq!(text.parse::<StoreId>(), Ok(id));
        }
    }

    #[test]
    fn invalid_store_id_text_is_rejected() {
        for text in [
            "",
            "abc",
            "+0000000000000000000000000000000",
            &"g".repeat(32),
            &"0".repeat(33),
        ] {
            assert_eq!(
                text.parse::<StoreId>(),
                Err(InvalidStoreId {
                    value: text.to_owned()
                }),
                "{text:?}"
            );
        }
    }
}
