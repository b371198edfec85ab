//! Preloading a simulated node with the whole cluster, as if it had joined long ago.
//!
//! Its member list, view and meta table contain every member before it starts. A scale run
//! can then measure the steady state and a crash without simulating thousands of joins.

use std::time::Duration;

use foca::Member;
use gristmill::clock::Millis;
use gristmill::membership::{
    MemberListEntry, MetaJitter, NodeId, NodeMeta, NodeState, apply_page_meta, meta_period,
};
use rand::RngExt;

use super::SimNode;
use crate::message::Message;

/// Number of members handed to foca in one call. foca reports each new member to the runtime,
/// whose buffer keeps its largest capacity, so small batches keep that buffer small.
const BATCH: usize = 256;

impl SimNode {
    /// Marks the node Active, as if it had joined and broadcast that long ago, and returns
    /// the meta that every other member should record for it.
    ///
    /// The last broadcast is placed a random part of one re-broadcast period before `now`,
    /// so that the cluster's re-broadcasts are spread over the period as in a cluster that
    /// has run for a while. `members` is the cluster size, which sets the period.
    pub fn preset_active(&mut self, members: usize, now: Millis) -> NodeMeta {
        self.meta.state = NodeState::Active;
        self.meta.version += 1;
        // The events concern the local entry, and the node has not started yet.
        let _ = self.view.set_local_meta(&self.meta);
        let base = Duration::from_millis(self.config.membership.meta_period_ms);
        self.meta_jitter = MetaJitter::draw(&mut self.meta_rng);
        let period = self.meta_jitter.delay(meta_period(base, members));
        let ago = period.mul_f64(self.meta_rng.random::<f64>());
        let ago = u64::try_from(ago.as_millis()).unwrap_or(u64::MAX);
        self.meta_published_at = Some(Millis(now.0.saturating_sub(ago)));
        self.meta.clone()
    }

    /// Gives the node every member of `cluster` but itself, Alive with the meta listed, as a
    /// complete member-list pull would, before [`SimNode::handle_start`] runs.
    ///
    /// Nothing is broadcast, because every member has the same list already. The node
    /// counts as connected afterwards, so it neither announces itself nor pulls the member
    /// list at once.
    pub fn preload(&mut self, cluster: &[(NodeId, NodeMeta)], now: Millis) {
        self.now = now;
        let local = self.id.clone();
        let others = cluster.iter().filter(|(id, _)| id.name != local.name);
        let mut batch = Vec::with_capacity(BATCH);
        for (id, meta) in others {
            batch.push(MemberListEntry {
                member: Member::alive(id.clone()),
                meta: Some(meta.clone()),
            });
            if batch.len() == BATCH {
                self.preload_batch(&mut batch, now);
            }
        }
        self.preload_batch(&mut batch, now);
        // foca requests its probe timers when it becomes connected.
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timer(after, super::NodeTimer::Foca(timer));
        }
        if let Some(config) = self.transmissions.retune(self.foca.num_members() + 1) {
            // The tuner only changes `max_transmissions`, which foca always accepts.
            let _ = self.foca.set_config(config);
        }
    }

    /// Applies one batch of `entries` to foca, the view and the meta table, and empties it.
    fn preload_batch(&mut self, entries: &mut Vec<MemberListEntry>, now: Millis) {
        let members = entries.iter().map(|entry| entry.member.clone());
        let _ = self.foca.apply_many(members, false, &mut self.runtime);
        // The events are joins, which need no reaction in a membership-only node.
        while let Some(notification) = self.runtime.to_notify() {
            let _ = self.view.handle_notification(notification, now);
        }
        let _ = apply_page_meta(
            std::mem::take(entries),
            &mut self.view,
            &self.seen_meta,
            now,
        );
        while let Some((to, packet)) = self.runtime.to_send() {
            self.record_packet_sent(&packet, now);
            self.send(&to.name, None, Message::Gossip(packet.to_vec()));
        }
    }
}
