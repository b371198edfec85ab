//! A postcard wrapper that lets serde types cross ractor_cluster without ever panicking.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A serde value carried in a ractor_cluster message field.
///
/// ractor_cluster's `BytesConvertable` is infallible by signature, so decoding errors are kept
/// inside the value: a malformed or truncated field from the network becomes `Err` with the
/// decoder's message, which the receiver rejects and counts, instead of a panic.
#[derive(Debug)]
pub struct Wire<T>(pub Result<T, String>);

impl<T> Wire<T> {
    /// Wraps a value to send.
    pub fn new(value: T) -> Self {
        Wire(Ok(value))
    }
}

impl<T> ractor::BytesConvertable for Wire<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn into_bytes(self) -> Vec<u8> {
        // Encoding into a Vec fails only for types that serde cannot represent in postcard
        // (such as unsized sequences); the receiver then sees an empty, undecodable field.
        postcard::to_allocvec(&self.0).unwrap_or_default()
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        match postcard::from_bytes::<Result<T, String>>(&bytes) {
            Ok(value) => Wire(value),
            Err(error) => Wire(Err(format!(
                "undecodable field of {} bytes: {error}",
                bytes.len()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use ractor::BytesConvertable;

    use super::*;

    #[test]
    fn round_trip_keeps_value() {
        let bytes = Wire::new((7u32, "seven".to_string())).into_bytes();
        let decoded = Wire::<(u32, String)>::from_bytes(bytes);
        assert_eq!(decoded.0, Ok((7, "seven".to_string())));
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = Wire::<(u64, String, Vec<u8>)>::from_bytes(bytes);
        }
    }
}
