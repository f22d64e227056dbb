#!/usr/bin/env bash
# hold_rss.sh LEASEGATE_BIN N [HOLD_SECS]: held-streams RSS of one leasegate binary, started as
# the harness starts it (same replica, config, pinning); `lgbench hold` opens N streams at
# OPEN_RATE per second (default 500) and holds them HOLD_SECS (default 5). Prints lgbench's JSON
# line. Run it at two N and divide the RSS difference by the stream difference for KiB/stream.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/loadtests/bench
LEASEGATE=$1 HOLD_STREAMS=$2 HOLD_SECS=${3:-5}
source "$HERE/lib/common.sh"; source "$HERE/lib/servers.sh"; source "$HERE/lib/cases.sh"
trap cleanup EXIT
mkdir -p "$ROOT/target/bench-hold"; OUT=$(mktemp -d "$ROOT/target/bench-hold/run.XXXX"); mkdir -p "$OUT/logs" "$OUT/raw"
BODIES=$OUT/bodies; python3 "$HERE/gen_bodies.py" "$BODIES"
REPLICA_SIM=$ROOT/target/release/replica-sim
LGBENCH=$ROOT/target/lgbench/release/lgbench
PROXY_CPU=0 LOAD_CPU=1
ulimit -n "$(ulimit -Hn)"
NOFILE_ROOM=$((($(ulimit -n) - 200) / 2))
start_replica hold 1000ms 600
start_path leasegate "$REPLICA_URL" || die "leasegate: $SKIP_REASON"
taskset -c "$LOAD_CPU" "$LGBENCH" hold --url "$SRV_URL/v1/chat/completions" --body "$BODIES/stream.json" --streams "$HOLD_STREAMS" --hold "$HOLD_SECS" --open-rate "${OPEN_RATE:-500}" --open-timeout 60 --pid "$SRV_PID" >"$OUT/raw/hold-leasegate.json" 2>"$OUT/logs/hold-leasegate.err"
cat "$OUT/raw/hold-leasegate.json"; echo
