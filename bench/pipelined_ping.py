#!/usr/bin/env python3
"""Pipelined ping throughput on one connection.

    python3 bench/pipelined_ping.py HOST:PORT [COUNT]

Sends COUNT (default 1,000,000) `ping` frames in one go from one thread while another reads
the replies, and reports requests per second. Checks that exactly COUNT replies of the exact
expected bytes came back. Point it only at a server on loopback.
"""
import json
import socket
import struct
import sys
import threading
import time

host, port = sys.argv[1].rsplit(":", 1)
count = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
header = json.dumps({"op": "ping"}, separators=(",", ":")).encode()
request = struct.pack("<i", len(header)) + header
reply_header = b'{"ok":true}'
reply = struct.pack("<i", len(reply_header)) + reply_header

sock = socket.create_connection((host, int(port)))
sock.settimeout(60)
started = time.perf_counter()
sender = threading.Thread(target=sock.sendall, args=(request * count,))
sender.start()
received = bytearray()
expected = len(reply) * count
while len(received) < expected:
    chunk = sock.recv(1 << 20)
    if not chunk:
        sys.exit(f"server closed after {len(received) // len(reply)} replies")
    received += chunk
sender.join()
elapsed = time.perf_counter() - started
if bytes(received) != reply * count:
    sys.exit("replies differ from the expected bytes")
print(f"{count} pipelined pings in {elapsed:.3f} s: {count / elapsed:,.0f} requests/s")
