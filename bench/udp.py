#!/usr/bin/env python3
"""UDP benchmarks, side by side in one run.

    cargo build --release --examples
    python3 bench/udp.py [--seconds 3] [--rounds 3]

1. Echo round trips per second: `sockit serve --udp-echo` against the tutorials'
   `socketserver.ThreadingUDPServer` upper-case echo, driven by the same client keeping a window
   of datagrams in flight; every reply is checked and losses are counted.
2. Chat relay: one member sends lines at a fixed rate into a room of 11 (`sockit serve --udp`);
   the 10 others count what they receive (the load generator is the native example
   `udp_relay_load`). Each rate runs for a fixed time, once per round; the
   report gives the median deliveries per second and the lines lost in each round.

Everything listens on 127.0.0.1; every run is bounded in time.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOCKIT = os.path.join(ROOT, "target", "release", "sockit")
TUTORIAL_ECHO = os.path.join(ROOT, "bench", "tutorial_udp_echo_server.py")
RELAY_LOAD = os.path.join(ROOT, "target", "release", "examples", "udp_relay_load")


def free_udp_port():
    with socket.socket(type=socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sockit(*flags):
    proc = subprocess.Popen([SOCKIT, "serve", "--listen", "127.0.0.1:0", "--root", "/tmp/sockit-bench-udp",
                             *flags], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    addrs = {}
    listeners = {"--udp", "--udp-echo", "--legacy-echo", "--legacy-exec"}
    expected = 1 + sum(1 for flag in flags if flag in listeners)  # plus the framed TCP listener
    while len(addrs) < expected:
        _, service, addr = proc.stdout.readline().split()
        host, port = addr.rsplit(":", 1)
        addrs[service] = (host, int(port))
    return proc, addrs


def echo_round_trips(addr, seconds, window=32, size=32):
    """Round trips per second with `window` datagrams in flight, and how many were lost."""
    sock = socket.socket(type=socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.connect(addr)
    sock.settimeout(1.0)
    payload = b"x" * (size - 8)
    sent = done = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    for _ in range(window):
        sock.send(sent.to_bytes(8, "big") + payload)
        sent += 1
    lost = 0
    while True:
        try:
            reply = sock.recv(2048)
        except socket.timeout:
            lost = sent - done
            break
        assert reply[8:] == payload.upper(), "wrong echo"
        done += 1
        if time.perf_counter() < deadline:
            sock.send(sent.to_bytes(8, "big") + payload)
            sent += 1
        elif done == sent:
            break
    elapsed = time.perf_counter() - started
    sock.close()
    return done / elapsed, lost


def relay(addr, rate, seconds, members=10):
    """Lines per second sent into a room of `members` listeners, by the native load generator
    (a Python receiver cannot keep up with the room); returns deliveries/s, lost, expected."""
    out = subprocess.run([RELAY_LOAD, f"{addr[0]}:{addr[1]}", str(rate), str(seconds), str(members)],
                         capture_output=True, text=True, check=True, timeout=seconds + 60)
    result = json.loads(out.stdout)
    return result["deliveries_per_second"], result["lost"], result["expected"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rates", default="1000,5000,10000,20000,40000")
    args = parser.parse_args()
    for needed in (SOCKIT, RELAY_LOAD):
        if not os.access(needed, os.X_OK):
            sys.exit(f"build first: cargo build --release --examples (missing {needed})")

    # The echo's per-source and total meters would cap a benchmark's single source: lift them.
    sockit, addrs = start_sockit("--udp", "127.0.0.1:0", "--udp-echo", "127.0.0.1:0", "--chat-rate", "1000000",
                                 "--udp-echo-source-rate", "1000000000", "--udp-echo-rate", "1000000000")
    port = free_udp_port()
    tutorial = subprocess.Popen([sys.executable, TUTORIAL_ECHO, str(port)])
    time.sleep(0.5)
    try:
        rates = {"sockit --udp-echo": [], "tutorial ThreadingUDPServer": []}
        losses = {name: 0 for name in rates}
        for round_no in range(1, args.rounds + 1):
            for name, addr in (("sockit --udp-echo", addrs["udp-echo"]), ("tutorial ThreadingUDPServer", ("127.0.0.1", port))):
                per_second, lost = echo_round_trips(addr, args.seconds)
                rates[name].append(per_second)
                losses[name] += lost
                print(f"round {round_no} {name:28} {per_second:10,.0f} round trips/s, {lost} lost", flush=True)
        print()
        print("| echo server | median round trips/s | lost | sockit is faster by |")
        print("|---|---|---|---|")
        sockit_median = statistics.median(rates["sockit --udp-echo"])
        for name, values in rates.items():
            median = statistics.median(values)
            print(f"| {name} | {median:,.0f} | {losses[name]} | {sockit_median / median:.1f}x |")

        print()
        print("| lines/s sent into a room of 10 listeners | median deliveries/s | lost, each round |")
        print("|---|---|---|")
        for rate in [int(r) for r in args.rates.split(",")]:
            runs = [relay(addrs["udp"], rate, args.seconds) for _ in range(args.rounds)]
            delivered = statistics.median(run[0] for run in runs)
            lost = ", ".join(f"{run[1]:,} of {run[2]:,}" for run in runs)
            print(f"| {rate:,} | {delivered:,.0f} | {lost} |", flush=True)
    finally:
        sockit.terminate()
        tutorial.terminate()
        sockit.wait(timeout=15)
        tutorial.wait(timeout=15)


if __name__ == "__main__":
    main()
