//! The rule that keeps nodes with different databases out of one cluster.
//!
//! A node reports the id of its database (its store id) in its gossiped meta. Grain state
//! written by a node is readable only by nodes that use the same database, so a cluster
//! whose nodes use different databases silently loses acknowledged writes when a grain moves
//! between them. The rule has two halves:
//! 1. A node does not become Active while any Active or Draining member reports a different
//!    store id: [`check_before_active`] returns the mismatch, and the node leaves and exits.
//! 2. A node ignores members that report a different store id, for which [`shares_store`]
//!    is false. It leaves them out of its member list, so it places no grains on them, routes
//!    no calls to them and does not list them to clients.
//!
//! A member that reports no store id counts as sharing the store. That is a member whose
//! first broadcast has not arrived yet (it is `Joining`, so nothing is placed on it), or a
//! member that runs a release from before store ids, which cannot be checked.

use super::{MemberInfo, NodeState};
use crate::storage::StoreId;

/// Returns whether `member` may take part in this node's cluster: it reports `local`'s store
/// id, or no store id at all.
pub fn shares_store(local: StoreId, member: &MemberInfo) -> bool {
    member.store_id.is_none_or(|store_id| store_id == local)
}

/// Checks, before this node becomes Active, that no Active or Draining member uses another
/// database. Returns the first such member, in the order of `members`.
///
/// Joining, Leaving and Dead members are skipped because they host no grains. A Joining
/// member runs this check itself before it becomes Active.
pub fn check_before_active<'a>(
    local: StoreId,
    members: impl IntoIterator<Item = &'a MemberInfo>,
) -> Result<(), StoreMismatch> {
    let serving =
        |member: &&MemberInfo| matches!(member.state, NodeState::Active | NodeState::Draining);
    let mismatch = members
        .into_iter()
        .filter(serving)
        .find(|member| !shares_store(local, member));
    match mismatch {
        None => Ok(()),
        Some(member) => Err(StoreMismatch {
            local_store_id: local,
            member: member.id.name.as_str().to_owned(),
            member_state: member.state,
            member_store_id: member.store_id.unwrap_or(local),
        }),
    }
}

/// An Active or Draining member that uses a different database than this node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "this node's database has store id {local_store_id}, but {member_state} member \
     {member:?} uses a database with store id {member_store_id}; every node of a cluster must \
     use the same database, so set --sqlite-path or --postgres-url (storage.sqlite_path or \
     storage.postgres_url in the config file) to the database of {member:?}, or start this \
     node without --seed to form a separate cluster"
)]
pub struct StoreMismatch {
    /// Store id of this node's database.
    pub local_store_id: StoreId,
    /// Name of the member that uses another database.
    pub member: String,
    /// Lifecycle state of that member.
    pub member_state: NodeState,
    /// Store id that the member reports.
    pub member_store_id: StoreId,
}

/// Members for tests of code that compares store ids.
#[cfg(test)]
pub(crate) mod test_members {
    use crate::membership::{MemberInfo, NodeId, NodeIdFields, NodeLoad, NodeState};
    use crate::storage::StoreId;

    /// Returns a member named `name` in `state` whose first broadcast reported `store_id`.
    pub(crate) fn member(name: &str, state: NodeState, store_id: Option<StoreId>) -> MemberInfo {
        MemberInfo {
            id: NodeId::new(NodeIdFields {
                name: name.into(),
                boot_id: 1,
                bump: 0,
                ip: [127, 0, 0, 1].into(),
                gossip_port: 1,
                cluster_port: 2,
                grpc_port: 3,
            }),
            state,
            load: NodeLoad::default(),
            meta_version: 1,
            started_at_unix_ms: Some(0),
            store_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_members::member;
    use super::*;

    const OURS: StoreId = StoreId(1);
    const THEIRS: StoreId = StoreId(2);

    #[test]
    fn shares_store_by_reported_id() {
        let cases = [(Some(OURS), true), (Some(THEIRS), false), (None, true)];

        for (store_id, expected) in cases {
            let member = member("a", NodeState::Active, store_id);
            assert_eq!(shares_store(OURS, &member), expected, "{store_id:?}");
        }
    }

    #[test]
    fn serving_member_with_other_store_blocks_active() {
        for state in [NodeState::Active, NodeState::Draining] {
            let members = [
                member("a", NodeState::Active, Some(OURS)),
                member("b", state, Some(THEIRS)),
            ];

            let error = check_before_active(OURS, &members).unwrap_err();

            assert_eq!(
                error,
                StoreMismatch {
                    local_store_id: OURS,
                    member: "b".to_owned(),
                    member_state: state,
                    member_store_id: THEIRS,
                }
            );
        }
    }

    #[test]
    fn idle_member_with_other_store_is_skipped() {
        for state in [NodeState::Joining, NodeState::Leaving, NodeState::Dead] {
            let members = [member("b", state, Some(THEIRS))];

            assert_eq!(check_before_active(OURS, &members), Ok(()), "{state}");
        }
    }

    #[test]
    fn members_without_store_id_allow_active() {
        let members = [
            member("a", NodeState::Active, None),
            member("b", NodeState::Draining, Some(OURS)),
        ];

        assert_eq!(check_before_active(OURS, &members), Ok(()));
        assert_eq!(check_before_active(OURS, &[]), Ok(()));
    }

    #[test]
    fn mismatch_message_names_both_ids_member_and_fix() {
        let members = [member("node-0", NodeState::Active, Some(THEIRS))];

        let message = check_before_active(OURS, &members).unwrap_err().to_string();

        for expected in [
            OURS.to_string().as_str(),
            THEIRS.to_string().as_str(),
            "\"node-0\"",
            "ACTIVE",
            "every node of a cluster must use the same database",
            "--sqlite-path or --postgres-url",
        ] {
            assert!(
                message.contains(expected),
                "{expected:?} missing in {message}"
            );
        }
    }
}
