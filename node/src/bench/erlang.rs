//! The Erlang/OTP peer: a distributed gen_server call between two `erl` nodes on loopback,
//! run with the source in `benches/erlang/gm_bench.erl`.
//!
//! The benchmark starts its own `epmd` on 127.0.0.1 with an OS-chosen port, and both nodes
//! (`-sname ...@localhost`) use only that epmd and the loopback interface.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::process::{Child, Command};

use super::procs::NodeLauncher;
use super::report::Row;
use super::stats::{Measurement, Percentiles};

const SOURCE: &str = include_str!("../../../benches/erlang/gm_bench.erl");

/// One measurement line of the Erlang client.
#[derive(Debug, Deserialize)]
struct ErlangLine {
    in_flight: u64,
    ops: u64,
    elapsed_secs: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Returns a port that was free on 127.0.0.1 a moment ago.
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|error| error.to_string())?;
    Ok(listener
        .local_addr()
        .map_err(|error| error.to_string())?
        .port())
}

fn erl(epmd_port: u16, name: &str, cookie: &str, code_dir: &Path) -> Command {
    let mut command = Command::new("erl");
    command
        .env("ERL_EPMD_PORT", epmd_port.to_string())
        .args(["-sname", name, "-setcookie", cookie, "-noinput"])
        .arg("-pa")
        .arg(code_dir)
        .args(["-kernel", "inet_dist_use_interface", "{127,0,0,1}"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true);
    command
}

async fn wait_for_epmd(port: u16) -> Result<(), String> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!(
        "epmd did not listen on 127.0.0.1:{port} within 2 s"
    ))
}

async fn first_line(child: &mut Child, what: &str, timeout: Duration) -> Result<String, String> {
    use tokio::io::AsyncBufReadExt;
    let stdout = child.stdout.as_mut().ok_or("stdout is piped")?;
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(stdout);
    tokio::time::timeout(timeout, reader.read_line(&mut line))
        .await
        .map_err(|_| format!("{what} printed nothing within {timeout:?}"))?
        .map_err(|error| format!("cannot read from {what}: {error}"))?;
    Ok(line)
}

/// Measures Erlang distributed calls, or returns `None` when Erlang is not installed.
pub async fn calls(
    launcher: &NodeLauncher,
    duration: Duration,
    in_flight: usize,
) -> Result<Option<Vec<Row>>, String> {
    if !on_path("erl") || !on_path("erlc") || !on_path("epmd") {
        return Ok(None);
    }
    let code_dir = launcher.data_dir.join("erlang");
    std::fs::create_dir_all(&code_dir).map_err(|error| error.to_string())?;
    let source = code_dir.join("gm_bench.erl");
    std::fs::write(&source, SOURCE).map_err(|error| error.to_string())?;
    let compiled = Command::new("erlc")
        .arg("-o")
        .arg(&code_dir)
        .arg(&source)
        .status()
        .await
        .map_err(|error| format!("cannot run erlc: {error}"))?;
    if !compiled.success() {
        return Err(format!("erlc failed on {}: {compiled}", source.display()));
    }

    let epmd_port = free_port()?;
    let _epmd = Command::new("epmd")
        .args(["-address", "127.0.0.1", "-port", &epmd_port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot start epmd: {error}"))?;
    wait_for_epmd(epmd_port).await?;

    let suffix = std::process::id();
    let server_name = format!("gm_srv_{suffix}@localhost");
    let mut server = erl(epmd_port, &server_name, &launcher.cookie, &code_dir)
        .args(["-s", "gm_bench", "serve"])
        .spawn()
        .map_err(|error| format!("cannot start erl: {error}"))?;
    let ready = first_line(&mut server, "the Erlang server", Duration::from_secs(30)).await?;
    if ready.trim() != "ready" {
        return Err(format!(
            "the Erlang server printed {ready:?} instead of ready"
        ));
    }

    let mut client = erl(
        epmd_port,
        &format!("gm_cli_{suffix}@localhost"),
        &launcher.cookie,
        &code_dir,
    )
    .args(["-run", "gm_bench", "client", &server_name])
    .arg(duration.as_millis().to_string())
    .arg(in_flight.to_string())
    .spawn()
    .map_err(|error| format!("cannot start erl: {error}"))?;
    let output_timeout = duration * 3 + Duration::from_secs(60);
    let output = tokio::time::timeout(output_timeout, async {
        use tokio::io::AsyncReadExt;
        let mut text = String::new();
        let stdout = client.stdout.as_mut().ok_or("stdout is piped")?;
        stdout
            .read_to_string(&mut text)
            .await
            .map_err(|error| error.to_string())?;
        Ok::<String, String>(text)
    })
    .await
    .map_err(|_| format!("the Erlang client did not finish within {output_timeout:?}"))??;

    let mut rows = Vec::new();
    for line in output.lines().filter(|line| line.starts_with('{')) {
        let parsed: ErlangLine = serde_json::from_str(line)
            .map_err(|error| format!("the Erlang client printed {line:?}: {error}"))?;
        let measurement = Measurement {
            ops: parsed.ops,
            elapsed_secs: parsed.elapsed_secs,
            latency: Some(Percentiles {
                p50_us: parsed.p50_us,
                p99_us: parsed.p99_us,
                p999_us: parsed.p999_us,
            }),
        };
        let (id, figure) = if parsed.in_flight == 1 {
            (
                "erlang_call_1",
                "Erlang distributed gen_server:call, 1 in flight".to_string(),
            )
        } else {
            (
                "erlang_call_n",
                format!(
                    "Erlang distributed gen_server:call, {} in flight",
                    parsed.in_flight
                ),
            )
        };
        rows.push(Row::rate(id, figure, "calls/s", &measurement));
    }
    if rows.len() != 2 {
        return Err(format!(
            "the Erlang client printed {} measurements instead of 2: {output:?}",
            rows.len()
        ));
    }
    Ok(Some(rows))
}
