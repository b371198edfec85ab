//! Network namespaces for partition tests: one namespace per node, joined by a bridge in a hub
//! namespace, nftables rules that drop traffic between nodes, and gRPC connections made from
//! inside the hub.
//!
//! Layout, for a lab with subnet `10.231.X.0/24`:
//!
//! ```text
//! <prefix>-hub:  bridge br0 at 10.231.X.254, one veth `v<i>` per node attached to it
//! <prefix>-n<i>: eth0 at 10.231.X.<i + 1>, the other end of `v<i>`
//! ```
//!
//! Every interface and rule lives in a namespace that the lab created, so nothing here changes
//! the interfaces, routes or nftables ruleset of the test's own namespace. The test's clients
//! reach the nodes from the hub: a short-lived thread enters the hub with setns(2) and opens
//! the TCP connection there, and the socket keeps belonging to the hub after the thread ends.
//! Dropping the lab deletes its namespaces, which removes their interfaces and rules.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use nix::sched::CloneFlags;
use tonic::transport::{Channel, Endpoint, Uri};

use super::NodeHost;

/// Start of the names of every namespace a lab creates; the test process id follows it.
const NAME_PREFIX: &str = "gmnet-";
/// nftables table that contains a node's injected faults.
const FAULT_TABLE: &str = "gristmill_chaos";
/// Time a connection from the hub has to be established.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A traffic rule imposed on one node's namespace.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Drop every packet arriving from these nodes.
    DropFrom(Vec<usize>),
    /// Drop every packet sent to these nodes.
    DropTo(Vec<usize>),
    /// Drop this percentage (0 to 100) of the packets arriving from these nodes, at random.
    LoseFrom(Vec<usize>, u8),
    /// Reject every TCP packet from or to these ports, in both directions, with a reset. The
    /// resets match the rules too and are dropped, so peers see their packets vanish. UDP passes.
    ResetTcpPorts(Vec<u16>),
    /// Reject with a reset what this node sends to these ports and what it receives from them,
    /// so its new connections to them fail. Connections that peers open to this node pass.
    ResetTcpTo(Vec<u16>),
}

/// Namespaces for `nodes` node processes and a hub; deleted when dropped.
pub struct NetLab {
    prefix: String,
    subnet: u8,
    nodes: usize,
    created: Vec<String>,
}

impl NetLab {
    /// Creates a lab for `nodes` nodes, or prints `SKIPPED {scenario}` with the reason and
    /// returns `None`, so the calling test passes on a machine without namespaces.
    pub fn create_or_skip(nodes: usize, scenario: &str) -> Option<NetLab> {
        match NetLab::create(nodes) {
            Ok(lab) => Some(lab),
            Err(reason) => {
                eprintln!("SKIPPED {scenario}: {reason}");
                None
            }
        }
    }

    /// Creates the namespaces, or returns why this machine cannot: not root, `ip` or `nft`
    /// missing, or namespaces not permitted. A test that gets `Err` prints it and passes.
    pub fn create(nodes: usize) -> Result<NetLab, String> {
        assert!(nodes <= 250, "a lab has at most 250 nodes");
        if !nix::unistd::geteuid().is_root() {
            return Err("network namespaces need root".into());
        }
        for (tool, version_flag, package) in [("ip", "-V", "iproute2"), ("nft", "-v", "nftables")] {
            let found = Command::new(tool)
                .arg(version_flag)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if !found {
                return Err(format!("`{tool}` is missing; install {package}"));
            }
        }
        remove_stale_namespaces();

        static SERIAL: AtomicU64 = AtomicU64::new(0);
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        let mut lab = NetLab {
            prefix: format!("{NAME_PREFIX}{}-{serial}", std::process::id()),
            subnet: rand::random_range(1..=254),
            nodes,
            created: Vec::new(),
        };
        // On an error, dropping `lab` deletes what was created so far.
        lab.build()?;
        eprintln!(
            "network lab {}: hub and {nodes} node namespaces on 10.231.{}.0/24",
            lab.prefix, lab.subnet
        );
        Ok(lab)
    }

    fn build(&mut self) -> Result<(), String> {
        let hub = self.hub();
        self.add_namespace(&hub)?;
        run_ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        run_ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        let hub_addr = format!("{}/24", self.hub_ip());
        run_ip(&["-n", &hub, "addr", "add", &hub_addr, "dev", "br0"])?;
        for index in 0..self.nodes {
            let netns = self.netns(index);
            self.add_namespace(&netns)?;
            let veth = format!("v{index}");
            let peer = ["peer", "name", "eth0", "netns", &netns];
            let mut add = vec!["-n", &hub, "link", "add", &veth, "type", "veth"];
            add.extend_from_slice(&peer);
            run_ip(&add)?;
            run_ip(&["-n", &hub, "link", "set", &veth, "master", "br0", "up"])?;
            let addr = format!("{}/24", self.node_ip(index));
            run_ip(&["-n", &netns, "addr", "add", &addr, "dev", "eth0"])?;
            run_ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    fn add_namespace(&mut self, name: &str) -> Result<(), String> {
        run_ip(&["netns", "add", name])?;
        self.created.push(name.to_owned());
        run_ip(&["-n", name, "link", "set", "lo", "up"])
    }

    /// Returns the name of the hub namespace.
    pub fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    /// Returns the name of node `index`'s namespace.
    pub fn netns(&self, index: usize) -> String {
        format!("{}-n{index}", self.prefix)
    }

    /// Returns the address of node `index`.
    pub fn node_ip(&self, index: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 231, self.subnet, index as u8 + 1))
    }

    fn hub_ip(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 231, self.subnet, 254))
    }

    /// Returns where node `index` runs: its namespace and address, with clients in the hub.
    pub fn host(&self, index: usize) -> NodeHost {
        NodeHost {
            netns: Some(self.netns(index)),
            bind_ip: self.node_ip(index),
            client_netns: Some(self.hub()),
        }
    }

    /// Replaces the faults of node `index` with `faults`, atomically.
    pub fn impose(&self, index: usize, faults: &[Fault]) {
        let addresses = |nodes: &[usize]| {
            let list: Vec<String> = nodes.iter().map(|&n| self.node_ip(n).to_string()).collect();
            format!("{{ {} }}", list.join(", "))
        };
        let (mut input, mut output) = (Vec::new(), Vec::new());
        for fault in faults {
            match fault {
                Fault::DropFrom(nodes) => input.push(format!("ip saddr {} drop", addresses(nodes))),
                Fault::DropTo(nodes) => output.push(format!("ip daddr {} drop", addresses(nodes))),
                Fault::ResetTcpPorts(ports) => {
                    for chain in [&mut input, &mut output] {
                        for field in ["sport", "dport"] {
                            chain.push(format!(
                                "tcp {field} {} reject with tcp reset",
                                port_set(ports)
                            ));
                        }
                    }
                }
                Fault::ResetTcpTo(ports) => {
                    let ports = port_set(ports);
                    output.push(format!("tcp dport {ports} reject with tcp reset"));
                    input.push(format!("tcp sport {ports} reject with tcp reset"));
                }
                Fault::LoseFrom(nodes, percent) => {
                    assert!(*percent <= 100, "loss of {percent}% is above 100%");
                    input.push(format!(
                        "ip saddr {} numgen random mod 100 < {percent} drop",
                        addresses(nodes)
                    ));
                }
            }
        }
        // Declaring the table first makes the delete succeed when it does not exist yet, and
        // nft applies the whole script as one transaction.
        let script = format!(
            "table inet {FAULT_TABLE}\ndelete table inet {FAULT_TABLE}\n\
             table inet {FAULT_TABLE} {{\n\
             chain input {{ type filter hook input priority 0; policy accept;\n{}\n}}\n\
             chain output {{ type filter hook output priority 0; policy accept;\n{}\n}}\n}}\n",
            input.join("\n"),
            output.join("\n")
        );
        run_nft(&self.netns(index), &script)
            .unwrap_or_else(|error| panic!("impose {faults:?} on node {index}: {error}"));
    }

    /// Removes every fault of node `index`.
    pub fn heal(&self, index: usize) {
        let script = format!("table inet {FAULT_TABLE}\ndelete table inet {FAULT_TABLE}\n");
        run_nft(&self.netns(index), &script)
            .unwrap_or_else(|error| panic!("heal node {index}: {error}"));
    }

    /// Deletes the lab's namespaces and returns the names that are still listed afterwards.
    pub fn tear_down(&mut self) -> Vec<String> {
        for name in self.created.drain(..).rev() {
            if let Err(error) = run_ip(&["netns", "del", &name]) {
                eprintln!("network lab: cannot delete namespace {name}: {error}");
            }
        }
        list_namespaces()
            .into_iter()
            .filter(|name| name.starts_with(&format!("{}-", self.prefix)))
            .collect()
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        let left = self.tear_down();
        if !left.is_empty() {
            eprintln!("network lab: namespaces left after deletion: {left:?}");
        }
    }
}

/// Returns `ports` as an nftables set, such as `{ 4000, 4001 }`.
fn port_set(ports: &[u16]) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!("{{ {} }}", list.join(", "))
}

/// Runs `ip` with `args` and returns its stderr as the error when it fails.
fn run_ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run ip: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Runs the nftables `script` inside namespace `netns`.
fn run_nft(netns: &str, script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run nft: {error}"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())
        .map_err(|error| format!("cannot write the nft script: {error}"))?;
    let output = child
        .wait_with_output()
        .map_err(|error| format!("cannot wait for nft: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft in {netns} failed ({}): {}\nscript:\n{script}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Lists the names of the named network namespaces.
fn list_namespaces() -> Vec<String> {
    let output = Command::new("ip").args(["netns", "list"]).output();
    let Ok(output) = output else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Deletes the namespaces of labs whose test process no longer runs, such as after a crash.
fn remove_stale_namespaces() {
    for name in list_namespaces() {
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        let pid = rest
            .split('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok());
        let Some(pid) = pid else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("network lab: deleting namespace {name} of exited test process {pid}");
            let _ = run_ip(&["netns", "del", &name]);
        }
    }
}

/// Opens a TCP connection to `addr` from inside the namespace `netns`.
///
/// A fresh thread enters the namespace, because setns(2) changes only the calling thread,
/// and a runtime thread that entered it would open every later socket there too.
async fn connect_in(netns: &str, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let path = PathBuf::from("/run/netns").join(netns);
    let (reply, connected) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let stream = File::open(&path).and_then(|file| {
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        });
        let _ = reply.send(stream);
    });
    let stream = connected
        .await
        .map_err(|_| std::io::Error::other("the connecting thread ended without a result"))??;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

/// Returns a gRPC channel to `addr` whose connections are opened inside `netns`.
pub async fn channel_in(netns: &str, addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    let netns = netns.to_owned();
    let connector = tower::service_fn(move |_: Uri| {
        let netns = netns.clone();
        async move { connect_in(&netns, addr).await.map(TokioIo::new) }
    });
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_with_connector(connector)
        .await
}
