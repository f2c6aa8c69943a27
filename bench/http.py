#!/usr/bin/env python3
"""The browser front end over HTTP against nginx: one large file down and up over loopback.

    python3 bench/http.py [--size-mib 2048] [--rounds 3] [--store DIR]

Interleaved round by round (the tools alternate, so a burst of load from elsewhere hits both):
  download  `curl -o /dev/null` of the same file from the same directory, served by
            `sockit serve --http` and by nginx (Debian's, sendfile on, one worker)
  upload    `curl -T FILE http://…/files/NAME` into `sockit serve --http` (stored atomically,
            BLAKE3-hashed, synced) against `sockit put FILE` into the framed port of the same
            server (the same store path)
and prints the median wall time of each with the fastest and slowest round, MiB/s, and the
ratios the issue asks for (sockit/nginx download >= 0.9, curl -T/sockit put upload >= 0.8).

Before the rounds, each server sends the file once, untimed: the page cache then holds it for
both, and sockit has hashed it (a download's ETag is the file's BLAKE3, kept once computed).
Before each upload, untimed, `sync -f` on the store's file system settles what the round before
left (removed uploads, dirty pages), so that both uploads start from the same state.

Needs: a release build (cargo build --release), curl, nginx (/usr/sbin/nginx, nginx-light).
Checks free disk space first (the source, the served copy and the uploads: about 3x the size,
with 15 GiB to spare). Everything listens on 127.0.0.1 only, every run is bounded by a timeout,
and every process started and file made is removed on any exit (Leftovers).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from loopback import Leftovers, free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOCKIT = os.path.join(ROOT, "target", "release", "sockit")
NGINX = "/usr/sbin/nginx"
RUN_TIMEOUT = 600
SPARE = 15 * 2**30


def nginx_config(prefix, port, store):
    return f"""daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /files/ {{ alias {store}/; }}
    }}
}}
"""


def timed(cmd):
    start = time.perf_counter()
    subprocess.run(cmd, check=True, timeout=RUN_TIMEOUT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def settle(store):
    """Lets the store's file system finish what the last round left (the removed uploads'
    extents, dirty pages of others), untimed, so that each upload starts from the same state."""
    subprocess.run(["sync", "-f", store], check=True, timeout=RUN_TIMEOUT)


def download(port, name):
    return timed(["curl", "-sS", "--fail", "-o", "/dev/null", f"http://127.0.0.1:{port}/files/{name}"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", help="the directory to serve from (default: a temp dir)")
    args = parser.parse_args()
    missing = [tool for tool in (SOCKIT, NGINX) if not os.path.exists(tool)]
    missing += [tool for tool in ("curl",) if shutil.which(tool) is None]
    if missing:
        sys.exit(f"missing: {', '.join(missing)} (cargo build --release; apt-get install curl nginx-light)")
    size = args.size_mib * 2**20
    leftovers = Leftovers()
    work = tempfile.mkdtemp(prefix="sockit-bench-http-")
    leftovers.dirs.append(work)
    os.chmod(work, 0o755)  # nginx's workers read as another user when started by root
    store = args.store or os.path.join(work, "store")
    os.makedirs(store, exist_ok=True)
    if args.store:
        leftovers.dirs.append(store)
    free = shutil.disk_usage(store).free
    if free < 3 * size + SPARE:
        sys.exit(f"{free / 2**30:.1f} GiB free: need {(3 * size + SPARE) / 2**30:.1f} GiB")

    src = os.path.join(work, "source.bin")
    with open(src, "wb") as f:
        block = os.urandom(2**20)
        for _ in range(args.size_mib):
            f.write(block)
    shutil.copyfile(src, os.path.join(store, "served.bin"))

    framed, http = free_port(), free_port()
    sockit = subprocess.Popen(
        [SOCKIT, "serve", "--listen", f"127.0.0.1:{framed}", "--udp", "off",
         "--http", f"127.0.0.1:{http}", "--root", store],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    leftovers.processes.append(sockit)
    prefix = os.path.join(work, "nginx")
    os.makedirs(prefix)
    nginx_port = free_port()
    with open(os.path.join(prefix, "nginx.conf"), "w") as f:
        f.write(nginx_config(prefix, nginx_port, store))
    nginx = subprocess.Popen([NGINX, "-p", prefix, "-c", os.path.join(prefix, "nginx.conf"),
                              "-e", os.path.join(prefix, "error.log")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    leftovers.processes.append(nginx)
    for port in (framed, http, nginx_port):
        wait_port(port)

    download(http, "served.bin")  # warm: page cache, and sockit's hash of the file
    download(nginx_port, "served.bin")

    times = {"sockit get": [], "nginx get": [], "curl -T": [], "sockit put": []}
    for round_ in range(args.rounds):
        first, second = (("sockit get", http), ("nginx get", nginx_port))[:: 1 if round_ % 2 == 0 else -1]
        for tool, port in (first, second):
            times[tool].append(download(port, "served.bin"))
        uploads = [
            ("curl -T", ["curl", "-sS", "--fail", "-T", src, f"http://127.0.0.1:{http}/files/up-curl.bin"], "up-curl.bin"),
            ("sockit put", [SOCKIT, "put", src, "--as", "up-put.bin", "--server", f"127.0.0.1:{framed}", "-q"], "up-put.bin"),
        ][:: 1 if round_ % 2 == 0 else -1]
        for tool, cmd, name in uploads:
            settle(store)
            times[tool].append(timed(cmd))
            stored = os.path.join(store, name)
            assert os.path.getsize(stored) == size, f"{tool}: wrong size"
            os.remove(stored)
        print(f"round {round_ + 1}: " + ", ".join(f"{tool} {values[-1]:.3f} s" for tool, values in times.items()),
              flush=True)

    print(f"\n{args.size_mib} MiB, {args.rounds} rounds\n")
    print("| transfer | median s | fastest–slowest s | MiB/s |")
    print("|---|---|---|---|")
    for tool, values in times.items():
        median = statistics.median(values)
        print(f"| {tool} | {median:.3f} | {min(values):.3f}–{max(values):.3f} | {size / median / 2**20:.0f} |")
    med = {tool: statistics.median(values) for tool, values in times.items()}
    print(f"\ndownload, sockit vs nginx (speed): {med['nginx get'] / med['sockit get']:.2f}x (goal >= 0.9)")
    print(f"upload, curl -T vs sockit put (speed): {med['sockit put'] / med['curl -T']:.2f}x (goal >= 0.8)")
    leftovers.cleanup()


if __name__ == "__main__":
    main()
