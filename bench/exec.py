#!/usr/bin/env python3
"""Side-by-side benchmark: the wall time of one quick remote command, whole client process.

    python3 bench/exec.py [--runs 30]

Runs, interleaved, each as a fresh client process from start to exit:
  sockit-key       `sockit exec -- true`, ed25519 key login
  sockit-password  `sockit exec -- true`, password login (SOCKIT_PASSWORD; argon2id on purpose)
  ssh              `ssh 127.0.0.1 true` to a throwaway sshd (openssh-server, ed25519 key auth)
  ssh-mux          the same through an already open ssh master connection (ControlMaster),
                   for context: no handshake or login at all, just a new channel
and prints the median (and min / 90th percentile) per tool, and how many times faster
sockit is than ssh.

Needs: a release build (cargo build --release), sshd and ssh. Everything listens on 127.0.0.1
only; every run is bounded by a timeout.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from loopback import Sshd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOCKIT = os.path.join(ROOT, "target", "release", "sockit")
RUN_TIMEOUT = 30
PASSWORD = "bench password"


def wall(cmd, env=None):
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=RUN_TIMEOUT)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    if not os.path.exists(SOCKIT):
        sys.exit("build first: cargo build --release")

    work = tempfile.mkdtemp(prefix="sockit-bench-exec-")
    users = os.path.join(work, "users.toml")
    identity = os.path.join(work, "id_ed25519")
    subprocess.run([SOCKIT, "user", "add", "bench", "--users", users, "--password-stdin"],
                   input=PASSWORD.encode(), check=True, capture_output=True)
    subprocess.run([SOCKIT, "keygen", "--identity", identity], check=True, capture_output=True)
    subprocess.run([SOCKIT, "user", "add-key", "bench", identity + ".pub", "--users", users],
                   check=True, capture_output=True)
    server = subprocess.Popen([SOCKIT, "serve", "--listen", "127.0.0.1:0", "--udp", "off",
                               "--root", os.path.join(work, "store"), "--users", users],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    addr = server.stdout.readline().split()[2]
    sshd = Sshd(work)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKIT_")}
    env["XDG_CONFIG_HOME"] = os.path.join(work, "no-default-key")
    mux = ["-o", "ControlMaster=auto", "-o", f"ControlPath={work}/mux-%C", "-o", "ControlPersist=300"]
    tools = {
        "sockit-key": ([SOCKIT, "exec", "--server", addr, "--user", "bench", "--identity", identity,
                        "--", "true"], env),
        "sockit-password": ([SOCKIT, "exec", "--server", addr, "--user", "bench", "--", "true"],
                            dict(env, SOCKIT_PASSWORD=PASSWORD)),
        "ssh": (sshd.ssh_command("true"), None),
        "ssh-mux": (sshd.ssh_command("true")[:1] + mux + sshd.ssh_command("true")[1:], None),
    }
    times = {tool: [] for tool in tools}
    try:
        for cmd, tool_env in tools.values():  # warm up caches and the page cache
            wall(cmd, tool_env)
        for _ in range(args.runs):
            for tool, (cmd, tool_env) in tools.items():
                times[tool].append(wall(cmd, tool_env))
    finally:
        server.terminate()
        server.wait(timeout=15)
        subprocess.run(sshd.ssh_command("true")[:1] + mux + ["-O", "exit"] + sshd.ssh_command("true")[1:-1],
                       capture_output=True, timeout=RUN_TIMEOUT)
        sshd.close()

    print(f"{args.runs} runs each, interleaved; whole client process, wall time")
    print(f"{'tool':<16} {'median':>9} {'min':>9} {'p90':>9}   ssh / tool")
    ssh = statistics.median(times["ssh"])
    for tool, samples in times.items():
        samples.sort()
        median = statistics.median(samples)
        p90 = samples[min(len(samples) - 1, int(len(samples) * 0.9))]
        print(f"{tool:<16} {median * 1000:>7.2f}ms {samples[0] * 1000:>7.2f}ms {p90 * 1000:>7.2f}ms"
              f"   {ssh / median:>6.1f}x")


if __name__ == "__main__":
    main()
