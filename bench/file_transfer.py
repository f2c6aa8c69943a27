#!/usr/bin/env python3
"""Side-by-side benchmark: one large file into a store over loopback.

    python3 bench/file_transfer.py [--size-mib 2048] [--rounds 3] [--store DIR]

Compares, interleaved round by round on the same source file:
  sockit      `sockit put` into `sockit serve` (BLAKE3 on both sides, fsync, atomic rename)
  sockit-get  `sockit get` of the same file back out (BLAKE3 verified, fsync, rename)
  nc          netcat-openbsd: `nc -N` sender, `nc -l` receiver writing to a file
  nc+sync     the same, then `sync FILE`: the durability sockit put gives
  scp         scp to a loopback sshd (openssh-server, key auth, 127.0.0.1 only)
  python      the tutorials' upload client and server (seeds/000)
and prints the median wall time per tool with the fastest and slowest round (the spread a
figure quoted from it must come with), sockit's speed-up over each, and peak memory
(GNU time's maximum resident set size; the sockit server's from /proc).

Needs: a release build (cargo build --release), GNU time (/usr/bin/time), and for the tools
chosen with --tools: nc (netcat-openbsd, for -N) for nc and nc+sync, sshd and scp
(openssh-server, openssh-client) for scp. It checks them all before starting and says what is
missing. Everything listens on 127.0.0.1 only and every run is bounded by a timeout. On every
exit path (an error, Ctrl-C, SIGTERM) it stops the servers it started and removes its temp dir.
"""
import argparse
import atexit
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from loopback import Sshd, free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOCKIT = os.path.join(ROOT, "target", "release", "sockit")
SEED_CLIENT = os.path.join(ROOT, "crates", "sockit-cli", "tests", "seeds", "upload_client_000.py")
SEED_SERVER = os.path.join(ROOT, "bench", "tutorial_upload_server.py")
RUN_TIMEOUT = 600

# What each tool needs besides the sockit binary and GNU time: (command, package) pairs.
NEEDS = {
    "nc": [("nc", "netcat-openbsd")],
    "nc+sync": [("nc", "netcat-openbsd"), ("sync", "coreutils")],
    "scp": [("sshd", "openssh-server"), ("scp", "openssh-client"), ("ssh-keygen", "openssh-client")],
    "python": [],
    "sockit": [],
    "sockit-get": [],
}

# Every process started and temp path made, so that cleanup() can undo them on any exit.
STARTED = []
TEMP_PATHS = []


def cleanup():
    """Stops every process this script started and removes its temp files; safe to call twice."""
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is not None:
            continue
        # Those in a process group of their own are signalled as a group: GNU time's child
        # goes with it.
        try:
            own_group = os.getpgid(proc.pid) == proc.pid
        except ProcessLookupError:
            own_group = False
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
            try:
                if own_group:
                    os.killpg(proc.pid, sig)
                else:
                    proc.send_signal(sig)
                proc.wait(timeout=wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
    while TEMP_PATHS:
        path = TEMP_PATHS.pop()
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)


def on_signal(signum, _frame):
    """SIGTERM and SIGHUP end the run the way Ctrl-C does: through cleanup."""
    sys.exit(128 + signum)


def missing_requirements(tools):
    """What the chosen tools need that is not here, in words."""
    missing = []
    if not os.access(SOCKIT, os.X_OK):
        missing.append(f"{SOCKIT}: build it with cargo build --release")
    if not os.access("/usr/bin/time", os.X_OK):
        missing.append("/usr/bin/time: GNU time (apt-get install time)")
    for tool in tools:
        if tool not in NEEDS:
            missing.append(f"{tool}: not a tool this benchmark knows ({', '.join(NEEDS)})")
            continue
        for command, package in NEEDS[tool]:
            found = shutil.which(command) or (command == "sshd" and os.access("/usr/sbin/sshd", os.X_OK))
            if not found:
                missing.append(f"{command} for {tool}: install {package}, or leave {tool} out with --tools")
    return sorted(set(missing))


def wait4(proc, timeout=RUN_TIMEOUT):
    """Waits for proc; returns (status, peak RSS in KiB)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{proc.args} timed out")
        time.sleep(0.005)


def timed(cmd, **kwargs):
    """Starts cmd under GNU time; returns (proc, file that will hold its peak RSS in KiB)."""
    rss = tempfile.NamedTemporaryFile(prefix="sockit-bench-rss-", delete=False)
    rss.close()
    TEMP_PATHS.append(rss.name)
    proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss.name] + cmd, start_new_session=True, **kwargs)
    STARTED.append(proc)
    return proc, rss.name


def rss_of(path):
    with open(path) as f:
        value = int(f.read().split()[-1])
    os.remove(path)
    TEMP_PATHS.remove(path)
    return value


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def same_file(a, b):
    return subprocess.run(["cmp", "-s", a, b]).returncode == 0


def run_sockit(server, src, store, name):
    start = time.perf_counter()
    proc, rss = timed([SOCKIT, "put", src, "--as", name, "--server", server], stdout=subprocess.DEVNULL)
    status, _ = wait4(proc)
    elapsed = time.perf_counter() - start
    assert status == 0, "sockit put failed"
    return elapsed, rss_of(rss), None, os.path.join(store, name)


def run_sockit_get(server, src, store, name, work):
    subprocess.run([SOCKIT, "put", src, "--as", name, "--server", server], stdout=subprocess.DEVNULL, check=True)
    os.remove(os.path.join(store, name))  # the copy on the server is not what is compared
    subprocess.run(["cp", src, os.path.join(store, name)], check=True)
    dst = os.path.join(work, name)
    start = time.perf_counter()
    proc, rss = timed([SOCKIT, "get", name, "-o", dst, "--server", server], stdout=subprocess.DEVNULL)
    status, _ = wait4(proc)
    elapsed = time.perf_counter() - start
    assert status == 0, "sockit get failed"
    os.remove(os.path.join(store, name))
    return elapsed, None, rss_of(rss), dst


def run_nc(src, store, name, sync=False):
    port = free_port()
    dst = os.path.join(store, name)
    with open(dst, "wb") as out:
        receiver, receiver_rss = timed(["nc", "-l", "127.0.0.1", str(port)], stdout=out)
        wait_port_listening(port)
        start = time.perf_counter()
        with open(src, "rb") as inp:
            sender, sender_rss = timed(["nc", "-N", "127.0.0.1", str(port)], stdin=inp)
            wait4(sender)
        wait4(receiver)
        if sync:
            subprocess.run(["sync", dst], check=True)
        elapsed = time.perf_counter() - start
    return elapsed, rss_of(sender_rss), rss_of(receiver_rss), dst


def wait_port_listening(port, timeout=10):
    """Waits until something listens on port, without connecting (nc -l serves one peer)."""
    hexport = f"{port:04X}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/net/tcp") as f:
            if any(line.split()[1].endswith(":" + hexport) and line.split()[3] == "0A" for line in f.readlines()[1:]):
                return
        time.sleep(0.01)
    raise RuntimeError(f"nc did not listen on {port}")


def run_scp(sshd, src, store, name):
    dst = os.path.join(store, name)
    start = time.perf_counter()
    proc, rss = timed(sshd.scp_command(src, dst))
    status, _ = wait4(proc)
    elapsed = time.perf_counter() - start
    assert status == 0, "scp failed"
    return elapsed, rss_of(rss), None, dst


def run_python(src, store, name):
    port = free_port()
    server, server_rss = timed([sys.executable, SEED_SERVER, str(port), store])
    wait_port_listening(port)
    start = time.perf_counter()
    client, client_rss = timed([sys.executable, SEED_CLIENT, str(port), src])
    wait4(client)
    wait4(server)
    elapsed = time.perf_counter() - start
    stored = os.path.join(store, "澳门最大线上赌场开业啦.mp4")
    dst = os.path.join(store, name)
    os.rename(stored, dst)
    return elapsed, rss_of(client_rss), rss_of(server_rss), dst


def run_rounds(args, tools):
    """Runs every round; returns the timings, the peak RSS figures and the file size."""
    work = tempfile.mkdtemp(prefix="sockit-bench-")
    TEMP_PATHS.append(work)
    store = args.store or os.path.join(work, "store")
    os.makedirs(store, exist_ok=True)
    src = os.path.join(work, "source.bin")
    with open(src, "wb") as f:
        chunk = os.urandom(1 << 20)
        for i in range(args.size_mib):
            f.write(chunk[i % 256:] + chunk[:i % 256])
    size = os.path.getsize(src)

    server = subprocess.Popen([SOCKIT, "serve", "--listen", "127.0.0.1:0", "--udp", "off", "--root", store],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    STARTED.append(server)
    addr = server.stdout.readline().split()[2]
    sshd = None
    if "scp" in tools:
        sshd = Sshd(work)
        STARTED.append(sshd.proc)

    runners = {
        "sockit": lambda name: run_sockit(addr, src, store, name),
        "sockit-get": lambda name: run_sockit_get(addr, src, store, name, work),
        "nc": lambda name: run_nc(src, store, name),
        "nc+sync": lambda name: run_nc(src, store, name, sync=True),
        "scp": lambda name: run_scp(sshd, src, store, name),
        "python": lambda name: run_python(src, store, name),
    }
    results = {tool: [] for tool in tools}
    sender_rss = {tool: 0 for tool in tools}
    receiver_rss = {tool: 0 for tool in tools}
    try:
        for round_no in range(1, args.rounds + 1):
            for tool in tools:
                name = f"{tool}-{round_no}.bin"
                elapsed, sent_rss, received_rss, dst = runners[tool](name)
                if not same_file(src, dst):
                    sys.exit(f"{tool}: stored file differs from the source")
                os.remove(dst)
                results[tool].append(elapsed)
                sender_rss[tool] = max(sender_rss[tool], sent_rss or 0)
                receiver_rss[tool] = max(receiver_rss[tool], received_rss or 0)
                print(f"round {round_no} {tool:7} {elapsed:7.3f} s  {size / elapsed / 2**20:8.1f} MiB/s",
                      flush=True)
        server_rss = peak_rss_kib(server.pid)
    finally:
        if sshd:
            sshd.close()
        if args.store:
            # A store given with --store is the caller's: leave it, but not our files in it.
            for tool in tools:
                for round_no in range(1, args.rounds + 1):
                    leftover = os.path.join(store, f"{tool}-{round_no}.bin")
                    if os.path.exists(leftover):
                        os.remove(leftover)
    return results, sender_rss, receiver_rss, server_rss, size


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", help="directory the receivers write into (default: a temp dir on disk)")
    parser.add_argument("--tools", default="sockit,sockit-get,nc,nc+sync,scp,python")
    args = parser.parse_args()
    tools = args.tools.split(",")
    missing = missing_requirements(tools)
    if missing:
        sys.exit("file_transfer.py needs:\n  " + "\n  ".join(missing))

    atexit.register(cleanup)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started ignoring it
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        results, sender_rss, receiver_rss, server_rss, size = run_rounds(args, tools)
    finally:
        cleanup()
    print()
    print(f"{args.size_mib} MiB over loopback, {args.rounds} rounds, store: {args.store or 'temp dir on disk'}")
    print("| tool | median s | rounds, fastest–slowest s | MiB/s | sockit put is faster by "
          "| sender peak RSS | receiver peak RSS |")
    print("|---|---|---|---|---|---|---|")
    sockit_median = statistics.median(results["sockit"]) if "sockit" in results else None
    for tool in tools:
        median = statistics.median(results[tool])
        ratio = f"{median / sockit_median:.2f}x" if sockit_median else "-"
        def mib(kib):
            return f"{kib / 1024:.0f} MiB" if kib else "-"
        spread = f"{min(results[tool]):.3f}–{max(results[tool]):.3f}"
        print(f"| {tool} | {median:.3f} | {spread} | {size / median / 2**20:.0f} | {ratio} "
              f"| {mib(sender_rss[tool])} | {mib(receiver_rss[tool])} |")
    print(f"\nsockit server peak RSS over all rounds (the receiver of put, the sender of get): "
          f"{server_rss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
