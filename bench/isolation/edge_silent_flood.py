#!/usr/bin/env python3
"""Isolation under attack, scenario (a): one source holds the maximum of silent connections at the edge.

Starts `bulkhead standalone` with two tenants (acme, globex) and their demo backends, all on loopback,
with the edge's default limits. Tenant B (globex) is measured by a client that opens a new TLS
connection per request (handshake through the edge, then `GET /`), paced at --rate requests/s:

  1. quiet phase (--quiet-secs): B alone;
  2. attack phase (--attack-secs): meanwhile one source (--attacker-ip, another loopback address)
     keeps up to --flood connections open to the edge's TLS listener without sending a byte,
     reopening each one the edge closes (at most --reopen-rate per second).

Prints B's success rate, p50 and p99 per phase, the attacker's open connections, and the edge's
refusal counters (`bulkhead_edge_refused_total` by reason). Bounded in time and count, loopback only.
Needs Python 3 (stdlib) and the `openssl` command (demo certificates). Run from the repository root:

    cargo build --release --bin bulkhead
    python3 bench/isolation/edge_silent_flood.py --bulkhead target/release/bulkhead
"""

import argparse
import os
import re
import resource
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

TENANTS = ("acme", "globex")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, **kw):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def make_pki(d):
    """A demo CA and one wildcard leaf per tenant; returns {tenant: (cert_pem, key_pem)}."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(["openssl", "req", "-x509", *ec, "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.crt",
         "-days", "2", "-subj", "/CN=isolation bench CA"])
    leaves = {}
    for t in TENANTS:
        ext = f"{d}/{t}.ext"
        with open(ext, "w") as f:
            f.write(f"subjectAltName=DNS:*.{t}.test,DNS:{t}.test\n")
        run(["openssl", "req", *ec, "-keyout", f"{d}/{t}.key", "-out", f"{d}/{t}.csr",
             "-subj", f"/CN=www.{t}.test"])
        run(["openssl", "x509", "-req", "-in", f"{d}/{t}.csr", "-CA", f"{d}/ca.crt",
             "-CAkey", f"{d}/ca.key", "-CAcreateserial", "-out", f"{d}/{t}.crt", "-days", "2",
             "-extfile", ext])
        with open(f"{d}/{t}.crt") as c, open(f"{d}/{t}.key") as k:
            leaves[t] = (c.read(), k.read())
    return leaves


def indent(pem, n):
    return "\n".join(" " * n + line for line in pem.strip().splitlines())


def manifests(tenant, cert, key, backend_port):
    return f"""apiVersion: v1
kind: Namespace
metadata: {{name: {tenant}}}
---
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {tenant}}}
spec: {{namespace: {tenant}, hostnames: ["{tenant}.test", "*.{tenant}.test"]}}
---
apiVersion: v1
kind: Secret
metadata: {{namespace: {tenant}, name: tls}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{indent(cert, 4)}
  tls.key: |
{indent(key, 4)}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{namespace: {tenant}, name: web}}
spec:
  gatewayClassName: bulkhead
  listeners:
  - name: https
    protocol: HTTPS
    port: 443
    hostname: "*.{tenant}.test"
    tls:
      mode: Terminate
      certificateRefs: [{{name: tls}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{namespace: {tenant}, name: web}}
spec:
  parentRefs: [{{name: web}}]
  hostnames: ["www.{tenant}.test"]
  rules:
  - backendRefs: [{{name: web, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{namespace: {tenant}, name: web}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  namespace: {tenant}
  name: web-1
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{{name: http, port: {backend_port}}}]
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {{ready: true}}
"""


def https_get(addr, host, ctx, timeout, source_ip="127.0.0.1"):
    """One request on a new TLS connection from `source_ip`; returns True on a 200."""
    with socket.create_connection(addr, timeout=timeout, source_address=(source_ip, 0)) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                data += chunk
    return data.startswith(b"HTTP/1.1 200")


class Client:
    """Tenant B: requests paced at `rate`/s over `workers` threads, each on a new TLS connection."""

    def __init__(self, addr, source_ip, host, cafile, rate, workers, timeout):
        self.addr, self.source_ip, self.host, self.timeout = addr, source_ip, host, timeout
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.interval = workers / rate
        self.workers = workers
        self.phase = None
        self.results = {}  # phase -> list of (ok, seconds)
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def worker(self):
        next_at = time.monotonic()
        while not self.stop.is_set():
            phase = self.phase
            started = time.monotonic()
            try:
                ok = https_get(self.addr, self.host, self.ctx, self.timeout, self.source_ip)
            except (OSError, ssl.SSLError):
                ok = False
            took = time.monotonic() - started
            if phase is not None:
                with self.lock:
                    self.results.setdefault(phase, []).append((ok, took))
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            else:
                next_at = time.monotonic()

    def start(self):
        self.threads = [threading.Thread(target=self.worker, daemon=True) for _ in range(self.workers)]
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(self.timeout + 1)


class Flood:
    """One source keeping up to `count` silent connections open, reopening those the edge closes."""

    def __init__(self, addr, source_ip, count, reopen_rate):
        self.addr, self.source_ip, self.count = addr, source_ip, count
        self.reopen_interval = 1.0 / reopen_rate
        self.sel = selectors.DefaultSelector()
        self.stop = threading.Event()
        self.opened = self.closed_by_edge = self.failed = 0
        self.open_now = 0
        self.peak_open = 0

    def open_one(self):
        s = socket.socket()
        s.setblocking(False)
        s.bind((self.source_ip, 0))
        err = s.connect_ex(self.addr)
        if err not in (0, 115):  # EINPROGRESS
            s.close()
            self.failed += 1
            return
        self.sel.register(s, selectors.EVENT_READ)
        self.opened += 1
        self.open_now += 1

    def run(self):
        next_open = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            while self.open_now < self.count and next_open <= now:
                try:
                    self.open_one()
                except OSError:
                    self.failed += 1
                next_open += self.reopen_interval
            if next_open < now:
                next_open = now
            for key, _ in self.sel.select(timeout=0.05):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    self.sel.unregister(s)
                    s.close()
                    self.open_now -= 1
                    self.closed_by_edge += 1
            self.peak_open = max(self.peak_open, self.open_now)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()

    def start(self):
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def finish(self):
        self.stop.set()
        self.thread.join(5)


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def report(phase, results):
    n = len(results)
    ok = sum(1 for good, _ in results if good)
    lat = [t for good, t in results if good]
    print(f"{phase:>7}: {n:6d} requests, success {100.0 * ok / max(n, 1):6.2f}%, "
          f"p50 {1000 * percentile(lat, 50):8.1f} ms, p99 {1000 * percentile(lat, 99):8.1f} ms")


def metrics(admin):
    with urllib.request.urlopen(f"http://{admin[0]}:{admin[1]}/metrics", timeout=5) as r:
        return r.read().decode()


def wait_served(addr, cafile, deadline):
    ctx = ssl.create_default_context(cafile=cafile)
    while time.monotonic() < deadline:
        try:
            if all(https_get(addr, f"www.{t}.test", ctx, 2) for t in TENANTS):
                return True
        except (OSError, ssl.SSLError):
            pass
        time.sleep(0.2)
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bulkhead", default="target/release/bulkhead")
    ap.add_argument("--quiet-secs", type=float, default=10)
    ap.add_argument("--attack-secs", type=float, default=20)
    ap.add_argument("--rate", type=float, default=50, help="tenant B's requests per second")
    ap.add_argument("--workers", type=int, default=4, help="tenant B's client threads")
    ap.add_argument("--timeout", type=float, default=5, help="per request, seconds")
    ap.add_argument("--flood", type=int, default=8192,
                    help="silent connections the attacker keeps open (2x the default sniffing pool)")
    ap.add_argument("--reopen-rate", type=float, default=2000,
                    help="most connections per second the attacker opens")
    ap.add_argument("--attacker-ip", default="127.0.0.2")
    ap.add_argument("--client-ip", default="127.0.0.1")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < args.flood + 1024:
        sys.exit(f"open files limit {want} is too low for --flood {args.flood}")

    tmp = tempfile.mkdtemp(prefix="bulkhead-isolation-a-")
    leaves = make_pki(tmp)
    mdir = os.path.join(tmp, "manifests")
    os.mkdir(mdir)
    procs = []
    try:
        for t in TENANTS:
            port = free_port()
            procs.append(subprocess.Popen(
                [args.bulkhead, "demo-backend", "--listen", f"127.0.0.1:{port}", "--name", f"{t}-web"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            with open(os.path.join(mdir, f"{t}.yaml"), "w") as f:
                f.write(manifests(t, *leaves[t], port))
        https, http, admin = (("127.0.0.1", free_port()) for _ in range(3))
        log = open(os.path.join(tmp, "bulkhead.log"), "w")
        procs.append(subprocess.Popen(
            [args.bulkhead, "standalone", "--manifests", mdir,
             "--https-listen", f"{https[0]}:{https[1]}", "--http-listen", f"{http[0]}:{http[1]}",
             "--admin-listen", f"{admin[0]}:{admin[1]}"],
            stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "RUST_LOG": "warn"}))
        cafile = os.path.join(tmp, "ca.crt")
        if not wait_served(https, cafile, time.monotonic() + 30):
            sys.exit(f"bulkhead never served both tenants; log in {tmp}/bulkhead.log")

        client = Client(https, args.client_ip, "www.globex.test", cafile, args.rate, args.workers, args.timeout)
        client.start()
        client.phase = "quiet"
        time.sleep(args.quiet_secs)
        flood = Flood(https, args.attacker_ip, args.flood, args.reopen_rate)
        flood.start()
        client.phase = "attack"
        time.sleep(args.attack_secs)
        client.phase = None
        client.finish()
        text = metrics(admin)
        flood_open = flood.open_now
        flood.finish()

        print(f"scenario (a): one source ({args.attacker_ip}) keeps up to {args.flood} silent TLS "
              f"connections; tenant B (globex) from {args.client_ip}, {args.rate:g} req/s, "
              f"new TLS connection per request")
        for phase in ("quiet", "attack"):
            report(phase, client.results.get(phase, []))
        print(f"attacker: opened {flood.opened}, closed by the edge {flood.closed_by_edge}, "
              f"open at the end {flood_open}, peak open {flood.peak_open}, connect errors {flood.failed}")
        for line in text.splitlines():
            if line.startswith("bulkhead_edge_refused_total") or line.startswith(
                    "bulkhead_edge_source_rate_untracked_total"):
                print("  " + line)
        sniffing = re.search(r"^bulkhead_edge_connections_sniffing (\d+)", text, re.M)
        if sniffing:
            print(f"  edge connections still sniffing at the end of the attack: {sniffing.group(1)}")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
