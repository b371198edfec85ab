//! Member-list transfer to a joining node: its peer sends the whole member list, page by page.
//!
//! Why: foca replies to an `Announce` with a `Feed` of the active members that fit one datagram,
//! about 35 of them. A joining node learns the others only from member updates that are still
//! being gossiped and from direct contact. Updates about members that joined earlier have left
//! every backlog, so those members stay unknown until each one happens to send the node a
//! probe or a gossip datagram. In the simulator, with 300 nodes joining 10 ms apart, almost
//! every member that a view still missed had started before the node holding the view, and
//! the last views agreed 120 s after the last join. With 1,000 nodes they had not agreed after
//! 300 s. hashicorp/memberlist closes the same gap with a full state sync over TCP when a node
//! joins, and with periodic full state exchanges with a random node (its README). foca 2.0.0
//! leaves that to the application (`Foca::iter_membership_state` and `Foca::apply_many`).
//!
//! Gossip also misses a member now and then: each node sends an update a limited number of
//! times to random members, so a few views never receive a given join. Every node therefore
//! pulls the list again from a random member every `member_list_period_ms` (30 s by default,
//! see the `dissemination` module for larger clusters), as memberlist's periodic exchange does.
//!
//! The protocol, over the gossip port:
//! 1. When foca reports the node connected, the node asks one member for the page after no
//!    name. It asks a seed it announced to if that seed is a member, because seeds have been in
//!    the cluster longest. A periodic pull asks a random member.
//! 2. The member answers with its active members whose names follow the requested name, in name
//!    order, each with the latest meta its view holds, as many as fit in the length of the
//!    request, and whether more follow.
//! 3. The joining node applies the members to foca without gossiping them again (the cluster
//!    knows them already), applies the meta to its view, and asks for the page after the last
//!    name it received. It sends a request again when no page came within the retry period, and
//!    gives up after [`MAX_ATTEMPTS`] requests for one page.
//!
//! Requests are padded to [`REQUEST_BODY_LEN`] and a page is never longer than its request, so
//! the exchange cannot amplify traffic towards a spoofed source. The answering member pages
//! through a snapshot of its list that it takes again at most every [`SNAPSHOT_MAX_AGE`], so
//! each request costs a binary search. Members that joined after the snapshot reach the joining
//! node in the gossip that still carries their join.

use std::time::Duration;

use foca::Member;
use rand::seq::IteratorRandom;
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use super::{MemberView, MembershipEvent, NodeId, NodeMeta, SeenMeta, SharedMeta};
use crate::clock::Millis;

/// Length of a request body: the largest frame the agent sends less the two-byte framing
/// header, so that the page sent in reply can be as long.
pub const REQUEST_BODY_LEN: usize = super::wire::MAX_FRAME_LEN - super::wire::HEADER_LEN;

/// Shortest request body a member replies to. A page of this length contains at least three
/// entries with names of up to 63 bytes.
pub const MIN_REQUEST_BODY_LEN: usize = 512;

/// Requests sent for one page before the transfer gives up.
pub const MAX_ATTEMPTS: u32 = 4;

/// Maximum age of the snapshot of its member list that a member pages through.
pub const SNAPSHOT_MAX_AGE: Duration = Duration::from_millis(100);

/// A request for the members whose names follow `after`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersRequest {
    /// Last name of the previous page; `None` for the first page.
    pub after: Option<String>,
}

/// A request or a page that does not decode or breaks the protocol. Nothing changed; the
/// datagram is dropped, and a retry of the same bytes fails again.
#[derive(Debug, thiserror::Error)]
pub enum MemberListError {
    /// The body does not decode.
    #[error("malformed member list datagram")]
    Malformed(#[source] postcard::Error),
    /// A request shorter than [`MIN_REQUEST_BODY_LEN`], which would allow only tiny pages.
    #[error("member list request of {0} bytes is shorter than the minimum {MIN_REQUEST_BODY_LEN}")]
    RequestTooShort(usize),
    /// The request does not fit in [`REQUEST_BODY_LEN`] bytes.
    #[error("member list request does not fit in {REQUEST_BODY_LEN} bytes")]
    RequestTooLong,
}

impl MembersRequest {
    /// Encodes the request, zero-padded to [`REQUEST_BODY_LEN`] bytes.
    pub fn encode(&self) -> Result<Vec<u8>, MemberListError> {
        let mut body = postcard::to_allocvec(self).map_err(MemberListError::Malformed)?;
        if body.len() > REQUEST_BODY_LEN {
            return Err(MemberListError::RequestTooLong);
        }
        body.resize(REQUEST_BODY_LEN, 0);
        Ok(body)
    }

    /// Decodes a request body and ignores its padding. A body shorter than
    /// [`MIN_REQUEST_BODY_LEN`] is rejected.
    pub fn decode(body: &[u8]) -> Result<Self, MemberListError> {
        if body.len() < MIN_REQUEST_BODY_LEN {
            return Err(MemberListError::RequestTooShort(body.len()));
        }
        postcard::take_from_bytes(body)
            .map(|(request, _padding)| request)
            .map_err(MemberListError::Malformed)
    }
}

/// One member of a page: foca's record of it and the latest meta the sender's view holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberListEntry {
    /// Identity, SWIM incarnation and state, as foca gossips them.
    pub member: Member<NodeId>,
    /// The member's latest state and load broadcast; `None` if the sender has not received one.
    pub meta: Option<NodeMeta>,
}

/// The answer to a [`MembersRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MembersPage {
    /// The requested position: the page contains the members whose names follow it.
    pub after: Option<String>,
    /// Members in strictly increasing name order.
    pub entries: Vec<MemberListEntry>,
    /// Whether members follow the last entry.
    pub more: bool,
}

impl MembersPage {
    /// Encodes the page.
    pub fn encode(&self) -> Result<Vec<u8>, MemberListError> {
        postcard::to_allocvec(self).map_err(MemberListError::Malformed)
    }

    /// Decodes a page; invalid load figures in it become 0 (see [`NodeLoad::sanitize`]).
    ///
    /// [`NodeLoad::sanitize`]: super::NodeLoad::sanitize
    pub fn decode(body: &[u8]) -> Result<Self, MemberListError> {
        let mut page: MembersPage =
            postcard::from_bytes(body).map_err(MemberListError::Malformed)?;
        for entry in &mut page.entries {
            if let Some(meta) = &mut entry.meta {
                meta.load.sanitize();
            }
        }
        Ok(page)
    }

    /// Returns whether the entries follow `after` in strictly increasing name order, and a page
    /// that announces more members holds at least one, so that a transfer always advances.
    fn is_well_formed(&self) -> bool {
        let mut previous = self.after.as_deref();
        for entry in &self.entries {
            let name = entry.member.id().name.as_str();
            if previous.is_some_and(|previous| name <= previous) {
                return false;
            }
            previous = Some(name);
        }
        !(self.more && self.entries.is_empty())
    }
}

/// The answering side: pages through a snapshot of the member list, sorted by name.
#[derive(Debug, Default)]
pub struct MemberListPages {
    taken_at: Option<Millis>,
    /// Entries in name order, with their encoded length.
    entries: Vec<(MemberListEntry, usize)>,
}

impl MemberListPages {
    /// Returns whether the snapshot is missing or older than [`SNAPSHOT_MAX_AGE`] at `now`.
    pub fn is_stale(&self, now: Millis) -> bool {
        self.taken_at
            .is_none_or(|taken_at| now.saturating_since(taken_at) >= SNAPSHOT_MAX_AGE)
    }

    /// Drops a stale snapshot, so that a node keeps a copy of the member list only while it
    /// answers requests.
    pub fn forget_if_stale(&mut self, now: Millis) {
        if self.taken_at.is_some() && self.is_stale(now) {
            self.taken_at = None;
            self.entries = Vec::new();
        }
    }

    /// Takes a new snapshot of foca's active `members` and the local node, with the meta that
    /// `view` holds for each.
    ///
    /// foca does not list the local node, and does not expose its SWIM incarnation, so the
    /// local node goes in as alive at incarnation 0. The joining node already knows the
    /// answering member at its real incarnation, from the header of the foca packets that made
    /// it a member, and foca ignores an update at a lower incarnation.
    pub fn refresh<'a>(
        &mut self,
        members: impl Iterator<Item = &'a Member<NodeId>>,
        view: &MemberView,
        now: Millis,
    ) {
        self.entries.clear();
        let local = Member::alive(view.local().id);
        let mut sorted: Vec<(&str, &Member<NodeId>)> = Vec::new();
        for member in members {
            sorted.push((member.id().name.as_str(), member));
        }
        sorted.push((local.id().name.as_str(), &local));
        sorted.sort_unstable_by_key(|(name, _)| *name);
        // The view lists its members in name order too, so one walk over both finds each
        // member's meta, where a lookup per member would cost O(log n) name comparisons.
        let mut metas = view.metas_by_name().peekable();
        for (name, member) in sorted {
            while metas.next_if(|(id, _)| id.name.as_str() < name).is_some() {}
            let meta = metas
                .peek()
                .filter(|(id, _)| id.name.as_str() == name && id.boot_id == member.id().boot_id)
                .and_then(|(_, meta)| meta.cloned());
            let entry = MemberListEntry {
                meta,
                member: member.clone(),
            };
            // An entry that does not encode could not be sent either; it is left out.
            if let Ok(len) =
                postcard::serialize_with_flavor(&entry, postcard::ser_flavors::Size::default())
            {
                self.entries.push((entry, len));
            }
        }
        self.taken_at = Some(now);
    }

    /// Returns the page that answers `request` within `max_len` encoded bytes.
    pub fn page(&self, request: &MembersRequest, max_len: usize) -> MembersPage {
        let start = match &request.after {
            Some(after) => self
                .entries
                .partition_point(|(entry, _)| entry.member.id().name.as_str() <= after.as_str()),
            None => 0,
        };
        let mut page = MembersPage {
            after: request.after.clone(),
            entries: Vec::new(),
            more: false,
        };
        // The encoded empty page, plus the two bytes by which the entry count's varint can grow
        // (a page of at most 1,400 bytes holds fewer than 16,384 entries).
        let mut len = page.encode().map_or(max_len, |bytes| bytes.len()) + 2;
        for (index, (entry, entry_len)) in self.entries.iter().enumerate().skip(start) {
            if len + entry_len > max_len {
                page.more = true;
                break;
            }
            len += entry_len;
            page.entries.push(entry.clone());
            page.more = index + 1 < self.entries.len();
        }
        page
    }
}

/// The next step of the joining node in a transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullStep {
    /// Send `request` to `peer`.
    Send {
        /// The member that answers.
        peer: NodeId,
        /// The request.
        request: MembersRequest,
    },
    /// The transfer received the last page.
    Done {
        /// Pages received.
        pages: u32,
        /// Members received.
        members: usize,
    },
    /// The peer did not answer [`MAX_ATTEMPTS`] requests for one page; the transfer ended.
    GaveUp {
        /// The member that did not answer.
        peer: NodeId,
        /// Pages received before.
        pages: u32,
    },
    /// Nothing to do now.
    Wait,
}

/// The joining side: the transfer that is running, if any.
#[derive(Debug, Default)]
pub struct MemberListPull {
    transfer: Option<Transfer>,
}

#[derive(Debug)]
struct Transfer {
    peer: NodeId,
    after: Option<String>,
    sent_at: Millis,
    attempts: u32,
    pages: u32,
    members: usize,
}

impl Transfer {
    fn request(&self) -> PullStep {
        PullStep::Send {
            peer: self.peer.clone(),
            request: MembersRequest {
                after: self.after.clone(),
            },
        }
    }
}

impl MemberListPull {
    /// Returns whether a transfer is running.
    pub fn is_running(&self) -> bool {
        self.transfer.is_some()
    }

    /// Starts a transfer from `peer`, replacing any running one, and returns the first request.
    pub fn start(&mut self, peer: NodeId, now: Millis) -> PullStep {
        let transfer = Transfer {
            peer,
            after: None,
            sent_at: now,
            attempts: 1,
            pages: 0,
            members: 0,
        };
        let step = transfer.request();
        self.transfer = Some(transfer);
        step
    }

    /// Records `page` and returns the next request, or `Done` after the last page. Returns
    /// `None`, and changes nothing, unless the page is the one the transfer waits for: sent by
    /// the peer (`is_from_peer` checks the sender against the peer's identity), for the requested
    /// position, and well formed. The caller applies the entries only when this returns a step.
    pub fn handle_page(
        &mut self,
        page: &MembersPage,
        is_from_peer: impl FnOnce(&NodeId) -> bool,
        now: Millis,
    ) -> Option<PullStep> {
        let transfer = self.transfer.as_mut()?;
        if !is_from_peer(&transfer.peer) || transfer.after != page.after || !page.is_well_formed() {
            return None;
        }
        transfer.pages += 1;
        transfer.members += page.entries.len();
        let Some(last) = page.entries.last().filter(|_| page.more) else {
            let done = PullStep::Done {
                pages: transfer.pages,
                members: transfer.members,
            };
            self.transfer = None;
            return Some(done);
        };
        transfer.after = Some(last.member.id().name.to_string());
        transfer.sent_at = now;
        transfer.attempts = 1;
        Some(transfer.request())
    }

    /// Sends the request again if no page came within `retry_after`, or gives up after
    /// [`MAX_ATTEMPTS`] requests for the page.
    pub fn handle_tick(&mut self, now: Millis, retry_after: Duration) -> PullStep {
        let Some(transfer) = self.transfer.as_mut() else {
            return PullStep::Wait;
        };
        if now.saturating_since(transfer.sent_at) < retry_after {
            return PullStep::Wait;
        }
        if transfer.attempts >= MAX_ATTEMPTS {
            let gave_up = PullStep::GaveUp {
                peer: transfer.peer.clone(),
                pages: transfer.pages,
            };
            self.transfer = None;
            return gave_up;
        }
        transfer.attempts += 1;
        transfer.sent_at = now;
        transfer.request()
    }
}

/// Returns the member to pull the member list from: the first active member in `members` that
/// is one of the `seeds` the node announced to, or else the first active member.
pub fn choose_peer<'a>(
    members: impl Iterator<Item = &'a Member<NodeId>>,
    seeds: &[NodeId],
) -> Option<NodeId> {
    let mut first = None;
    for member in members {
        if seeds.contains(member.id()) {
            return Some(member.id().clone());
        }
        first.get_or_insert_with(|| member.id().clone());
    }
    first
}

/// Applies the meta of a page's `entries` to `view` and returns the view's events. It also
/// records the meta in `seen`, the broadcast handler's table, so that the handler drops the
/// gossiped copies of it instead of forwarding each one as news.
pub fn apply_page_meta(
    entries: Vec<MemberListEntry>,
    view: &mut MemberView,
    seen: &SeenMeta,
    now: Millis,
) -> Vec<MembershipEvent> {
    let mut events = Vec::new();
    for entry in entries {
        let Some(meta) = entry.meta else {
            continue;
        };
        let id = entry.member.id();
        let meta = SharedMeta::new(&id.name, id.boot_id, meta);
        seen.record(&meta);
        events.extend(view.handle_meta(meta, now));
    }
    events
}

/// Returns a random active member among `members` for a periodic pull.
pub fn choose_random_peer<'a>(
    members: impl Iterator<Item = &'a Member<NodeId>>,
    rng: &mut (impl Rng + ?Sized),
) -> Option<NodeId> {
    members.choose(rng).map(|member| member.id().clone())
}

/// Returns the wait before the next periodic pull: a random 50 % to 150 % of `period`, so that
/// nodes that started together do not pull together.
pub fn pull_delay(period: Duration, rng: &mut (impl Rng + ?Sized)) -> Duration {
    period.mul_f64(rng.random_range(0.5..1.5))
}

#[cfg(test)]
mod tests;
