#!/usr/bin/env python3
"""How much memory open connections keep after route changes: a router (`bulkhead-bench
bench-candidate`, one worker) with N routes; a TLS connection is opened and used for one request,
then the routes file changes (one route more), CHANGES times, every connection kept open. Prints the
router's RssAnon at the start, after the changes with every connection open, and after they closed.

    python3 bench/memory/configs_held_by_connections.py BULKHEAD_BENCH [N=5000] [CHANGES=10]

Uses the load harness's certificates (run shared/bench/setup.sh first, same BENCH_OUT).
"""
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CERTS = Path(os.environ.get("BENCH_OUT", ROOT / "target" / "bench")) / "certs"
ADDR = ("127.0.0.1", 22643)


def write_routes(path: Path, n: int):
    lines = [f"r{i}.bench.example / 127.0.0.1:{20000 + i % 100} {CERTS}/default.crt {CERTS}/default.key" for i in range(n)]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def rss_anon(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise RuntimeError("no RssAnon")


def open_and_use() -> ssl.SSLSocket:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(socket.create_connection(ADDR, timeout=5), server_hostname="r0.bench.example")
    s.sendall(b"GET / HTTP/1.1\r\nHost: r0.bench.example\r\n\r\n")
    head = s.recv(65536)
    if not head.startswith(b"HTTP/1.1 "):
        raise RuntimeError(f"no answer: {head[:80]!r}")
    return s


def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    changes = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    with tempfile.TemporaryDirectory() as work:
        routes = Path(work) / "routes.txt"
        write_routes(routes, n)
        env = dict(os.environ, BENCH_ROLE="router", BENCH_LISTEN=f"{ADDR[0]}:{ADDR[1]}", BENCH_ROUTES=str(routes),
                   BENCH_WORKERS="1", RUST_LOG="warn")
        proc = subprocess.Popen([binary, "bench-candidate"], env=env)
        try:
            for _ in range(100):
                try:
                    socket.create_connection(ADDR, timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            time.sleep(1)
            start = rss_anon(proc.pid)
            conns = []
            for c in range(changes):
                conns.append(open_and_use())
                write_routes(routes, n + c + 1)
                time.sleep(1.0)
            time.sleep(2)
            held = rss_anon(proc.pid)
            for s in conns:
                s.close()
            time.sleep(2)
            closed = rss_anon(proc.pid)
            print(f"{n} routes, {changes} changes: RssAnon start {start} kB, {changes} connections open {held} kB, "
                  f"closed {closed} kB")
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
