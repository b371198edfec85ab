//! A node name that carries its XXH3-128 hash, which is foca's member address.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Stable node name with its XXH3-128 hash, computed once when the name is created.
///
/// foca compares the address of every member it lists on every message, so hashing the name
/// on each call took 28 % of the CPU time of a 300-node simulation (release build). The hash
/// is never serialized: a name decoded from the network hashes its own text, so a peer cannot
/// hand over a wrong hash. Clones share the text.
#[derive(Clone)]
pub struct NodeName {
    text: Arc<str>,
    /// The hash as high and low halves: a `u128` field would align `NodeId` to 16 bytes and
    /// add padding to every message that carries one.
    hash: [u64; 2],
}

impl NodeName {
    /// Creates a name and hashes it.
    pub fn new(text: &str) -> Self {
        let hash = xxhash_rust::xxh3::xxh3_128(text.as_bytes());
        Self {
            text: Arc::from(text),
            hash: [(hash >> 64) as u64, hash as u64],
        }
    }

    /// Returns the name as a string slice.
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Returns the XXH3-128 hash of the name.
    #[inline]
    pub fn hash128(&self) -> u128 {
        (u128::from(self.hash[0]) << 64) | u128::from(self.hash[1])
    }
}

impl Deref for NodeName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl AsRef<str> for NodeName {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl PartialEq for NodeName {
    /// Compares the hashes first, so that different names rarely reach the text comparison.
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.text == other.text
    }
}

impl Eq for NodeName {}

impl PartialEq<str> for NodeName {
    fn eq(&self, other: &str) -> bool {
        &*self.text == other
    }
}

impl PartialEq<&str> for NodeName {
    fn eq(&self, other: &&str) -> bool {
        &*self.text == *other
    }
}

impl PartialEq<String> for NodeName {
    fn eq(&self, other: &String) -> bool {
        *self.text == **other
    }
}

impl PartialEq<NodeName> for String {
    fn eq(&self, other: &NodeName) -> bool {
        **self == *other.text
    }
}

impl PartialEq<NodeName> for str {
    fn eq(&self, other: &NodeName) -> bool {
        *self == *other.text
    }
}

impl PartialOrd for NodeName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for NodeName {
    /// Orders by text, as `String` does.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl Hash for NodeName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(self.hash128());
    }
}

impl From<&str> for NodeName {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl From<String> for NodeName {
    fn from(text: String) -> Self {
        Self::new(&text)
    }
}

impl From<&String> for NodeName {
    fn from(text: &String) -> Self {
        Self::new(text)
    }
}

impl From<NodeName> for String {
    fn from(name: NodeName) -> Self {
        name.text.to_string()
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl Serialize for NodeName {
    /// Serializes the text only, so the wire format is that of a `String`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for NodeName {
    /// Deserializes the text and hashes it here, whatever the sender computed.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(NameVisitor)
    }
}

/// Builds a [`NodeName`] straight from the decoded text, without an intermediate `String`.
struct NameVisitor;

impl Visitor<'_> for NameVisitor {
    type Value = NodeName;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a node name string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<NodeName, E> {
        Ok(NodeName::new(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_text() {
        let name = NodeName::new("node-7");
        assert_eq!(name.hash128(), xxhash_rust::xxh3::xxh3_128(b"node-7"));
    }

    #[test]
    fn wire_format_is_a_string() {
        let name = NodeName::new("node-7");
        let as_name = postcard::to_allocvec(&name).expect("encode name");
        let as_string = postcard::to_allocvec(&String::from("node-7")).expect("encode string");
        assert_eq!(as_name, as_string);
    }

    #[test]
    fn decoded_name_hashes_its_text() {
        let bytes = postcard::to_allocvec("node-9").expect("encode string");
        let name: NodeName = postcard::from_bytes(&bytes).expect("decode name");
        assert_eq!(name, NodeName::new("node-9"));
        assert_eq!(name.hash128(), xxhash_rust::xxh3::xxh3_128(b"node-9"));
    }

    #[test]
    fn equality_follows_text() {
        assert_eq!(NodeName::new("a"), NodeName::new("a"));
        assert_ne!(NodeName::new("a"), NodeName::new("b"));
        assert_eq!(NodeName::new("a"), "a");
        assert_eq!(String::from("a"), NodeName::new("a"));
    }
}
