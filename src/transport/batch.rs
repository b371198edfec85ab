//! Calls, replies and one-way messages to one peer, coalesced into one ractor_cluster message.

use serde::{Deserialize, Serialize};

use super::envelope::{CallReply, Envelope};

/// A batch of messages from one node to one peer, sent as one ractor_cluster message.
///
/// Like [`Envelope`], a new field goes into a new variant appended at the end.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum BatchEnvelope {
    /// The first version.
    V1(Batch),
}

/// Fields of a [`BatchEnvelope`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Batch {
    /// ractor_cluster node name of the sender, whose gateway receives the replies.
    pub from: String,
    /// The messages, in the order in which the sender queued them.
    pub items: Vec<BatchItem>,
}

/// One message in a [`Batch`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum BatchItem {
    /// A grain call; the receiver sends a `Reply` with the same `id` to `from`.
    Call {
        /// The sender's id of the call, unique among its calls in flight.
        id: u64,
        /// The call.
        envelope: Envelope,
    },
    /// A one-way grain message.
    Cast(Envelope),
    /// The reply to a `Call` that the receiver of this batch sent.
    Reply {
        /// The `id` of the call.
        id: u64,
        /// The reply.
        reply: CallReply,
    },
}

/// Bytes added to an item's variable-length fields to estimate its encoded size: the deadline,
/// ids, counters and length prefixes take at most this many in postcard.
const ITEM_FIXED_BYTES: usize = 64;

impl BatchItem {
    /// Returns an upper estimate of the item's encoded size in bytes.
    pub fn estimated_bytes(&self) -> usize {
        let variable = match self {
            BatchItem::Call { envelope, .. } | BatchItem::Cast(envelope) => {
                let Envelope::V1(call) = envelope;
                call.grain.grain_type.len()
                    + call.grain.key.len()
                    + call.method.len()
                    + call.payload.len()
                    + call.trace_parent.as_ref().map_or(0, String::len)
            }
            BatchItem::Reply { reply, .. } => match reply {
                CallReply::Ok {
                    payload, served_by, ..
                } => payload.len() + served_by.len(),
                CallReply::NotHere => 0,
                // An error carries names and a message; its debug form is longer than its
                // encoding.
                CallReply::Failed(error) => format!("{error:?}").len(),
            },
        };
        variable + ITEM_FIXED_BYTES
    }

    /// Returns the id of a call, which the sender fails if the batch cannot be sent.
    pub fn call_id(&self) -> Option<u64> {
        match self {
            BatchItem::Call { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// Takes items from `next` into one batch, after `first`, until `next` has none ready or the
/// batch would exceed `max_bytes`. Returns the batch and the item that did not fit, which
/// starts the next batch. An item larger than `max_bytes` makes a batch on its own.
pub fn fill_batch(
    first: BatchItem,
    max_bytes: usize,
    mut next: impl FnMut() -> Option<BatchItem>,
) -> (Vec<BatchItem>, Option<BatchItem>) {
    let mut bytes = first.estimated_bytes();
    let mut items = vec![first];
    while let Some(item) = next() {
        let size = item.estimated_bytes();
        if bytes + size > max_bytes {
            return (items, Some(item));
        }
        bytes += size;
        items.push(item);
    }
    (items, None)
}

#[cfg(test)]
mod tests {
    use ractor::BytesConvertable;

    use super::*;
    use crate::grain::{GrainId, PayloadFormat};
    use crate::transport::{CallEnvelope, Route, Wire};

    fn cast(payload_bytes: usize) -> BatchItem {
        BatchItem::Cast(Envelope::V1(CallEnvelope {
            grain: GrainId::new("counter", "c1"),
            method: "add".into(),
            format: PayloadFormat::Postcard,
            payload: vec![7; payload_bytes],
            deadline_unix_ms: u64::MAX,
            trace_parent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            hops: u32::MAX,
            route: Route::ActivateHere,
        }))
    }

    #[test]
    fn estimate_bounds_encoded_size() {
        let items = vec![
            cast(0),
            cast(1000),
            BatchItem::Call {
                id: u64::MAX,
                envelope: match cast(10) {
                    BatchItem::Cast(envelope) => envelope,
                    _ => unreachable!(),
                },
            },
            BatchItem::Reply {
                id: u64::MAX,
                reply: CallReply::Ok {
                    payload: vec![1; 300],
                    served_by: "node-1".into(),
                    hops: u32::MAX,
                },
            },
            BatchItem::Reply {
                id: 1,
                reply: CallReply::NotHere,
            },
        ];
        for item in items {
            let estimate = item.estimated_bytes();
            let encoded = postcard::to_allocvec(&item).expect("encodes").len();
            assert!(
                encoded <= estimate,
                "{item:?}: encoded {encoded} bytes, estimated {estimate}"
            );
        }
    }

    #[test]
    fn fill_stops_at_byte_limit() {
        let mut queue: std::collections::VecDeque<_> = (0..10).map(|_| cast(100)).collect();
        let one = cast(100).estimated_bytes();
        let (batch, carry) = fill_batch(cast(100), one * 4, || queue.pop_front());
        assert_eq!(batch.len(), 4);
        assert!(
            carry.is_some(),
            "the fifth item is carried to the next batch"
        );
        assert_eq!(queue.len(), 6, "items after the carried one stay queued");
    }

    #[test]
    fn fill_takes_all_ready_items() {
        let mut queue: std::collections::VecDeque<_> = (0..10).map(|_| cast(1)).collect();
        let (batch, carry) = fill_batch(cast(1), usize::MAX, || queue.pop_front());
        assert_eq!(batch.len(), 11);
        assert!(carry.is_none());
    }

    #[test]
    fn oversized_item_goes_alone() {
        let mut queue: std::collections::VecDeque<_> = (0..2).map(|_| cast(1)).collect();
        let (batch, carry) = fill_batch(cast(10_000), 1_000, || queue.pop_front());
        assert_eq!(batch.len(), 1);
        assert!(carry.is_some());
    }

    #[test]
    fn batch_round_trips_through_wire() {
        let batch = BatchEnvelope::V1(Batch {
            from: "node-a".into(),
            items: vec![cast(3), cast(4)],
        });
        let bytes = Wire::new(batch).into_bytes();
        let Wire(Ok(BatchEnvelope::V1(decoded))) = Wire::<BatchEnvelope>::from_bytes(bytes) else {
            panic!("the batch did not decode");
        };
        assert_eq!(decoded.from, "node-a");
        assert_eq!(decoded.items.len(), 2);
    }
}
