#!/usr/bin/env python3
"""UDP echo, the chat relay (UDP and WebSocket) and exec against the machine's own floor, side by
side in one run.

    cargo build --release --bins --examples
    python3 bench/floor.py [--rounds 3] [--seconds 2] [--exec-runs 20] [--compare-chat-server PATH]

Rows, each measured once per round, the rounds interleaved (sockit and its anchor alternate):

1. UDP echo, 32-byte datagrams, 1 and 32 in flight: `sockit bench udp --window N` against
   `sockit serve --udp-echo` and against a plain single-threaded C `recvfrom`/`sendto` loop
   that upper-cases (bench/udp_echo_floor.c, built here with gcc), the same client for both.
2. Chat relay: one member sends 5,000 and 20,000 lines/s into a room of 11 for a few seconds;
   the 10 others count what they receive and when: lines lost, heard twice or out of order, and
   the latency from send to receipt. Three rows at each rate, one after the other in each round,
   on one server serving the UDP room and the chat WebSocket (`--udp`, `--http`): UDP members
   only (the example `udp_relay_load`); 10 browsers' worth of WebSockets with a WebSocket sender
   (`ws_relay_load`); and the same WebSockets with a UDP sender (`ws_relay_load --udp-sender`).
   The server's CPU time over each run (/proc) gives its cost per delivery. With
   `--compare-chat-server PATH`, each relay row runs again right after against a second server
   from that binary (an earlier build), marked "earlier build".
3. `sockit exec -- true` with key login, a whole client process, against its floor: the
   client's own start (`sockit --version`) plus the command's (`sh -c true`), each a fresh
   process, timed in the same round.

Prints markdown tables: medians over the rounds, the spread (min-max), and the ratios.
Everything listens on 127.0.0.1; every run is bounded in time; everything started is stopped
on every exit (loopback.Leftovers).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from loopback import Leftovers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOCKIT = os.path.join(ROOT, "target", "release", "sockit")
RELAY_LOAD = os.path.join(ROOT, "target", "release", "examples", "udp_relay_load")
WS_LOAD = os.path.join(ROOT, "target", "release", "examples", "ws_relay_load")
# The relay rows: (label, how the run is made from the chat server's addresses).
RELAY_ROWS = [
    ("UDP → 10 UDP", lambda addrs: [RELAY_LOAD, addrs["udp"]]),
    ("WebSocket → 10 WebSockets", lambda addrs: [WS_LOAD, addrs["http"]]),
    ("UDP → 10 WebSockets", lambda addrs: [WS_LOAD, addrs["http"], "--udp-sender", addrs["udp"]]),
]
C_ECHO = os.path.join(ROOT, "bench", "udp_echo_floor.c")
RUN_TIMEOUT = 120


def listening(proc, count):
    """The `listening SERVICE ADDR` lines a server prints first, as {service: "host:port"}."""
    addrs = {}
    while len(addrs) < count:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the server ended before it listened")
        words = line.split()
        if words[0] == "listening":
            addrs[words[1]] = words[2]
    return addrs


def start_sockit(left, work, users):
    """The server for the echo and exec rows: framed TCP (exec) with accounts and the UDP echo,
    its per-source meters lifted so that they do not cap a benchmark's one source."""
    proc = subprocess.Popen(
        [SOCKIT, "serve", "--listen", "127.0.0.1:0", "--udp", "off", "--udp-echo", "127.0.0.1:0",
         "--root", os.path.join(work, "store"), "--users", users,
         "--udp-echo-source-rate", "1000000000", "--udp-echo-rate", "1000000000"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    left.processes.append(proc)
    return listening(proc, 2)


def start_chat(left, work, binary, store):
    """The server for the relay rows: the UDP room and the chat WebSocket, no accounts (with
    `--users` the WebSocket would need a login), the per-member line rate lifted."""
    proc = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--http", "127.0.0.1:0",
         "--root", os.path.join(work, store), "--chat-rate", "1000000"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    left.processes.append(proc)
    return proc.pid, listening(proc, 3)


def cpu_seconds(pid):
    """User + system CPU time of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_c_echo(left, work):
    binary = os.path.join(work, "udp_echo_floor")
    subprocess.run(["gcc", "-O2", "-o", binary, C_ECHO], check=True)
    proc = subprocess.Popen([binary], stdout=subprocess.PIPE, text=True)
    left.processes.append(proc)
    return listening(proc, 1)["udp-echo"]


def echo_rate(addr, window, seconds):
    out = subprocess.run([SOCKIT, "bench", "udp", "--json", "--server", addr, "--window", str(window),
                          "--duration", str(seconds), "--reply-timeout", "1"],
                         capture_output=True, text=True, check=True, timeout=RUN_TIMEOUT)
    result = json.loads(out.stdout)
    return result["rate"], result["errors"]


def relay(cmd, rate, seconds, server_pid):
    """One relay run: its report, with the server's CPU microseconds per delivery added."""
    before = cpu_seconds(server_pid)
    out = subprocess.run([*cmd[:2], str(rate), str(seconds), "10", *cmd[2:]],
                         capture_output=True, text=True, check=True, timeout=RUN_TIMEOUT)
    result = json.loads(out.stdout)
    result["server_us_per_delivery"] = (cpu_seconds(server_pid) - before) * 1e6 / max(result["received"], 1)
    return result


def wall(cmd, env):
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=RUN_TIMEOUT)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    return elapsed


def exec_times(exec_cmd, env, runs):
    """Median wall times of `runs` interleaved runs: the exec, `sockit --version`, `sh -c true`."""
    samples = {"exec": [], "version": [], "sh": []}
    for _ in range(runs):
        samples["exec"].append(wall(exec_cmd, env))
        samples["version"].append(wall([SOCKIT, "--version"], env))
        samples["sh"].append(wall(["sh", "-c", "true"], env))
    return {name: statistics.median(values) for name, values in samples.items()}


def spread(values, fmt):
    return f"{fmt(min(values))}–{fmt(max(values))}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each echo and relay run")
    parser.add_argument("--exec-runs", type=int, default=20, help="exec runs per round (medians)")
    parser.add_argument("--compare-chat-server", metavar="PATH",
                        help="also run the relay rows against this sockit binary (an earlier build), "
                             "each right after the same row against this build")
    args = parser.parse_args()
    for needed in (SOCKIT, RELAY_LOAD, WS_LOAD):
        if not os.access(needed, os.X_OK):
            sys.exit(f"build first: cargo build --release --bins --examples (missing {needed})")
    if not shutil.which("gcc"):
        sys.exit("needs gcc for the C anchor (apt-get install gcc)")

    left = Leftovers()
    work = tempfile.mkdtemp(prefix="sockit-bench-floor-")
    left.dirs.append(work)
    users = os.path.join(work, "users.toml")
    identity = os.path.join(work, "id_ed25519")
    subprocess.run([SOCKIT, "user", "add", "bench", "--users", users, "--password-stdin"],
                   input=b"bench password", check=True, capture_output=True)
    subprocess.run([SOCKIT, "keygen", "--identity", identity], check=True, capture_output=True)
    subprocess.run([SOCKIT, "user", "add-key", "bench", identity + ".pub", "--users", users],
                   check=True, capture_output=True)
    addrs = start_sockit(left, work, users)
    # The chat servers: (what the table calls it, pid, addresses).
    chats = [("", *start_chat(left, work, SOCKIT, "chat-store"))]
    if args.compare_chat_server:
        chats.append((", earlier build", *start_chat(left, work, args.compare_chat_server, "chat-store-2")))
    c_echo = start_c_echo(left, work)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKIT_")}
    env["XDG_CONFIG_HOME"] = os.path.join(work, "no-default-config")
    exec_cmd = [SOCKIT, "exec", "--server", addrs["tcp"], "--user", "bench", "--identity", identity, "--", "true"]
    wall(exec_cmd, env)  # warm the page cache

    echo = {(who, window): [] for who in ("sockit", "C") for window in (1, 32)}
    echo_errors = {key: 0 for key in echo}
    relays = {(label, tag, rate): [] for rate in (5000, 20000) for label, _ in RELAY_ROWS for tag, *_ in chats}
    execs = []
    load_before = os.getloadavg()
    for round_no in range(1, args.rounds + 1):
        for window in (1, 32):
            for who, addr in (("sockit", addrs["udp-echo"]), ("C", c_echo)):
                rate, errors = echo_rate(addr, window, args.seconds)
                echo[(who, window)].append(rate)
                echo_errors[(who, window)] += errors
                print(f"round {round_no}: echo window {window:2} {who:6} {rate:10,.0f}/s ({errors} errors)",
                      file=sys.stderr, flush=True)
        for label, tag, rate in relays:
            _, chat_pid, chat = next(server for server in chats if server[0] == tag)
            cmd = dict(RELAY_ROWS)[label](chat)
            result = relay(cmd, rate, args.seconds, chat_pid)
            relays[(label, tag, rate)].append(result)
            print(f"round {round_no}: relay {label}{tag}, {rate:,} lines/s: lost {result['lost']} of "
                  f"{result['expected']}, twice {result['duplicated']}, out of order {result['out_of_order']}, "
                  f"p99 {result['p99_ms']:.2f} ms, server {result['server_us_per_delivery']:.2f} µs/delivery",
                  file=sys.stderr, flush=True)
        times = exec_times(exec_cmd, env, args.exec_runs)
        execs.append(times)
        print(f"round {round_no}: exec {times['exec'] * 1000:.2f} ms, --version {times['version'] * 1000:.2f} ms, "
              f"sh -c true {times['sh'] * 1000:.2f} ms", file=sys.stderr, flush=True)

    load_after = os.getloadavg()
    per_second = lambda v: f"{v:,.0f}"
    print(f"{args.rounds} rounds, interleaved; medians, spread min–max over the rounds; load average "
          f"(1 min) {load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end\n")
    print("| UDP echo, 32-byte datagrams | C recvfrom/sendto loop (/s) | sockit --udp-echo (/s) | sockit / C | errors (sockit, C) |")
    print("|---|---|---|---|---|")
    for window in (1, 32):
        c, s = echo[("C", window)], echo[("sockit", window)]
        ratios = [sv / cv for sv, cv in zip(s, c)]
        print(f"| {window} in flight | {per_second(statistics.median(c))} ({spread(c, per_second)}) "
              f"| {per_second(statistics.median(s))} ({spread(s, per_second)}) "
              f"| **{statistics.median(ratios):.2f}×** ({spread(ratios, lambda v: f'{v:.2f}')}) "
              f"| {echo_errors[('sockit', window)]}, {echo_errors[('C', window)]} |")
    print()
    print("| chat relay, one member sending to 10 | lines/s | lines lost, each round | twice or out of order "
          "| p99 ms (spread) | p50 ms | deliveries/s | server CPU µs/delivery |")
    print("|---|---|---|---|---|---|---|---|")
    for (label, tag, rate), runs in relays.items():
        lost = ", ".join(f"{run['lost']:,} of {run['expected']:,}" for run in runs)
        disorder = sum(run["duplicated"] + run["out_of_order"] for run in runs)
        p99 = [run["p99_ms"] for run in runs]
        p50 = statistics.median(run["p50_ms"] for run in runs)
        delivered = statistics.median(run["deliveries_per_second"] for run in runs)
        cost = statistics.median(run["server_us_per_delivery"] for run in runs)
        print(f"| {label}{tag} | {rate:,} | {lost} | {disorder} "
              f"| **{statistics.median(p99):.2f}** ({spread(p99, lambda v: f'{v:.2f}')}) "
              f"| {p50:.2f} | {delivered:,.0f} | {cost:.2f} |")
    print()
    ms = lambda v: f"{v * 1000:.2f}"
    exec_ms = [t["exec"] for t in execs]
    floor_ms = [t["version"] + t["sh"] for t in execs]
    ratios = [e / f for e, f in zip(exec_ms, floor_ms)]
    print("| remote command, whole client process | floor: `sockit --version` + `sh -c true` (ms) "
          "| `sockit exec -- true`, key login (ms) | exec / floor |")
    print("|---|---|---|---|")
    print(f"| {args.exec_runs} runs a round, medians | {ms(statistics.median(floor_ms))} ({spread(floor_ms, ms)}) "
          f"| {ms(statistics.median(exec_ms))} ({spread(exec_ms, ms)}) "
          f"| **{statistics.median(ratios):.2f}×** ({spread(ratios, lambda v: f'{v:.2f}')}) |")


if __name__ == "__main__":
    main()
