//! Micro-benchmarks of the hot paths: envelope codec, directory, placement, scaling policy and
//! a local grain call next to a raw ractor call in the same process.
//!
//! Run with `cargo bench --bench micro`. After criterion's own report, the benchmark prints
//! each pair (grain call against raw ractor call, placement over 100 against 10 candidates)
//! as a ratio of criterion's median estimates.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group};
use gristmill::clock::Millis;
use gristmill::directory::{DirectoryConfig, DirectoryEntry, DirectoryPartition, Expect};
use gristmill::grain::samples::{self, Counter, Get};
use gristmill::grain::{GrainId, PayloadFormat};
use gristmill::membership::{Incarnation, NodeLoad, NodeState};
use gristmill::placement::{self, PlacementCandidate, PlacementConfig, PlacementStrategy};
use gristmill::runtime::{Node, NodeConfig};
use gristmill::scaling::{ClusterSnapshot, NodeSnapshot, ScalingConfig, ScalingCore};
use gristmill::transport::{CallEnvelope, Envelope, Route};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Entries in the directory partition that the lookup benchmark searches.
const DIRECTORY_ENTRIES: usize = 100_000;

fn incarnation(name: &str) -> Incarnation {
    Incarnation {
        name: name.into(),
        boot_id: 1,
    }
}

fn sample_envelope() -> Envelope {
    Envelope::V1(CallEnvelope {
        grain: GrainId::new("counter", "counter-42"),
        method: "add".into(),
        format: PayloadFormat::Postcard,
        payload: postcard::to_allocvec(&samples::Add { amount: 5 }).expect("encodes"),
        deadline_unix_ms: 1_700_000_000_000,
        trace_parent: None,
        hops: 0,
        route: Route::Deliver,
    })
}

fn envelope_codec(c: &mut Criterion) {
    let envelope = sample_envelope();
    let bytes = postcard::to_allocvec(&envelope).expect("encodes");
    let mut group = c.benchmark_group("envelope");
    group.bench_function("encode", |b| {
        b.iter(|| postcard::to_allocvec(black_box(&envelope)).expect("encodes"))
    });
    group.bench_function("decode", |b| {
        b.iter(|| postcard::from_bytes::<Envelope>(black_box(&bytes)).expect("decodes"))
    });
    group.finish();
}

fn directory_lookup(c: &mut Criterion) {
    let local = incarnation("node-0");
    let mut partition = DirectoryPartition::new(local.clone(), DirectoryConfig::default());
    let start = Millis(0);
    partition.handle_membership_change(std::slice::from_ref(&local), start);
    // Past any readiness window the membership change may have opened.
    let now = Millis(3_600_000);
    let grains: Vec<GrainId> = (0..DIRECTORY_ENTRIES)
        .map(|index| GrainId::new("counter", format!("counter-{index}")))
        .collect();
    for (index, grain) in grains.iter().enumerate() {
        let entry = DirectoryEntry {
            grain: grain.clone(),
            host: local.clone(),
            activation_id: index as u64,
            epoch: 0,
        };
        partition.handle_register(entry, Expect::Absent, now);
    }
    assert_eq!(partition.len(), DIRECTORY_ENTRIES, "every registration won");

    let mut next = 0usize;
    c.bench_function("directory/lookup_100k", |b| {
        b.iter(|| {
            next = (next + 7919) % DIRECTORY_ENTRIES;
            partition.handle_lookup(black_box(&grains[next]), now)
        })
    });
}

fn candidates(count: usize) -> Vec<PlacementCandidate> {
    (0..count)
        .map(|index| {
            let load = NodeLoad {
                activations: 1_000 + index as u64 * 17,
                calls_per_sec: 500.0 + index as f64,
                cpu_percent: (index % 100) as f64,
                memory_bytes: 1 << 30,
                ..NodeLoad::default()
            };
            PlacementCandidate::active(incarnation(&format!("node-{index}")), load)
        })
        .collect()
}

fn placement_choice(c: &mut Criterion) {
    let config = PlacementConfig::default();
    let grain = GrainId::new("counter", "counter-42");
    let local = incarnation("node-0");
    let mut rng = StdRng::seed_from_u64(7);
    let mut group = c.benchmark_group("placement");
    for count in [10, 100] {
        let candidates = candidates(count);
        for strategy in [
            PlacementStrategy::Random,
            PlacementStrategy::Hash,
            PlacementStrategy::LeastLoaded,
            PlacementStrategy::ResourceOptimized,
        ] {
            group.bench_with_input(
                BenchmarkId::new(strategy.as_str(), count),
                &candidates,
                |b, candidates| {
                    b.iter(|| {
                        placement::choose(strategy, &config, &grain, &local, candidates, &mut rng)
                            .expect("every candidate is Active")
                    })
                },
            );
        }
    }
    group.finish();
}

fn policy_evaluation(c: &mut Criterion) {
    let core = ScalingCore::new(ScalingConfig::default()).expect("the default config is valid");
    let mut group = c.benchmark_group("scaling");
    for count in [3, 30] {
        let nodes: Vec<NodeSnapshot> = (0..count)
            .map(|index| NodeSnapshot {
                incarnation: incarnation(&format!("node-{index}")),
                state: NodeState::Active,
                load: NodeLoad {
                    activations: 10_000,
                    calls_per_sec: 2_000.0,
                    mailbox_depth_total: 40,
                    mailbox_depth_max: 4,
                    cpu_percent: 60.0,
                    memory_bytes: 1 << 30,
                },
            })
            .collect();
        let snapshot = ClusterSnapshot::new(nodes, incarnation("node-0"));
        group.bench_with_input(
            BenchmarkId::new("dry_run", count),
            &snapshot,
            |b, snapshot| b.iter(|| core.dry_run(black_box(snapshot.clone()), Millis(600_000))),
        );
    }
    group.finish();
}

/// Message of the plain actor that the local grain call is compared with. Derived as a local
/// message, so the actor is not advertised to ractor_cluster peers.
#[derive(ractor_cluster::RactorMessage)]
enum EchoMsg {
    Ping(u64, RpcReplyPort<u64>),
}

struct EchoActor;

impl Actor for EchoActor {
    type Msg = EchoMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let EchoMsg::Ping(value, reply) = message;
        let _ = reply.send(value);
        Ok(())
    }
}

/// Starts a single node on loopback whose grain state lives in `data_dir`, and waits until it
/// is Active.
async fn start_node(data_dir: &Path) -> Node {
    let mut config = NodeConfig {
        cookie: "criterion-bench-cookie".into(),
        metrics_port: None,
        ..NodeConfig::default()
    };
    config.storage.sqlite_path = data_dir.join("bench.sqlite3");
    let node = Node::start(config, samples::registry())
        .await
        .expect("the bench node starts");
    let mut state = node.watch_state();
    tokio::time::timeout(
        Duration::from_secs(30),
        state.wait_for(|state| *state == NodeState::Active),
    )
    .await
    .expect("the bench node becomes Active within 30 s")
    .expect("the node's state channel stays open");
    node
}

fn local_call(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    let data_dir = tempfile::tempdir().expect("a temporary directory");
    let node = runtime.block_on(start_node(data_dir.path()));
    let counter = node.grain::<Counter>("bench-local");
    runtime
        .block_on(counter.call(Get))
        .expect("the first call activates the counter");
    let (echo, _) = runtime
        .block_on(Actor::spawn(None, EchoActor, ()))
        .expect("the echo actor starts");

    let mut group = c.benchmark_group("local_call");
    group.bench_function("grain_ref", |b| {
        b.to_async(&runtime)
            .iter(|| async { counter.call(Get).await.expect("the call succeeds") })
    });
    group.bench_function("raw_ractor", |b| {
        b.to_async(&runtime).iter(|| async {
            echo.call(|reply| EchoMsg::Ping(7, reply), None)
                .await
                .expect("the actor is running")
                .expect("the actor replies")
        })
    });
    // The same two calls from a task on the runtime's worker threads, where gRPC handlers and
    // grains call from. The calls above come from criterion's `block_on` on the main thread,
    // so every call crosses threads twice.
    group.bench_function("grain_ref_in_task", |b| {
        b.iter_custom(|iterations| {
            let counter = counter.clone();
            in_task(&runtime, async move {
                for _ in 0..iterations {
                    black_box(counter.call(Get).await.expect("the call succeeds"));
                }
            })
        })
    });
    group.bench_function("raw_ractor_in_task", |b| {
        b.iter_custom(|iterations| {
            let echo = echo.clone();
            in_task(&runtime, async move {
                for _ in 0..iterations {
                    let reply = echo
                        .call(|reply| EchoMsg::Ping(7, reply), None)
                        .await
                        .expect("the actor is running")
                        .expect("the actor replies");
                    black_box(reply);
                }
            })
        })
    });
    group.finish();
    echo.stop(None);
}

/// Runs `work` as a task on `runtime` and returns how long it took there.
fn in_task(
    runtime: &tokio::runtime::Runtime,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) -> Duration {
    runtime
        .block_on(runtime.spawn(async move {
            let started = Instant::now();
            work.await;
            started.elapsed()
        }))
        .expect("the benchmark task completes")
}

criterion_group!(
    benches,
    envelope_codec,
    directory_lookup,
    placement_choice,
    policy_evaluation,
    local_call
);

/// Returns criterion's median estimate of the benchmark `id`, in nanoseconds.
fn median_ns(criterion_dir: &Path, id: &str) -> Option<f64> {
    let path = criterion_dir.join(id).join("new").join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let estimates: serde_json::Value = serde_json::from_str(&text).ok()?;
    estimates["median"]["point_estimate"].as_f64()
}

/// Prints each pair of benchmarks as a ratio of their medians.
fn print_ratios() {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let criterion_dir = target.join("criterion");
    let mut pairs = vec![
        ("local_call/grain_ref", "local_call/raw_ractor"),
        (
            "local_call/grain_ref_in_task",
            "local_call/raw_ractor_in_task",
        ),
    ];
    let strategies = ["random", "hash", "least-loaded", "resource-optimized"];
    let placement: Vec<(String, String)> = strategies
        .iter()
        .map(|s| (format!("placement/{s}/100"), format!("placement/{s}/10")))
        .collect();
    pairs.extend(placement.iter().map(|(a, b)| (a.as_str(), b.as_str())));
    pairs.push(("envelope/decode", "envelope/encode"));
    println!("\npairs (median / median):");
    for (figure, baseline) in pairs {
        match (
            median_ns(&criterion_dir, figure),
            median_ns(&criterion_dir, baseline),
        ) {
            (Some(value), Some(base)) => println!(
                "  {figure} {value:.0} ns / {baseline} {base:.0} ns = {:.2}x",
                value / base
            ),
            _ => println!("  {figure} / {baseline}: not measured in this run"),
        }
    }
}

fn main() {
    let started = Instant::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_ratios();
    eprintln!("micro-benchmarks took {:.0?}", started.elapsed());
}
