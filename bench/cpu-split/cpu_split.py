#!/usr/bin/env python3
"""User and system CPU per request of each router (or edge), side by side in one run.

Starts the shared harness's backends and targets (`../shared/bench/lib`: nginx, HAProxy and the
candidate from CANDIDATE_ROUTER_CMD / CANDIDATE_EDGE_CMD, one worker each) and runs every load
against every target, ROUNDS times interleaved (target order rotated each round). Around each load
it reads utime/stime of the target's processes (the `bash -c` wrapper excluded) from /proc and
prints user / system microseconds per request (per MiB for bulk loads), plus requests per second.

    ROLE=router LOADS=R1,R2 ROUNDS=3 DURATION=5 python3 bench/cpu-split/cpu_split.py

Loads: R1 = wrk -t1 -c50 keep-alive HTTP/1.1, R2 = h2load -t1 -c10 -m10, E1 = wrk -t1 -c50 with
`Connection: close` (new TLS connection per request), E2 = wrk -t1 -c50 keep-alive, E3 = wrk -t1 -c4
on /1m.bin (per MiB). The harness's settings (DURATION, CONNS, ...) apply.

PERF_EVENTS=probe_libc:malloc (after `perf probe -x /lib/x86_64-linux-gnu/libc.so.6 malloc`) also
counts events per request with `perf stat` (this VM has no hardware counters, but uprobes work).

BACKEND_CPU=1 also reports the backend's (the harness's nginx) user and system time per request
or MiB while each target carried the load: what a proxy's way of reading and writing costs its peer.

For an A/B of two builds in the same run, EXTRA_CANDIDATES adds candidates of the same role:
`name|127.0.0.1:PORT|command` entries separated by `;`.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

HARNESS = Path(os.environ.get("BENCH_HARNESS", Path(__file__).resolve().parents[3] / "shared" / "bench"))
sys.path.insert(0, str(HARNESS / "lib"))
import benchlib as B  # noqa: E402
import targets as T  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")


def worker_pids(t):
    table = B.proc_table()
    pids = B.tree_pids(t.root_pid, table)
    if len(pids) > 1:
        pids = [p for p in pids if table[p]["comm"] not in ("bash", "sh")]
    return pids


def user_sys(pids):
    table = B.proc_table()
    u = sum(table[p]["utime"] for p in pids if p in table)
    s = sum(table[p]["stime"] for p in pids if p in table)
    return u, s


def perf_start(pids):
    """`perf stat` counting PERF_EVENTS in `pids`, or None."""
    events = os.environ.get("PERF_EVENTS", "").strip()
    if not events:
        return None
    return subprocess.Popen(["perf", "stat", "-x", ",", "-e", events, "-p", ",".join(map(str, pids))],
                            stderr=subprocess.PIPE, text=True)


def perf_stop(p):
    """Event name -> count from a `perf_start` process."""
    if p is None:
        return {}
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    out = {}
    for line in err.splitlines():
        f = line.split(",")
        if len(f) > 2 and f[0].strip().isdigit():
            out[f[2]] = int(f[0])
    return out


def load(name, t):
    url = f"https://{B.HOST_A}:{t.port}/"
    d = B.S.duration
    if name == "R2":
        r = B.run_h2load(B.HOST_A, t.port, "/", B.S.h2_clients, B.S.h2_streams, d)
        return r["requests"], r["rps"], r["secs"]
    if name == "E1":
        r = B.run_wrk(url, B.S.close_conns, d, headers=["Connection: close"])
    elif name == "E3":
        r = B.run_wrk(url + "1m.bin", B.S.bulk_conns, d)
        mib = r["mb_per_s"] * r["secs"] * 1e6 / (1 << 20)
        return mib, r["mb_per_s"], r["secs"]
    else:  # R1, E2
        r = B.run_wrk(url, B.S.conns, d)
    return r["requests"], r["rps"], r["secs"]


def main():
    role = os.environ.get("ROLE", "router")
    loads = [x.strip() for x in os.environ.get("LOADS", "R1,R2").split(",") if x.strip()]
    rounds = int(os.environ.get("ROUNDS", "3"))
    backend_cpu = os.environ.get("BACKEND_CPU") == "1"
    B.install_cleanup()
    B.assert_resolves_loopback(B.HOST_A)
    be = T.Backends().start()
    targets = T.targets_for(role, with_direct=False)
    for spec in filter(None, os.environ.get("EXTRA_CANDIDATES", "").split(";")):
        name, addr, cmd = spec.split("|", 2)
        c = T.Candidate(role)
        c.cmd, c.addr, c.name = cmd, addr, f"{name}-{role}"
        _, c.port = B.assert_loopback_addr(addr)
        c.dir = B.RUN_DIR / c.name
        targets.append(c)
    routes = T.router_routes() if role == "router" else T.edge_routes()
    rows = []
    try:
        for t in targets:
            t.start(routes)
        for rnd in range(rounds):
            order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
            for name in loads:
                for t in order:
                    pids = worker_pids(t)
                    be_pids = B.tree_pids(be.nginx.pid, B.proc_table()) if backend_cpu else []
                    u0, s0 = user_sys(pids)
                    bu0, bs0 = user_sys(be_pids)
                    perf = perf_start(pids)
                    units, rate, secs = load(name, t)
                    counts = perf_stop(perf)
                    u1, s1 = user_sys(pids)
                    bu1, bs1 = user_sys(be_pids)
                    per = 1e6 / CLK / max(units, 1)
                    backend = dict(backend_user_us=round((bu1 - bu0) * per, 2),
                                   backend_sys_us=round((bs1 - bs0) * per, 2)) if backend_cpu else {}
                    row = dict(round=rnd, load=name, target=t.name, units=round(units, 1), rate=rate,
                               user_us=round((u1 - u0) * per, 2), sys_us=round((s1 - s0) * per, 2), **backend,
                               **{f"{k} per unit": round(v / max(units, 1), 2) for k, v in counts.items()})
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        for t in targets:
            t.stop()
        be.stop()
    print("\n| load | target | user µs | system µs | rate (req/s or MB/s) |\n|---|---|---|---|---|")
    for name in loads:
        for t in targets:
            rs = [r for r in rows if r["load"] == name and r["target"] == t.name]
            us = sorted(r["user_us"] for r in rs)
            ss = sorted(r["sys_us"] for r in rs)
            rt = sorted(r["rate"] for r in rs)
            events = sorted({k for r in rs for k in r if k.endswith(" per unit") or k.startswith("backend_")})
            extra = "".join(f" {k}: {min(r.get(k, 0) for r in rs)}–{max(r.get(k, 0) for r in rs)}" for k in events)
            print(f"| {name} | {t.name} | {us[0]}–{us[-1]} | {ss[0]}–{ss[-1]} | {rt[0]:,.0f}–{rt[-1]:,.0f} |{extra}")


if __name__ == "__main__":
    main()
