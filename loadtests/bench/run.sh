#!/usr/bin/env bash
# leasegate benchmark harness: one run, one stand-in replica, every path side by side.
# See loadtests/README.md for what it measures and how to read results.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

usage() {
    cat <<EOF
usage: loadtests/bench/run.sh [--quick] [--out DIR] [--paths LIST] [--skip-install]
  --quick         every case for ~2-3 s (smoke test; the figures mean nothing)
  --out DIR       where results go (default: loadtests/results/<UTC timestamp>/)
  --paths LIST    comma-separated subset of: $ALL_PATHS
  --skip-install  use the tools already installed (no apt-get, pip, cargo)
Environment overrides: BENCH_RATE (req/s for the latency case), BENCH_STREAMS,
BENCH_HOLD_STREAMS, PROXY_CPU (default 0), LOAD_CPU (default 1).
EOF
}

COMMAND="loadtests/bench/run.sh${*:+ $*}"
ALL_PATHS=direct,leasegate,nginx,haproxy,vllm_router,sglang_router,litellm
QUICK=0
OUT=""
PATHS=$ALL_PATHS
INSTALL=1
while [[ $# -gt 0 ]]; do
    case $1 in
    --quick) QUICK=1 ;;
    --out) OUT=${2:?--out needs a directory}; shift ;;
    --paths) PATHS=${2:?--paths needs a list}; shift ;;
    --skip-install) INSTALL=0 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
    shift
done

# shellcheck source=lib/common.sh
source "$HERE/lib/common.sh"
# shellcheck source=lib/install.sh
source "$HERE/lib/install.sh"
# shellcheck source=lib/servers.sh
source "$HERE/lib/servers.sh"
# shellcheck source=lib/cases.sh
source "$HERE/lib/cases.sh"

trap cleanup EXIT
trap 'exit 130' INT TERM

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$ROOT/loadtests/results/$STAMP}
mkdir -p "$OUT/logs" "$OUT/raw"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT/raw/"*
BODIES=$OUT/bodies
VENV=$ROOT/target/bench-venv
BIN=$ROOT/target/release
# Overridable, e.g. to bench binaries built elsewhere.
REPLICA_SIM=${REPLICA_SIM:-$BIN/replica-sim}
LEASEGATE=${LEASEGATE:-$BIN/leasegate}
LGBENCH=$ROOT/target/lgbench/release/lgbench

if [[ $QUICK -eq 1 ]]; then
    WARM_SECS=1 SAT_SECS=2 RATE_SECS=2 STREAM_SECS=3 LARGE_COUNT=20 HOLD_SECS=2
else
    WARM_SECS=3 SAT_SECS=15 RATE_SECS=15 STREAM_SECS=15 LARGE_COUNT=200 HOLD_SECS=10
fi
STREAMS=${BENCH_STREAMS:-1000}
HOLD_STREAMS=${BENCH_HOLD_STREAMS:-10000}

# CPU budget: the path under test gets one core, the replica and the load generator the other.
if [[ $(nproc) -ge 2 ]]; then
    PROXY_CPU=${PROXY_CPU:-0}
    LOAD_CPU=${LOAD_CPU:-1}
else
    log "one CPU only: nothing is pinned, and proxies compete with the load generator"
    PROXY_CPU=${PROXY_CPU:-0}
    LOAD_CPU=${LOAD_CPU:-0}
fi

# 10,000 held streams need ~20,000 descriptors in the gateway (client side + upstream side).
ulimit -Hn 65536 2>/dev/null || true
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
log "open files limit: $(ulimit -n)"
# Each held stream costs the gateway two descriptors; without the room, hold fewer and say so.
NOFILE_ROOM=$((($(ulimit -n) - 200) / 2))
if [[ $HOLD_STREAMS -gt $NOFILE_ROOM ]]; then
    log "open-files limit $(ulimit -n) allows only $NOFILE_ROOM held streams (wanted $HOLD_STREAMS)"
    HOLD_STREAMS=$NOFILE_ROOM
fi

wants() { [[ ,$PATHS, == *,$1,* ]]; }

if [[ $INSTALL -eq 1 ]]; then
    install_debian
    if wants vllm_router || wants sglang_router || wants litellm; then
        install_venv "$VENV"
    fi
    build_ours "$ROOT"
fi
[[ -x $LGBENCH ]] || die "no load client at $LGBENCH (run without --skip-install once)"
[[ -x $REPLICA_SIM ]] || die "no replica-sim at $REPLICA_SIM"
python3 "$HERE/gen_bodies.py" "$BODIES"

python3 "$HERE/report.py" meta "$OUT" --command "$COMMAND" --quick "$QUICK" --paths "$PATHS" --root "$ROOT" \
    --venv "$VENV" --proxy-cpu "$PROXY_CPU" --load-cpu "$LOAD_CPU" --warm "$WARM_SECS" \
    --sat "$SAT_SECS" --rate-secs "$RATE_SECS" --stream-secs "$STREAM_SECS" \
    --streams "$STREAMS" --hold-streams "$HOLD_STREAMS" --hold-secs "$HOLD_SECS" \
    --large-count "$LARGE_COUNT"

# --- Request/response paths: one replica answering at once; nginx first, it sets the rate. ---
start_replica fast 0ms 100
FAST_REPLICA=$REPLICA_PID
ORDER=()
for p in direct nginx leasegate haproxy vllm_router sglang_router litellm; do
    wants "$p" && ORDER+=("$p")
done
RATE=${BENCH_RATE:-}
NGINX_TRIED=0
# The fixed rate is known once nginx has been measured (or was not asked for); direct, measured
# first, gets its latency run as soon as it is.
set_rate() {
    if [[ -z $RATE ]] && { [[ $NGINX_TRIED -eq 1 ]] || ! wants nginx; }; then
        RATE=$(python3 "$HERE/report.py" pick-rate "$OUT")
        log "fixed rate for the latency case: $RATE req/s"
    fi
    if [[ -n $RATE ]] && [[ -f $OUT/raw/sat-direct.txt ]] && [[ ! -f $OUT/raw/rate-direct.json ]]; then
        fixed_rate direct "$REPLICA_URL"
    fi
    return 0
}
for p in "${ORDER[@]}"; do
    [[ $p == nginx ]] && NGINX_TRIED=1
    if ! start_path "$p" "$REPLICA_URL"; then
        skip "$p" "$SKIP_REASON"
        set_rate
        continue
    fi
    saturation "$p" "$SRV_URL" "$SRV_PID"
    set_rate
    if [[ -n $RATE ]] && [[ $p != direct ]]; then
        fixed_rate "$p" "$SRV_URL" "$SRV_PID"
    fi
    if [[ $p == direct || $p == leasegate ]]; then
        large_body "$p" "$SRV_URL"
    fi
    [[ -n $SRV_PID ]] && stop "$SRV_PID"
done
[[ -n $RATE ]] && echo "$RATE" >"$OUT/raw/rate.txt"
stop "$FAST_REPLICA"

# --- Streaming: 100 chunks at 10 ms, direct, leasegate and the two proxies on the same core. ---
# nginx relays SSE unbuffered here (`proxy_buffering off`, as anyone serving SSE through it sets).
if wants direct || wants leasegate; then
    start_replica stream 10ms 100
    STREAM_REPLICA=$REPLICA_PID
    for p in direct leasegate nginx haproxy; do
        wants "$p" || continue
        if NGINX_EXTRA="proxy_buffering off;" start_path "$p" "$REPLICA_URL"; then
            streaming "$p" "$SRV_URL" "$(measured_pid "$p" "$SRV_PID")"
            [[ -n $SRV_PID ]] && stop "$SRV_PID"
        else
            skip "stream-$p" "$SKIP_REASON"
        fi
    done
    stop "$STREAM_REPLICA"
fi

# --- Memory: many streams held open through each proxy (slow chunks keep them alive). ---
if wants leasegate; then
    start_replica hold 1000ms 600
    HOLD_REPLICA=$REPLICA_PID
    for p in leasegate nginx haproxy; do
        wants "$p" || continue
        if NGINX_EXTRA="proxy_buffering off;" start_path "$p" "$REPLICA_URL"; then
            hold "$p" "$SRV_URL" "$(measured_pid "$p" "$SRV_PID")"
            stop "$SRV_PID"
        else
            skip "hold-$p" "$SKIP_REASON"
        fi
    done
    stop "$HOLD_REPLICA"
fi

python3 "$HERE/report.py" report "$OUT"
log "results: $OUT/results.md and $OUT/results.json"
cat "$OUT/results.md"
