//! `gristmill bench`: Gristmill's figures next to their floor and their peers, in one table.
//!
//! The command starts everything it measures as child processes of its own executable on
//! 127.0.0.1 with OS-chosen ports: `run` for nodes, and the hidden `bench peer` (baseline
//! servers) and `bench driver` (load inside a node process) roles. The baselines are a raw
//! TCP echo, a raw ractor_cluster call, a bare tonic service and, when `erl` is installed,
//! Erlang/OTP distribution. Each scenario adds rows, and the table then divides every figure by
//! the baselines measured in the same run and checks the targets.

mod crash;
mod driver;
mod erlang;
mod host;
mod oneway;
mod peer;
mod procs;
mod report;
mod scenarios;
mod stats;
mod targets;

use std::process::ExitCode;
use std::time::Duration;

use rand::RngExt;
use serde_json::json;

use procs::NodeLauncher;
use report::Row;

/// Options of `gristmill bench`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Hidden roles that the benchmark starts as child processes.
    #[command(subcommand)]
    pub role: Option<Role>,

    /// Scenarios to run, comma-separated: floor, remote, oneway, grpc, activation, crash,
    /// erlang, or all.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub scenario: Vec<Scenario>,

    /// Recorded time of each closed-loop measurement, such as `10s`. A tenth of it (at most
    /// 1 s) runs before it as unrecorded warm-up.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = crate::duration_arg::parse_positive)]
    pub duration: humantime::Duration,

    /// Calls in flight in the concurrent measurements.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(2..=1024))]
    pub in_flight: u16,

    /// Idle activations whose resident memory is measured, which are also the cold
    /// activations timed.
    // NOTE: the default is the target scale; at the 1 KiB per idle activation measured in
    // BENCHMARKS.md it needs about 1 GiB. Runs this large have failed on a 2-core machine with
    // one activating call past its 5 s deadline, so such machines pass less.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_grains: u64,

    /// Kill -9 trials of the crash-detection scenario.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub crash_trials: u32,

    /// Print the rows as one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A hidden role of the benchmark executable.
#[derive(Debug, clap::Subcommand)]
pub enum Role {
    /// Serve a baseline on 127.0.0.1 until killed.
    #[command(hide = true)]
    Peer {
        /// Which baseline.
        #[arg(value_enum)]
        kind: peer::PeerKind,
    },
    /// Drive grains from inside a node process and print the result.
    #[command(hide = true)]
    Driver(driver::DriverArgs),
}

/// A group of figures measured together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Every scenario.
    All,
    /// Raw tokio TCP request/reply between two processes.
    Floor,
    /// Remote grain calls against raw ractor_cluster calls.
    Remote,
    /// One-way grain messages per second.
    Oneway,
    /// gRPC Invoke through a node against a bare tonic echo.
    Grpc,
    /// Cold activations per second and memory per idle activation.
    Activation,
    /// Time from kill -9 to every survivor marking the node DEAD.
    Crash,
    /// Erlang/OTP distributed gen_server calls.
    Erlang,
}

impl BenchArgs {
    fn runs(&self, scenario: Scenario) -> bool {
        self.scenario.contains(&Scenario::All) || self.scenario.contains(&scenario)
    }

    fn duration(&self) -> Duration {
        Duration::from(self.duration)
    }
}

fn cookie_from_env() -> String {
    std::env::var("GRISTMILL_COOKIE").unwrap_or_default()
}

/// Runs `gristmill bench`, or one of its hidden roles.
pub async fn run(args: BenchArgs) -> ExitCode {
    let result = match args.role {
        Some(Role::Peer { kind }) => peer::serve(kind, cookie_from_env()).await,
        Some(Role::Driver(driver)) => driver::run(driver, cookie_from_env()).await,
        None => run_scenarios(&args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run_scenarios(args: &BenchArgs) -> Result<(), String> {
    let exe = std::env::current_exe()
        .map_err(|error| format!("cannot locate this executable: {error}"))?;
    let data_dir = std::env::temp_dir().join(format!("gristmill-bench-{}", std::process::id()));
    std::fs::create_dir_all(&data_dir)
        .map_err(|error| format!("cannot create {}: {error}", data_dir.display()))?;
    let mut rng = rand::rng();
    let cookie: String = (0..32)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).expect("a hex digit"))
        .collect();
    let launcher = NodeLauncher {
        exe,
        cookie,
        data_dir: data_dir.clone(),
    };
    let result = measure(args, &launcher).await;
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut rows = result?;
    report::finish(&mut rows);
    print_rows(args, &rows);
    Ok(())
}

async fn measure(args: &BenchArgs, launcher: &NodeLauncher) -> Result<Vec<Row>, String> {
    let duration = args.duration();
    let in_flight = usize::from(args.in_flight);
    let mut rows = Vec::new();
    if args.runs(Scenario::Floor) {
        progress("floor: raw TCP round trips");
        rows.extend(scenarios::tcp_floor(launcher, duration, in_flight).await?);
    }
    let mut host = None;
    if args.runs(Scenario::Remote) {
        progress("remote: raw ractor_cluster calls");
        rows.extend(scenarios::ractor_calls(launcher, duration, in_flight).await?);
        progress("remote: grain calls through GrainRef");
        let host = host::HostNode::get_or_start(&mut host, launcher, in_flight).await?;
        rows.extend(scenarios::grain_calls(launcher, host, args.duration, in_flight).await?);
    }
    if args.runs(Scenario::Oneway) {
        progress("oneway: one-way grain messages");
        let host = host::HostNode::get_or_start(&mut host, launcher, in_flight).await?;
        rows.extend(scenarios::oneway(launcher, host, args.duration, in_flight).await?);
    }
    if args.runs(Scenario::Grpc) {
        progress("grpc: Invoke and the bare tonic echo");
        let host = host::HostNode::get_or_start(&mut host, launcher, in_flight).await?;
        rows.extend(scenarios::grpc(launcher, host, duration, in_flight).await?);
    }
    drop(host);
    if args.runs(Scenario::Activation) {
        progress("activation: cold activations and idle memory");
        rows.extend(scenarios::activations(launcher, args.idle_grains, in_flight).await?);
    }
    if args.runs(Scenario::Crash) {
        progress("crash: kill -9 to DEAD on every survivor");
        rows.push(crash::detection(launcher, args.crash_trials).await?);
    }
    if args.runs(Scenario::Erlang) {
        progress("erlang: distributed gen_server calls");
        match erlang::calls(launcher, duration, in_flight).await? {
            Some(erlang_rows) => rows.extend(erlang_rows),
            None => eprintln!("bench: erlang skipped: `erl` and `erlc` are not on PATH"),
        }
    }
    Ok(rows)
}

fn progress(step: &str) {
    eprintln!("bench: {step}");
}

/// Returns the CPU model from `/proc/cpuinfo`, or `unknown`.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Returns the 1-minute load average from `/proc/loadavg`.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn print_rows(args: &BenchArgs, rows: &[Row]) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    if args.json {
        let document = json!({
            "cpu": cpu_model(),
            "cores": cores,
            "load_average_1m": load_average(),
            "duration_secs": args.duration().as_secs_f64(),
            "in_flight": args.in_flight,
            "rows": rows,
        });
        println!("{document}");
        return;
    }
    print!("{}", report::render(rows));
    let load = load_average().map_or_else(|| "unknown".to_string(), |load| format!("{load:.2}"));
    println!(
        "machine: {} x{cores}, load average (1 min) at the end: {load}",
        cpu_model()
    );
}
