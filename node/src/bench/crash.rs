//! Crash detection: the time from kill -9 of a node to every survivor listing it as DEAD, with
//! the default membership settings.
//!
//! Two survivor nodes run for the whole scenario. Each trial starts a new victim, waits until
//! both survivors list it as ACTIVE, kills it with SIGKILL, and polls both survivors'
//! `ListMembers` every 10 ms. The trial's time is that of the later survivor. A victim that a
//! survivor dropped from its list after the kill counts as detected at that poll.

use std::time::{Duration, Instant};

use gristmill::api::pb;

use super::procs::NodeLauncher;
use super::report::Row;
use super::stats::Percentiles;
use crate::client::NodeClient;

/// Interval between two polls of a survivor's member list.
const POLL: Duration = Duration::from_millis(10);
/// Time a victim has to join, and the survivors have to detect its crash.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(60);

/// State of member `name` with boot id `boot_id` in `client`'s view, or `None` if it is absent.
async fn member_state(
    client: &mut NodeClient,
    name: &str,
    boot_id: u64,
) -> Result<Option<pb::NodeState>, String> {
    let members = client
        .members()
        .await
        .map_err(|status| format!("ListMembers failed: {status}"))?;
    Ok(members
        .members
        .iter()
        .find(|member| member.name == name && member.boot_id == boot_id)
        .map(|member| pb::NodeState::try_from(member.state).unwrap_or(pb::NodeState::Unspecified)))
}

async fn connect(addr: std::net::SocketAddr) -> Result<NodeClient, String> {
    NodeClient::connect(&addr.to_string())
        .await
        .map_err(|error| error.to_string())
}

/// Runs `trials` kill -9 trials and returns the detection times.
pub async fn detection(launcher: &NodeLauncher, trials: u32) -> Result<Row, String> {
    let (_first, first) = launcher.start("bench-survivor-0", None).await?;
    let seed = first.gossip_addr.to_string();
    let (_second, second) = launcher.start("bench-survivor-1", Some(&seed)).await?;
    let mut survivors = [
        connect(first.grpc_addr).await?,
        connect(second.grpc_addr).await?,
    ];

    let mut samples_us = Vec::new();
    for trial in 0..trials {
        let name = format!("bench-victim-{trial}");
        let (mut victim, ready) = launcher.start(&name, Some(&seed)).await?;
        let joined = Instant::now();
        for survivor in survivors.iter_mut() {
            while member_state(survivor, &name, ready.boot_id).await? != Some(pb::NodeState::Active)
            {
                if joined.elapsed() > TRIAL_TIMEOUT {
                    return Err(format!(
                        "{name} was not ACTIVE on every survivor within {TRIAL_TIMEOUT:?}"
                    ));
                }
                tokio::time::sleep(POLL).await;
            }
        }

        let killed = Instant::now();
        victim.kill().await;
        let mut detected = [None; 2];
        while detected.iter().any(Option::is_none) {
            for (survivor, at) in survivors.iter_mut().zip(detected.iter_mut()) {
                if at.is_some() {
                    continue;
                }
                let state = member_state(survivor, &name, ready.boot_id).await?;
                if matches!(state, None | Some(pb::NodeState::Dead)) {
                    *at = Some(killed.elapsed());
                }
            }
            if killed.elapsed() > TRIAL_TIMEOUT {
                return Err(format!(
                    "{name} was not DEAD on every survivor within {TRIAL_TIMEOUT:?}"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        let slowest = detected.iter().flatten().max().copied().unwrap_or_default();
        eprintln!("bench: crash trial {trial}: {slowest:.2?}");
        samples_us.push(slowest.as_secs_f64() * 1e6);
    }

    let latency = Percentiles::of_samples(&mut samples_us).ok_or("no crash trial ran")?;
    let mut row = Row::value(
        "crash_detection",
        format!("kill -9 to DEAD on both survivors, {trials} trials"),
        latency.p50_us / 1e6,
        "s p50",
    );
    row.latency = Some(latency);
    Ok(row.with_note("default membership settings; survivors polled every 10 ms"))
}
