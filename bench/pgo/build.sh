#!/usr/bin/env bash
# Profile-guided release build of `bulkhead`, `bulkhead-dataplane` and `bulkhead-bench`.
#
# 1. builds `bulkhead-bench` instrumented (`-Cprofile-generate`), in target/pgo/gen;
# 2. trains it with the load harness: the router under R1 (HTTP/1.1 keep-alive), R2 (HTTP/2) and
#    new TLS connections, the edge under E1, E2 and E3, both through route changes up to 5,000
#    routes (train_changes.py); each process writes its counts when it exits;
# 3. merges the counts into target/pgo/bulkhead.profdata (llvm-profdata of rustc's LLVM version);
# 4. builds the three binaries with that profile (`-Cprofile-use`), in target/pgo/use/<host>/release.
#
# Both builds name the host as `--target`, so that RUSTFLAGS reach only the program's code: without
# it they reach build scripts and proc macros too, which would write counts of their own.
#
# The profile is keyed by function, so one made from `bulkhead-bench` (the same router and edge
# crates) applies to the shipped binaries. Code the training does not run (gRPC, TCP routes,
# filters, the operator) is compiled as cold: smaller, and not faster than a plain build.
# BENCHMARKS.md ("Profile-guided builds") has the figures and the image build takes the profile
# (deploy/Dockerfile, PGO_PROFILE).
#
# Needs the load harness set up first (`../shared/bench/setup.sh`, same BENCH_OUT) and an
# llvm-profdata of rustc's LLVM major version (Debian: `llvm-<major>`; or rustup's llvm-tools).
#
#   BENCH_OUT=target/bench bash bench/pgo/build.sh            # about 20 minutes on 2 cores
#   PGO_SKIP_TRAINING=1 bash bench/pgo/build.sh               # rebuild from the last profile
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PGO="$ROOT/target/pgo"
PROFILE="$PGO/bulkhead.profdata"
export BENCH_OUT="${BENCH_OUT:-$ROOT/target/bench}"
cd "$ROOT"

llvm_major="$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
host="$(rustc -vV | sed -n 's/^host: //p')"
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [[ ! -x "$profdata" ]]; then
  profdata="$(command -v "llvm-profdata-$llvm_major" || true)"
fi
if [[ -z "$profdata" ]]; then
  echo "no llvm-profdata for LLVM $llvm_major: apt-get install llvm-$llvm_major" >&2
  exit 1
fi

if [[ "${PGO_SKIP_TRAINING:-}" != 1 ]]; then
  for tool in wrk h2load nginx haproxy; do
    command -v "$tool" >/dev/null || { echo "$tool missing: run ../shared/bench/setup.sh" >&2; exit 1; }
  done
  raw="$PGO/raw"
  rm -rf "$raw" && mkdir -p "$raw"
  RUSTFLAGS="-Cprofile-generate=$raw" CARGO_TARGET_DIR="$PGO/gen" \
    cargo build --release --locked --target "$host" -p bulkhead-bench
  bin="$PGO/gen/$host/release/bulkhead-bench"
  cmd="RUST_LOG=warn exec $bin bench-candidate"
  bash "${BENCH_HARNESS:-$ROOT/../shared/bench}/cleanup.sh" >/dev/null 2>&1 || true
  CANDIDATE_NAME=pgo CANDIDATE_ROUTER_ADDR=127.0.0.1:22443 CANDIDATE_ROUTER_CMD="$cmd" PEERS=" " \
    ROLE=router LOADS=R1,R2,E1 ROUNDS=1 DURATION=5 python3 bench/cpu-split/cpu_split.py
  CANDIDATE_NAME=pgo CANDIDATE_EDGE_ADDR=127.0.0.1:21443 CANDIDATE_EDGE_CMD="$cmd" PEERS=" " \
    ROLE=edge LOADS=E1,E2,E3 ROUNDS=1 DURATION=5 python3 bench/cpu-split/cpu_split.py
  python3 bench/pgo/train_changes.py "$bin"
  "$profdata" merge -o "$PROFILE" "$raw"
fi

[[ -f "$PROFILE" ]] || { echo "no profile at $PROFILE: run without PGO_SKIP_TRAINING" >&2; exit 1; }
# Two packages, no --bin filter: a --bin filter would apply to both packages and skip one.
RUSTFLAGS="-Cprofile-use=$PROFILE" CARGO_TARGET_DIR="$PGO/use" \
  cargo build --release --locked --target "$host" -p bulkhead -p bulkhead-bench
out="$PGO/use/$host/release"
ls -l "$out/bulkhead" "$out/bulkhead-dataplane" "$out/bulkhead-bench" "$PROFILE"
