use std::collections::{BTreeMap, HashSet};
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use prometheus::Registry;

use super::super::test_support::{idle_grains, member_with};
use super::*;
use crate::membership::NodeLoad;

const INTERVAL: Duration = Duration::from_secs(10);
const MIGRATE_TAKES: Duration = Duration::from_secs(1);

/// A cluster whose gossip is instant: a migration changes both nodes' loads at once.
#[derive(Default)]
struct FakeCluster {
    state: Option<NodeState>,
    grains: BTreeMap<String, Vec<ActivationSample>>,
    failing: HashSet<GrainId>,
    in_flight: usize,
    max_in_flight: usize,
}

/// The host of node `a` in a [`FakeCluster`].
#[derive(Clone)]
struct FakeHost(Arc<Mutex<FakeCluster>>);

impl FakeHost {
    /// Node `a` with `on_a` idle grains and node `b` with `on_b`, both Active.
    fn new(on_a: usize, on_b: usize) -> Self {
        let cluster = FakeCluster {
            state: Some(NodeState::Active),
            grains: BTreeMap::from([
                ("a".to_owned(), idle_grains("a", on_a)),
                ("b".to_owned(), idle_grains("b", on_b)),
            ]),
            ..FakeCluster::default()
        };
        Self(Arc::new(Mutex::new(cluster)))
    }

    fn cluster(&self) -> std::sync::MutexGuard<'_, FakeCluster> {
        self.0.lock().expect("fake cluster lock poisoned")
    }

    fn set_state(&self, state: NodeState) {
        self.cluster().state = Some(state);
    }

    fn count_on(&self, node: &str) -> usize {
        self.cluster().grains[node].len()
    }
}

impl RebalanceHost for FakeHost {
    fn name(&self) -> String {
        "a".into()
    }

    fn state(&self) -> NodeState {
        self.cluster().state.expect("the fake sets a state")
    }

    fn members(&self) -> Vec<MemberInfo> {
        let cluster = self.cluster();
        let local_state = cluster.state.expect("the fake sets a state");
        cluster
            .grains
            .iter()
            .map(|(name, grains)| {
                let state = if name == "a" {
                    local_state
                } else {
                    NodeState::Active
                };
                let load = NodeLoad {
                    activations: grains.len() as u64,
                    ..NodeLoad::default()
                };
                member_with(name, state, load)
            })
            .collect()
    }

    fn activation_samples(&self) -> Vec<ActivationSample> {
        self.cluster().grains["a"].clone()
    }

    fn migrate(
        &self,
        grain: GrainId,
        target: String,
        _deadline: Instant,
    ) -> BoxFuture<'static, MoveOutcome> {
        let host = self.clone();
        Box::pin(async move {
            {
                let mut cluster = host.cluster();
                cluster.in_flight += 1;
                cluster.max_in_flight = cluster.max_in_flight.max(cluster.in_flight);
            }
            tokio::time::sleep(MIGRATE_TAKES).await;
            let mut cluster = host.cluster();
            cluster.in_flight -= 1;
            if cluster.failing.contains(&grain) {
                return MoveOutcome::Failed {
                    outcome: "rejected",
                    message: format!("node {target} rejected {grain}"),
                };
            }
            let source = cluster.grains.get_mut("a").expect("node a exists");
            let index = source
                .iter()
                .position(|sample| sample.grain == grain)
                .expect("the planner moves only local grains");
            let moved = source.remove(index);
            cluster
                .grains
                .get_mut(&target)
                .expect("the planner targets only members")
                .push(moved);
            MoveOutcome::Succeeded
        })
    }

    fn unix_now_ms(&self) -> u64 {
        1_700_000_000_000
    }
}

/// Defaults with a 10 s round interval and no relative move limit.
fn config() -> RebalancerConfig {
    RebalancerConfig {
        round_interval: INTERVAL,
        max_move_fraction: 1.0,
        ..RebalancerConfig::default()
    }
}

fn start(
    host: &FakeHost,
    config: RebalancerConfig,
) -> (Arc<Rebalancer>, tokio::task::JoinHandle<()>) {
    let shared = Arc::new(Rebalancer::new(&config, RebalancerMetrics::new()));
    let task = tokio::spawn(run(host.clone(), config, Arc::clone(&shared)));
    (shared, task)
}

/// Lets the loop run for `duration` of paused time, plus a little for the round's own work.
async fn advance(duration: Duration) {
    tokio::time::sleep(duration + Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn rounds_wait_for_active_node() {
    let host = FakeHost::new(14, 6);
    host.set_state(NodeState::Joining);
    let (shared, _task) = start(&host, config());

    advance(3 * INTERVAL).await;
    assert_eq!(shared.round_records().len(), 0, "rounds while Joining");

    host.set_state(NodeState::Active);
    advance(INTERVAL + MIGRATE_TAKES).await;
    let rounds = shared.round_records();
    assert_eq!(rounds.len(), 1);
    assert_eq!(rounds[0].round, 1);
    assert_eq!(rounds[0].moves.len(), 4);
    assert!(
        rounds[0]
            .moves
            .iter()
            .all(|m| m.outcome == MoveOutcome::Succeeded)
    );
}

#[tokio::test(start_paused = true)]
async fn loop_moves_to_balance_then_stops() {
    let host = FakeHost::new(14, 6);
    let (shared, _task) = start(&host, config());

    advance(3 * INTERVAL).await;
    assert_eq!(host.count_on("a"), 10);
    assert_eq!(host.count_on("b"), 10);
    let rounds = shared.round_records();
    let moved: Vec<usize> = rounds.iter().map(|r| r.moves.len()).collect();
    assert_eq!(moved, [4, 0, 0]);
    assert_eq!(rounds[1].note, "balanced within ±10% of the mean");
    assert_eq!((rounds[0].local_load, rounds[0].mean_load), (14.0, 10.0));
}

#[tokio::test(start_paused = true)]
async fn paused_rebalancer_runs_no_rounds() {
    let host = FakeHost::new(14, 6);
    let (shared, _task) = start(&host, config());
    shared.set_paused(true);
    assert!(shared.is_paused());

    advance(5 * INTERVAL).await;
    assert_eq!(shared.round_records().len(), 0, "rounds while paused");
    assert_eq!(host.count_on("a"), 14);

    shared.set_paused(false);
    advance(INTERVAL + MIGRATE_TAKES).await;
    assert_eq!(shared.round_records().len(), 1);
    assert_eq!(host.count_on("a"), 10);
}

#[tokio::test(start_paused = true)]
async fn start_paused_setting_holds_rounds() {
    let host = FakeHost::new(14, 6);
    let config = RebalancerConfig {
        start_paused: true,
        ..config()
    };
    let (shared, _task) = start(&host, config);
    advance(3 * INTERVAL).await;
    assert!(shared.is_paused());
    assert_eq!(shared.round_records().len(), 0);
}

#[tokio::test(start_paused = true)]
async fn moves_respect_concurrency_bound() {
    let host = FakeHost::new(40, 0);
    let config = RebalancerConfig {
        max_concurrent_moves: NonZeroUsize::new(3).expect("not zero"),
        ..config()
    };
    let (shared, _task) = start(&host, config);

    // 20 moves of 1 s each, 3 at a time, take 7 s: the round ends within one interval.
    advance(INTERVAL + 7 * MIGRATE_TAKES).await;
    assert_eq!(shared.round_records()[0].moves.len(), 20);
    assert_eq!(host.cluster().max_in_flight, 3);
}

#[tokio::test(start_paused = true)]
async fn history_keeps_newest_rounds() {
    let host = FakeHost::new(10, 10);
    let config = RebalancerConfig {
        history_rounds: NonZeroU32::new(3).expect("not zero"),
        ..config()
    };
    let (shared, _task) = start(&host, config);
    advance(5 * INTERVAL).await;
    let kept: Vec<u64> = shared.round_records().iter().map(|r| r.round).collect();
    assert_eq!(kept, [3, 4, 5]);
    assert_eq!(shared.rounds().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn failed_move_is_recorded_and_counted() {
    // Mean 10 and a band of ±5%: round 1 plans a-000 (fails) and a-001, leaving `a` at 11,
    // so round 2 sheds one more grain.
    let host = FakeHost::new(12, 8);
    let failing = GrainId::new("counter", "a-000");
    host.cluster().failing.insert(failing.clone());
    let config = RebalancerConfig {
        tolerance: 0.05,
        ..config()
    };
    let metrics = RebalancerMetrics::new();
    let registry = Registry::new();
    metrics.register(&registry).expect("fresh registry");
    let shared = Arc::new(Rebalancer::new(&config, metrics.clone()));
    let _task = tokio::spawn(run(host.clone(), config, Arc::clone(&shared)));

    advance(INTERVAL + MIGRATE_TAKES).await;
    let round = &shared.round_records()[0];
    let failed: Vec<&MoveRecord> = round
        .moves
        .iter()
        .filter(|m| m.outcome != MoveOutcome::Succeeded)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].grain, failing);
    assert_eq!(failed[0].outcome.label(), "rejected");
    assert_eq!(metrics.rounds.get(), 1);
    assert_eq!(metrics.moves.with_label_values(&["rejected"]).get(), 1);
    assert_eq!(metrics.moves.with_label_values(&["succeeded"]).get(), 1);

    // The failed grain waits `min_move_interval`, so the next grain in order goes instead.
    advance(INTERVAL).await;
    let keys: Vec<String> = shared.round_records()[1]
        .moves
        .iter()
        .map(|m| m.grain.key.clone())
        .collect();
    assert_eq!(keys, ["a-002"]);
}

#[tokio::test(start_paused = true)]
async fn loop_ends_when_node_dead() {
    let host = FakeHost::new(10, 10);
    let (_shared, task) = start(&host, config());
    host.set_state(NodeState::Dead);
    advance(INTERVAL).await;
    assert!(task.is_finished(), "loop still runs after the node died");
}
