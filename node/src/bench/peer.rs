//! Baseline servers that the benchmark runs in their own processes: a TCP echo, a
//! ractor_cluster node with one remotable echo actor, and a bare tonic echo service.
//!
//! Each one binds 127.0.0.1 on an OS-chosen port, prints `{"addr":"127.0.0.1:PORT"}` on
//! stdout, and serves until it is killed.

use std::io::Write;
use std::net::SocketAddr;

use gristmill::api::pb;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream, NodeServer, NodeServerMessage};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Size of each request and reply of the TCP and ractor echoes, in bytes.
pub const ECHO_BYTES: usize = 16;
/// ractor process-group scope and group that the remotable echo actor joins.
pub const ECHO_SCOPE: &str = "gristmill-bench";
/// Group of the remotable echo actor within [`ECHO_SCOPE`].
pub const ECHO_GROUP: &str = "echo";

/// Which baseline server to run.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum PeerKind {
    /// Reads 16-byte requests and writes each back, on every accepted connection.
    Tcp,
    /// A ractor_cluster node server with one remotable echo actor.
    Ractor,
    /// A tonic server whose `Grains.Invoke` returns the request payload at once.
    Grpc,
}

/// The line a peer prints once it listens.
#[derive(Debug, Serialize, Deserialize)]
pub struct PeerReady {
    /// Address the peer listens on.
    pub addr: SocketAddr,
}

/// Messages of the remotable echo actor. Serializable, so ractor_cluster advertises the actor
/// to connected nodes.
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum RemoteEchoMsg {
    /// Returns the bytes unchanged.
    #[rpc]
    Echo(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

struct RemoteEcho;

impl Actor for RemoteEcho {
    type Msg = RemoteEchoMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        ractor::pg::join_scoped(
            ECHO_SCOPE.to_string(),
            ECHO_GROUP.to_string(),
            vec![myself.get_cell()],
        );
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let RemoteEchoMsg::Echo(bytes, reply) = message;
        let _ = reply.send(bytes);
        Ok(())
    }
}

/// A TCP connection handed to ractor_cluster as an external stream.
pub struct TcpBidi(pub TcpStream);

impl ClusterBidiStream for TcpBidi {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let (read, write) = self.0.into_split();
        (Box::new(read), Box::new(write))
    }
}

/// Starts a ractor_cluster node server named `name` whose own listener stays on an unused
/// loopback port.
pub async fn start_node_server(
    name: &str,
    cookie: String,
) -> Result<ActorRef<NodeServerMessage>, String> {
    let server = NodeServer::new(0, cookie, name.to_string(), "127.0.0.1".into(), None, None)
        .with_listen_addr(std::net::IpAddr::from([127, 0, 0, 1]));
    let (server, _) = Actor::spawn(None, server, ())
        .await
        .map_err(|error| format!("cannot start the ractor_cluster node server: {error}"))?;
    Ok(server)
}

fn print_ready(addr: SocketAddr) -> Result<(), String> {
    let line = serde_json::to_string(&PeerReady { addr }).expect("an address encodes");
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|error| format!("cannot write the ready line: {error}"))
}

/// Runs the peer `kind` until the process is killed.
pub async fn serve(kind: PeerKind, cookie: String) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|error| format!("cannot bind 127.0.0.1:0: {error}"))?;
    let addr = listener
        .local_addr()
        .map_err(|error| format!("cannot read the bound address: {error}"))?;
    match kind {
        PeerKind::Tcp => {
            print_ready(addr)?;
            serve_tcp_echo(listener).await
        }
        PeerKind::Ractor => {
            let server = start_node_server("bench-echo-peer", cookie).await?;
            Actor::spawn(None, RemoteEcho, ())
                .await
                .map_err(|error| format!("cannot start the echo actor: {error}"))?;
            print_ready(addr)?;
            loop {
                let (stream, _) = listener
                    .accept()
                    .await
                    .map_err(|error| format!("accept failed: {error}"))?;
                let _ = stream.set_nodelay(true);
                let opened = NodeServerMessage::ConnectionOpenedExternal {
                    stream: Box::new(TcpBidi(stream)),
                    is_server: true,
                };
                server
                    .cast(opened)
                    .map_err(|error| format!("the node server stopped: {error}"))?;
            }
        }
        PeerKind::Grpc => {
            print_ready(addr)?;
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            tonic::transport::Server::builder()
                .add_service(pb::grains_server::GrainsServer::new(BareGrains))
                .serve_with_incoming(incoming)
                .await
                .map_err(|error| format!("the gRPC server failed: {error}"))
        }
    }
}

async fn serve_tcp_echo(listener: TcpListener) -> Result<(), String> {
    loop {
        let (mut stream, _) = listener
            .accept()
            .await
            .map_err(|error| format!("accept failed: {error}"))?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut buffer = [0u8; ECHO_BYTES];
            while stream.read_exact(&mut buffer).await.is_ok() {
                if stream.write_all(&buffer).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The `Grains` service with nothing behind it: `Invoke` returns the request payload.
struct BareGrains;

#[tonic::async_trait]
impl pb::grains_server::Grains for BareGrains {
    async fn invoke(
        &self,
        request: tonic::Request<pb::InvokeRequest>,
    ) -> Result<tonic::Response<pb::InvokeResponse>, tonic::Status> {
        let request = request.into_inner();
        Ok(tonic::Response::new(pb::InvokeResponse {
            payload: request.payload,
            format: request.format,
            served_by: "bare".into(),
            hops: 0,
        }))
    }

    async fn list_activations(
        &self,
        _request: tonic::Request<pb::ListActivationsRequest>,
    ) -> Result<tonic::Response<pb::ListActivationsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "the bare echo serves Invoke only",
        ))
    }

    async fn migrate(
        &self,
        _request: tonic::Request<pb::MigrateRequest>,
    ) -> Result<tonic::Response<pb::MigrateResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "the bare echo serves Invoke only",
        ))
    }

    async fn get_rebalancer(
        &self,
        _request: tonic::Request<pb::GetRebalancerRequest>,
    ) -> Result<tonic::Response<pb::RebalancerStatus>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "the bare echo serves Invoke only",
        ))
    }

    async fn set_rebalancer_paused(
        &self,
        _request: tonic::Request<pb::SetRebalancerPausedRequest>,
    ) -> Result<tonic::Response<pb::RebalancerStatus>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "the bare echo serves Invoke only",
        ))
    }
}
