//! Command line of the simulator: run seeds, replay one seed, or measure membership at scale.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gristmill_simulations::scenario::{SCENARIOS, Scenario, run};
use gristmill_simulations::{SimConfig, World, scale};

/// Deterministic simulation of Gristmill's protocol cores.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenarios with many seeds; exits with status 1 on the first violation.
    Run {
        /// Number of seeds to run.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// First seed; the run uses `first-seed .. first-seed + seeds`.
        #[arg(long, default_value_t = 1)]
        first_seed: u64,
        /// Nodes in the cluster (at least 3).
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Scenario name, or `all` to rotate through every scenario by seed.
        #[arg(long, default_value = "all")]
        scenario: String,
        /// Run every seed even after a violation, then report all failing seeds.
        #[arg(long)]
        keep_going: bool,
    },
    /// Run one seed and print a readable trace of its events.
    Replay {
        /// The seed to replay.
        seed: u64,
        /// Nodes in the cluster (at least 3).
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Scenario name, or `all` to pick it by seed as `run` does.
        #[arg(long, default_value = "all")]
        scenario: String,
    },
    /// Measure membership alone with many nodes: detection time, agreement, traffic.
    Scale {
        /// Number of simulated nodes.
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Seed of the run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Virtual seconds over which gossip traffic is measured once the views agree. At
        /// 1,000 nodes each node re-broadcasts its meta every 60 s; a shorter window may miss
        /// those broadcasts.
        #[arg(long, default_value_t = 10)]
        traffic_secs: u64,
        /// Print, every 5 s of virtual time, how many members the views miss and how full
        /// foca's backlogs are.
        #[arg(long)]
        progress: bool,
        /// Nodes that start in one wave, 10 ms apart.
        #[arg(long, default_value_t = 50)]
        wave_size: usize,
        /// Virtual seconds from the start of one wave to the start of the next.
        #[arg(long, default_value_t = 5)]
        wave_secs: u64,
        /// Start every node 10 ms after the previous one, in one wave, instead of in waves.
        #[arg(long, conflicts_with_all = ["wave_size", "wave_secs"])]
        all_at_once: bool,
        /// Start every node at once with every member already in its member list and view,
        /// as in a cluster that formed long ago, and measure only the steady state and the
        /// crash. Joining 10,000 nodes costs hours of CPU time, and preloading them minutes.
        #[arg(long, conflicts_with_all = ["wave_size", "wave_secs", "all_at_once"])]
        preloaded: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run {
            seeds,
            first_seed,
            nodes,
            scenario,
            keep_going,
        } => run_seeds(first_seed, seeds, nodes, &scenario, keep_going),
        Command::Replay {
            seed,
            nodes,
            scenario,
        } => replay(seed, nodes, &scenario),
        Command::Scale {
            nodes,
            seed,
            traffic_secs,
            progress,
            wave_size,
            wave_secs,
            all_at_once,
            preloaded,
        } => {
            let schedule = if all_at_once {
                scale::JoinSchedule::ALL_AT_ONCE
            } else {
                scale::JoinSchedule {
                    size: wave_size.max(1),
                    interval: std::time::Duration::from_secs(wave_secs),
                }
            };
            let options = scale::ScaleOptions {
                traffic_window: std::time::Duration::from_secs(traffic_secs.max(1)),
                progress,
                schedule,
                preloaded,
                ..scale::ScaleOptions::new(nodes, seed)
            };
            let report = scale::run_membership_with(options);
            println!("{report}");
            ExitCode::SUCCESS
        }
    }
}

/// Returns the scenario `name` for `seed`; `all` rotates through the built-in ones.
fn scenario_for(name: &str, seed: u64, nodes: usize) -> Option<Scenario> {
    let name = if name == "all" {
        SCENARIOS[(seed % SCENARIOS.len() as u64) as usize]
    } else {
        name
    };
    Scenario::named(name, nodes)
}

fn run_seeds(first_seed: u64, seeds: u64, nodes: usize, name: &str, keep_going: bool) -> ExitCode {
    let mut failed = Vec::new();
    for seed in first_seed..first_seed + seeds {
        let Some(scenario) = scenario_for(name, seed, nodes) else {
            eprintln!("unknown scenario {name:?}: expected all or one of {SCENARIOS:?}");
            return ExitCode::from(2);
        };
        let outcome = run(World::new(SimConfig::new(seed)), &scenario, seed);
        println!(
            "seed {seed} {}: {} events, {} calls acknowledged, {} failed, trace {:016x}",
            outcome.scenario,
            outcome.stats.events,
            outcome.stats.calls_acked,
            outcome.stats.calls_failed,
            outcome.trace_hash
        );
        if let Some(violation) = outcome.violations.first() {
            eprintln!("VIOLATION: {violation}");
            eprintln!(
                "replay with: cargo run --release -p gristmill-simulations -- replay {seed} \
                 --nodes {nodes} --scenario {}",
                outcome.scenario
            );
            failed.push(seed);
            if !keep_going {
                return ExitCode::FAILURE;
            }
        }
    }
    if failed.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!("{} of {seeds} seeds failed: {failed:?}", failed.len());
    ExitCode::FAILURE
}

fn replay(seed: u64, nodes: usize, name: &str) -> ExitCode {
    let Some(scenario) = scenario_for(name, seed, nodes) else {
        eprintln!("unknown scenario {name:?}: expected all or one of {SCENARIOS:?}");
        return ExitCode::from(2);
    };
    let mut config = SimConfig::new(seed);
    config.record_log = true;
    let outcome = run(World::new(config), &scenario, seed);
    for line in &outcome.log {
        println!("{line}");
    }
    println!("trace hash {:016x}", outcome.trace_hash);
    match outcome.violations.first() {
        Some(violation) => {
            eprintln!("VIOLATION: {violation}");
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}
