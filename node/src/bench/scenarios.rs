//! The scenarios other than crash detection and Erlang: each starts its peers, measures, and
//! returns its rows.

use std::time::Duration;

use gristmill::api::pb;
use gristmill::api::pb::grains_client::GrainsClient;
use gristmill::routing::{ClientBuilder, ClientConfig, GristmillClient, StrategyKind};
use ractor::ActorRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use super::driver::{ActivationResult, OnewayResult, RemoteResult, counter_key};
use super::host::{HostNode, get_request};
use super::peer::{ECHO_BYTES, ECHO_GROUP, ECHO_SCOPE, PeerKind, PeerReady, RemoteEchoMsg};
use super::procs::{Helper, NodeLauncher, start_timeout};
use super::report::Row;
use super::stats::{self, Worker};

/// Time a remote call may take before the measurement fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

async fn start_peer(
    launcher: &NodeLauncher,
    kind: PeerKind,
) -> Result<(Helper, PeerReady), String> {
    let name = format!("{kind:?} peer").to_lowercase();
    let kind_arg = format!("{kind:?}").to_lowercase();
    let mut helper = launcher.helper(&name, &["peer".into(), kind_arg])?;
    let ready = helper.next_json::<PeerReady>(start_timeout()).await?;
    Ok((helper, ready))
}

/// Measures `make(i)` workers, one in flight and then `in_flight` in flight.
async fn one_and_many<W, F, Fut>(
    duration: Duration,
    in_flight: usize,
    make: F,
) -> Result<(stats::Measurement, stats::Measurement), String>
where
    W: Worker,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<W, String>>,
{
    let warmup = stats::warmup_for(duration);
    let one = stats::closed_loop(vec![make(0).await?], warmup, duration).await?;
    let mut workers = Vec::with_capacity(in_flight);
    for index in 0..in_flight {
        workers.push(make(index).await?);
    }
    let many = stats::closed_loop(workers, warmup, duration).await?;
    Ok((one, many))
}

struct TcpWorker {
    stream: TcpStream,
    buffer: [u8; ECHO_BYTES],
}

impl Worker for TcpWorker {
    async fn call(&mut self) -> Result<(), String> {
        self.stream
            .write_all(&self.buffer)
            .await
            .map_err(|error| format!("TCP write failed: {error}"))?;
        self.stream
            .read_exact(&mut self.buffer)
            .await
            .map_err(|error| format!("TCP read failed: {error}"))?;
        Ok(())
    }
}

/// The floor: 16-byte request/reply round trips over raw tokio TCP, one connection per call
/// in flight.
pub async fn tcp_floor(
    launcher: &NodeLauncher,
    duration: Duration,
    in_flight: usize,
) -> Result<Vec<Row>, String> {
    let (_peer, ready) = start_peer(launcher, PeerKind::Tcp).await?;
    let (one, many) = one_and_many(duration, in_flight, |_| async move {
        let stream = TcpStream::connect(ready.addr)
            .await
            .map_err(|error| format!("cannot connect to the TCP echo: {error}"))?;
        stream
            .set_nodelay(true)
            .map_err(|error| error.to_string())?;
        Ok(TcpWorker {
            stream,
            buffer: [7; ECHO_BYTES],
        })
    })
    .await?;
    Ok(vec![
        Row::rate(
            "tcp_floor_1",
            "raw TCP round trip, 1 in flight",
            "calls/s",
            &one,
        ),
        Row::rate(
            "tcp_floor_n",
            format!("raw TCP round trips, {in_flight} in flight"),
            "calls/s",
            &many,
        )
        .with_note(format!(
            "{in_flight} connections, one call in flight on each"
        )),
    ])
}

struct RactorWorker(ActorRef<RemoteEchoMsg>);

impl Worker for RactorWorker {
    async fn call(&mut self) -> Result<(), String> {
        let reply = self
            .0
            .call(
                |reply| RemoteEchoMsg::Echo(vec![7; ECHO_BYTES], reply),
                Some(CALL_TIMEOUT),
            )
            .await
            .map_err(|error| format!("ractor call failed: {error}"))?;
        match reply {
            ractor::rpc::CallResult::Success(_) => Ok(()),
            other => Err(format!("ractor call ended without a reply: {other:?}")),
        }
    }
}

/// Raw ractor_cluster calls from this process to a remotable echo actor in a peer process,
/// over the one session between them.
pub async fn ractor_calls(
    launcher: &NodeLauncher,
    duration: Duration,
    in_flight: usize,
) -> Result<Vec<Row>, String> {
    let (_peer, ready) = start_peer(launcher, PeerKind::Ractor).await?;
    let server = super::peer::start_node_server("bench-client", launcher.cookie.clone()).await?;
    ractor_cluster::client_connect(&server, ready.addr)
        .await
        .map_err(|error| format!("cannot connect to the ractor peer: {error}"))?;
    let started = std::time::Instant::now();
    let echo = loop {
        let members =
            ractor::pg::get_scoped_members(&ECHO_SCOPE.to_string(), &ECHO_GROUP.to_string());
        if let Some(cell) = members.into_iter().find(|cell| !cell.get_id().is_local()) {
            break ActorRef::<RemoteEchoMsg>::from(cell);
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err("the ractor peer's echo actor did not appear within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (one, many) = one_and_many(duration, in_flight, |_| {
        let echo = echo.clone();
        async move { Ok(RactorWorker(echo)) }
    })
    .await?;
    server.stop(None);
    Ok(vec![
        Row::rate(
            "ractor_call_1",
            "raw ractor_cluster call, 1 in flight",
            "calls/s",
            &one,
        ),
        Row::rate(
            "ractor_call_n",
            format!("raw ractor_cluster calls, {in_flight} in flight"),
            "calls/s",
            &many,
        ),
    ])
}

/// Remote grain calls: a driver process joins the host node and calls its counters through
/// `GrainRef`.
pub async fn grain_calls(
    launcher: &NodeLauncher,
    host: &mut HostNode,
    duration: humantime::Duration,
    in_flight: usize,
) -> Result<Vec<Row>, String> {
    let args = [
        "driver".to_string(),
        "remote".into(),
        "--peer".into(),
        host.ready.gossip_addr.to_string(),
        "--duration".into(),
        duration.to_string(),
        "--in-flight".into(),
        in_flight.to_string(),
        "--data-dir".into(),
        launcher.data_dir.display().to_string(),
    ];
    let mut driver = launcher.helper("remote driver", &args)?;
    let result: RemoteResult = driver.next_json(result_timeout(duration.into(), 2)).await?;
    let hosted = host.activations().await?;
    let placement = format!(
        "driver node hosted {} activations at the end, the host node {hosted}",
        result.local_activations
    );
    Ok(vec![
        Row::rate(
            "grain_remote_1",
            "remote grain call (GrainRef, counter.get), 1 in flight",
            "calls/s",
            &result.one,
        )
        .with_note(placement),
        Row::rate(
            "grain_remote_n",
            format!("remote grain calls, {in_flight} in flight"),
            "calls/s",
            &result.many,
        ),
    ])
}

/// One-way grain messages to the host node: through `GrainRef::send` from a driver node, and
/// from a driver's bare transport.
pub async fn oneway(
    launcher: &NodeLauncher,
    host: &mut HostNode,
    duration: humantime::Duration,
    in_flight: usize,
) -> Result<Vec<Row>, String> {
    let metrics = host
        .ready
        .metrics_addr
        .ok_or("the host node has no /metrics endpoint")?;
    let common = [
        "--peer-metrics".to_string(),
        metrics.to_string(),
        "--duration".into(),
        duration.to_string(),
        "--in-flight".into(),
        in_flight.to_string(),
        "--data-dir".into(),
        launcher.data_dir.display().to_string(),
    ];
    let mut args = vec![
        "driver".to_string(),
        "send".into(),
        "--peer".into(),
        host.ready.gossip_addr.to_string(),
    ];
    args.extend_from_slice(&common);
    let mut driver = launcher.helper("one-way send driver", &args)?;
    let send: OnewayResult = driver.next_json(result_timeout(duration.into(), 3)).await?;
    let mut args = vec![
        "driver".to_string(),
        "oneway".into(),
        "--peer".into(),
        host.ready.cluster_addr.to_string(),
        "--peer-name".into(),
        host.ready.node.clone(),
        "--peer-boot-id".into(),
        host.ready.boot_id.to_string(),
    ];
    args.extend_from_slice(&common);
    let mut driver = launcher.helper("one-way cast driver", &args)?;
    let cast: OnewayResult = driver.next_json(result_timeout(duration.into(), 3)).await?;
    Ok(vec![
        Row::rate("oneway", "one-way grain messages (GrainRef::send)", "msgs/s", &send.delivered).with_note(format!(
            "GrainRef::send of counter.get from a driver node to counters on the host, one GrainRef::call per 4096 sends; \
             rate = turns the receiver ran ({} of {} sent) / time from first send to last turn",
            send.delivered.ops, send.sent
        )),
        Row::rate("oneway_cast", "one-way envelopes (raw Transport::cast)", "msgs/s", &cast.delivered).with_note(format!(
            "Transport::cast of counter.get envelopes to the host's gateway, one Transport::call per 4096 casts; \
             rate = turns the receiver ran ({} of {} sent) / time from first send to last turn",
            cast.delivered.ops, cast.sent
        )),
    ])
}

struct GrpcWorker {
    client: GrainsClient<Channel>,
    key: String,
}

impl Worker for GrpcWorker {
    async fn call(&mut self) -> Result<(), String> {
        self.client
            .invoke(get_request(self.key.clone()))
            .await
            .map(|_| ())
            .map_err(|status| format!("Invoke failed: {status}"))
    }
}

/// The same `counter.get` through the library's cluster-aware client, which learns the host
/// from membership and routes grain-aware.
struct ClientWorker {
    client: GristmillClient,
    key: String,
}

impl Worker for ClientWorker {
    async fn call(&mut self) -> Result<(), String> {
        self.client
            .invoke(
                "counter",
                &self.key,
                "get",
                Vec::new(),
                pb::PayloadFormat::Postcard,
                Some(CALL_TIMEOUT),
            )
            .await
            .map(|_| ())
            .map_err(|error| format!("client invoke failed: {error}"))
    }
}

async fn grpc_channel(addr: std::net::SocketAddr) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|error| error.to_string())?
        .connect()
        .await
        .map_err(|error| format!("cannot connect to {addr}: {error}"))
}

/// gRPC `Grains.Invoke` of counters hosted by the node that receives the call, against the
/// same request to a bare tonic service that returns it at once, one HTTP/2 connection each.
/// Then the same calls through [`GristmillClient`], whose cost over the plain stub is its
/// routing: balancer, breaker, retry budget and membership watch.
pub async fn grpc(
    launcher: &NodeLauncher,
    host: &mut HostNode,
    duration: Duration,
    in_flight: usize,
) -> Result<Vec<Row>, String> {
    let (_peer, ready) = start_peer(launcher, PeerKind::Grpc).await?;
    let mut rows = Vec::new();
    let targets = [
        (
            ready.addr,
            ["grpc_bare_1", "grpc_bare_n"],
            "bare tonic Invoke echo",
        ),
        (
            host.ready.grpc_addr,
            ["grpc_invoke_1", "grpc_invoke_n"],
            "gRPC Invoke counter.get at its host",
        ),
    ];
    for (addr, ids, figure) in targets {
        let channel = grpc_channel(addr).await?;
        let (one, many) = one_and_many(duration, in_flight, |index| {
            let client = GrainsClient::new(channel.clone());
            async move {
                Ok(GrpcWorker {
                    client,
                    key: counter_key(index),
                })
            }
        })
        .await?;
        rows.push(Row::rate(
            ids[0],
            format!("{figure}, 1 in flight"),
            "calls/s",
            &one,
        ));
        rows.push(Row::rate(
            ids[1],
            format!("{figure}, {in_flight} in flight"),
            "calls/s",
            &many,
        ));
    }

    let config = ClientConfig {
        seeds: vec![host.ready.grpc_addr.to_string()],
        strategy: StrategyKind::GrainAware,
        ..ClientConfig::default()
    };
    let client = ClientBuilder::new(config)
        .connect()
        .await
        .map_err(|error| format!("cannot connect the cluster client: {error}"))?;
    let (one, many) = one_and_many(duration, in_flight, |index| {
        let client = client.clone();
        async move {
            Ok(ClientWorker {
                client,
                key: counter_key(index),
            })
        }
    })
    .await?;
    let figure = "GristmillClient counter.get, grain-aware";
    rows.push(Row::rate(
        "grpc_client_1",
        format!("{figure}, 1 in flight"),
        "calls/s",
        &one,
    ));
    rows.push(Row::rate(
        "grpc_client_n",
        format!("{figure}, {in_flight} in flight"),
        "calls/s",
        &many,
    ));
    Ok(rows)
}

/// Cold activations and resident memory per idle activation, on one node in a driver process.
pub async fn activations(
    launcher: &NodeLauncher,
    grains: u64,
    in_flight: usize,
) -> Result<Vec<Row>, String> {
    let args = [
        "driver".to_string(),
        "activation".into(),
        "--grains".into(),
        grains.to_string(),
        "--in-flight".into(),
        in_flight.to_string(),
        "--data-dir".into(),
        launcher.data_dir.display().to_string(),
    ];
    let mut driver = launcher.helper("activation driver", &args)?;
    // Generous: a slow machine activates a million grains in minutes, not hours.
    let result: ActivationResult = driver.next_json(Duration::from_secs(1_800)).await?;
    let growth = result
        .rss_after_bytes
        .saturating_sub(result.rss_before_bytes);
    let per_activation = growth as f64 / result.activations.ops.max(1) as f64;
    Ok(vec![
        Row::rate(
            "activation_cold",
            format!("cold activations on one node, {in_flight} in flight"),
            "activations/s",
            &result.activations,
        )
        .with_note(format!(
            "{} stateless grains activated by their first call",
            result.activations.ops
        )),
        Row::value(
            "activation_idle_memory",
            "resident memory per idle activation",
            per_activation,
            "B",
        )
        .with_note(format!(
            "RSS growth {} MiB over {} idle activations (RSS {} MiB before)",
            growth >> 20,
            result.activations.ops,
            result.rss_before_bytes >> 20
        )),
    ])
}

/// Time a driver has to print its result: its measurements, warm-ups and start-up.
fn result_timeout(duration: Duration, measurements: u32) -> Duration {
    (duration + stats::warmup_for(duration)) * measurements + Duration::from_secs(60)
}
