//! The membership half of a simulated node: what the real agent and event loop do with foca.

use std::time::Duration;

use gristmill::clock::Millis;
use gristmill::membership::{
    Incarnation, LeaveReason, MembersPage, MembersRequest, MembershipEvent, MetaBroadcast,
    MetaJitter, NodeIdFields, NodeState, PullStep, apply_page_meta, choose_peer,
    choose_random_peer, member_list_period, meta_period, pull_delay,
};

use super::{NodeTimer, Output, SimNode};
use crate::message::{CallFailure, Message};

impl SimNode {
    /// Retries joining through the seeds until foca reports the node connected.
    pub(super) fn handle_announce_tick(&mut self, _now: Millis) {
        if self.stopping {
            return;
        }
        if !self.view.is_connected() {
            for seed in self.seeds.clone() {
                if seed == self.id.name {
                    continue;
                }
                if !self.requested.contains(&seed) {
                    self.requested.push(seed.clone());
                }
                self.send(&seed, None, Message::IdentityRequest);
            }
        }
        let retry = self.config.membership.announce_retry_ms;
        self.timer(std::time::Duration::from_millis(retry), NodeTimer::Announce);
    }

    /// Samples the load, re-broadcasts the meta once its period, stretched by the jitter drawn
    /// at the last broadcast, has passed since then, and removes expired members, as the agent
    /// does every `meta_period_ms`.
    pub(super) fn handle_meta_tick(&mut self, now: Millis) {
        if self.stopping {
            return;
        }
        self.meta.load.activations = self.catalog.len() as u64;
        let base = Duration::from_millis(self.config.membership.meta_period_ms);
        let period = self
            .meta_jitter
            .delay(meta_period(base, self.foca.num_members() + 1));
        let due = self
            .meta_published_at
            .is_none_or(|at| now.saturating_since(at) >= period);
        if due {
            self.publish_local_meta(now);
        }
        self.member_pages.forget_if_stale(now);
        if self.view.handle_tick(now) > 0 {
            self.refresh_live(now);
        }
        self.forget_declared_down(now);
        self.timer(base, NodeTimer::Meta);
    }

    /// Raises the meta version, applies it locally and hands it to foca's broadcasts.
    pub(super) fn publish_local_meta(&mut self, now: Millis) {
        self.meta_published_at = Some(now);
        self.meta_jitter = MetaJitter::draw(&mut self.meta_rng);
        self.meta.version += 1;
        let events = self.view.set_local_meta(&self.meta);
        let item = MetaBroadcast {
            incarnation: self.id.incarnation(),
            meta: self.meta.clone(),
        };
        if let Ok(bytes) = item.encode() {
            let _ = self.foca.add_broadcast(&bytes);
            let _ = self.foca.broadcast(&mut self.runtime);
        }
        self.drain_runtime(now);
        self.react(events, now);
    }

    /// Sends the page of the member list that the request in `body` names, as the agent does.
    pub(super) fn answer_members_request(&mut self, from: &str, body: &[u8], now: Millis) {
        let Ok(request) = MembersRequest::decode(body) else {
            return;
        };
        if self.member_pages.is_stale(now) {
            self.member_pages
                .refresh(self.foca.iter_members(), &self.view, now);
        }
        let page = self.member_pages.page(&request, body.len());
        if let Ok(page) = page.encode() {
            self.send(from, None, Message::MembersPage(page));
        }
    }

    /// Applies a page of the member list that the running transfer waits for, and requests
    /// the next one, as the agent does.
    pub(super) fn handle_members_page(&mut self, from: &str, body: &[u8], now: Millis) {
        let Ok(page) = MembersPage::decode(body) else {
            return;
        };
        let Some(step) = self
            .member_pull
            .handle_page(&page, |peer| peer.name == from, now)
        else {
            return;
        };
        let members = page.entries.iter().map(|entry| entry.member.clone());
        let _ = self.foca.apply_many(members, false, &mut self.runtime);
        self.drain_runtime(now);
        let events = apply_page_meta(page.entries, &mut self.view, &self.seen_meta, now);
        self.react(events, now);
        self.follow_pull_step(step);
    }

    /// Sends the member-list request again if its page has not come.
    pub(super) fn handle_member_list_retry(&mut self, now: Millis) {
        let step = self.member_pull.handle_tick(now, self.member_list_retry());
        self.follow_pull_step(step);
    }

    /// Pulls the member list from a random member, as the agent does periodically, and arms
    /// the next pull.
    pub(super) fn handle_member_list_tick(&mut self, now: Millis) {
        if self.stopping {
            return;
        }
        if self.view.is_connected() && !self.member_pull.is_running() {
            let peer = choose_random_peer(self.foca.iter_members(), &mut self.member_list_rng);
            if let Some(peer) = peer {
                let step = self.member_pull.start(peer, now);
                self.follow_pull_step(step);
            }
        }
        let delay = self.member_list_delay();
        self.timer(delay, NodeTimer::MemberListPull);
    }

    /// Returns the wait until the next periodic member-list pull.
    pub(super) fn member_list_delay(&mut self) -> Duration {
        let base = Duration::from_millis(self.config.membership.member_list_period_ms);
        let period = member_list_period(base, self.foca.num_members() + 1);
        pull_delay(period, &mut self.member_list_rng)
    }

    fn member_list_retry(&self) -> Duration {
        Duration::from_millis(self.config.membership.announce_retry_ms)
    }

    /// Sends a member-list request and arms its retry timer.
    fn follow_pull_step(&mut self, step: PullStep) {
        let PullStep::Send { peer, request } = step else {
            return;
        };
        if self.stopping {
            return;
        }
        if let Ok(body) = request.encode() {
            self.send(&peer.name, None, Message::MembersRequest(body));
        }
        self.timer(self.member_list_retry(), NodeTimer::MemberListRetry);
    }

    /// Moves what foca produced into outputs and the view, then reacts to the view's events.
    pub(super) fn drain_runtime(&mut self, now: Millis) {
        let was_connected = self.view.is_connected();
        while let Some((to, packet)) = self.runtime.to_send() {
            self.record_packet_sent(&packet, now);
            self.send(&to.name, None, Message::Gossip(packet.to_vec()));
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timer(after, NodeTimer::Foca(timer));
        }
        if let Some(config) = self.transmissions.retune(self.foca.num_members() + 1) {
            // The tuner only changes `max_transmissions`, which foca always accepts.
            let _ = self.foca.set_config(config);
        }
        let mut events = Vec::new();
        while let Some(notification) = self.runtime.to_notify() {
            events.extend(self.view.handle_notification(notification, now));
        }
        while let Ok(meta) = self.accepted_meta.try_recv() {
            events.extend(self.view.handle_meta(meta, now));
        }
        // Counted before `react` applies the verdicts, as the agent does.
        let suspicions_changed = self.count_suspected();
        self.react(events, now);
        if suspicions_changed {
            self.update_minority();
        }
        self.drive_sweep(now);
        let joined = !was_connected && self.view.is_connected() && !self.stopping;
        if joined && let Some(peer) = choose_peer(self.foca.iter_members(), &self.announced_seeds) {
            let step = self.member_pull.start(peer, now);
            self.follow_pull_step(step);
        }
    }

    /// Reacts to membership events as the runtime's event loop does.
    fn react(&mut self, events: Vec<MembershipEvent>, now: Millis) {
        self.track_declared_down(&events, now);
        // The live set changes only through these events, at the first event, or while the
        // node leaves (its own entry turns dead without an event). Most gossip carries none
        // of them, and skipping the copy of the live set keeps large clusters cheap.
        let live_may_change = events.iter().any(|event| match event {
            MembershipEvent::Joined(_) | MembershipEvent::Left { .. } => true,
            MembershipEvent::Updated(member) => !member.is_live(),
            MembershipEvent::SelfDeclaredDown => false,
        });
        for event in events {
            match event {
                MembershipEvent::Joined(_) => {}
                MembershipEvent::Updated(member) => {
                    self.recent_placements.remove(&member.incarnation());
                }
                MembershipEvent::Left { member, reason } => {
                    if reason == LeaveReason::DeclaredDown {
                        let member = member.incarnation();
                        self.outputs.push(Output::DeclaredDown { member });
                    }
                    self.cache.handle_host_down(&member.incarnation());
                    self.recent_placements.remove(&member.incarnation());
                }
                MembershipEvent::SelfDeclaredDown => {
                    self.stop_declared_down(now);
                    return;
                }
            }
        }
        let live_unknown = self.live.is_empty() && self.tracks_live_set();
        if live_may_change || live_unknown || self.meta.state == NodeState::Dead {
            self.refresh_live(now);
            self.maybe_join(now);
        }
    }

    /// Copies the view's live set; starts a directory sync when it changed.
    fn refresh_live(&mut self, now: Millis) {
        if !self.tracks_live_set() {
            return;
        }
        let mut live: Vec<Incarnation> = self
            .view
            .live_ids()
            .map(NodeIdFields::incarnation)
            .collect();
        live.sort();
        if live == self.live || self.stopping {
            return;
        }
        self.live = live;
        if self.config.report_live_changes {
            let live = self.live.clone();
            self.outputs.push(Output::LiveSetChanged { live });
        }
        if !self.config.membership_only {
            self.request_sync(now);
        }
    }

    /// Returns whether the node keeps a copy of the live set. Only the directory sync and the
    /// replay log read it, and copying it on every join costs O(n²) per node at scale.
    fn tracks_live_set(&self) -> bool {
        !self.config.membership_only || self.config.report_live_changes
    }

    /// Becomes Active once the node has a live peer, after syncing the directory, as the
    /// real join loop does.
    fn maybe_join(&mut self, now: Millis) {
        if self.meta.state != NodeState::Joining || self.stopping {
            return;
        }
        let has_peer = if self.tracks_live_set() {
            self.live.iter().any(|member| member.name != self.id.name)
        } else {
            self.view
                .live_ids()
                .any(|member| member.name != self.id.name)
        };
        if has_peer && !self.activate_after_sync {
            self.become_active(now);
        }
    }

    /// Syncs the directory for the current view and then broadcasts `Active`.
    pub(super) fn become_active(&mut self, now: Millis) {
        if self.config.membership_only {
            self.meta.state = NodeState::Active;
            self.publish_local_meta(now);
            return;
        }
        let mut live: Vec<Incarnation> = self
            .view
            .live_ids()
            .map(NodeIdFields::incarnation)
            .collect();
        live.sort();
        self.live = live;
        self.activate_after_sync = true;
        self.request_sync(now);
    }

    /// Drops every activation, leaves and stops, as the runtime does when the cluster
    /// declared this node down.
    fn stop_declared_down(&mut self, now: Millis) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        let grains: Vec<_> = self.catalog.keys().cloned().collect();
        for grain in grains {
            self.drop_activation(&grain, now);
        }
        for call in self.invoke_calls() {
            self.finish_invoke(call, Err(CallFailure::ShuttingDown));
        }
        self.flows.clear();
        self.pending.clear();
        self.sync = None;
        self.meta.state = NodeState::Dead;
        self.publish_local_meta(now);
        let _ = self.foca.leave_cluster(&mut self.runtime);
        self.drain_runtime(now);
        self.outputs.push(Output::Stopped);
    }
}
