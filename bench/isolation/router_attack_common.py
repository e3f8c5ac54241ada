"""Shared parts of the router isolation benchmarks (router_trickle.py, router_h2_flood.py).

Starts `bulkhead standalone` on loopback with two tenants: `a` (the attacker's tenant, *.a.test)
and `b` (the victim, *.b.test), each with its own Python backend, a self-signed certificate made
with the openssl CLI, and measures tenant B with a steady HTTPS probe. Python 3 stdlib only.
"""

import asyncio
import concurrent.futures
import multiprocessing
import json
import os
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

BIG_BYTES = 4 * 1024 * 1024


def raise_fd_limit():
    """Raise RLIMIT_NOFILE to the hard limit (inherited by bulkhead); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    except (ValueError, OSError):
        pass
    return soft


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tenant_yaml(name, hosts, backend_port, cert, key):
    indent = lambda pem: "".join(f"    {l}\n" for l in pem.splitlines())
    hs = ", ".join(f'"{h}"' for h in hosts)
    return f"""apiVersion: v1
kind: Namespace
metadata: {{name: {name}}}
---
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {name}}}
spec: {{namespace: {name}, hostnames: [{hs}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{namespace: {name}, name: gw}}
spec:
  gatewayClassName: bulkhead
  listeners:
  - {{name: http, protocol: HTTP, port: 80, hostname: "{hosts[0]}"}}
  - name: https
    protocol: HTTPS
    port: 443
    hostname: "{hosts[0]}"
    tls: {{mode: Terminate, certificateRefs: [{{name: tls}}]}}
---
apiVersion: v1
kind: Secret
metadata: {{namespace: {name}, name: tls}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{indent(cert)}  tls.key: |
{indent(key)}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{namespace: {name}, name: web}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [{hs}]
  rules:
  - backendRefs: [{{name: web, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{namespace: {name}, name: web}}
spec: {{ports: [{{name: http, port: 80, targetPort: 8080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  namespace: {name}
  name: web-1
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{{name: http, port: {backend_port}}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
"""


def self_signed(workdir, names):
    """A self-signed certificate for `names` (PEM cert, PEM key) made with the openssl CLI."""
    cert, key = os.path.join(workdir, "tls.crt"), os.path.join(workdir, "tls.key")
    san = ",".join(f"DNS:{n}" for n in names)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=bench", "-addext", f"subjectAltName={san}",
         "-keyout", key, "-out", cert],
        check=True, capture_output=True)
    return open(cert).read(), open(key).read(), cert


BIG_BODY = memoryview(b"x" * BIG_BYTES)
CHUNK = 64 * 1024


async def backend_conn(reader, writer):
    """HTTP/1.1 keep-alive backend: reads each request (and its Content-Length body), answers
    `/big` with BIG_BYTES and anything else with a short body. Bodies go out in 64 KiB chunks as
    the peer reads them, from one shared buffer, as a real backend streams: the attacker's
    backend shares the machine with the proxy, so it must not copy megabytes nobody reads."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            body = BIG_BODY if b" /big" in head.split(b"\r\n", 1)[0] else memoryview(b"ok\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body))
            for at in range(0, len(body), CHUNK):
                writer.write(body[at:at + CHUNK])
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError,
            asyncio.CancelledError):
        pass
    finally:
        writer.close()


class World:
    """bulkhead standalone with tenants a and b, their backends, and probes."""

    def __init__(self, binary, extra_args):
        self.binary = binary
        self.extra_args = extra_args
        self.tmp = tempfile.TemporaryDirectory(prefix="bulkhead-isolation-")
        self.http = free_port()
        self.https = free_port()
        self.admin = free_port()
        self.proc = None

    async def start(self):
        # Tenant a's backend (the attacker's) runs in this process, next to the attack; tenant b's
        # backend is `bulkhead demo-backend` and its probes run in a process of their own, so that
        # the load the attack puts on this Python process never shows up in b's figures.
        srv = await asyncio.start_server(backend_conn, "127.0.0.1", 0, limit=1 << 20)
        self.servers = [srv]
        b_port = free_port()
        self.backend_b = subprocess.Popen(
            [self.binary, "demo-backend", "--listen", f"127.0.0.1:{b_port}", "--name", "b"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ports = [srv.sockets[0].getsockname()[1], b_port]
        self.probes = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        cert, key, self.ca_file = self_signed(self.tmp.name, ["*.a.test", "*.b.test"])
        manifests = os.path.join(self.tmp.name, "manifests")
        os.mkdir(manifests)
        for name, port in (("a", ports[0]), ("b", ports[1])):
            with open(os.path.join(manifests, f"{name}.yaml"), "w") as f:
                f.write(tenant_yaml(name, [f"*.{name}.test"], port, cert, key))
        log = open(os.path.join(self.tmp.name, "bulkhead.log"), "w")
        self.proc = subprocess.Popen(
            [self.binary, "standalone", "--manifests", manifests,
             "--http-listen", f"127.0.0.1:{self.http}",
             "--https-listen", f"127.0.0.1:{self.https}",
             "--admin-listen", f"127.0.0.1:{self.admin}"] + self.extra_args,
            stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "RUST_LOG": "warn"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ok, _ = await self.probe_once(timeout=2)
            if ok:
                return
            await asyncio.sleep(0.2)
        raise SystemExit("bulkhead never served tenant b; log in " + log.name)

    def ssl_context(self, alpn):
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.set_alpn_protocols(alpn)
        return ctx

    async def probe_once(self, timeout=5.0):
        """One HTTPS GET to tenant b on a new connection: (success, seconds)."""
        start = time.monotonic()
        try:
            async def go():
                r, w = await asyncio.open_connection(
                    "127.0.0.1", self.https, ssl=self.ssl_context(["http/1.1"]),
                    server_hostname="www.b.test")
                w.write(b"GET / HTTP/1.1\r\nhost: www.b.test\r\nconnection: close\r\n\r\n")
                data = await r.read()
                w.close()
                return data.startswith(b"HTTP/1.1 200")
            ok = await asyncio.wait_for(go(), timeout)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            ok = False
        return ok, time.monotonic() - start

    async def probe_phase(self, seconds, rate):
        """Probes tenant b at `rate` per second for `seconds`, from a process of its own: success
        rate and p99 (ms)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.probes, probe_phase_in_process, self.https, self.ca_file, seconds, rate)

    async def probe_phase_here(self, seconds, rate):
        """[`probe_phase`] in this process's event loop."""
        tasks, starts = [], []
        begin = time.monotonic()
        end = begin + seconds
        while time.monotonic() < end:
            starts.append(time.monotonic() - begin)
            tasks.append(asyncio.create_task(self.probe_once()))
            await asyncio.sleep(1.0 / rate)
        results = await asyncio.gather(*tasks)
        lat = sorted(t for ok, t in results if ok)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else None
        p50 = lat[len(lat) // 2] * 1000 if lat else None
        # The slowest probes with when they started (seconds into the phase): shows whether the
        # tail is one burst or spread over the phase.
        slowest = sorted(((t * 1000, at) for (_, t), at in zip(results, starts)), reverse=True)[:8]
        return {"requests": len(results), "success_rate": len(lat) / max(1, len(results)),
                "p50_ms": round(p50, 1) if p50 is not None else None,
                "p99_ms": round(p99, 1) if p99 is not None else None,
                "slowest_ms_at_s": [[round(ms, 1), round(at, 2)] for ms, at in slowest]}

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
        return None

    def metric_lines(self, needle):
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=5).read()
        except OSError:
            return []
        return [l for l in text.decode().splitlines() if needle in l and not l.startswith("#")]

    def stop(self):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for srv in self.servers:
            srv.close()
        if getattr(self, "backend_b", None):
            self.backend_b.terminate()
            self.backend_b.wait(10)
        if getattr(self, "probes", None):
            self.probes.shutdown(cancel_futures=True)


def probe_phase_in_process(https, ca_file, seconds, rate):
    """Runs in a spawned process: tenant b's probes at `rate` per second for `seconds`."""
    world = World.__new__(World)
    world.https = https
    world.ca_file = ca_file
    return asyncio.run(world.probe_phase_here(seconds, rate))


def default_binary():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
    for profile in ("release", "debug"):
        path = os.path.join(target, profile, "bulkhead")
        if os.path.exists(path):
            return path
    return "bulkhead"


def report(result):
    json.dump(result, sys.stdout, indent=2)
    print()
