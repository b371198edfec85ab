#!/usr/bin/env python3
"""Open many idle or junk TCP connections to one port of a local node and sample its memory.

Starts one `gristmill run` process bound to 127.0.0.1, with a fresh SQLite file in a
temporary directory and no seeds, so it starts a cluster of its own. It then opens N
connections that send nothing and N connections that send random bytes to the node's
cluster, gRPC or metrics port, and keeps them open. A thread samples the node's resident
memory (VmRSS in /proc/PID/status) and its open file descriptors (/proc/PID/fd) every 0.25 s
from before the first connection to the end. Once per second during the hold the script
counts the connections that the node has closed. Then it closes every connection, samples
for a few more seconds, kills the node and prints a JSON summary.

The script connects only to the node it started, and only on 127.0.0.1: it clears the
GRISTMILL_* environment, rejects extra arguments that change addresses or seeds, and checks
the address in the node's ready line before it connects. Linux only, because it reads /proc.

Example:
    python3 benches/connection_flood.py --binary target/debug/gristmill --port cluster -n 1000
"""

import argparse
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

COOKIE = "connection-flood-cookie-0123456789"
LOOPBACK = "127.0.0.1"
# Flags of `gristmill run` that would point the node, or this script, at another address.
ADDRESS_FLAGS = ("--bind-ip", "--advertise-ip", "--seed", "--config")
# Seconds between two samples of the node's memory and file descriptors.
SAMPLE_INTERVAL_SECS = 0.25


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS line for process {pid}")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def start_node(binary, work_dir, extra_args):
    """Starts the node on loopback and returns the process with its parsed ready line."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("GRISTMILL_")}
    env["GRISTMILL_COOKIE"] = COOKIE
    command = [
        binary,
        "run",
        "--node-name",
        "flood-target",
        "--bind-ip",
        LOOPBACK,
        "--sqlite-path",
        os.path.join(work_dir, "flood.sqlite3"),
        *extra_args,
    ]
    node = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=work_dir,
        text=True,
    )
    line = node.stdout.readline()
    if not line:
        node.wait()
        sys.exit(f"{binary} exited with code {node.returncode} before printing its ready line")
    return node, json.loads(line)


def loopback_addr(text):
    """Parses `host:port` from the ready line and rejects any host other than 127.0.0.1."""
    host, port = text.rsplit(":", 1)
    if host != LOOPBACK:
        raise SystemExit(f"the node reported {text}, which is not on {LOOPBACK}, so nothing was sent")
    return host, int(port)


def open_connections(addr, count, junk_bytes):
    """Opens `count` connections that each send `junk_bytes` random bytes (0 for idle ones)."""
    sockets = []
    for _ in range(count):
        connection = socket.create_connection(addr, timeout=5)
        if junk_bytes:
            try:
                connection.sendall(os.urandom(junk_bytes))
            except OSError:
                # The node may close a connection before its bytes are sent, such as one
                # over the pending-handshake cap. count_closed counts that close later.
                pass
        connection.setblocking(False)
        sockets.append(connection)
    return sockets


class Sampler(threading.Thread):
    """Samples the RSS and open file descriptors of process `pid` until stopped."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.phase = "baseline"
        self.started = time.monotonic()
        self.samples = []
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            self.samples.append(
                {
                    "phase": self.phase,
                    "t": round(time.monotonic() - self.started, 2),
                    "rss_mib": round(rss_kib(self.pid) / 1024, 1),
                    "fds": open_fds(self.pid),
                }
            )
            self.stopped.wait(SAMPLE_INTERVAL_SECS)

    def in_phase(self, phase):
        return [row for row in self.samples if row["phase"] == phase]


def count_closed(sockets, closed):
    """Adds to `closed` every socket that the node closed (EOF or reset) since the last call."""
    selector = selectors.DefaultSelector()
    for connection in sockets:
        if connection.fileno() not in closed:
            selector.register(connection, selectors.EVENT_READ)
    for key, _ in selector.select(timeout=0):
        connection = key.fileobj
        try:
            data = connection.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:
            closed.add(connection.fileno())
    selector.close()
    return len(closed)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default="target/debug/gristmill", help="path of the gristmill binary")
    parser.add_argument(
        "--port", choices=["cluster", "grpc", "metrics"], default="cluster", help="port to flood"
    )
    parser.add_argument("-n", type=int, default=500, help="connections of each kind (idle, junk)")
    parser.add_argument("--junk-bytes", type=int, default=64, help="bytes each junk connection sends")
    parser.add_argument("--hold-secs", type=int, default=15, help="seconds to keep them open")
    parser.add_argument("--after-secs", type=int, default=5, help="seconds to sample after closing")
    parser.add_argument("node_args", nargs="*", help="extra arguments for `gristmill run` (after --)")
    args = parser.parse_args()
    for arg in args.node_args:
        if arg.split("=", 1)[0] in ADDRESS_FLAGS:
            parser.error(f"{arg} is not allowed: the node must stay on {LOOPBACK} with no seeds")
    if args.n < 1 or args.hold_secs < 1 or args.after_secs < 1:
        parser.error("-n, --hold-secs and --after-secs must be at least 1")
    return args


def main():
    args = parse_args()
    binary = os.path.abspath(args.binary)
    with tempfile.TemporaryDirectory(prefix="connection-flood-") as work_dir:
        node, ready = start_node(binary, work_dir, args.node_args)
        try:
            run_flood(args, node.pid, ready)
        finally:
            node.send_signal(signal.SIGKILL)
            node.wait()


def run_flood(args, pid, ready):
    addr_text = ready.get(f"{args.port}_addr")
    if addr_text is None:
        raise SystemExit(f"the node's ready line has no {args.port}_addr: {ready}")
    addr = loopback_addr(addr_text)

    # The node finishes starting its background tasks after the ready line.
    time.sleep(2)
    sampler = Sampler(pid)
    sampler.start()
    time.sleep(1)

    sampler.phase = "open"
    opening_started = time.monotonic()
    idle = open_connections(addr, args.n, 0)
    junk = open_connections(addr, args.n, args.junk_bytes)
    opened_in = time.monotonic() - opening_started
    sockets = idle + junk
    closed = set()
    for second in range(args.hold_secs):
        time.sleep(1)
        row = {"hold_secs": second + 1, "closed_by_node": count_closed(sockets, closed)}
        row.update(sampler.samples[-1])
        print(json.dumps(row), flush=True)
    idle_closed = sum(1 for s in idle if s.fileno() in closed)
    junk_closed = sum(1 for s in junk if s.fileno() in closed)

    sampler.phase = "closed"
    for connection in sockets:
        connection.close()
    time.sleep(args.after_secs)
    sampler.stopped.set()
    sampler.join()

    baseline = sampler.in_phase("baseline")
    opened = sampler.in_phase("open")
    after = sampler.in_phase("closed")
    summary = {
        "port": args.port,
        "connections": 2 * args.n,
        "opened_in_secs": round(opened_in, 2),
        "baseline_rss_mib": baseline[-1]["rss_mib"],
        "baseline_fds": baseline[-1]["fds"],
        "peak_rss_mib": max(row["rss_mib"] for row in opened),
        "peak_fds": max(row["fds"] for row in opened),
        "rss_mib_at_end_of_hold": opened[-1]["rss_mib"],
        "fds_at_end_of_hold": opened[-1]["fds"],
        "idle_closed_by_node": idle_closed,
        "junk_closed_by_node": junk_closed,
        "rss_mib_after_close": after[-1]["rss_mib"],
        "fds_after_close": after[-1]["fds"],
    }
    print("SUMMARY " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
