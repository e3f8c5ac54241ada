#!/usr/bin/env python3
"""User-space instructions per request of router builds, counted by callgrind: repeatable to the
instruction whatever else the machine does, so an A/B of two builds needs one run, not a range.

Starts the shared harness's backends and each candidate build (with the environment assignments
given after a second `|`, e.g. `GLIBC_TUNABLES=...`) under `valgrind --tool=callgrind`
(one worker), warms it up, then for each load zeroes the counters, sends a fixed number of requests
with h2load and dumps the counters. Prints instructions per request, and with TOP=n the n functions
with the most exclusive instructions per request (from `callgrind_annotate`).

    CANDIDATES='base|/tmp/bulkhead-bench.base;new|/tmp/bulkhead-bench.new|ENV=value' LOADS=R1,R2 \
        REQUESTS=20000 TOP=25 python3 bench/cpu-split/instructions.py

Loads: R1 = HTTP/1.1 keep-alive over TLS (`h2load --h1 -c50`), R2 = HTTP/2 (`h2load -c10 -m10`),
REQUESTS each; R3 = a new TLS connection per request to the router (`wrk -c8`, `Connection: close`,
SECONDS, instructions per request completed); with ROLE=edge, E1 = a new TLS connection per request through the edge (`wrk -c8`,
`Connection: close`) and E2 = keep-alive (`wrk -c50`), for SECONDS each (instructions per request
completed).
Dumps are kept in OUT (default target/bench/instructions/<name>.<load>.out) for
`callgrind_annotate --inclusive=yes`.

PEERS=nginx,haproxy counts the harness's peers the same way, in the same run: their master and
worker start under callgrind with the harness's own configuration (one worker, one thread), and
the worker's counters are zeroed and dumped around each load. SIM=1 adds callgrind's cache and
branch simulation and prints simulated misses per request next to the instructions. Instructions are not time (the
peers' C code and OpenSSL run at a different number of instructions per cycle than Rust and ring),
but they repeat exactly, where the peers' user time on this VM spreads more than they differ.
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HARNESS = Path(os.environ.get("BENCH_HARNESS", Path(__file__).resolve().parents[3] / "shared" / "bench"))
sys.path.insert(0, str(HARNESS / "lib"))
import benchlib as B  # noqa: E402
import targets as T  # noqa: E402

OUT = Path(os.environ.get("OUT", Path(__file__).resolve().parents[2] / "target" / "bench" / "instructions"))


def wrk_count(port, load, seconds):
    """E1 / R3 (a new TLS connection per request) or E2 (keep-alive) through the edge or router for
    `seconds`; the number of requests wrk completed."""
    close = load in ("E1", "R3")
    headers = ["Connection: close"] if close else []
    conns = 8 if close else 50
    r = B.run_wrk(f"https://{B.HOST_A}:{port}/", conns, seconds, headers=headers)
    return r["requests"]


def h2load(port, load, n):
    argv = ["h2load", "-t1", f"-n{n}", f"https://{B.HOST_A}:{port}/"]
    argv += ["--h1", "-c50"] if load == "R1" else ["-c10", "-m10"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=1800).stdout
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    if not m or int(m.group(2)) != n:
        raise SystemExit(f"h2load did not complete {n} requests against :{port}:\n{out}")
    return n


def written_dump(prefix, after, timeout=60.0):
    """The dump callgrind writes after `after`, once complete (a busy or slow process, like a
    peer's worker under valgrind, may take a while to write it)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        # Not simply the newest file: callgrind touches the process's (empty) base file too.
        for dump in sorted(OUT.glob(prefix + ".*"), key=lambda p: p.stat().st_mtime, reverse=True):
            if dump.stat().st_mtime < after - 1:
                break
            text = dump.read_text(errors="replace")
            if "\ntotals:" in text or "\nsummary:" in text:
                return dump
        time.sleep(0.5)
    seen = [(d.name, d.stat().st_mtime, d.stat().st_size) for d in OUT.glob(prefix + ".*")]
    raise SystemExit(f"no complete {prefix} dump within {timeout:.0f} s (asked at {after:.1f}: {seen})")


def control(pid, *args):
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=300)


def events(path):
    """Every event of a dump, by name: `Ir` always; with SIM=1 also the simulated cache and
    branch events (`I1mr`, `D1mr`, `D1mw`, `ILmr`, `DLmr`, `DLmw`, `Bcm`, `Bim`, ...)."""
    names, values = ["Ir"], None
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("events:"):
            names = line.split()[1:]
        elif line.startswith("totals:") or line.startswith("summary:"):
            values = [int(v) for v in line.split()[1:]]
    if values is None:
        raise SystemExit(f"no totals in {path}")
    return dict(zip(names, values))


def totals(path):
    return events(path)["Ir"]


# With SIM=1: the simulated misses that cost cycles without costing instructions.
SIM = os.environ.get("SIM") == "1"
SIM_FLAGS = ["--cache-sim=yes", "--branch-sim=yes"] if SIM else []
SIM_ROWS = [("L1 instr. misses", ("I1mr",)), ("L1 data misses", ("D1mr", "D1mw")),
            ("LL misses", ("ILmr", "DLmr", "DLmw")), ("mispredicted branches", ("Bcm", "Bim"))]


def top(path, n, per):
    out = subprocess.run(["callgrind_annotate", "--threshold=100", str(path)],
                         capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)", line)
        if m and "PROGRAM TOTALS" not in line:
            rows.append((int(m.group(1).replace(",", "")), m.group(2), m.group(3)))
    for ir, pct, name in rows[:n]:
        print(f"  {ir / per:9.1f} {pct:>5}%  {name[:150]}")


def clear_dumps(prefix):
    for old in OUT.glob(prefix + ".*"):
        old.unlink()


def under_callgrind(target, prefix):
    """Starts a harness peer (nginx, HAProxy) with its master and worker under callgrind; waits,
    longer than the harness does, until it accepts."""
    plain = B.Managed

    class Callgrind(plain):
        def __init__(self, name, argv, log_path, **kw):
            super().__init__(name, ["valgrind", "--tool=callgrind", "--trace-children=yes", *SIM_FLAGS,
                                    f"--callgrind-out-file={OUT}/{prefix}.%p", *argv], log_path, **kw)

    plain_wait = B.wait_port
    B.Managed = Callgrind
    B.wait_port = lambda port, timeout=10.0, proc=None: plain_wait(port, 120.0, proc)
    try:
        target.start(T.router_routes() if target.role == "router" else T.edge_routes())
    finally:
        B.Managed = plain
        B.wait_port = plain_wait


def worker_pid(root):
    """The peer's worker: the process of the tree that has no child (master-worker mode)."""
    deadline = time.time() + 60
    while time.time() < deadline:
        table = B.proc_table()
        tree = B.tree_pids(root, table)
        leaves = [p for p in tree if p != root and not any(table[q]["ppid"] == p for q in tree)]
        if leaves:
            return leaves[0]
        time.sleep(0.5)
    raise SystemExit(f"no worker process under {root}")


def count_loads(name, pid, port, loads, n, k, results):
    """Zeroes `pid`'s callgrind counters, runs each load against `port`, dumps, records
    instructions per request."""
    prefix = f"{name}.cg"
    for load in loads:
        if load.startswith("E") or load == "R3":
            wrk_count(port, load, 2)  # warm
            control(pid, "-z")
            done = wrk_count(port, load, int(os.environ.get("SECONDS", "10")))
        else:
            h2load(port, load, 2000)  # warm: connections, pools, lazily built state
            control(pid, "-z")
            done = h2load(port, load, n)
        time.sleep(0.5)
        asked = time.time()
        control(pid, "-d")
        dump = written_dump(prefix, asked)
        final = OUT / f"{name}.{load}.out"
        dump.rename(final)
        counted = events(final)
        per = counted["Ir"] / done
        results[(name, load)] = per
        print(f"{name} {load}: {per:,.0f} instructions per request", flush=True)
        for row, keys in SIM_ROWS if SIM else []:
            value = sum(counted.get(key, 0) for key in keys) / done
            results[(name, f"{load} {row}")] = value
            print(f"{name} {load}: {value:,.1f} {row} per request", flush=True)
        if k:
            top(final, k, done)


def main():
    role = os.environ.get("ROLE", "router")
    loads = [x.strip() for x in os.environ.get("LOADS", "R1,R2" if role == "router" else "E1").split(",")
             if x.strip()]
    n = int(os.environ.get("REQUESTS", "20000"))
    k = int(os.environ.get("TOP", "0"))
    specs = [(s.split("|") + [""])[:3] for s in filter(None, os.environ.get("CANDIDATES", "").split(";"))]
    if not specs:
        raise SystemExit("CANDIDATES='name|/path/to/bulkhead-bench;...' is required")
    OUT.mkdir(parents=True, exist_ok=True)
    B.install_cleanup()
    B.assert_resolves_loopback(B.HOST_A)
    be = T.Backends().start()
    results = {}
    names = [name for name, _, _ in specs]
    try:
        for i, (name, binary, env) in enumerate(specs):
            port = (22443 if role == "router" else 21443) + i
            prefix = f"{name}.cg"
            clear_dumps(prefix)
            up = role.upper()
            os.environ.update({
                f"CANDIDATE_{up}_CMD": (f"RUST_LOG=warn {env} exec valgrind --tool=callgrind {' '.join(SIM_FLAGS)} "
                                        f"--callgrind-out-file={OUT}/{prefix}.%p {binary} bench-candidate"),
                f"CANDIDATE_{up}_ADDR": f"127.0.0.1:{port}", "CANDIDATE_NAME": name,
                "CANDIDATE_READY_TIMEOUT": "120"})
            c = T.Candidate(role)
            c.start(T.router_routes() if role == "router" else T.edge_routes())
            pid = [p for p in B.tree_pids(c.root_pid, B.proc_table())
                   if B.proc_table()[p]["comm"] not in ("bash", "sh")][0]
            try:
                count_loads(name, pid, port, loads, n, k, results)
            finally:
                c.stop()
        for peer in filter(None, (p.strip() for p in os.environ.get("PEERS", "").split(","))):
            name = peer
            names.append(name)
            prefix = f"{name}.cg"
            clear_dumps(prefix)
            target = T.PEER_CLASSES[(role, peer)]()
            under_callgrind(target, prefix)
            try:
                count_loads(name, worker_pid(target.root_pid), target.port, loads, n, k, results)
            finally:
                target.stop()
    finally:
        be.stop()
    print("\n| load | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for load in loads:
        print(f"| {load} | " + " | ".join(f"{results.get((n, load), 0):,.0f}" for n in names) + " |")
        for row, _ in SIM_ROWS if SIM else []:
            print(f"| {load} {row} | " + " | ".join(f"{results.get((n, f'{load} {row}'), 0):,.1f}"
                                                   for n in names) + " |")


if __name__ == "__main__":
    main()
