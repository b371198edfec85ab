//! Periodic work of a node: joining, load sampling, the wall-clock pairing, idle collection,
//! and deactivating all.

use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::sync::oneshot;

use super::node::Node;
use crate::grain::activation::{ActivationMsg, StopReason};
use crate::membership::{NodeLoad, NodeState};

/// How often the idle sweeper looks for idle activations at the most.
const MAX_SWEEP_PERIOD: Duration = Duration::from_secs(1);
/// How long a joining node waits for sessions to every member before it becomes Active anyway.
const SESSION_WAIT: Duration = Duration::from_secs(5);
/// How long shutdown waits for one activation's `on_deactivate`.
const DEACTIVATE_WAIT: Duration = Duration::from_secs(10);

/// Makes the node Active once it has joined the cluster and connected to its members.
pub(crate) async fn run_join(node: Node) {
    let has_seeds = !node.inner.config.seeds.is_empty();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    loop {
        tick.tick().await;
        if node
            .inner
            .stopping
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        // The node's member table leaves out members with another database, so the check
        // reads the membership view itself.
        let store_id = node.inner.storage.store_id();
        let view = node.inner.membership.members();
        if let Err(mismatch) = crate::membership::check_before_active(store_id, &view) {
            node.stop_store_mismatch(mismatch).await;
            return;
        }
        let peers: Vec<_> = node
            .members()
            .into_iter()
            .filter(|m| m.is_live() && m.id.incarnation() != node.id().incarnation())
            .collect();
        if has_seeds && peers.is_empty() {
            continue;
        }
        // A peer's store id arrives with its first broadcast (meta version 1).
        let connected = peers
            .iter()
            .all(|m| m.meta_version > 0 && node.transport().is_connected(&m.id));
        if connected || started.elapsed() >= SESSION_WAIT {
            node.sync_directory().await;
            node.set_state(NodeState::Active);
            return;
        }
    }
}

/// Measures again how the monotonic clock maps to Unix time, for the deadlines that calls
/// carry across the network, until the node stops.
pub(crate) async fn run_wall_clock_refresh(node: Node) {
    let mut tick = tokio::time::interval(super::wall_clock::REFRESH_PERIOD);
    loop {
        tick.tick().await;
        if *node.inner.stopped.borrow() {
            return;
        }
        super::wall_clock::refresh();
    }
}

/// Samples the node's load every membership broadcast period and gossips it.
pub(crate) async fn run_load_loop(node: Node) {
    let period = Duration::from_millis(node.inner.config.membership.meta_period_ms);
    let mut tick = tokio::time::interval(period);
    let mut last_calls = 0u64;
    let mut last_at = Instant::now();
    let mut cpu = CpuSampler::default();
    loop {
        tick.tick().await;
        if *node.inner.stopped.borrow() {
            return;
        }
        let calls = node.turns_served();
        let elapsed = last_at.elapsed().as_secs_f64().max(0.001);
        let (mailbox_depth_total, mailbox_depth_max) = node.inner.catalog.mailbox_depths();
        let load = NodeLoad {
            activations: node.inner.catalog.len() as u64,
            calls_per_sec: calls.saturating_sub(last_calls) as f64 / elapsed,
            mailbox_depth_total,
            mailbox_depth_max,
            cpu_percent: cpu.sample(),
            memory_bytes: resident_memory_bytes(),
        };
        last_calls = calls;
        last_at = Instant::now();
        node.inner.metrics.set_load(&load);
        let _ = node.inner.membership.set_load(load);
    }
}

/// Interval between two reads of the transport's ready sessions for the membership agent.
const READY_SESSIONS_PERIOD: Duration = Duration::from_millis(250);

/// Hands the set of peers with a ready cluster session to the membership agent whenever it
/// changes, until the node stops. The agent reports peers that stay without one as
/// unreachable (see `MembershipConfig::unreachable_after`).
pub(crate) async fn run_ready_sessions(node: Node) {
    let mut tick = tokio::time::interval(READY_SESSIONS_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported = None;
    loop {
        tick.tick().await;
        // A stopping node stops its transport, whose empty session table would report every
        // peer unreachable.
        let stopping = node
            .inner
            .stopping
            .load(std::sync::atomic::Ordering::Acquire);
        if stopping || *node.inner.stopped.borrow() {
            return;
        }
        let ready = node.transport().ready_peers();
        if reported.as_ref() == Some(&ready) {
            continue;
        }
        if node
            .inner
            .membership
            .set_ready_sessions(ready.clone())
            .is_err()
        {
            return;
        }
        reported = Some(ready);
    }
}

/// Interval between two periodic re-assertions of the local activations.
const DIRECTORY_REPAIR_PERIOD: Duration = Duration::from_secs(5);

/// Re-asserts the local activations every [`DIRECTORY_REPAIR_PERIOD`] while the node is
/// Active, so a lost directory entry is restored and an orphaned second activation is
/// deactivated within one period (see `Node::reassert_local_activations`).
pub(crate) async fn run_directory_repair(node: Node) {
    let mut tick = tokio::time::interval(DIRECTORY_REPAIR_PERIOD);
    // A repair of a large catalog may outlast the period; the next one waits a full period
    // instead of starting at once.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if *node.inner.stopped.borrow() {
            return;
        }
        if node.state() != NodeState::Active {
            continue;
        }
        let live = node
            .inner
            .members
            .read()
            .expect("members lock poisoned")
            .live
            .clone();
        let waited = Instant::now();
        let snapshot = {
            let _gate = node.inner.activation_gate.write().await;
            node.reassert_snapshot()
        };
        let copied = Instant::now();
        let activations = snapshot.len();
        let complete = node
            .reassert_local_activations(snapshot, &live, Instant::now() + DIRECTORY_REPAIR_PERIOD)
            .await;
        tracing::debug!(
            node = %node.id().name,
            activations,
            complete,
            gate_ms = copied.duration_since(waited).as_millis() as u64,
            reassert_ms = copied.elapsed().as_millis() as u64,
            "directory repair re-asserted the local activations"
        );
    }
}

/// Asks activations that have been idle for their idle age to deactivate.
pub(crate) async fn run_idle_sweeper(node: Node) {
    let period = node.inner.config.idle_after().min(MAX_SWEEP_PERIOD);
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if *node.inner.stopped.borrow() {
            return;
        }
        let now = Instant::now();
        for handle in node.inner.catalog.handles() {
            if handle.shared.idle_for(now) >= handle.shared.idle_after {
                let _ = handle.actor.cast(ActivationMsg::CheckIdle);
            }
        }
    }
}

/// Deactivates every local activation and waits until each one has stopped (or timed out).
pub(crate) async fn deactivate_all(node: &Node, reason: StopReason) {
    let handles = node.inner.catalog.handles();
    let count = handles.len();
    let waits = handles.into_iter().map(|handle| async move {
        let (done, stopped) = oneshot::channel();
        if handle
            .actor
            .cast(ActivationMsg::Stop(reason, Some(done)))
            .is_ok()
        {
            let _ = tokio::time::timeout(DEACTIVATE_WAIT, stopped).await;
        }
    });
    join_all(waits).await;
    tracing::info!(node = %node.id().name, activations = count, ?reason, "deactivated all activations");
}

/// CPU time of this process between two samples, from `/proc/self/stat`.
#[derive(Default)]
struct CpuSampler {
    last: Option<(Instant, u64)>,
}

impl CpuSampler {
    /// Returns the CPU use since the last sample in percent of one core; 0 where `/proc` is
    /// missing.
    fn sample(&mut self) -> f64 {
        let Some(ticks) = cpu_ticks() else { return 0.0 };
        let now = Instant::now();
        let percent = match self.last {
            Some((at, before)) => {
                let seconds = now.duration_since(at).as_secs_f64().max(0.001);
                // NOTE: assumes the kernel's USER_HZ of 100, which Linux uses on every common
                // architecture; reading sysconf(_SC_CLK_TCK) would need libc.
                ticks.saturating_sub(before) as f64 / 100.0 / seconds * 100.0
            }
            None => 0.0,
        };
        self.last = Some((now, ticks));
        percent
    }
}

fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

/// Returns the resident memory of this process in bytes; 0 where `/proc` is missing.
fn resident_memory_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // NOTE: assumes 4 KiB pages (x86-64 and most arm64 kernels).
    pages * 4096
}
