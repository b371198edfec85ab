//! Tables of cases for the routing cores: strategies, breaker, retry budget and config.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::client::failure_of;
use super::*;
use crate::api::ERROR_CODE_METADATA;
use crate::clock::Millis;
use crate::directory::partition_owner;
use crate::grain::GrainId;
use crate::membership::{Incarnation, NodeState};

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

fn candidate(name: &str, outstanding: u32, ewma_ms: f64, weight: u32) -> Candidate<'_> {
    Candidate {
        name,
        outstanding,
        ewma_ms,
        weight,
    }
}

fn picks(kind: StrategyKind, candidates: &[Candidate<'_>], count: usize) -> Vec<usize> {
    let mut picker = Picker::default();
    let mut rng = rng();
    (0..count)
        .map(|_| picker.pick(kind, candidates, &mut rng).expect("candidates"))
        .collect()
}

#[test]
fn strategy_names_round_trip() {
    for kind in StrategyKind::ALL {
        assert_eq!(kind.as_str().parse::<StrategyKind>(), Ok(kind));
    }
}

#[test]
fn unknown_strategy_lists_valid_names() {
    let error = "fastest".parse::<StrategyKind>().unwrap_err();
    let message = error.to_string();
    assert!(message.contains("routing strategy"), "{message}");
    assert!(message.contains("\"fastest\""), "{message}");
    for kind in StrategyKind::ALL {
        assert!(message.contains(kind.as_str()), "{message} lacks {kind}");
    }
}

#[test]
fn unknown_strategy_in_settings_is_rejected() {
    let error = toml::from_str::<ClientConfig>("strategy = \"fastest\"").unwrap_err();
    assert!(error.message().contains("p2c-ewma"), "{error}");
    let config: ClientConfig =
        toml::from_str("strategy_by_grain_type = { counter = \"grain-aware\" }").expect("valid");
    assert_eq!(config.strategy_for("counter"), StrategyKind::GrainAware);
    assert_eq!(config.strategy_for("account"), StrategyKind::RoundRobin);
}

#[test]
fn no_candidates_no_pick() {
    for kind in StrategyKind::ALL {
        assert_eq!(
            Picker::default().pick(kind, &[], &mut rng()),
            None,
            "{kind}"
        );
    }
}

#[test]
fn round_robin_takes_turns() {
    let three = [
        candidate("a", 9, 1.0, 1),
        candidate("b", 0, 1.0, 1),
        candidate("c", 0, 50.0, 1),
    ];
    assert_eq!(
        picks(StrategyKind::RoundRobin, &three, 7),
        [0, 1, 2, 0, 1, 2, 0]
    );
    assert_eq!(picks(StrategyKind::RoundRobin, &three[..1], 3), [0, 0, 0]);
}

#[test]
fn least_outstanding_picks_fewest_in_flight() {
    // (loads, expected picks): ties rotate with the cursor.
    let cases: [(&[u32], &[usize]); 4] = [
        (&[3, 1, 2], &[1, 1, 1]),
        (&[0, 0, 0], &[0, 1, 2]),
        (&[5, 2, 2], &[1, 1, 2]),
        (&[7], &[0, 0, 0]),
    ];
    for (loads, expected) in cases {
        let names = ["a", "b", "c"];
        let candidates: Vec<Candidate<'_>> = loads
            .iter()
            .zip(names)
            .map(|(&load, name)| candidate(name, load, 1.0, 1))
            .collect();
        let got = picks(StrategyKind::LeastOutstanding, &candidates, expected.len());
        assert_eq!(got, expected, "loads {loads:?}");
    }
}

#[test]
fn weighted_spreads_by_weight_smoothly() {
    let candidates = [
        candidate("a", 0, 1.0, 5),
        candidate("b", 0, 1.0, 1),
        candidate("c", 0, 1.0, 1),
    ];
    // The interleaving nginx documents for weights 5, 1, 1.
    assert_eq!(
        picks(StrategyKind::Weighted, &candidates, 7),
        [0, 0, 1, 0, 2, 0, 0]
    );
    // (weights, picks, expected count per candidate)
    let cases: [(&[u32], usize, &[usize]); 3] = [
        (&[1, 1, 1], 300, &[100, 100, 100]),
        (&[3, 1], 400, &[300, 100]),
        (&[2, 0, 1], 300, &[150, 75, 75]),
    ];
    for (weights, count, expected) in cases {
        let names = ["a", "b", "c"];
        let candidates: Vec<Candidate<'_>> = weights
            .iter()
            .zip(names)
            .map(|(&weight, name)| candidate(name, 0, 1.0, weight))
            .collect();
        let mut counts = vec![0; candidates.len()];
        for index in picks(StrategyKind::Weighted, &candidates, count) {
            counts[index] += 1;
        }
        assert_eq!(counts, expected, "weights {weights:?} (0 counts as 1)");
    }
}

#[test]
fn p2c_prefers_lower_cost() {
    // (ewma_ms, outstanding) of two candidates, expected pick: cost = ewma * (outstanding + 1).
    let cases = [
        ((1.0, 0), (5.0, 0), 0),
        ((5.0, 0), (1.0, 0), 1),
        ((1.0, 9), (5.0, 0), 1),
        ((2.0, 1), (1.0, 2), 1),
        ((2.0, 0), (1.0, 2), 0),
    ];
    for ((ewma_a, load_a), (ewma_b, load_b), expected) in cases {
        let candidates = [
            candidate("a", load_a, ewma_a, 1),
            candidate("b", load_b, ewma_b, 1),
        ];
        for got in picks(StrategyKind::P2cEwma, &candidates, 20) {
            assert_eq!(
                got, expected,
                "a=({ewma_a}, {load_a}) b=({ewma_b}, {load_b})"
            );
        }
    }
}

#[test]
fn p2c_never_picks_the_worst_of_three() {
    let candidates = [
        candidate("a", 0, 1.0, 1),
        candidate("b", 0, 500.0, 1),
        candidate("c", 0, 2.0, 1),
    ];
    let got = picks(StrategyKind::P2cEwma, &candidates, 300);
    assert!(!got.contains(&1), "the slowest gateway was picked");
    assert!(
        got.contains(&0) && got.contains(&2),
        "both fast gateways get calls"
    );
}

#[test]
fn random_covers_all_evenly() {
    let candidates = [
        candidate("a", 0, 1.0, 1),
        candidate("b", 0, 1.0, 1),
        candidate("c", 0, 1.0, 1),
    ];
    let mut counts = [0_u32; 3];
    for index in picks(StrategyKind::Random, &candidates, 3000) {
        counts[index] += 1;
    }
    for count in counts {
        assert!((850..=1150).contains(&count), "counts {counts:?}");
    }
}

#[test]
fn peak_ewma_jumps_up_and_decays_down() {
    let decay = Duration::from_secs(10);
    // (initial ms, sample ms, elapsed ms, expected ms)
    let cases = [
        (10.0, 50.0, 0, 50.0),
        (10.0, 50.0, 100_000, 50.0),
        (50.0, 10.0, 0, 50.0),
        (50.0, 10.0, 10_000, 10.0 + 40.0 * (-1.0_f64).exp()),
        (50.0, 10.0, 1_000_000, 10.0),
    ];
    for (initial, sample, elapsed, expected) in cases {
        let initial_duration = Duration::from_secs_f64(initial / 1000.0);
        let mut ewma = PeakEwma::new(initial_duration, decay, Millis(0));
        ewma.observe(Duration::from_secs_f64(sample / 1000.0), Millis(elapsed));
        let got = ewma.value_ms();
        assert!(
            (got - expected).abs() < 1e-6,
            "initial {initial} sample {sample} after {elapsed} ms: got {got}, expected {expected}"
        );
    }
}

#[derive(Clone, Copy, Debug)]
enum Event {
    Call(u64),
    Success,
    Failure(u64),
}

#[test]
fn breaker_state_machine() {
    use BreakerState::{Closed, HalfOpen, Open};
    use Event::{Call, Failure, Success};
    let open_for = Duration::from_millis(100);
    // (threshold, events, final state, availability at the time of the last event)
    let cases: [(u32, &[Event], BreakerState); 8] = [
        (3, &[Failure(0), Failure(1)], Closed { failures: 2 }),
        (
            3,
            &[Failure(0), Failure(1), Failure(2)],
            Open { until: Millis(102) },
        ),
        (
            3,
            &[Failure(0), Success, Failure(2), Failure(3)],
            Closed { failures: 2 },
        ),
        (1, &[Failure(5)], Open { until: Millis(105) }),
        (1, &[Failure(5), Call(105)], HalfOpen { probing: true }),
        (1, &[Failure(5), Call(105), Success], Closed { failures: 0 }),
        (
            1,
            &[Failure(5), Call(105), Failure(150)],
            Open { until: Millis(250) },
        ),
        // A late success from before the breaker opened changes nothing.
        (1, &[Failure(5), Success], Open { until: Millis(105) }),
    ];
    for (threshold, events, expected) in cases {
        let mut breaker = CircuitBreaker::new(threshold, open_for);
        for event in events {
            match *event {
                Call(now) => {
                    assert!(breaker.is_available(Millis(now)), "{events:?}");
                    breaker.handle_call(Millis(now));
                }
                Success => {
                    breaker.handle_success();
                }
                Failure(now) => {
                    breaker.handle_failure(Millis(now));
                }
            }
        }
        assert_eq!(
            breaker.state(),
            expected,
            "threshold {threshold}, {events:?}"
        );
    }
}

#[test]
fn breaker_admits_one_probe_after_open_for() {
    let mut breaker = CircuitBreaker::new(2, Duration::from_millis(100));
    assert_eq!(breaker.handle_failure(Millis(0)), None);
    assert_eq!(
        breaker.handle_failure(Millis(10)),
        Some(BreakerState::Open { until: Millis(110) })
    );
    assert!(!breaker.is_available(Millis(109)), "open before open_for");
    assert!(breaker.is_available(Millis(110)), "probe after open_for");
    assert_eq!(
        breaker.handle_call(Millis(110)),
        Some(BreakerState::HalfOpen { probing: true })
    );
    assert!(!breaker.is_available(Millis(111)), "one probe at a time");
    breaker.handle_neutral();
    assert!(
        breaker.is_available(Millis(112)),
        "an abandoned probe frees the slot"
    );
    breaker.handle_call(Millis(112));
    assert_eq!(
        breaker.handle_success(),
        Some(BreakerState::Closed { failures: 0 })
    );
}

#[test]
fn retry_budget_bounds_retries() {
    // (ratio, min_per_sec, max_tokens, calls, seconds spanned, expected retries granted)
    let cases = [
        (0.2, 0, 1, 100, 0, 21),
        (0.2, 0, 10, 100, 0, 30),
        (0.0, 0, 5, 100, 0, 5),
        (0.0, 10, 10, 0, 3, 40),
        (0.0, 10, 1, 0, 3, 4),
        (0.5, 0, 1, 10, 0, 6),
    ];
    for (ratio, min_per_sec, max_tokens, calls, seconds, expected) in cases {
        let mut budget = RetryBudget::new(ratio, min_per_sec, max_tokens, Millis(0));
        let mut granted = 0;
        // Spend the initial tokens first, then deposit calls and time, then spend again.
        while budget.maybe_withdraw(Millis(0)) {
            granted += 1;
        }
        let end = Millis(seconds * 1000);
        for _ in 0..calls {
            budget.handle_call();
            while budget.maybe_withdraw(Millis(0)) {
                granted += 1;
            }
        }
        for second in 1..=seconds {
            while budget.maybe_withdraw(Millis(second * 1000)) {
                granted += 1;
            }
        }
        assert!(!budget.maybe_withdraw(end), "budget exhausted at the end");
        assert_eq!(
            granted, expected,
            "ratio {ratio}, {min_per_sec}/s, max {max_tokens}, {calls} calls over {seconds} s"
        );
    }
}

#[test]
fn retry_budget_caps_stored_tokens() {
    let mut budget = RetryBudget::new(1.0, 100, 4, Millis(0));
    for _ in 0..50 {
        budget.handle_call();
    }
    assert!(budget.tokens() <= 4.0, "tokens {}", budget.tokens());
    assert!(budget.maybe_withdraw(Millis(60_000)));
    assert!(budget.tokens() <= 3.0, "an hour of refill is capped too");
}

#[test]
fn retry_safety_by_failure() {
    use RetrySafety::{MayHaveRun, Pointless, Safe};
    // (failure, safety when idempotent, safety when not)
    let cases = [
        (Failure::NotSent, Safe, Safe),
        (Failure::ShuttingDown, Safe, Safe),
        (Failure::ClusterRejected, Safe, Safe),
        (Failure::ClusterUnavailable, Safe, MayHaveRun),
        (Failure::ConnectionLost, Safe, MayHaveRun),
        (Failure::NoResponse, Safe, MayHaveRun),
        (Failure::DeadlineExceeded, Safe, MayHaveRun),
        (Failure::NotFound, Pointless, Pointless),
        (Failure::Application, Pointless, Pointless),
    ];
    for (failure, idempotent, not_idempotent) in cases {
        assert_eq!(retry_safety(failure, true), idempotent, "{failure:?}");
        assert_eq!(retry_safety(failure, false), not_idempotent, "{failure:?}");
    }
}

#[test]
fn status_maps_to_failure() {
    let with_code = |code: tonic::Code, error_code: &str| {
        let mut status = tonic::Status::new(code, "x");
        let value = error_code.parse().expect("ascii");
        status.metadata_mut().insert(ERROR_CODE_METADATA, value);
        status
    };
    let cases = [
        (
            with_code(tonic::Code::NotFound, "unknown"),
            Failure::NotFound,
        ),
        (
            with_code(tonic::Code::DeadlineExceeded, "deadline_exceeded"),
            Failure::DeadlineExceeded,
        ),
        (
            with_code(tonic::Code::Unavailable, "shutting_down"),
            Failure::ShuttingDown,
        ),
        (
            with_code(tonic::Code::Unavailable, "no_active_node"),
            Failure::ClusterRejected,
        ),
        (
            with_code(tonic::Code::Unavailable, "node_unavailable"),
            Failure::ClusterUnavailable,
        ),
        (
            with_code(tonic::Code::FailedPrecondition, "insufficient_funds"),
            Failure::Application,
        ),
        (
            tonic::Status::unavailable("connection reset"),
            Failure::ConnectionLost,
        ),
        (tonic::Status::invalid_argument("bad"), Failure::Application),
    ];
    for (status, expected) in cases {
        assert_eq!(failure_of(&status), expected, "{status:?}");
    }
    for failure in [Failure::NotSent, Failure::ShuttingDown, Failure::NoResponse] {
        assert!(failure.is_gateway_failure(), "{failure:?}");
    }
    for failure in [
        Failure::ClusterUnavailable,
        Failure::Application,
        Failure::NotFound,
    ] {
        assert!(!failure.is_gateway_failure(), "{failure:?}");
    }
}

#[tokio::test]
async fn refused_connection_is_not_sent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    drop(listener);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect_lazy();
    let mut client = crate::api::pb::grains_client::GrainsClient::new(channel);
    let status = client
        .invoke(crate::api::pb::InvokeRequest::default())
        .await
        .expect_err("nothing listens on the port");
    assert_eq!(failure_of(&status), Failure::NotSent, "{status:?}");
}

#[tokio::test]
async fn unreachable_seed_is_named_in_error() {
    // Goal: a client whose only seed refuses connections reports the refusal, instead of
    // blaming the cluster for listing no Active node.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    drop(listener);
    let config = ClientConfig {
        seeds: vec![addr.to_string()],
        connect_timeout: Duration::from_millis(200),
        ..ClientConfig::default()
    };
    let Err(error) = super::ClientBuilder::new(config).connect().await else {
        panic!("a client without a reachable seed connected");
    };
    let message = error.to_string();
    assert!(
        message.contains(&format!("{addr}: cannot connect")),
        "{message}"
    );
}

fn valid_config() -> ClientConfig {
    ClientConfig {
        seeds: vec!["127.0.0.1:7000".into()],
        ..ClientConfig::default()
    }
}

#[test]
fn config_validation_names_the_field() {
    type Edit = fn(&mut ClientConfig);
    let cases: [(&str, Edit); 11] = [
        ("seeds", |c| c.seeds.clear()),
        ("seed", |c| c.seeds = vec!["localhost".into()]),
        ("seed", |c| c.seeds = vec!["127.0.0.1:0".into()]),
        ("idempotent_methods", |c| {
            c.idempotent_methods.insert("counter".into());
        }),
        ("call_timeout", |c| c.call_timeout = Duration::ZERO),
        ("call_timeout", |c| {
            c.call_timeout = Duration::from_secs(3601)
        }),
        ("attempt_timeout", |c| {
            c.attempt_timeout = Some(Duration::ZERO)
        }),
        ("connect_timeout", |c| c.connect_timeout = Duration::ZERO),
        ("breaker.failure_threshold", |c| {
            c.breaker.failure_threshold = 0
        }),
        ("breaker.open_for", |c| c.breaker.open_for = Duration::ZERO),
        ("retry_budget.ratio", |c| c.retry_budget.ratio = 1.5),
    ];
    assert_eq!(valid_config().validate(), Ok(()));
    for (field, edit) in cases {
        let mut config = valid_config();
        edit(&mut config);
        let error = config.validate().expect_err(field);
        assert!(
            error.to_string().contains(field),
            "{error} should name {field}"
        );
    }
}

#[test]
fn config_lookups() {
    let mut config = valid_config();
    config.idempotent_methods.insert("counter.get".into());
    config
        .weights
        .insert("node-1".into(), NonZeroU32::new(4).unwrap());
    assert!(config.is_idempotent("counter", "get"));
    assert!(!config.is_idempotent("counter", "add"));
    assert!(!config.is_idempotent("account", "get"));
    assert_eq!(config.weight_of("node-1"), 4);
    assert_eq!(config.weight_of("node-2"), 1);
}

fn member(name: &str, boot_id: u64, state: NodeState) -> MemberUpdate {
    MemberUpdate {
        name: name.into(),
        boot_id,
        grpc_addr: format!("127.0.0.1:{}", 7000 + boot_id),
        state,
    }
}

fn balancer_with(strategy: StrategyKind, names: &[&str]) -> Balancer {
    let config = ClientConfig {
        strategy,
        breaker: BreakerConfig {
            failure_threshold: 1,
            open_for: Duration::from_millis(100),
        },
        ..valid_config()
    };
    let mut balancer = Balancer::new(config, Millis(0));
    for (index, name) in names.iter().enumerate() {
        balancer.handle_member(member(name, index as u64 + 1, NodeState::Active), Millis(0));
    }
    balancer
}

fn pick_node(
    balancer: &mut Balancer,
    grain: &GrainId,
    avoid: &[String],
    now: u64,
) -> Option<String> {
    let decision = balancer.pick(grain, avoid, Millis(now), &mut rng())?;
    Some(decision.node)
}

fn fail(balancer: &mut Balancer, node: &str, grain: &GrainId, now: u64) {
    let outcome = CallOutcome::Failed {
        failure: Failure::NoResponse,
        rtt: Duration::from_millis(300),
    };
    balancer.handle_outcome(node, grain, &outcome, Millis(now));
}

fn reply(balancer: &mut Balancer, node: &str, grain: &GrainId, served_by: &str) {
    let outcome = CallOutcome::Replied {
        rtt: Duration::from_millis(1),
        served_by: served_by.into(),
        hops: u32::from(node != served_by),
    };
    balancer.handle_outcome(node, grain, &outcome, Millis(0));
}

#[test]
fn membership_changes_gateways() {
    let mut balancer = balancer_with(StrategyKind::RoundRobin, &[]);
    let added = balancer.handle_member(member("a", 1, NodeState::Joining), Millis(0));
    assert_eq!(added, [], "a joining node is no gateway");
    let added = balancer.handle_member(member("a", 1, NodeState::Active), Millis(0));
    assert_eq!(
        added,
        [GatewayChange::Added {
            name: "a".into(),
            addr: "127.0.0.1:7001".into()
        }]
    );
    for state in [NodeState::Draining, NodeState::Leaving, NodeState::Dead] {
        balancer.handle_member(member("a", 1, NodeState::Active), Millis(0));
        let removed = balancer.handle_member(member("a", 1, state), Millis(0));
        assert_eq!(
            removed,
            [GatewayChange::Removed { name: "a".into() }],
            "{state:?}"
        );
    }
    assert!(balancer.members().is_empty(), "a dead member is forgotten");

    balancer.handle_member(member("a", 1, NodeState::Active), Millis(0));
    let restarted = balancer.handle_member(member("a", 2, NodeState::Active), Millis(0));
    assert_eq!(
        restarted.len(),
        2,
        "a restart replaces the connection: {restarted:?}"
    );
}

#[test]
fn snapshot_drops_unlisted_members() {
    let mut balancer = balancer_with(StrategyKind::RoundRobin, &["a", "b", "c"]);
    balancer.begin_snapshot();
    balancer.handle_member(member("a", 1, NodeState::Active), Millis(0));
    balancer.handle_member(member("c", 3, NodeState::Active), Millis(0));
    let changes = balancer.end_snapshot();
    assert_eq!(changes, [GatewayChange::Removed { name: "b".into() }]);
    let names: Vec<String> = balancer
        .gateways()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names, ["a", "c"]);
    assert_eq!(balancer.end_snapshot(), [], "a second end changes nothing");
}

#[test]
fn open_breaker_moves_traffic_then_probes() {
    let grain = GrainId::new("counter", "c1");
    let mut balancer = balancer_with(StrategyKind::RoundRobin, &["a", "b", "c"]);
    let first = pick_node(&mut balancer, &grain, &[], 0).expect("gateways");
    assert_eq!(first, "a");
    fail(&mut balancer, "a", &grain, 0);
    assert!(matches!(
        balancer.breaker_state("a"),
        Some(BreakerState::Open { .. })
    ));

    let during: Vec<String> = (0..6)
        .map(|_| {
            let node = pick_node(&mut balancer, &grain, &[], 50).expect("gateways");
            reply(&mut balancer, &node, &grain, &node);
            node
        })
        .collect();
    assert!(
        !during.contains(&"a".to_string()),
        "open gateway got calls: {during:?}"
    );

    let probes: Vec<String> = (0..3)
        .filter_map(|_| pick_node(&mut balancer, &grain, &[], 100))
        .collect();
    assert_eq!(
        probes.iter().filter(|node| *node == "a").count(),
        1,
        "exactly one probe after open_for: {probes:?}"
    );
    reply(&mut balancer, "a", &grain, "a");
    assert_eq!(
        balancer.breaker_state("a"),
        Some(BreakerState::Closed { failures: 0 })
    );
}

#[test]
fn all_breakers_open_no_pick() {
    let grain = GrainId::new("counter", "c1");
    let mut balancer = balancer_with(StrategyKind::LeastOutstanding, &["a", "b"]);
    for node in ["a", "b"] {
        let picked = pick_node(&mut balancer, &grain, &[], 0).expect("gateways");
        fail(&mut balancer, &picked, &grain, 0);
        assert_eq!(picked, node);
    }
    assert_eq!(pick_node(&mut balancer, &grain, &[], 10), None);
}

#[test]
fn retry_avoids_failed_gateway_unless_alone() {
    let grain = GrainId::new("counter", "c1");
    let avoid = ["a".to_string()];
    let mut two = balancer_with(StrategyKind::RoundRobin, &["a", "b"]);
    for _ in 0..4 {
        assert_eq!(pick_node(&mut two, &grain, &avoid, 0).as_deref(), Some("b"));
    }
    let mut one = balancer_with(StrategyKind::RoundRobin, &["a"]);
    assert_eq!(pick_node(&mut one, &grain, &avoid, 0).as_deref(), Some("a"));
}

#[test]
fn least_outstanding_counts_in_flight_calls() {
    let grain = GrainId::new("counter", "c1");
    let mut balancer = balancer_with(StrategyKind::LeastOutstanding, &["a", "b", "c"]);
    let first: Vec<String> = (0..3)
        .filter_map(|_| pick_node(&mut balancer, &grain, &[], 0))
        .collect();
    assert_eq!(first, ["a", "b", "c"]);
    reply(&mut balancer, "b", &grain, "b");
    assert_eq!(
        pick_node(&mut balancer, &grain, &[], 0).as_deref(),
        Some("b")
    );
}

#[test]
fn grain_aware_follows_cache_then_owner() {
    let names = ["a", "b", "c"];
    let mut balancer = balancer_with(StrategyKind::GrainAware, &names);
    let live: Vec<Incarnation> = names
        .iter()
        .enumerate()
        .map(|(index, name)| Incarnation {
            name: (*name).into(),
            boot_id: index as u64 + 1,
        })
        .collect();
    let grain = GrainId::new("counter", "c1");
    let owner = partition_owner(&grain, &live)
        .expect("members")
        .name
        .clone();

    let decision = balancer
        .pick(&grain, &[], Millis(0), &mut rng())
        .expect("gateways");
    assert_eq!(
        (decision.node.as_str(), decision.reason),
        (owner.as_str(), PickReason::PartitionOwner)
    );

    let host = names
        .iter()
        .find(|name| **name != owner)
        .expect("three nodes");
    reply(&mut balancer, &owner, &grain, host);
    let decision = balancer
        .pick(&grain, &[], Millis(0), &mut rng())
        .expect("gateways");
    assert_eq!(
        (decision.node.as_str(), decision.reason),
        (*host, PickReason::Cached)
    );

    // The host's breaker opens: the cache entry stays but the owner takes the call.
    fail(&mut balancer, host, &grain, 0);
    let decision = balancer
        .pick(&grain, &[], Millis(1), &mut rng())
        .expect("gateways");
    assert_eq!(decision.node, owner);
    reply(&mut balancer, &owner, &grain, &owner);

    // The owner drains: the cache now points at it, so the call falls back to balancing.
    balancer.handle_member(
        member(
            &owner,
            live.iter().find(|m| m.name == owner).unwrap().boot_id,
            NodeState::Draining,
        ),
        Millis(2),
    );
    assert_eq!(
        balancer.cached_node(&grain),
        None,
        "a drained node leaves the cache"
    );
    let decision = balancer
        .pick(&grain, &[], Millis(3), &mut rng())
        .expect("gateways");
    assert_ne!(decision.node, owner);
}

#[test]
fn affinity_cache_evicts_oldest() {
    let mut cache = AffinityCache::new(NonZeroUsize::new(2).unwrap());
    let grains: Vec<GrainId> = (0..3)
        .map(|i| GrainId::new("counter", format!("c{i}")))
        .collect();
    cache.remember(&grains[0], "a");
    cache.remember(&grains[1], "b");
    cache.remember(&grains[0], "c");
    assert_eq!(
        cache.node_of(&grains[0]),
        Some("c"),
        "an update replaces the node"
    );
    cache.remember(&grains[2], "a");
    assert_eq!(cache.len(), 2);
    assert_eq!(
        cache.node_of(&grains[0]),
        None,
        "the oldest entry goes first"
    );
    cache.forget_node("a");
    assert_eq!(cache.node_of(&grains[2]), None);
    assert_eq!(cache.node_of(&grains[1]), Some("b"));
}
