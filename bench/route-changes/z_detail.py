#!/usr/bin/env python3
"""Scenario Z1 (keep-alive load, a route change about every 200 ms) on the candidate router only,
recording every poll of every change: how many changes the first poll already saw, and why the
others took longer.

    python3 bench/route-changes/z_detail.py load|close|idle

`load` is Z1's keep-alive wrk, `close` Z2's `Connection: close` wrk (a new TLS connection per
request), `idle` no load. Uses the harness's candidate (CANDIDATE_ROUTER_CMD,
CANDIDATE_ROUTER_ADDR, BENCH_OUT as for run-all.sh). The poll is the harness's: a fresh TLS
connection per try, 5 ms apart. `Z_SECONDS` sets how long changes are made (13).

When the candidate logs `bulkhead_bench=debug,bulkhead_router::router=info` (`RUST_LOG`), each
change's timeline is split at the router's own events (log timestamps, same clock): the harness's
write, the inotify event, the configuration applied, the answer.
"""
import datetime
import os
import re
import sys
import time
from pathlib import Path

HARNESS = Path(os.environ.get("BENCH_HARNESS", Path(__file__).resolve().parents[3] / "shared" / "bench"))
sys.path.insert(0, str(HARNESS / "lib"))
import benchlib as B  # noqa: E402
import targets as T  # noqa: E402


def log_times(path: Path, marker: str) -> list[float]:
    """Wall-clock seconds of the log lines containing `marker`."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        if marker in line:
            m = re.search(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
            if m:
                at = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc)
                out.append(at.timestamp())
    return out


def main():
    mode = sys.argv[1]
    seconds = float(os.environ.get("Z_SECONDS", "13"))
    B.install_cleanup()
    S = B.S
    be = T.Backends(with_ws=True).start()
    t = T.Candidate("router")
    out = []
    try:
        routes0 = T.router_routes()
        t.start(routes0)
        url = f"https://{B.HOST_A}:{t.port}/"
        wrk = None
        if mode == "load":
            wrk = B.WrkRun(url, S.conns, int(seconds) + 2, name="z-detail")
        elif mode == "close":
            wrk = B.WrkRun(url, S.close_conns, int(seconds) + 2, headers=["Connection: close"], name="z-detail")
        time.sleep(0.5)
        t0, i = time.monotonic(), 0
        while time.monotonic() - t0 < seconds:
            i += 1
            host = f"z{i}.tenant1.example"
            tw, wall = time.monotonic(), time.time()
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
                            polls=polls, wall=wall))
            time.sleep(0.15)
        if wrk:
            print("req/s", wrk.result().get("rps"))
    finally:
        t.stop()
        be.stop()
    log = t.dir / "stdout.log"
    events, applied = log_times(log, "routes file event"), log_times(log, "snapshot applied")[1:]
    for o, at in zip(out, applied):
        after = [e for e in events if e >= o["wall"] - 0.001]
        o["event_ms"] = round(1000 * (after[0] - o["wall"]), 2) if after else None
        o["applied_ms"] = round(1000 * (at - o["wall"]), 2)
    for o in out:
        del o["wall"]
    props = sorted(o["prop_ms"] for o in out)
    n = len(props)
    print(f"changes {n}: propagation p50 {props[n // 2]} p90 {props[int(n * .9)]} p99 {props[int(n * .99)]} "
          f"max {props[-1]} ms")
    print("changes the first poll did not see:", sum(len(o["polls"]) > 1 for o in out))
    if applied:
        gaps = sorted(o["applied_ms"] - o["write_ms"] for o in out if "applied_ms" in o)
        print(f"router side, write done -> applied ms: p50 {gaps[len(gaps) // 2]:.2f} p90 {gaps[int(len(gaps) * .9)]:.2f} "
              f"max {gaps[-1]:.2f}")
    print("slowest (poll = start after the write began ms, duration ms, status):")
    for o in sorted(out, key=lambda o: -o["prop_ms"])[:8]:
        print(" ", o)


if __name__ == "__main__":
    main()
