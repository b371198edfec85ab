//! One-way grain messages, through `GrainRef::send` from a node in the driver process, and
//! through a bare `Transport` that casts envelopes to a node's gateway. The receiver's turn
//! counter shows how many ran and when.
//!
//! Both senders send `counter.get` round-robin over the driver's counter grains, which are
//! already active on the receiver. After every window of messages, each sender makes one call
//! to the receiver, which bounds the backlog in the session. The receiver runs each message as
//! a turn. The rate is the receiver's turns (casts and window calls) divided
//! by the time from the first send until its turn counter reached the total.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gristmill::grain::{GrainId, PayloadFormat};
use gristmill::membership::{NodeId, NodeIdFields};
use gristmill::migration::{MigrationEnvelope, MigrationReply};
use gristmill::transport::{
    BoxFuture, CallEnvelope, CallReply, DirectoryEnvelope, DirectoryReplyEnvelope, Envelope,
    InboundHandler, Route, Transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use gristmill::grain::samples::Get;

use super::driver::{DriverArgs, OnewayResult, counter_key, start_node, warm_counters};
use super::stats::Measurement;

/// Casts between two window calls.
const WINDOW: u64 = 4096;
/// Prometheus series that counts the receiver's turns.
const TURNS_SERIES: &str = "gristmill_turn_duration_seconds_count";

/// The driver's transport serves no grains: every inbound request is rejected.
struct NoGrains;

impl InboundHandler for NoGrains {
    fn handle_call(&self, _envelope: Envelope) -> BoxFuture<'_, CallReply> {
        Box::pin(async { CallReply::NotHere })
    }

    fn handle_cast(&self, _envelope: Envelope) {}

    fn handle_directory(
        &self,
        _request: DirectoryEnvelope,
    ) -> BoxFuture<'_, DirectoryReplyEnvelope> {
        Box::pin(std::future::pending())
    }

    fn handle_migrate(&self, _request: MigrationEnvelope) -> BoxFuture<'_, MigrationReply> {
        Box::pin(async { MigrationReply::Rejected("the benchmark driver hosts no grains".into()) })
    }

    fn reject_inbound(&self, _detail: &str) {}
}

fn envelope(key: &str, deadline_unix_ms: u64) -> Envelope {
    Envelope::V1(CallEnvelope {
        grain: GrainId::new("counter", key),
        method: "get".into(),
        format: PayloadFormat::Postcard,
        // `Get` is a unit struct, which postcard encodes as no bytes.
        payload: Vec::new(),
        deadline_unix_ms,
        trace_parent: None,
        hops: 0,
        route: Route::Deliver,
    })
}

/// Reads the receiver's turn count from its `/metrics` endpoint.
async fn turns_served(metrics: SocketAddr) -> Result<u64, String> {
    let mut stream = TcpStream::connect(metrics)
        .await
        .map_err(|error| format!("cannot connect to {metrics}: {error}"))?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .map_err(|error| format!("cannot request {metrics}/metrics: {error}"))?;
    let mut body = String::new();
    stream
        .read_to_string(&mut body)
        .await
        .map_err(|error| format!("cannot read {metrics}/metrics: {error}"))?;
    // A line is `name{labels} value`, and the node adds a `node` label to every series.
    body.lines()
        .filter(|line| line.starts_with(TURNS_SERIES))
        .find_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|count| count as u64)
        .ok_or_else(|| format!("{metrics}/metrics has no {TURNS_SERIES}"))
}

fn unix_ms_in(after: Duration) -> u64 {
    let at = std::time::SystemTime::now() + after;
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Sends one-way messages for the duration and returns what the receiver ran.
pub async fn drive(args: &DriverArgs, cookie: String) -> Result<OnewayResult, String> {
    let peer_addr = args
        .peer
        .ok_or("--peer names the receiver's cluster address")?;
    let metrics = args
        .peer_metrics
        .ok_or("--peer-metrics names the receiver's /metrics")?;
    let peer = NodeId::new(NodeIdFields {
        name: args
            .peer_name
            .as_deref()
            .ok_or("--peer-name names the receiver")?
            .into(),
        boot_id: args
            .peer_boot_id
            .ok_or("--peer-boot-id names the receiver's boot")?,
        bump: 0,
        ip: peer_addr.ip(),
        gossip_port: 0,
        cluster_port: peer_addr.port(),
        grpc_port: 0,
    });
    // The sender dials only if its cluster name sorts above the receiver's.
    let local = NodeId::new(NodeIdFields {
        name: "zz-bench-sender".into(),
        boot_id: rand::random(),
        bump: 0,
        ip: peer_addr.ip(),
        gossip_port: 0,
        cluster_port: 0,
        grpc_port: 0,
    });
    let listener = Transport::bind(SocketAddr::new(peer_addr.ip(), 0))
        .await
        .map_err(|error| error.to_string())?;
    let transport = Transport::start(
        &local,
        cookie,
        4 * 1024 * 1024,
        gristmill::runtime::NodeConfig::default().handshake_limits(),
        std::time::Duration::from_millis(
            gristmill::runtime::NodeConfig::default().cluster_ack_timeout_ms,
        ),
        listener,
        Arc::new(NoGrains),
    )
    .await
    .map_err(|error| error.to_string())?;
    transport.handle_peer_up(&peer);

    let keys: Vec<String> = (0..usize::from(args.in_flight.max(1)))
        .map(counter_key)
        .collect();
    let window_call = |deadline: Instant| {
        let message = envelope(&keys[0], unix_ms_in(Duration::from_secs(30)));
        let transport = &transport;
        let peer = &peer;
        async move {
            match transport.call(peer, message, deadline).await {
                Ok(CallReply::Ok { .. }) => Ok(()),
                Ok(other) => Err(format!("window call returned {other:?}")),
                Err(error) => Err(format!("window call failed: {error}")),
            }
        }
    };
    window_call(Instant::now() + Duration::from_secs(30)).await?;

    let before = turns_served(metrics).await?;
    let started = Instant::now();
    let send_until = started + Duration::from(args.duration);
    let mut sent = 0u64;
    while Instant::now() < send_until {
        let deadline_unix_ms = unix_ms_in(Duration::from_secs(60));
        for index in 0..WINDOW {
            let key = &keys[usize::try_from(index).unwrap_or(0) % keys.len()];
            transport
                .cast(
                    &peer,
                    envelope(key, deadline_unix_ms),
                    send_until + Duration::from_secs(5),
                )
                .await
                .map_err(|not_sent| format!("cast failed: {}", not_sent.error))?;
        }
        window_call(Instant::now() + Duration::from_secs(30)).await?;
        sent += WINDOW + 1;
    }

    let result = wait_delivered(metrics, before, sent, started).await;
    transport.stop();
    result
}

/// Sends `counter.get` one way through `GrainRef::send` from a node in this process, which
/// joins the receiver's cluster, and returns what the receiver ran.
pub async fn drive_send(args: &DriverArgs, cookie: String) -> Result<OnewayResult, String> {
    let seed = args.peer.ok_or("--peer names the node to join")?;
    let metrics = args
        .peer_metrics
        .ok_or("--peer-metrics names the receiver's /metrics")?;
    let node = start_node("bench-sender", Some(seed), cookie, &args.data_dir).await?;
    let grains = warm_counters(&node, usize::from(args.in_flight.max(1))).await?;

    let before = turns_served(metrics).await?;
    let started = Instant::now();
    let send_until = started + Duration::from(args.duration);
    let mut sent = 0u64;
    while Instant::now() < send_until {
        for index in 0..WINDOW {
            let grain = &grains[usize::try_from(index).unwrap_or(0) % grains.len()];
            grain
                .send(Get)
                .await
                .map_err(|error| format!("send failed: {error}"))?;
        }
        // One call per window bounds the backlog, as in the raw cast measurement.
        grains[0]
            .call(Get)
            .await
            .map_err(|error| format!("window call failed: {error}"))?;
        sent += WINDOW + 1;
    }
    let local = node.metrics().activations.get();
    if local != 0 {
        return Err(format!(
            "the sender node hosts {local} counters, so some sends were local; expected 0"
        ));
    }
    let result = wait_delivered(metrics, before, sent, started).await;
    // Leave instead of vanishing, so that the host does not count this node as declared
    // down (see `drive_remote`).
    node.leave().await;
    result
}

/// Polls the receiver's turn count until it has run `sent` more turns than `before`, or made
/// no progress for 5 s, and returns the rate since `started`.
async fn wait_delivered(
    metrics: SocketAddr,
    before: u64,
    sent: u64,
    started: Instant,
) -> Result<OnewayResult, String> {
    let expected = before + sent;
    let mut last = before;
    let mut last_progress = Instant::now();
    let finished = loop {
        let served = turns_served(metrics).await?;
        if served >= expected {
            break Instant::now();
        }
        if served > last {
            last = served;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > Duration::from_secs(5) {
            break last_progress;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let delivered = last.max(turns_served(metrics).await?).min(expected) - before;
    Ok(OnewayResult {
        delivered: Measurement {
            ops: delivered,
            elapsed_secs: finished.duration_since(started).as_secs_f64(),
            latency: None,
        },
        sent,
    })
}
