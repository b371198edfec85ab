//! SWIM membership through foca: node identity, lifecycle state, load gossip and events.

mod agent;
mod broadcast;
mod dissemination;
mod gossip_auth;
mod handle;
mod identity;
mod interner;
mod lease;
mod lease_input;
mod lease_tracker;
mod lifecycle;
mod member_list;
mod node_name;
mod quorum_sweep;
mod reachability;
mod shared_meta;
mod store_check;
mod suspicion;
mod unreachable_votes;
mod view;
mod wire;

pub use agent::{MembershipAgent, foca_config};
pub use broadcast::{MalformedMeta, MetaBroadcast, MetaHandler, MetaKey, SeenMeta};
pub use dissemination::{
    MEMBER_LIST_ENTRIES_PER_SECOND, META_ITEMS_PER_SECOND, MetaJitter, TransmissionTuner,
    max_transmissions, member_list_period, meta_period,
};
pub use gossip_auth::{AuthError, GossipKey, TAG_LEN};
pub use handle::{MembershipError, MembershipHandle};
pub use identity::{Incarnation, NodeId, NodeIdFields, boot_id_at};
pub use lease::{LeaseStatus, MembershipLease, is_minority, lease_duration};
pub use lease_input::LeaseInput;
pub use lease_tracker::{DeclaredDown, LeaseChange, LeaseTracker, acks_lease_probe};
pub use lifecycle::{MAX_UNREACHABLE_REPORT, NodeLoad, NodeMeta, NodeState};
pub use member_list::{
    MemberListEntry, MemberListError, MemberListPages, MemberListPull, MembersPage, MembersRequest,
    PullStep, apply_page_meta, choose_peer, choose_random_peer, pull_delay,
};
pub use node_name::NodeName;
pub use quorum_sweep::{QuorumSweep, SweepResult, SweepStart};
pub use reachability::{PeerSession, Reachability};
pub use shared_meta::{MetaRecord, SharedMeta};
#[cfg(test)]
pub(crate) use store_check::test_members;
pub use store_check::{StoreMismatch, check_before_active, shares_store};
pub use unreachable_votes::{Ballot, Verdict, count_votes};
pub use view::{DEFAULT_DEAD_RETENTION, LeaveReason, MemberInfo, MemberView, MembershipEvent};
