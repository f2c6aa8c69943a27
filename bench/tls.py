#!/usr/bin/env python3
"""What TLS costs: the same work in the clear and over TLS, side by side in one run.

    python3 bench/tls.py [--rounds 5] [--size-mib 2048] [--conns 50] [--seconds 3] [--execs 30]

Starts two `sockit serve` on 127.0.0.1 with their stores in RAM (/dev/shm, so the disk hides
nothing): one plain, one `--tls`, both with a users file holding one key. Then, round by
round, alternating which goes first:
  echo   framed `echo` of 32 bytes, CONNS connections, one request in flight on each, for
         SECONDS (examples/echo_load.rs, the same generator for both)
  put    `sockit put` of a SIZE-MiB file, key login (plain, and --fingerprint over TLS)
  exec   `sockit exec -- true` with key login, the whole client process, the TLS handshake
         included (EXECS runs per round, the median of each round)
Prints the median of each with the fastest and slowest round, and the ratios TLS / plain.

Needs a release build: cargo build --release --bins --examples. Everything listens on
127.0.0.1 only; every run is bounded in time; the servers and the temp dir go on any exit.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from loopback import Leftovers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOCKIT = os.path.join(ROOT, "target", "release", "sockit")
ECHO_LOAD = os.path.join(ROOT, "target", "release", "examples", "echo_load")
RUN_TIMEOUT = 600

# Everything started or made here, undone on every exit.
LEFTOVERS = Leftovers()


def run(cmd, **kwargs):
    """Runs cmd to its end within RUN_TIMEOUT; its stdout, or exits with what went wrong."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT, **kwargs)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def serve(root, users, tls):
    """Starts a server; (address, fingerprint or None)."""
    cmd = [SOCKIT, "-q", "serve", "--listen", "127.0.0.1:0", "--udp", "off",
           "--root", root, "--users", users]
    if tls:
        cmd.append("--tls")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    LEFTOVERS.processes.append(proc)
    addr = proc.stdout.readline().split()[2]
    fingerprint = proc.stdout.readline().split()[1] if tls else None
    return addr, fingerprint


def spread(values, unit, digits=1):
    return (f"median {statistics.median(values):,.{digits}f} {unit} "
            f"(rounds {min(values):,.{digits}f}–{max(values):,.{digits}f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--execs", type=int, default=30)
    args = parser.parse_args()
    for path, how in ((SOCKIT, "cargo build --release"), (ECHO_LOAD, "cargo build --release --examples")):
        if not os.access(path, os.X_OK):
            sys.exit(f"{path} is missing: {how}")
    if not os.path.isdir("/dev/shm"):
        sys.exit("/dev/shm (tmpfs) is needed to keep the stores in RAM")

    work = tempfile.mkdtemp(prefix="sockit-bench-tls-", dir="/dev/shm")
    LEFTOVERS.dirs.append(work)
    identity = os.path.join(work, "id")
    users = os.path.join(work, "users.toml")
    run([SOCKIT, "-q", "keygen", "--identity", identity])
    run([SOCKIT, "-q", "user", "add-key", "bench", identity + ".pub", "--users", users])
    plain_addr, _ = serve(os.path.join(work, "plain"), users, tls=False)
    tls_addr, fingerprint = serve(os.path.join(work, "tls"), users, tls=True)
    source = os.path.join(work, "source")
    with open(source, "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(args.size_mib):
            f.write(block)
    login = ["--user", "bench", "--identity", identity]
    ways = {"plain": (plain_addr, []), "tls": (tls_addr, ["--fingerprint", fingerprint])}
    env = dict(os.environ, SOCKIT_KNOWN_SERVERS=os.path.join(work, "known_servers"))

    echo = {"plain": [], "tls": []}
    put = {"plain": [], "tls": []}
    execs = {"plain": [], "tls": []}
    for round_ in range(args.rounds):
        order = ["plain", "tls"] if round_ % 2 == 0 else ["tls", "plain"]
        for way in order:
            addr, tls = ways[way]
            load = [ECHO_LOAD, addr, str(args.conns), str(args.seconds), "32"]
            if way == "tls":
                load.append(fingerprint)
            result = json.loads(run(load))
            if result["errors"]:
                sys.exit(f"echo over {way}: {result['errors']} errors")
            echo[way].append(result["rate"])
        for way in order:
            addr, tls = ways[way]
            started = time.perf_counter()
            run([SOCKIT, "-q", "put", source, "--as", "big", "--force", "--server", addr] + login + tls,
                env=env)
            put[way].append(args.size_mib / (time.perf_counter() - started))
        for way in order:
            addr, tls = ways[way]
            times = []
            for _ in range(args.execs):
                started = time.perf_counter()
                run([SOCKIT, "exec", "--server", addr] + tls + login + ["--", "true"], env=env)
                times.append((time.perf_counter() - started) * 1000)
            execs[way].append(statistics.median(times))
        print(f"round {round_ + 1}: echo plain {echo['plain'][-1]:,.0f}/s tls {echo['tls'][-1]:,.0f}/s; "
              f"put plain {put['plain'][-1]:,.0f} MiB/s tls {put['tls'][-1]:,.0f} MiB/s; "
              f"exec plain {execs['plain'][-1]:.2f} ms tls {execs['tls'][-1]:.2f} ms", flush=True)

    print()
    print(f"echo, {args.conns} connections, 32 bytes:")
    print(f"  plain {spread(echo['plain'], 'req/s', 0)}")
    print(f"  tls   {spread(echo['tls'], 'req/s', 0)}")
    ratios = [t / p for t, p in zip(echo["tls"], echo["plain"])]
    print(f"  tls / plain {spread(ratios, 'x', 2)}")
    print(f"put of {args.size_mib} MiB into RAM, key login:")
    print(f"  plain {spread(put['plain'], 'MiB/s', 0)}")
    print(f"  tls   {spread(put['tls'], 'MiB/s', 0)}")
    ratios = [t / p for t, p in zip(put["tls"], put["plain"])]
    print(f"  tls / plain {spread(ratios, 'x', 2)}")
    print(f"exec -- true, key login, whole client process ({args.execs} per round):")
    print(f"  plain {spread(execs['plain'], 'ms', 2)}")
    print(f"  tls   {spread(execs['tls'], 'ms', 2)}")


if __name__ == "__main__":
    main()
