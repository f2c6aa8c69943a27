#!/usr/bin/env python3
"""Listing a large store: `sockit ls` and `sockit ls --json` over loopback.

    python3 bench/list.py [--files 1000000] [--rounds 3] [--parent /dev/shm]

Makes a store of FILES empty files in a temporary directory under PARENT (a tmpfs by default,
so the disk is not what is measured), starts `sockit serve` on it (127.0.0.1 only), and runs,
round by round:
  ls       `sockit ls > FILE` (the lines are counted afterwards: every file must be there)
  ls-json  `sockit ls --json > /dev/null`
and prints the median wall time and peak resident memory of the client (wait4's ru_maxrss) and
of the server (VmHWM from /proc, reset before each run through /proc/PID/clear_refs). One
`ls --json` at the end is parsed to check that it holds every file, each once, in order.

Needs a release build (cargo build --release). Every run is bounded by a timeout; the server
and the store are removed at the end, whatever happens.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOCKIT = os.path.join(ROOT, "target", "release", "sockit")
RUN_TIMEOUT = 600


def make_store(root, files):
    """Creates `files` empty files named f0, f1, ... in root."""
    os.makedirs(root)
    for i in range(files):
        os.mknod(os.path.join(root, f"f{i}"))


def start_server(root):
    """Starts sockit serve on a free loopback port; returns (process, "host:port")."""
    proc = subprocess.Popen(
        [SOCKIT, "serve", "--listen", "127.0.0.1:0", "--udp", "off", "--root", root],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().split()
    if line[:2] != ["listening", "tcp"]:
        proc.kill()
        raise RuntimeError(f"unexpected first line from sockit serve: {line}")
    return proc, line[2]


def reset_peak(pid):
    """Resets a process's peak RSS to its current RSS; False when the kernel does not allow it."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def run_client(args, stdout):
    """Runs a sockit client; returns (seconds, peak RSS in KiB)."""
    started = time.monotonic()
    proc = subprocess.Popen([SOCKIT] + args, stdout=stdout, stderr=subprocess.PIPE)
    deadline = started + RUN_TIMEOUT
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"{args} timed out")
        time.sleep(0.002)
    seconds = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code != 0:
        raise RuntimeError(f"{args} exited {code}: {proc.stderr.read().decode()}")
    proc.stderr.close()
    return seconds, usage.ru_maxrss


def count_lines(path):
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def check_json(server, work, files):
    """Lists once more as JSON into a file and checks every name is there once, in order."""
    out = os.path.join(work, "listing.json")
    with open(out, "wb") as f:
        run_client(["ls", "--json", "--server", server], f)
    with open(out, "rb") as f:
        names = [entry["name"] for entry in json.load(f)]
    os.remove(out)
    expected = sorted(f"f{i}" for i in range(files))
    if names != expected:
        raise RuntimeError(f"ls --json listed {len(names)} names, not the {files} expected in order")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parent", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                        help="where the temporary store is made (default /dev/shm)")
    opts = parser.parse_args()
    if not os.path.exists(SOCKIT):
        sys.exit(f"{SOCKIT} is missing: run cargo build --release first")

    work = tempfile.mkdtemp(prefix="sockit-bench-list-", dir=opts.parent)
    server = None
    try:
        root = os.path.join(work, "store")
        started = time.monotonic()
        make_store(root, opts.files)
        print(f"made {opts.files} files in {root} in {time.monotonic() - started:.1f} s",
              file=sys.stderr)
        server, addr = start_server(root)
        exact_peaks = True
        results = {"ls": [], "ls-json": []}
        for round_no in range(1, opts.rounds + 1):
            for mode in results:
                exact_peaks &= reset_peak(server.pid)
                if mode == "ls":
                    out = os.path.join(work, "listing.txt")
                    with open(out, "wb") as f:
                        seconds, client_kib = run_client(["ls", "--server", addr], f)
                    lines = count_lines(out)
                    os.remove(out)
                    if lines != opts.files:
                        raise RuntimeError(f"ls printed {lines} lines, not {opts.files}")
                else:
                    with open(os.devnull, "wb") as f:
                        seconds, client_kib = run_client(["ls", "--json", "--server", addr], f)
                server_kib = peak_kib(server.pid)
                results[mode].append((seconds, client_kib, server_kib))
                print(f"round {round_no} {mode}: {seconds:.3f} s, client {client_kib // 1024} MiB,"
                      f" server {server_kib // 1024} MiB", file=sys.stderr)
        check_json(addr, work, opts.files)

        print(f"\n{opts.files} files, {opts.rounds} rounds, medians"
              + ("" if exact_peaks else " (server peak over the whole run: clear_refs refused)"))
        print("\n| command | wall s | client peak RSS | server peak RSS |")
        print("|---|---|---|---|")
        for mode, rows in results.items():
            seconds = statistics.median(r[0] for r in rows)
            client = statistics.median(r[1] for r in rows) / 1024
            srv = statistics.median(r[2] for r in rows) / 1024
            command = "sockit ls > FILE" if mode == "ls" else "sockit ls --json > /dev/null"
            print(f"| `{command}` | {seconds:.2f} | {client:.0f} MiB | {srv:.0f} MiB |")
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
