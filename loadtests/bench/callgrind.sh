#!/usr/bin/env bash
# callgrind.sh LEASEGATE_BIN TAG [COUNT]: callgrind Ir per proxied request. Warm-up of 200 requests, then
# counters zeroed, COUNT (default 2000) sequential 1.2 KB chat completions on one keep-alive
# connection, then a dump. Loopback only; every process started here is stopped by pid.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/loadtests/bench
LEASEGATE=$1 TAG=$2 COUNT=${3:-2000}
source "$HERE/lib/common.sh"; source "$HERE/lib/servers.sh"
trap cleanup EXIT
OUT=$ROOT/target/bench-callgrind/$TAG; rm -rf "$OUT"; mkdir -p "$OUT/logs" "$OUT/raw"
BODIES=$OUT/bodies; python3 "$HERE/gen_bodies.py" "$BODIES"
REPLICA_SIM=$ROOT/target/release/replica-sim
LGBENCH=$ROOT/target/lgbench/release/lgbench
PROXY_CPU=0 LOAD_CPU=1 NOFILE_ROOM=1000
start_replica fast 0ms 100
port=$(free_port); admin=$(free_port)
printf '[limits]\nmax_concurrency = 20000\n' > "$OUT/bench.toml"
start leasegate "$PROXY_CPU" "$OUT/logs/leasegate.log" env RUST_LOG=warn valgrind --tool=callgrind \
    --callgrind-out-file="$OUT/callgrind.out.%p" "$LEASEGATE" gateway --config "$OUT/bench.toml" \
    --endpoint "$REPLICA_URL,max_concurrency=20000" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin"
PID=$START_PID
wait_line "$PID" "$OUT/logs/leasegate.log" 'leasegate listening on http://[0-9.:]+' 120 >/dev/null
URL=http://127.0.0.1:$port/v1/chat/completions
"$LGBENCH" seq --url "$URL" --body "$BODIES/chat.json" --count 200 --warmup 5 >/dev/null
callgrind_control -z "$PID" >/dev/null
"$LGBENCH" seq --url "$URL" --body "$BODIES/chat.json" --count "$COUNT" --warmup 0 > "$OUT/seq.json"
callgrind_control -d "$PID" >/dev/null
sleep 1
stop "$PID"
f=$(ls -t "$OUT"/callgrind.out.*.* 2>/dev/null | head -1)
total=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
echo "dump=$f total_Ir=$total per_request=$((total / COUNT))"
