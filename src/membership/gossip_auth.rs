//! Authentication of gossip datagrams with a key derived from the cluster cookie.
//!
//! SWIM gossip travels over UDP, where the cluster connections' cookie handshake does not
//! reach. Without a check, any process that can send to the gossip port could join the
//! membership, be placed grains and declare members down. Every datagram therefore ends with a
//! tag: HMAC-SHA-256 over the rest of the datagram, truncated to [`TAG_LEN`] bytes, keyed with
//! a hash of the cookie. A datagram whose tag does not verify is dropped before it is decoded.
//!
//! NOTE: the tag proves that the sender has the cookie. It does not encrypt the gossip, and a
//! datagram captured on the network can be replayed. foca ignores updates older than the
//! state a member already has, so a replay can only repeat news.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Length of the tag at the end of every gossip datagram, in bytes.
pub const TAG_LEN: usize = 16;

/// Prefix hashed with the cookie, so that the gossip key differs from other uses of it.
const KEY_CONTEXT: &[u8] = b"gristmill gossip key v1\0";

/// The key that signs and checks gossip datagrams. Nodes with the same cookie share it.
#[derive(Clone)]
pub struct GossipKey([u8; 32]);

/// A datagram whose tag is missing or wrong: its sender uses another cookie, or it is not
/// gossip of a Gristmill cluster.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "gossip datagram of {len} bytes failed authentication; every node of a cluster must use \
     the same cookie (GRISTMILL_COOKIE or `cookie` in the config file)"
)]
pub struct AuthError {
    /// Length of the rejected datagram.
    pub len: usize,
}

impl GossipKey {
    /// Derives the gossip key from the cluster cookie.
    pub fn from_cookie(cookie: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(KEY_CONTEXT)
            .chain_update(cookie.as_bytes())
            .finalize();
        Self(digest.into())
    }

    /// Returns `datagram` followed by its tag.
    pub fn seal(&self, datagram: &[u8]) -> Vec<u8> {
        let tag = self.mac().chain_update(datagram).finalize().into_bytes();
        let mut sealed = Vec::with_capacity(datagram.len() + TAG_LEN);
        sealed.extend_from_slice(datagram);
        sealed.extend_from_slice(&tag[..TAG_LEN]);
        sealed
    }

    /// Checks the tag of a received datagram and returns the datagram without it.
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Result<&'a [u8], AuthError> {
        let error = AuthError {
            len: datagram.len(),
        };
        let Some(body_len) = datagram.len().checked_sub(TAG_LEN) else {
            return Err(error);
        };
        let (body, tag) = datagram.split_at(body_len);
        self.mac()
            .chain_update(body)
            .verify_truncated_left(tag)
            .map_err(|_| error)?;
        Ok(body)
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GossipKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_datagram_opens_with_same_cookie() {
        let key = GossipKey::from_cookie("cluster-cookie-0123456789");
        let sealed = key.seal(b"gossip");
        assert_eq!(sealed.len(), 6 + TAG_LEN);
        let same = GossipKey::from_cookie("cluster-cookie-0123456789");
        assert_eq!(same.open(&sealed), Ok(&b"gossip"[..]));
    }

    #[test]
    fn other_cookie_is_rejected() {
        let sealed = GossipKey::from_cookie("cluster-cookie-0123456789").seal(b"gossip");
        let other = GossipKey::from_cookie("another-cookie-0123456789");
        assert_eq!(other.open(&sealed), Err(AuthError { len: sealed.len() }));
    }

    #[test]
    fn changed_or_short_datagram_is_rejected() {
        let key = GossipKey::from_cookie("cluster-cookie-0123456789");
        let mut sealed = key.seal(b"gossip");
        sealed[0] ^= 1;
        assert!(key.open(&sealed).is_err(), "a flipped body bit");
        assert!(key.open(&[0; TAG_LEN - 1]).is_err(), "shorter than a tag");
        assert!(key.open(&[]).is_err(), "empty");
    }
}
