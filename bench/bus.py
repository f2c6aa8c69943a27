#!/usr/bin/env python3
"""Chat rooms shared by several servers over Redis (`sockit serve --bus`).

    cargo build --release --bin sockit --examples
    python3 bench/bus.py [--seconds 5] [--rounds 3] [--rate 2000] [--members 30]

Each round runs, one after the other:

1. *bus*: three `sockit serve --udp ... --bus redis://...` on one `redis-server`, with MEMBERS
   members spread over them in turn; one member on the first server sends RATE lines a second
   for SECONDS and every other member records when each line arrives.
2. *single*: the same load against one `sockit serve --udp` with no bus, all members on it.

The load generator is the native example `bus_relay_load` (a Python receiver cannot keep up).
It reports lines lost, lines that arrived twice or out of order, and the latency from sending
a line to its arrival (p50, p99, max), for members on the sender's server and on the others.
The report gives the median of the rounds and their spread.

Everything listens on 127.0.0.1 and is stopped at the end (bench/loopback.py Leftovers); every
run is bounded in time.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loopback import Leftovers, free_port, wait_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOCKIT = os.path.join(ROOT, "target", "release", "sockit")
LOAD = os.path.join(ROOT, "target", "release", "examples", "bus_relay_load")


def start_redis(left):
    port = free_port()
    work = tempfile.mkdtemp(prefix="sockit-bench-redis-")
    left.dirs.append(work)
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", work],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    left.processes.append(proc)
    wait_port(port)
    return f"redis://127.0.0.1:{port}"


def start_sockit(left, *flags):
    root = tempfile.mkdtemp(prefix="sockit-bench-bus-")
    left.dirs.append(root)
    proc = subprocess.Popen([SOCKIT, "serve", "--listen", "127.0.0.1:0", "--udp", "127.0.0.1:0",
                             "--root", root, "--chat-rate", "1000000", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    left.processes.append(proc)
    addrs = {}
    while len(addrs) < 2:
        _, service, addr = proc.stdout.readline().split()
        addrs[service] = addr
    return addrs["udp"]


def load(rooms, rate, seconds, members):
    out = subprocess.run([LOAD, ",".join(rooms), str(rate), str(seconds), str(members)],
                         capture_output=True, text=True, check=True, timeout=seconds + 120)
    return json.loads(out.stdout)


def spread(values, fmt):
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--members", type=int, default=30)
    args = parser.parse_args()
    for needed in (SOCKIT, LOAD):
        if not os.access(needed, os.X_OK):
            sys.exit(f"build first: cargo build --release --bin sockit --examples (missing {needed})")

    left = Leftovers()
    url = start_redis(left)
    bus = [start_sockit(left, "--bus", url) for _ in range(3)]
    single = [start_sockit(left)]
    time.sleep(1)
    runs = {"bus": [], "single": []}
    for round_no in range(1, args.rounds + 1):
        for name, rooms in (("bus", bus), ("single", single)):
            result = load(rooms, args.rate, args.seconds, args.members)
            runs[name].append(result)
            print(f"round {round_no} {name:6} {json.dumps(result)}", flush=True)
            time.sleep(1)
    left.cleanup()

    print()
    print(f"| {args.members} members, {args.rate:,} lines/s in for {args.seconds:g} s | servers | lost (each round) "
          "| twice or out of order | p50 ms, another server | p99 ms, another server | p99 ms, the sender's server |")
    print("|---|---|---|---|---|---|---|")
    ms = "{:.2f}".format
    for name, servers in (("bus", 3), ("single", 1)):
        results = runs[name]
        lost = ", ".join(f"{r['lost']:,} of {r['expected']:,}" for r in results)
        twice = sum(r["twice_or_late"] for r in results)
        remote50 = spread([r["remote_ms"][0] for r in results], ms) if servers > 1 else "—"
        remote99 = spread([r["remote_ms"][1] for r in results], ms) if servers > 1 else "—"
        local99 = spread([r["local_ms"][1] for r in results], ms)
        label = "three servers on one Redis" if servers > 1 else "one server, no bus"
        print(f"| {label} | {servers} | {lost} | {twice} | {remote50} | {remote99} | {local99} |")


if __name__ == "__main__":
    main()
