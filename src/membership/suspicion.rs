//! Gate for foca's suspicion timers: a suspicion that the member refuted never reaches foca.
//!
//! When a probe fails, foca marks the member `Suspect` at its current incarnation and schedules
//! `Timer::ChangeSuspectToDown` for that incarnation. When the timer fires, foca 2.0.0 declares
//! the member down only if its incarnation is still the suspected one, which is right. But with
//! `notify_down_members` on, it sends the member `TurnUndead` whenever the member is still
//! listed, whether or not the down state applied. A member that refuted the suspicion by
//! raising its incarnation therefore receives `TurnUndead` a suspicion timeout later, takes it
//! as proof that the cluster declared it down, and renews its identity, and our node treats
//! that as being declared down. So the agent passes this timer to foca only if the member has
//! not refuted the suspicion. Every other timer goes to foca unchanged.

use foca::{AccumulatingRuntime, Incarnation, Member, State, Timer};
use tracing::debug;

use super::NodeId;
use super::agent::MembershipFoca;

/// Returns whether a `ChangeSuspectToDown` timer for `member_id` at `incarnation` is stale,
/// given foca's `members` (`Foca::iter_membership_state`).
///
/// It is stale when the member is active at another incarnation (it refuted the suspicion),
/// or when no member has this identity any more (a newer identity of the same name replaced
/// it). The timer of a member that is down, at any incarnation, is not stale, so foca still
/// sends that member `TurnUndead`.
pub(crate) fn is_refuted<'a>(
    member_id: &NodeId,
    incarnation: Incarnation,
    mut members: impl Iterator<Item = &'a Member<NodeId>>,
) -> bool {
    match members.find(|member| member.id() == member_id) {
        None => true,
        Some(member) => member.state() != State::Down && member.incarnation() != incarnation,
    }
}

/// Hands `timer` to `foca`, except a suspicion timer whose suspicion was refuted, which is
/// dropped. Returns whether foca got the timer.
pub(crate) fn handle_timer(
    foca: &mut MembershipFoca,
    timer: Timer<NodeId>,
    runtime: &mut AccumulatingRuntime<NodeId>,
) -> Result<bool, foca::Error> {
    if let Timer::ChangeSuspectToDown {
        member_id,
        incarnation,
        ..
    } = &timer
        && is_refuted(member_id, *incarnation, foca.iter_membership_state())
    {
        let known = foca
            .iter_membership_state()
            .find(|member| member.id().name == member_id.name)
            .map(|member| {
                (
                    member.id().to_string(),
                    member.incarnation(),
                    member.state(),
                )
            });
        debug!(
            member = %member_id,
            suspected_incarnation = incarnation,
            ?known,
            "dropped the suspicion timer of a member that refuted the suspicion"
        );
        return Ok(false);
    }
    foca.handle_timer(timer, runtime)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use foca::{Codec, Foca, Message, OwnedNotification, PostcardCodec};
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use tokio::sync::mpsc;

    use super::*;
    use crate::membership::MetaHandler;
    use crate::membership::NodeIdFields;

    fn id(name: &str, bump: u32) -> NodeId {
        NodeId::new(NodeIdFields {
            name: name.into(),
            boot_id: 7,
            bump,
            ip: IpAddr::from([127, 0, 0, 1]),
            gossip_port: 1,
            cluster_port: 2,
            grpc_port: 3,
        })
    }

    /// A foca instance with the agent's configuration and broadcast handler, and its runtime.
    struct Node {
        foca: MembershipFoca,
        runtime: AccumulatingRuntime<NodeId>,
        /// Timers scheduled and not yet fired, in scheduling order.
        pending: Vec<Timer<NodeId>>,
    }

    impl Node {
        fn new(identity: NodeId, seed: u64) -> Self {
            let (accepted, _) = mpsc::unbounded_channel();
            let handler = MetaHandler::new(accepted, Arc::new(AtomicU64::new(0)));
            let mut config = foca::Config::new_lan(std::num::NonZeroU32::new(3).expect("3"));
            config.probe_period = Duration::from_millis(500);
            config.probe_rtt = Duration::from_millis(200);
            config.suspect_to_down_after = Duration::from_secs(3);
            assert!(config.notify_down_members, "the agent's preset notifies");
            let foca = Foca::with_custom_broadcast(
                identity,
                config,
                StdRng::seed_from_u64(seed),
                PostcardCodec,
                handler,
            );
            Self {
                foca,
                runtime: AccumulatingRuntime::new(),
                pending: Vec::new(),
            }
        }

        /// Removes and returns the first timer scheduled so far that `matches`.
        fn take_timer(&mut self, matches: impl Fn(&Timer<NodeId>) -> bool) -> Timer<NodeId> {
            while let Some((_, timer)) = self.runtime.to_schedule() {
                self.pending.push(timer);
            }
            let index = self
                .pending
                .iter()
                .position(matches)
                .expect("the timer was scheduled");
            self.pending.remove(index)
        }

        /// Hands foca the first timer scheduled so far that `matches`.
        fn fire(&mut self, matches: impl Fn(&Timer<NodeId>) -> bool) {
            let timer = self.take_timer(matches);
            self.foca
                .handle_timer(timer, &mut self.runtime)
                .expect("timer handled");
        }

        /// Returns the kinds of the datagrams this node sent and removes them from its runtime.
        fn sent_messages(&mut self) -> Vec<Message<NodeId>> {
            let mut messages = Vec::new();
            while let Some((_, data)) = self.runtime.to_send() {
                let header = PostcardCodec
                    .decode_header(&data[..])
                    .expect("foca decodes its own header");
                messages.push(header.message);
            }
            messages
        }

        fn notifications(&mut self) -> Vec<OwnedNotification<NodeId>> {
            std::iter::from_fn(|| self.runtime.to_notify()).collect()
        }
    }

    /// Delivers every datagram `from` sent to `to`; returns their message kinds.
    fn deliver(from: &mut Node, to: &mut Node) -> Vec<Message<NodeId>> {
        let mut messages = Vec::new();
        while let Some((destination, data)) = from.runtime.to_send() {
            assert_eq!(&destination, to.foca.identity(), "two-node test");
            let header = PostcardCodec
                .decode_header(&data[..])
                .expect("foca decodes its own header");
            messages.push(header.message);
            // Errors such as an unexpected ack are normal noise, as in the agent.
            let _ = to.foca.handle_data(&data, &mut to.runtime);
        }
        messages
    }

    /// Returns two connected nodes, `a` having just suspected `b` after a probe `b` missed,
    /// and `a`'s suspicion timer for `b`.
    fn a_suspects_b() -> (Node, Node, Timer<NodeId>) {
        let (a_id, b_id) = (id("a", 0), id("b", 0));
        let mut a = Node::new(a_id.clone(), 1);
        let mut b = Node::new(b_id.clone(), 2);
        a.foca
            .apply_many(
                [Member::alive(b_id.clone())].into_iter(),
                true,
                &mut a.runtime,
            )
            .expect("a learns b");
        b.foca
            .apply_many([Member::alive(a_id)].into_iter(), true, &mut b.runtime)
            .expect("b learns a");
        b.notifications();

        // `b` is paused: it misses a's ping, and with no third member there is no indirect probe.
        a.fire(|timer| matches!(timer, Timer::ProbeRandomMember(_)));
        a.fire(|timer| matches!(timer, Timer::SendIndirectProbe { .. }));
        a.sent_messages();
        a.fire(|timer| matches!(timer, Timer::ProbeRandomMember(_)));
        let suspicion = a.take_timer(|timer| {
            matches!(timer, Timer::ChangeSuspectToDown { member_id, incarnation: 0, .. } if *member_id == b_id)
        });
        let state = a.foca.iter_membership_state().find(|m| *m.id() == b_id);
        assert_eq!(state.map(Member::state), Some(State::Suspect));
        (a, b, suspicion)
    }

    #[test]
    fn refuted_suspicion_timer_is_dropped() {
        let (mut a, mut b, suspicion) = a_suspects_b();

        // `b` resumes, reads a's next ping with the suspicion, refutes, and a learns it.
        deliver(&mut a, &mut b);
        deliver(&mut b, &mut a);
        let b_id = id("b", 0);
        let state = a.foca.iter_membership_state().find(|m| *m.id() == b_id);
        assert_eq!(
            state.map(|m| (m.state(), m.incarnation())),
            Some((State::Alive, 1)),
            "b refuted at incarnation 1"
        );
        a.notifications();

        let delivered =
            handle_timer(&mut a.foca, suspicion, &mut a.runtime).expect("timer handled");

        assert!(!delivered, "the gate drops the refuted suspicion");
        assert!(a.sent_messages().is_empty(), "a sends nothing");
        assert!(a.notifications().is_empty(), "a reports no change");
        assert_eq!(a.foca.num_members(), 1, "b stays a member");
    }

    /// Pins the foca 2.0.0 behaviour that the gate works around: without it, the refuted
    /// suspicion makes `b` renew its identity. When this fails after a foca upgrade, the gate
    /// may be unnecessary.
    #[test]
    fn foca_turns_refuted_member_undead() {
        let (mut a, mut b, suspicion) = a_suspects_b();
        deliver(&mut a, &mut b);
        deliver(&mut b, &mut a);
        b.notifications();

        a.foca
            .handle_timer(suspicion, &mut a.runtime)
            .expect("timer handled");
        let sent = deliver(&mut a, &mut b);

        assert_eq!(sent, vec![Message::TurnUndead], "a tells b it is down");
        assert_eq!(
            b.notifications(),
            vec![OwnedNotification::Rejoin(id("b", 1))],
            "b renews its identity"
        );
    }

    #[test]
    fn standing_suspicion_declares_member_down() {
        let (mut a, mut b, suspicion) = a_suspects_b();
        a.sent_messages();
        a.notifications();

        let delivered =
            handle_timer(&mut a.foca, suspicion, &mut a.runtime).expect("timer handled");

        assert!(
            delivered,
            "the gate passes a suspicion that was not refuted"
        );
        assert_eq!(
            a.notifications(),
            vec![
                OwnedNotification::MemberDown(id("b", 0)),
                OwnedNotification::Idle
            ],
        );
        let sent = deliver(&mut a, &mut b);
        assert!(sent.contains(&Message::TurnUndead), "a tells b: {sent:?}");
    }

    #[test]
    fn refuted_predicate_cases() {
        let b = id("b", 0);
        let cases = [
            (
                vec![Member::new(b.clone(), 0, State::Suspect)],
                false,
                "suspect",
            ),
            (
                vec![Member::new(b.clone(), 0, State::Alive)],
                false,
                "alive, same",
            ),
            (
                vec![Member::new(b.clone(), 1, State::Alive)],
                true,
                "refuted",
            ),
            (
                vec![Member::new(b.clone(), 2, State::Suspect)],
                true,
                "suspected again",
            ),
            (vec![Member::new(b.clone(), 0, State::Down)], false, "down"),
            (
                vec![Member::new(b.clone(), 3, State::Down)],
                false,
                "down later",
            ),
            (
                vec![Member::new(id("b", 1), 0, State::Alive)],
                true,
                "renewed",
            ),
            (
                vec![Member::new(id("c", 0), 0, State::Alive)],
                true,
                "unknown",
            ),
        ];

        for (members, expected, case) in cases {
            assert_eq!(is_refuted(&b, 0, members.iter()), expected, "{case}");
        }
    }
}
