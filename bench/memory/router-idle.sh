#!/usr/bin/env bash
# Idle memory of `bulkhead-dataplane router --bootstrap` with N routes, one worker, three starts:
# VmRSS and RssAnon from /proc once the router is ready (issue 15's limits: 5,000 routes <= 17 MiB
# RSS, 20 routes <= 1 MiB anonymous). Routes are `rI.bench.example /` to 100 backends, with the
# load harness's shared certificate (run shared/bench/setup.sh first, with the same BENCH_OUT).
#
#   bench/memory/router-idle.sh target/release/bulkhead-dataplane target/release/bulkhead-bench 20
set -euo pipefail
DP=$1 BB=$2 N=$3
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CERTS="${BENCH_OUT:-$ROOT/target/bench}/certs"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
for i in $(seq 0 $((N - 1))); do
  echo "r$i.bench.example / 127.0.0.1:$((20000 + i % 100)) $CERTS/default.crt $CERTS/default.key"
done > "$WORK/routes.txt"
"$BB" snapshot --role router --routes "$WORK/routes.txt" --out "$WORK/snapshot.json"
: > "$WORK/token"
for run in 1 2 3; do
  # The operator address answers nothing: the router serves its bootstrap snapshot.
  BULKHEAD_WORKERS=1 RUST_LOG=warn "$DP" router --tenant bench \
    --https-listen 127.0.0.1:23443 --http-listen 127.0.0.1:23080 --admin-listen 127.0.0.1:23901 \
    --operator-url 127.0.0.1:1 --operator-ca "$CERTS/default.crt" --token-file "$WORK/token" \
    --bootstrap "$WORK/snapshot.json" > "$WORK/log.$run" 2>&1 &
  pid=$!
  ready=no
  for _ in $(seq 1 40); do
    curl -fsS -o /dev/null http://127.0.0.1:23901/readyz 2>/dev/null && { ready=yes; break; }
    sleep 0.25
  done
  [ "$ready" = yes ] || { echo "router not ready; its log:" >&2; cat "$WORK/log.$run" >&2; kill "$pid"; exit 1; }
  sleep 2
  awk -v n="$N" -v r="$run" '/^(VmRSS|RssAnon):/ {printf "%s routes, start %s: %s %s kB\n", n, r, $1, $2}' "/proc/$pid/status"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
done
