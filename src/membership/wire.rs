//! Framing of datagrams on the gossip port: foca packets, the identity exchange with seeds and
//! the member-list transfer to joining nodes.
//!
//! Every datagram starts with [`MAGIC`] and a kind byte:
//! - [`Kind::Foca`]: the rest is a foca packet.
//! - [`Kind::IdentityRequest`]: a request for the receiver's current identity. The request is
//!   padded to [`IDENTITY_REQUEST_LEN`] bytes, and a node replies only to requests at least as
//!   long as its reply, so the exchange cannot amplify traffic towards a spoofed source.
//! - [`Kind::IdentityReply`]: the rest is the sender's [`NodeId`], postcard-encoded.
//! - [`Kind::MembersRequest`] and [`Kind::MembersPage`]: the member-list transfer (see the
//!   `member_list` module), with the same rule against amplification: a page is never longer
//!   than the request it answers.
//! - [`Kind::LeaseProbe`] and [`Kind::LeaseProbeAck`]: a quorum sweep (see the `lease`
//!   module), each a postcard-encoded [`LeaseProbe`] or [`LeaseProbeAck`]. A probe is padded
//!   to [`LEASE_PROBE_LEN`] bytes and a node acks only probes at least as long as its ack.
//!
//! The identity exchange exists because foca 2.0 accepts an `Announce` only when the
//! destination identity's `addr()` equals the receiver's, and our `addr()` is the node name.
//! A seed is configured as `host:port`, so a joining node first asks the seed for its
//! identity and then announces to exactly that identity.

use serde::{Deserialize, Serialize};

use super::NodeId;
use super::lease_tracker::DeclaredDown;
use super::member_list::{MemberListError, MembersPage, MembersRequest};

/// Largest datagram the agent sends, framing and authentication tag included. It stays below
/// the 1472-byte UDP payload of a 1500-byte Ethernet MTU, so datagrams are not fragmented.
pub const MAX_DATAGRAM_LEN: usize = 1400;

/// Largest framed datagram before the authentication tag is appended.
pub const MAX_FRAME_LEN: usize = MAX_DATAGRAM_LEN - super::gossip_auth::TAG_LEN;

/// First byte of every datagram on the gossip port.
pub const MAGIC: u8 = 0x47;

/// Length of the framing header: the magic byte and the kind byte.
pub const HEADER_LEN: usize = 2;

/// Length of an identity request on the wire, in bytes. Identity replies of names up to 63
/// bytes stay well below it.
pub const IDENTITY_REQUEST_LEN: usize = 256;

/// Length of a lease probe on the wire, in bytes. An ack of a name of up to 63 bytes leaves
/// room for at least four declared-down members of such names.
pub const LEASE_PROBE_LEN: usize = 512;

/// Kind of content a datagram carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A foca packet.
    Foca = 1,
    /// A request for the receiver's identity.
    IdentityRequest = 2,
    /// The sender's identity, in reply to a request.
    IdentityReply = 3,
    /// A request for a page of the receiver's member list.
    MembersRequest = 4,
    /// A page of the sender's member list, in reply to a request.
    MembersPage = 5,
    /// A probe of a quorum sweep.
    LeaseProbe = 6,
    /// The ack of a quorum sweep's probe.
    LeaseProbeAck = 7,
}

/// A probe of a quorum sweep, which the receiver acks while its view lists the sender as live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseProbe {
    /// The sender's identity, which the receiver looks up in its view.
    pub from: NodeId,
    /// Id of the sweep, which the ack echoes.
    pub sweep: u64,
}

/// The ack of a [`LeaseProbe`], sent only by a member that has not declared the prober down.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseProbeAck {
    /// The acking member's identity, which the prober matches against the members it swept.
    pub from: NodeId,
    /// Id of the sweep the probe carried.
    pub sweep: u64,
    /// Members the acking member counts as declared down, newest verdict first, as many as
    /// fit in the probe's length.
    pub declared_down: Vec<DeclaredDown>,
}

/// A decoded datagram.
#[derive(Debug, PartialEq)]
pub enum Datagram<'a> {
    /// A foca packet, without the framing header.
    Foca(&'a [u8]),
    /// A request for our identity, from a peer padded to `len` bytes in total.
    IdentityRequest {
        /// Length of the whole datagram, header included.
        len: usize,
    },
    /// A peer's identity.
    IdentityReply(NodeId),
    /// A request for a page of our member list.
    MembersRequest {
        /// The request.
        request: MembersRequest,
        /// Length of the request body, which bounds the page body.
        body_len: usize,
    },
    /// A page of a peer's member list.
    MembersPage(MembersPage),
    /// A probe of a peer's quorum sweep.
    LeaseProbe {
        /// The probe.
        probe: LeaseProbe,
        /// Length of the whole datagram, header included, which bounds the ack.
        len: usize,
    },
    /// An ack of a probe of our quorum sweep.
    LeaseProbeAck(LeaseProbeAck),
}

/// A datagram that is not valid framing. Nothing changed; the datagram is dropped.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The datagram is shorter than the framing header.
    #[error("datagram of {0} bytes is shorter than the framing header")]
    TooShort(usize),
    /// The first byte is not [`MAGIC`].
    #[error("datagram starts with {0:#04x}, not the gossip magic byte")]
    BadMagic(u8),
    /// The kind byte names no known kind.
    #[error("datagram has unknown kind {0}")]
    UnknownKind(u8),
    /// An identity reply whose body does not decode.
    #[error("malformed identity reply")]
    MalformedIdentity(#[source] postcard::Error),
    /// A member-list request or page that does not decode, or a request that is too short.
    #[error("invalid member list datagram")]
    MemberList(#[source] MemberListError),
    /// A lease probe or its ack whose body does not decode.
    #[error("malformed lease probe datagram")]
    MalformedLeaseProbe(#[source] postcard::Error),
}

/// Decodes the framing of a received datagram.
pub fn decode(datagram: &[u8]) -> Result<Datagram<'_>, WireError> {
    let [magic, kind, body @ ..] = datagram else {
        return Err(WireError::TooShort(datagram.len()));
    };
    if *magic != MAGIC {
        return Err(WireError::BadMagic(*magic));
    }
    match *kind {
        kind if kind == Kind::Foca as u8 => Ok(Datagram::Foca(body)),
        kind if kind == Kind::IdentityRequest as u8 => Ok(Datagram::IdentityRequest {
            len: datagram.len(),
        }),
        kind if kind == Kind::IdentityReply as u8 => postcard::from_bytes(body)
            .map(Datagram::IdentityReply)
            .map_err(WireError::MalformedIdentity),
        kind if kind == Kind::MembersRequest as u8 => MembersRequest::decode(body)
            .map(|request| Datagram::MembersRequest {
                request,
                body_len: body.len(),
            })
            .map_err(WireError::MemberList),
        kind if kind == Kind::MembersPage as u8 => MembersPage::decode(body)
            .map(Datagram::MembersPage)
            .map_err(WireError::MemberList),
        // The probe's padding follows the encoded body.
        kind if kind == Kind::LeaseProbe as u8 => postcard::take_from_bytes(body)
            .map(|(probe, _padding)| Datagram::LeaseProbe {
                probe,
                len: datagram.len(),
            })
            .map_err(WireError::MalformedLeaseProbe),
        kind if kind == Kind::LeaseProbeAck as u8 => postcard::from_bytes(body)
            .map(Datagram::LeaseProbeAck)
            .map_err(WireError::MalformedLeaseProbe),
        other => Err(WireError::UnknownKind(other)),
    }
}

/// Frames a foca packet for sending.
pub fn encode_foca(packet: &[u8]) -> Vec<u8> {
    let mut datagram = Vec::with_capacity(HEADER_LEN + packet.len());
    datagram.extend_from_slice(&[MAGIC, Kind::Foca as u8]);
    datagram.extend_from_slice(packet);
    datagram
}

/// Builds an identity request, zero-padded to [`IDENTITY_REQUEST_LEN`] bytes.
pub fn encode_identity_request() -> Vec<u8> {
    let mut datagram = vec![0; IDENTITY_REQUEST_LEN];
    datagram[..HEADER_LEN].copy_from_slice(&[MAGIC, Kind::IdentityRequest as u8]);
    datagram
}

/// Builds an identity reply carrying `id`.
pub fn encode_identity_reply(id: &NodeId) -> Result<Vec<u8>, postcard::Error> {
    let header = vec![MAGIC, Kind::IdentityReply as u8];
    postcard::to_extend(id, header)
}

/// Builds a member-list request, padded to [`MAX_FRAME_LEN`] bytes.
pub fn encode_members_request(request: &MembersRequest) -> Result<Vec<u8>, MemberListError> {
    Ok(frame(Kind::MembersRequest, &request.encode()?))
}

/// Builds a member-list page.
pub fn encode_members_page(page: &MembersPage) -> Result<Vec<u8>, MemberListError> {
    Ok(frame(Kind::MembersPage, &page.encode()?))
}

/// Builds a lease probe, zero-padded to at least [`LEASE_PROBE_LEN`] bytes.
pub fn encode_lease_probe(probe: &LeaseProbe) -> Result<Vec<u8>, postcard::Error> {
    let header = vec![MAGIC, Kind::LeaseProbe as u8];
    let mut datagram = postcard::to_extend(probe, header)?;
    if datagram.len() < LEASE_PROBE_LEN {
        datagram.resize(LEASE_PROBE_LEN, 0);
    }
    Ok(datagram)
}

/// Builds the ack of a lease probe, at most `max_len` bytes long: it drops the oldest
/// declared-down members that do not fit. Returns `None` if even the ack without them is
/// longer.
pub fn encode_lease_probe_ack(
    mut ack: LeaseProbeAck,
    max_len: usize,
) -> Result<Option<Vec<u8>>, postcard::Error> {
    let header = [MAGIC, Kind::LeaseProbeAck as u8];
    let mut datagram = postcard::to_extend(&ack, header.to_vec())?;
    if datagram.len() > max_len {
        // Each entry's own length, plus two bytes for the longer count in front of the list.
        let declared_down = std::mem::take(&mut ack.declared_down);
        let mut len = postcard::to_extend(&ack, header.to_vec())?.len() + 2;
        for peer in declared_down {
            len += postcard::to_allocvec(&peer)?.len();
            if len > max_len {
                break;
            }
            ack.declared_down.push(peer);
        }
        datagram = postcard::to_extend(&ack, header.to_vec())?;
    }
    Ok((datagram.len() <= max_len).then_some(datagram))
}

fn frame(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut datagram = Vec::with_capacity(HEADER_LEN + body.len());
    datagram.extend_from_slice(&[MAGIC, kind as u8]);
    datagram.extend_from_slice(body);
    datagram
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::membership::{NodeIdFields, NodeName};

    fn node() -> NodeId {
        NodeId::new(NodeIdFields {
            name: "a".repeat(63).into(),
            boot_id: u64::MAX,
            bump: u32::MAX,
            ip: IpAddr::from([0xfe80, 0, 0, 0, 0, 0, 0, 1]),
            gossip_port: u16::MAX,
            cluster_port: u16::MAX,
            grpc_port: u16::MAX,
        })
    }

    #[test]
    fn framing_round_trips() {
        let reply = encode_identity_reply(&node()).expect("identity encodes");

        assert_eq!(
            decode(&encode_foca(b"packet")).ok(),
            Some(Datagram::Foca(b"packet"))
        );
        assert_eq!(
            decode(&encode_identity_request()).ok(),
            Some(Datagram::IdentityRequest {
                len: IDENTITY_REQUEST_LEN
            })
        );
        assert_eq!(decode(&reply).ok(), Some(Datagram::IdentityReply(node())));
    }

    fn declared_down(count: usize) -> Vec<DeclaredDown> {
        (0..count)
            .map(|index| DeclaredDown {
                name: NodeName::new(&format!("{index:063}")),
                age_ms: index as u64,
            })
            .collect()
    }

    #[test]
    fn lease_probe_and_ack_round_trip() {
        let probe = LeaseProbe {
            from: node(),
            sweep: u64::MAX,
        };
        let ack = LeaseProbeAck {
            from: node(),
            sweep: 7,
            declared_down: declared_down(2),
        };
        let probe_datagram = encode_lease_probe(&probe).expect("probe encodes");
        let ack_datagram = encode_lease_probe_ack(ack.clone(), LEASE_PROBE_LEN)
            .expect("ack encodes")
            .expect("ack fits");

        assert_eq!(probe_datagram.len(), LEASE_PROBE_LEN, "padded");
        assert_eq!(
            decode(&probe_datagram).ok(),
            Some(Datagram::LeaseProbe {
                probe,
                len: LEASE_PROBE_LEN
            })
        );
        assert_eq!(
            decode(&ack_datagram).ok(),
            Some(Datagram::LeaseProbeAck(ack))
        );
    }

    #[test]
    fn lease_probe_ack_drops_oldest_members_to_fit() {
        let ack = LeaseProbeAck {
            from: node(),
            sweep: u64::MAX,
            declared_down: declared_down(100),
        };
        let datagram = encode_lease_probe_ack(ack, LEASE_PROBE_LEN)
            .expect("ack encodes")
            .expect("ack fits");

        assert!(
            datagram.len() <= LEASE_PROBE_LEN,
            "{} bytes",
            datagram.len()
        );
        let Ok(Datagram::LeaseProbeAck(decoded)) = decode(&datagram) else {
            panic!("ack decodes");
        };
        assert!(
            decoded.declared_down.len() >= 4,
            "{:?}",
            decoded.declared_down
        );
        assert_eq!(
            decoded.declared_down,
            declared_down(decoded.declared_down.len()),
            "the newest verdicts are kept"
        );
        let none_fit = LeaseProbeAck {
            from: node(),
            sweep: 1,
            declared_down: Vec::new(),
        };
        assert_eq!(encode_lease_probe_ack(none_fit, 20).ok(), Some(None));
    }

    #[test]
    fn largest_identity_reply_fits_in_request() {
        let reply = encode_identity_reply(&node()).expect("identity encodes");

        assert!(
            reply.len() <= IDENTITY_REQUEST_LEN,
            "reply is {} bytes",
            reply.len()
        );
    }

    /// Pins the foca 2.0 behaviour that the identity exchange works around.
    #[test]
    fn foca_answers_announce_only_to_its_name() {
        use foca::{AccumulatingRuntime, Config, Foca, PostcardCodec};
        use rand::SeedableRng;
        use rand::rngs::StdRng;

        let member = |name: &str, port| {
            NodeId::new(NodeIdFields {
                name: name.into(),
                gossip_port: port,
                ..(*node()).clone()
            })
        };
        let seed_id = member("seed", 1);
        let new_foca = |id: NodeId| {
            let rng = StdRng::seed_from_u64(u64::from(id.gossip_port));
            Foca::new(id, Config::simple(), rng, PostcardCodec)
        };
        let mut joiner = new_foca(member("joiner", 2));
        let mut seed = new_foca(seed_id.clone());
        let cases = [
            (member("", 1), false),
            (member("other", 1), false),
            (member("seed", 9), true),
            (seed_id, true),
        ];

        for (destination, answered) in cases {
            let mut runtime = AccumulatingRuntime::new();
            joiner
                .announce(destination.clone(), &mut runtime)
                .expect("announce is sent");
            let (_, announce) = runtime.to_send().expect("one datagram");
            let mut seed_runtime = AccumulatingRuntime::new();
            seed.handle_data(&announce, &mut seed_runtime)
                .expect("announce decodes");
            let feed = seed_runtime.to_send();
            assert_eq!(feed.is_some(), answered, "announce to {destination}");
        }
    }

    #[test]
    fn invalid_framing_is_rejected() {
        let cases: [(&[u8], &str); 4] = [
            (&[], "TooShort"),
            (&[MAGIC], "TooShort"),
            (&[0x00, 1, 2], "BadMagic"),
            (&[MAGIC, 9], "UnknownKind"),
        ];

        for (datagram, expected) in cases {
            let error = decode(datagram).expect_err("invalid framing");
            assert!(
                format!("{error:?}").starts_with(expected),
                "{datagram:?}: {error:?}"
            );
        }
        let truncated = &encode_identity_reply(&node()).expect("identity encodes")[..10];
        assert!(matches!(
            decode(truncated),
            Err(WireError::MalformedIdentity(_))
        ));
        let probe = LeaseProbe {
            from: node(),
            sweep: 1,
        };
        let truncated = &encode_lease_probe(&probe).expect("probe encodes")[..10];
        assert!(matches!(
            decode(truncated),
            Err(WireError::MalformedLeaseProbe(_))
        ));
    }
}
