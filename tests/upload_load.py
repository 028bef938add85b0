#!/usr/bin/env python3
"""Uploads PNGs to a gateway (POST /v1/uploads, then PUT to the put_url), for tests/bench_cpu.sh.

    tests/upload_load.py once URL TOKEN BYTES            # one upload; prints its upload_id
    tests/upload_load.py load URL TOKEN BYTES SECONDS N  # N clients for SECONDS; prints a JSON report

Each file is a real PNG of about BYTES bytes (uncompressed pixels in stored zlib blocks) whose
tEXt chunk carries a counter, so every upload is new bytes the store must write, not a duplicate.
"""
import hashlib
import http.client
import itertools
import json
import struct
import sys
import threading
import time
import urllib.parse
import zlib


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


class Pngs:
    """PNGs of about `size` bytes that differ only in a small tEXt chunk."""

    def __init__(self, size: int):
        width = 512
        height = max(1, size // (1 + 3 * width))
        raw = b"".join(b"\0" + bytes((x * 7 + y) % 256 for x in range(3 * width)) for y in range(height))
        self.head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        self.tail = chunk(b"IDAT", zlib.compress(raw, 0)) + chunk(b"IEND", b"")
        self.counter = itertools.count()
        self.lock = threading.Lock()

    def next(self) -> bytes:
        with self.lock:
            n = next(self.counter)
        return self.head + chunk(b"tEXt", b"Comment\0" + str(n).encode()) + self.tail


def upload(base: urllib.parse.SplitResult, token: str, body: bytes) -> str:
    """Declares and PUTs `body`; the upload id. Raises on any refusal."""
    conn = http.client.HTTPConnection(base.hostname, base.port, timeout=30)
    declaration = json.dumps({"filename": "bench.png", "content_type": "image/png", "size": len(body),
                              "sha256": hashlib.sha256(body).hexdigest()})
    conn.request("POST", "/v1/uploads", declaration,
                 {"authorization": f"Bearer {token}", "content-type": "application/json"})
    response = conn.getresponse()
    ticket = json.loads(response.read())
    if response.status != 201:
        raise RuntimeError(f"declare: {response.status} {ticket}")
    put = urllib.parse.urlsplit(ticket["put_url"])
    conn.request("PUT", f"{put.path}?{put.query}", body, ticket.get("put_headers", {}))
    response = conn.getresponse()
    answer = response.read()
    if response.status != 200:
        raise RuntimeError(f"PUT: {response.status} {answer[:200]!r}")
    conn.close()
    return ticket["upload_id"]


def main() -> int:
    mode, url, token, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    base = urllib.parse.urlsplit(url)
    pngs = Pngs(size)
    if mode == "once":
        print(upload(base, token, pngs.next()))
        return 0
    seconds, clients = float(sys.argv[5]), int(sys.argv[6])
    done = {"uploads": 0, "bytes": 0, "errors": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client():
        while time.monotonic() < deadline:
            body = pngs.next()
            try:
                upload(base, token, body)
                with lock:
                    done["uploads"] += 1
                    done["bytes"] += len(body)
            except Exception as e:  # counted and reported: the bench fails on any
                print(e, file=sys.stderr)
                with lock:
                    done["errors"] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done["seconds"] = time.monotonic() - started
    print(json.dumps(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
