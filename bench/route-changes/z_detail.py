#!/usr/bin/env python3
"""Scenario Z1 (keep-alive load, a route change about every 200 ms) on the candidate router only,
recording every poll of every change: how many changes the first poll already saw, and why the
others took longer.

    python3 bench/route-changes/z_detail.py load|idle

Uses the harness's candidate (CANDIDATE_ROUTER_CMD, CANDIDATE_ROUTER_ADDR, BENCH_OUT as for
run-all.sh). The poll is the harness's: a fresh TLS connection per try, 5 ms apart.
"""
import os
import sys
import time
from pathlib import Path

HARNESS = Path(os.environ.get("BENCH_HARNESS", Path(__file__).resolve().parents[3] / "shared" / "bench"))
sys.path.insert(0, str(HARNESS / "lib"))
import benchlib as B  # noqa: E402
import targets as T  # noqa: E402


def main():
    load = sys.argv[1] == "load"
    B.install_cleanup()
    S = B.S
    be = T.Backends(with_ws=True).start()
    t = T.Candidate("router")
    out = []
    try:
        routes0 = T.router_routes()
        t.start(routes0)
        wrk = B.WrkRun(f"https://{B.HOST_A}:{t.port}/", S.conns, 15, name="z-detail") if load else None
        time.sleep(0.5)
        t0, i = time.monotonic(), 0
        while time.monotonic() - t0 < 13:
            i += 1
            host = f"z{i}.tenant1.example"
            tw = time.monotonic()
            t.apply_routes(routes0 + [T.Route(host, f"127.0.0.1:{B.PORTS['be_http_a']}", "/", T.cert_for(host))])
            written = time.monotonic()
            polls = []
            while True:
                a = time.monotonic()
                status = B.try_status(t.port, host, timeout=1.0)
                polls.append((round(1000 * (a - tw), 2), round(1000 * (time.monotonic() - a), 2), status))
                if status == 200 or time.monotonic() - tw > 5:
                    break
                time.sleep(0.005)
            out.append(dict(write_ms=round(1000 * (written - tw), 2), prop_ms=round(1000 * (time.monotonic() - tw), 2),
                            polls=polls))
            time.sleep(0.15)
        if wrk:
            print("req/s", wrk.result().get("rps"))
    finally:
        t.stop()
        be.stop()
    props = sorted(o["prop_ms"] for o in out)
    n = len(props)
    print(f"changes {n}: propagation p50 {props[n // 2]} p90 {props[int(n * .9)]} max {props[-1]} ms")
    print("changes the first poll did not see:", sum(len(o["polls"]) > 1 for o in out))
    print("slowest (poll = start after the write began ms, duration ms, status):")
    for o in sorted(out, key=lambda o: -o["prop_ms"])[:5]:
        print(" ", o)


if __name__ == "__main__":
    main()
