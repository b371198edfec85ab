//! Reads foca packet headers for the membership lease: which packets ask a peer for a reply,
//! which packets are such replies, and which report a suspicion of this node.
//!
//! foca 2.0.0 lays a packet out as its header, then, unless the message is `Broadcast` or
//! nothing follows, a big-endian `u16` count of member updates and the updates themselves,
//! then custom broadcasts (`Foca::handle_data`). The tests pin that layout against real foca
//! instances, so that an upgrade that changes it shows up.

use foca::{Codec, Header, Message, PostcardCodec, ProbeNumber, State};

use super::NodeId;

/// Kind of a request that a peer replies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum RequestKind {
    /// A direct probe (`Ping`), whose reply is `Ack`.
    Probe,
    /// A request to probe a member on this node's behalf (`PingReq`), whose reply is
    /// `ForwardedAck` once the member replied to the peer.
    IndirectRequest,
    /// A probe on another member's behalf (`IndirectPing`), whose reply is `IndirectAck`.
    IndirectProbe,
    /// A join request (`Announce`), whose reply is `Feed`.
    Announce,
}

/// One request that this node sent and a peer replies to: the peer, the kind and the probe
/// number (zero for `Announce`, which has none).
pub(super) type RequestKey = (NodeId, RequestKind, ProbeNumber);

/// Meaning of a received packet for the lease.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LeaseInput {
    /// The request this packet replies to, if it is a reply addressed to this node.
    pub(super) reply_to: Option<RequestKey>,
    /// Whether the packet reports this node as suspected at an incarnation at least as high
    /// as the one this node last sent.
    pub(super) suspects_local: bool,
}

/// Returns the request in `packet`, an outgoing foca packet, if it requests a reply.
pub(super) fn request_sent(packet: &[u8]) -> Option<RequestKey> {
    let header: Header<NodeId> = PostcardCodec.decode_header(packet).ok()?;
    let (kind, probe) = match header.message {
        Message::Ping(probe) => (RequestKind::Probe, probe),
        Message::PingReq { probe_number, .. } => (RequestKind::IndirectRequest, probe_number),
        Message::IndirectPing { probe_number, .. } => (RequestKind::IndirectProbe, probe_number),
        Message::Announce => (RequestKind::Announce, 0),
        _ => return None,
    };
    Some((header.dst, kind, probe))
}

/// Returns the incarnation that an outgoing foca packet carries for this node.
pub(super) fn sender_incarnation(packet: &[u8]) -> Option<foca::Incarnation> {
    let header: Header<NodeId> = PostcardCodec.decode_header(packet).ok()?;
    Some(header.src_incarnation)
}

/// Reads a received foca packet for `local`, the node's identity, whose last sent packet
/// carried `incarnation`. A packet that does not decode means nothing for the lease; foca
/// rejects it too.
pub(super) fn read_received(
    packet: &[u8],
    local: &NodeId,
    incarnation: foca::Incarnation,
) -> LeaseInput {
    let mut received = LeaseInput::default();
    let mut rest = packet;
    let Ok(header) = PostcardCodec.decode_header(&mut rest) else {
        return received;
    };
    let Header::<NodeId> {
        src, dst, message, ..
    } = header;
    if dst == *local {
        received.reply_to = match message {
            Message::Ack(probe) => Some((src, RequestKind::Probe, probe)),
            Message::ForwardedAck { probe_number, .. } => {
                Some((src, RequestKind::IndirectRequest, probe_number))
            }
            Message::IndirectAck { probe_number, .. } => {
                Some((src, RequestKind::IndirectProbe, probe_number))
            }
            Message::Feed => Some((src, RequestKind::Announce, 0)),
            _ => None,
        };
    }
    if message == Message::Broadcast || rest.len() < 2 {
        return received;
    }
    let count = u16::from_be_bytes([rest[0], rest[1]]);
    rest = &rest[2..];
    for _ in 0..count {
        let decoded: Result<foca::Member<NodeId>, _> = PostcardCodec.decode_member(&mut rest);
        let Ok(member) = decoded else {
            break;
        };
        if member.id() == local
            && member.state() == State::Suspect
            && member.incarnation() >= incarnation
        {
            received.suspects_local = true;
        }
    }
    received
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::num::NonZeroU32;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use foca::{AccumulatingRuntime, Foca, Member, Timer};
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use tokio::sync::mpsc;

    use super::*;
    use crate::membership::MetaHandler;
    use crate::membership::NodeIdFields;
    use crate::membership::agent::MembershipFoca;

    fn id(name: &str) -> NodeId {
        NodeId::new(NodeIdFields {
            name: name.into(),
            boot_id: 7,
            bump: 0,
            ip: IpAddr::from([127, 0, 0, 1]),
            gossip_port: name.len() as u16,
            cluster_port: 2,
            grpc_port: 3,
        })
    }

    fn foca(identity: NodeId) -> MembershipFoca {
        let (accepted, _) = mpsc::unbounded_channel();
        let handler = MetaHandler::new(accepted, Arc::new(AtomicU64::new(0)));
        let mut config = foca::Config::new_lan(NonZeroU32::new(3).expect("3"));
        config.probe_period = Duration::from_millis(500);
        config.probe_rtt = Duration::from_millis(200);
        Foca::with_custom_broadcast(
            identity,
            config,
            StdRng::seed_from_u64(1),
            PostcardCodec,
            handler,
        )
    }

    /// Returns the packets `runtime` holds for `to`, and drops the rest.
    fn sent_to(runtime: &mut AccumulatingRuntime<NodeId>, to: &NodeId) -> Vec<Vec<u8>> {
        let mut packets = Vec::new();
        while let Some((destination, packet)) = runtime.to_send() {
            if destination == *to {
                packets.push(packet.to_vec());
            }
        }
        packets
    }

    #[test]
    fn announce_and_feed_pair_up() {
        let (a, b) = (id("node-a"), id("node-bb"));
        let (mut foca_a, mut foca_b) = (foca(a.clone()), foca(b.clone()));
        let mut runtime = AccumulatingRuntime::new();
        foca_a.announce(b.clone(), &mut runtime).expect("announce");
        let announce = sent_to(&mut runtime, &b).pop().expect("announce packet");
        let request = request_sent(&announce).expect("announce asks for a reply");
        assert_eq!(request, (b.clone(), RequestKind::Announce, 0));

        foca_b
            .handle_data(&announce, &mut runtime)
            .expect("b reads it");
        let feed = sent_to(&mut runtime, &a).pop().expect("feed packet");
        let received = read_received(&feed, &a, 0);
        assert_eq!(received.reply_to, Some(request));
        assert!(!received.suspects_local);
    }

    #[test]
    fn ping_and_ack_pair_up() {
        let (a, b) = (id("node-a"), id("node-bb"));
        let (mut foca_a, mut foca_b) = (foca(a.clone()), foca(b.clone()));
        let (mut runtime_a, mut runtime_b) =
            (AccumulatingRuntime::new(), AccumulatingRuntime::new());
        foca_a
            .apply_many(
                [Member::alive(b.clone())].into_iter(),
                false,
                &mut runtime_a,
            )
            .expect("a knows b");
        foca_b
            .apply_many(
                [Member::alive(a.clone())].into_iter(),
                false,
                &mut runtime_b,
            )
            .expect("b knows a");
        let mut probe_timer = None;
        while let Some((_, timer)) = runtime_a.to_schedule() {
            if matches!(timer, Timer::ProbeRandomMember(_)) {
                probe_timer = Some(timer);
            }
        }
        let probe_timer = probe_timer.expect("a connected foca schedules a probe");
        let _ = sent_to(&mut runtime_a, &b);
        foca_a
            .handle_timer(probe_timer, &mut runtime_a)
            .expect("probe");
        let ping = sent_to(&mut runtime_a, &b)
            .into_iter()
            .find(|packet| request_sent(packet).is_some())
            .expect("ping packet");
        let request = request_sent(&ping).expect("ping asks for a reply");
        assert_eq!(request.0, b);
        assert_eq!(request.1, RequestKind::Probe);

        foca_b
            .handle_data(&ping, &mut runtime_b)
            .expect("b reads it");
        let ack = sent_to(&mut runtime_b, &a).pop().expect("ack packet");
        assert_eq!(read_received(&ack, &a, 0).reply_to, Some(request));
        assert_eq!(
            read_received(&ack, &b, 0).reply_to,
            None,
            "a reply for another node"
        );
    }

    #[test]
    fn gossiped_suspicion_of_local_is_seen() {
        let (a, b, c) = (id("node-a"), id("node-bb"), id("node-ccc"));
        let mut foca_b = foca(b.clone());
        let mut runtime = AccumulatingRuntime::new();
        let members = [
            Member::alive(c.clone()),
            Member::new(a.clone(), 0, State::Suspect),
        ];
        foca_b
            .apply_many(members.into_iter(), true, &mut runtime)
            .expect("b suspects a");
        let _ = sent_to(&mut runtime, &c);
        foca_b.gossip(&mut runtime).expect("gossip");
        let mut packets = sent_to(&mut runtime, &c);
        packets.extend(sent_to(&mut runtime, &a));
        assert!(!packets.is_empty(), "b gossiped");

        let seen_by_a = packets
            .iter()
            .any(|packet| read_received(packet, &a, 0).suspects_local);
        assert!(seen_by_a, "the gossip carries the suspicion of a");
        let stale = packets
            .iter()
            .any(|packet| read_received(packet, &a, 1).suspects_local);
        assert!(
            !stale,
            "a suspicion of an incarnation that a refuted is stale"
        );
        let about_c = packets
            .iter()
            .any(|packet| read_received(packet, &c, 0).suspects_local);
        assert!(!about_c, "c is alive");
    }

    #[test]
    fn garbage_means_nothing() {
        let a = id("node-a");
        assert_eq!(read_received(&[1, 2, 3], &a, 0), LeaseInput::default());
        assert_eq!(request_sent(&[]), None);
    }
}
