#!/usr/bin/env python3
"""What idle connections cost the server, and whether it still answers quickly meanwhile.

    python3 bench/idle_conns.py [--conns 10000] [--sources 10] [--pings 1000]

Starts a release `sockit serve` on 127.0.0.1 (store in a temp dir, UDP off, limits raised to
20,000 connections in all and from one address) and reads its resident memory (VmRSS in
/proc/PID/status). Then opens CONNS connections from SOURCES loopback addresses
(127.0.0.1, 127.0.0.2, ...), each served one `ping` and then left idle, and reads the memory
again: the difference over CONNS is the cost of one idle connection. Meanwhile-latency: PINGS
sequential `ping`s on one more connection, with p50 / p99 / max of their round trips.
Finally closes everything.

The open-files limit is raised to its hard limit for this script and for the server (each
needs CONNS descriptors and some). Needs `cargo build --release`. Everything listens on and
connects to 127.0.0.x only; every wait is bounded in time; the server and the temp dir go on
any exit.
"""
import argparse
import os
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time

from loopback import Leftovers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOCKIT = os.path.join(ROOT, "target", "release", "sockit")
TIMEOUT = 30
BATCH = 500
PING = struct.pack("<i", len(b'{"op":"ping"}')) + b'{"op":"ping"}'
PONG = struct.pack("<i", len(b'{"ok":true}')) + b'{"ok":true}'

# Everything started or made here, undone on every exit.
LEFTOVERS = Leftovers()


def raise_nofile(wanted):
    """Raises this process's open-files limit (inherited by the server) toward `wanted`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def serve(root, max_conns):
    """Starts the server; (process, host, port)."""
    cmd = [SOCKIT, "-q", "serve", "--listen", "127.0.0.1:0", "--udp", "off", "--root", root,
           "--max-conns", str(max_conns), "--max-conns-per-source", str(max_conns)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    LEFTOVERS.processes.append(proc)
    line = proc.stdout.readline().split()
    if len(line) < 3 or line[0] != "listening":
        sys.exit(f"unexpected first line from the server: {line}")
    host, port = line[2].rsplit(":", 1)
    return proc, host, int(port)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    sys.exit("no VmRSS in /proc/PID/status")


def recv_exact(sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            sys.exit(f"server closed a connection after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def ping(sock):
    sock.sendall(PING)
    reply = recv_exact(sock, len(PONG))
    if reply != PONG:
        sys.exit(f"unexpected ping reply {reply!r}")


def open_idle(port, count, sources):
    """Opens `count` connections spread over `sources` loopback addresses, each served a ping."""
    for start in range(0, count, BATCH):
        batch = []
        for i in range(start, min(start + BATCH, count)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            LEFTOVERS.sockets.append(sock)
            sock.settimeout(TIMEOUT)
            sock.bind((f"127.0.0.{1 + i % sources}", 0))
            sock.connect(("127.0.0.1", port))
            batch.append(sock)
        for sock in batch:
            sock.sendall(PING)
        for sock in batch:
            if recv_exact(sock, len(PONG)) != PONG:
                sys.exit("unexpected ping reply")


def percentile(sorted_values, fraction):
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conns", type=int, default=10_000)
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--pings", type=int, default=1_000)
    args = parser.parse_args()
    if not 1 <= args.sources <= 250:
        sys.exit("--sources is 1 to 250 (127.0.0.1 to 127.0.0.250)")
    if not os.access(SOCKIT, os.X_OK):
        sys.exit(f"{SOCKIT} is missing: cargo build --release")
    nofile = raise_nofile(2 * args.conns + 100)
    if nofile < args.conns + 100:
        sys.exit(f"the open-files limit ({nofile}) is too low for {args.conns} connections")

    work = tempfile.mkdtemp(prefix="sockit-bench-idle-")
    LEFTOVERS.dirs.append(work)
    proc, _host, port = serve(os.path.join(work, "store"), args.conns + 100)
    # One connection served first, so that the runtime's first allocations are in `before`.
    probe = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    LEFTOVERS.sockets.append(probe)
    ping(probe)
    time.sleep(0.5)
    before = rss_kib(proc.pid)
    started = time.perf_counter()
    open_idle(port, args.conns, args.sources)
    opened_in = time.perf_counter() - started
    time.sleep(1.0)
    after = rss_kib(proc.pid)

    rtts = []
    for _ in range(args.pings):
        sent = time.perf_counter()
        ping(probe)
        rtts.append((time.perf_counter() - sent) * 1000)
    rtts.sort()
    during = rss_kib(proc.pid)

    per_conn = (after - before) / args.conns
    print(f"{args.conns} idle connections from {args.sources} addresses, opened in {opened_in:.1f} s")
    print(f"server VmRSS: {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB with them open "
          f"({during / 1024:.1f} MiB after the pings)")
    print(f"per idle connection: {per_conn:.2f} KiB")
    print(f"{args.pings} pings meanwhile: p50 {percentile(rtts, 0.5):.3f} ms, "
          f"p99 {percentile(rtts, 0.99):.3f} ms, max {rtts[-1]:.3f} ms")
    LEFTOVERS.cleanup()


if __name__ == "__main__":
    main()
