#!/usr/bin/env python3
"""PGO training for the configuration path: a router and an edge (`bulkhead-bench bench-candidate`)
taken from the harness's routes to 5,000 routes and back, then through 40 one-route changes, with
requests in between. Without it the snapshot compile would have no profile and be compiled as cold
code, and route changes (scenarios Z and M) would pay for it.

    python3 bench/pgo/train_changes.py BULKHEAD_BENCH_BINARY

Uses the load harness (`../shared/bench`, after its `setup.sh`, same BENCH_OUT).
"""
import os
import sys
import time
from pathlib import Path

HARNESS = Path(os.environ.get("BENCH_HARNESS", Path(__file__).resolve().parents[3] / "shared" / "bench"))
sys.path.insert(0, str(HARNESS / "lib"))
import benchlib as B  # noqa: E402
import targets as T  # noqa: E402

PORTS = {"router": 22443, "edge": 21443}


def routes(role, hosts):
    """Routes for `hosts`, the router's with the harness's certificate for each host."""
    if role == "router":
        be = f"127.0.0.1:{B.PORTS['be_http_a']}"
        return [T.Route(h, be, "/", T.cert_for(h)) for h in hosts]
    be = f"127.0.0.1:{B.PORTS['be_tls_a']}"
    return [T.Route(h, be) for h in hosts]


def train(binary, role):
    port = PORTS[role]
    os.environ.update({f"CANDIDATE_{role.upper()}_CMD": f"RUST_LOG=warn exec {binary} bench-candidate",
                       f"CANDIDATE_{role.upper()}_ADDR": f"127.0.0.1:{port}", "CANDIDATE_NAME": "pgo"})
    base = T.router_routes() if role == "router" else T.edge_routes()
    candidate = T.Candidate(role)
    candidate.start(base)
    try:
        for n in (100, 1000, 5000, 20, 5000):
            candidate.apply_routes(base + routes(role, [f"r{i}.bench.example" for i in range(n)]))
            time.sleep(1.0)
            for _ in range(20):
                status, _, _ = B.https_get(port, B.HOST_A)
                assert status == 200, f"{role}: {status} after {n} routes"
        for i in range(40):
            candidate.apply_routes(base + routes(role, [f"z{i}.tenant1.example"]))
            time.sleep(0.05)
            B.https_get(port, B.HOST_A)
    finally:
        # SIGTERM: the process exits normally and writes its profile.
        candidate.stop()


def main():
    binary = sys.argv[1]
    B.install_cleanup()
    backends = T.Backends(with_ws=True).start()
    try:
        for role in ("router", "edge"):
            train(binary, role)
    finally:
        backends.stop()


if __name__ == "__main__":
    main()
