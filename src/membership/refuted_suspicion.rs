//! Recognizes foca suspicion timers whose suspicion the member already refuted.
//!
//! foca 2.0.0 handles `Timer::ChangeSuspectToDown` by declaring the member down only while it
//! is still at the suspected incarnation. It sends the member a courtesy `TurnUndead` message
//! whenever the member is known, though, also when the member has since refuted the suspicion
//! by raising its incarnation (`Foca::handle_timer`, which ignores the `apply_successful` flag
//! of `Members::apply_existing_if`). The refuting member then believes the cluster declared it
//! down, renews its identity, and the node stops. A single lost probe ack starts this, so
//! without the guard random packet loss or a pause of under a second stops live nodes.
//!
//! The agent drops such a timer instead of handing it to foca. That changes nothing else,
//! because foca would not have applied the down state anyway.

use foca::{Member, Timer};

/// Returns whether `timer` is a suspect-to-down timer for a member that `members` lists at
/// another incarnation than the suspected one, so foca must not see it.
///
/// The timer stays when the member is no longer listed or is still at the suspected
/// incarnation, and foca then declares the member down as usual.
pub fn is_refuted_suspicion<'a, T: PartialEq + 'a>(
    timer: &Timer<T>,
    members: impl IntoIterator<Item = &'a Member<T>>,
) -> bool {
    let Timer::ChangeSuspectToDown {
        member_id,
        incarnation,
        ..
    } = timer
    else {
        return false;
    };
    members
        .into_iter()
        .find(|member| member.id() == member_id)
        .is_some_and(|member| member.incarnation() != *incarnation)
}

#[cfg(test)]
mod tests {
    use foca::{Incarnation, State};

    use super::*;

    fn suspect_timer(member_id: &'static str, incarnation: Incarnation) -> Timer<&'static str> {
        Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            token: 0,
        }
    }

    #[test]
    fn refuted_suspicion_is_recognized() {
        let members = [Member::new("b", 1, State::Alive)];
        assert!(is_refuted_suspicion(&suspect_timer("b", 0), &members));
    }

    #[test]
    fn unrefuted_suspicion_is_kept() {
        let members = [Member::new("b", 0, State::Suspect)];
        assert!(!is_refuted_suspicion(&suspect_timer("b", 0), &members));
    }

    #[test]
    fn unknown_member_keeps_timer() {
        let members = [Member::new("a", 3, State::Alive)];
        assert!(!is_refuted_suspicion(&suspect_timer("b", 0), &members));
    }

    #[test]
    fn other_timers_are_kept() {
        let members = [Member::new("b", 1, State::Alive)];
        assert!(!is_refuted_suspicion(
            &Timer::ProbeRandomMember(0),
            &members
        ));
    }
}
