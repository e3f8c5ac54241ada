#!/usr/bin/env python3
"""Client latency on a router with thousands of routes while its routes change.

Starts the shared harness's backends and one `bulkhead-bench bench-candidate` router (one worker)
with ROUTES routes (one host each, the harness's default certificate), runs `wrk -t1 -c50`
keep-alive for 12 s against one of them and, with `changes`, rewrites the routes file every 200 ms
(one host added each time, as scenario Z does). Prints wrk's req/s, p50, p99 and maximum latency.

    python3 bench/route-changes/stall.py /tmp/bulkhead-bench changes|steady

Environment: ROUTES (5000), BENCH_OUT (where the harness keeps certificates and run state; run the
harness's setup once), BENCH_HARNESS (default ../shared/bench from the project root).
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HARNESS = Path(os.environ.get("BENCH_HARNESS", Path(__file__).resolve().parents[3] / "shared" / "bench"))
sys.path.insert(0, str(HARNESS / "lib"))
import benchlib as B  # noqa: E402
import targets as T  # noqa: E402

PORT = 22443


def main():
    binary, mode = sys.argv[1], sys.argv[2]
    assert mode in ("changes", "steady"), "mode: changes or steady"
    B.install_cleanup()
    crt, key = B.CERT_DIR / "default.crt", B.CERT_DIR / "default.key"
    backend = f"127.0.0.1:{B.PORTS['be_http_a']}"
    line = lambda host: f"{host} / {backend} {crt} {key}\n"  # noqa: E731
    base = "".join(line(f"h{i}.tenant1.example") for i in range(int(os.environ.get("ROUTES", "5000"))))
    base += line(B.HOST_A)
    run = B.RUN_DIR / "route-changes"
    run.mkdir(parents=True, exist_ok=True)
    path = run / "routes.txt"
    B.atomic_write(path, base)
    be = T.Backends().start()
    env = dict(os.environ, BENCH_ROLE="router", BENCH_LISTEN=f"127.0.0.1:{PORT}", BENCH_ROUTES=str(path),
               BENCH_WORKERS="1", RUST_LOG="warn")
    proc = subprocess.Popen([binary, "bench-candidate"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        B.wait_port(PORT, timeout=30)
        time.sleep(1)
        wrk = B.WrkRun(f"https://{B.HOST_A}:{PORT}/", 50, 12, name="stall")
        n, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 11.5:
            time.sleep(0.2)
            if mode == "changes":
                n += 1
                B.atomic_write(path, base + line(f"z{n}.tenant1.example"))
        r = wrk.result()
        print(Path(binary).name, mode, f"changes={n}", {k: r.get(k) for k in ("rps", "p50_ms", "p99_ms", "max_ms")}, flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        be.stop()


if __name__ == "__main__":
    main()
