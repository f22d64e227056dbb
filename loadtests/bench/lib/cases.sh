# The measurements. Each writes raw output under $OUT/raw; report.py turns them into figures.

# Records why a case did not run, for the report.
skip() {
    local case=$1 reason=$2
    log "SKIP $case: $reason"
    printf '{"case":"%s","reason":%s}\n' "$case" "$(json_str "$reason")" >>"$OUT/raw/skipped.jsonl"
}

json_str() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }

# proc_snapshot PID: "cpu_secs rss_kib hwm_kib" as a JSON object.
proc_snapshot() {
    printf '{"cpu_secs":%s,"rss_kib":%s,"hwm_kib":%s}' \
        "$(cpu_secs "$1")" "$(proc_kib "$1" VmRSS)" "$(proc_kib "$1" VmHWM)"
}

# wrk URL SECONDS: 1 thread, 32 connections, the 1.2 KB body; prints wrk's output.
run_wrk() {
    BENCH_BODY=$BODIES/chat.json taskset -c "$LOAD_CPU" wrk -t1 -c32 -d"${2}s" --timeout 5s \
        -s "$HERE/post.lua" "$1/v1/chat/completions"
}

# saturation NAME URL PID: throughput with wrk; for a PID, CPU and memory around the run.
saturation() {
    local name=$1 url=$2 pid=$3 raw
    raw=$OUT/raw/sat-$name
    log "saturation: $name (${SAT_SECS}s after ${WARM_SECS}s warm-up)"
    run_wrk "$url" "$WARM_SECS" >/dev/null 2>&1 || true
    [[ -n $pid ]] && proc_snapshot "$pid" >"$raw.before.json"
    if ! run_wrk "$url" "$SAT_SECS" >"$raw.txt" 2>&1; then
        skip "sat-$name" "wrk failed: $(tail -n 3 "$raw.txt" | tr '\n' ' ')"
        return 0
    fi
    [[ -n $pid ]] && proc_snapshot "$pid" >"$raw.after.json"
    grep -o 'Requests/sec: *[0-9.]*' "$raw.txt" >&2 || true
}

# sat_rps NAME: the saturation throughput measured above (0 when absent).
sat_rps() { python3 "$HERE/report.py" sat-rps "$OUT" "$1"; }

# fixed_rate NAME URL [PID]: open-loop latency at $RATE req/s; for a PID, CPU around the run.
fixed_rate() {
    local name=$1 url=$2 pid=${3:-} have
    have=$(sat_rps "$name")
    if python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)' \
        "$have" "$RATE"; then
        log "fixed rate: $name at $RATE req/s for ${RATE_SECS}s"
        [[ -n $pid ]] && proc_snapshot "$pid" >"$OUT/raw/rate-$name.before.json"
        taskset -c "$LOAD_CPU" "$LGBENCH" rate --url "$url/v1/chat/completions" \
            --body "$BODIES/chat.json" --rate "$RATE" --duration "$RATE_SECS" --connections 64 \
            >"$OUT/raw/rate-$name.json" 2>"$OUT/logs/rate-$name.err" ||
            skip "rate-$name" "lgbench rate failed: $(tail -n 2 "$OUT/logs/rate-$name.err")"
        [[ -n $pid ]] && proc_snapshot "$pid" >"$OUT/raw/rate-$name.after.json"
        return 0
    else
        skip "rate-$name" "saturates at $have req/s, below the fixed rate $RATE req/s"
    fi
}

# large_body NAME URL: sequential 1 MiB prompts.
large_body() {
    local name=$1 url=$2
    log "large body: $name ($LARGE_COUNT x 1 MiB)"
    taskset -c "$LOAD_CPU" "$LGBENCH" seq --url "$url/v1/chat/completions" \
        --body "$BODIES/large.json" --count "$LARGE_COUNT" --warmup 5 \
        >"$OUT/raw/large-$name.json" 2>"$OUT/logs/large-$name.err" ||
        skip "large-$name" "lgbench seq failed: $(tail -n 2 "$OUT/logs/large-$name.err")"
}

# streaming NAME URL PID: $STREAMS concurrent SSE streams.
streaming() {
    local name=$1 url=$2 pid=$3 raw
    raw=$OUT/raw/stream-$name
    log "streaming: $name, $STREAMS streams for ${STREAM_SECS}s"
    [[ -n $pid ]] && proc_snapshot "$pid" >"$raw.before.json"
    taskset -c "$LOAD_CPU" "$LGBENCH" stream --url "$url/v1/chat/completions" \
        --body "$BODIES/stream.json" --streams "$STREAMS" --duration "$STREAM_SECS" --ramp 1 \
        >"$raw.json" 2>"$OUT/logs/stream-$name.err" ||
        skip "stream-$name" "lgbench stream failed: $(tail -n 2 "$OUT/logs/stream-$name.err")"
    [[ -n $pid ]] && proc_snapshot "$pid" >"$raw.after.json"
    return 0
}

# hold NAME URL PID: $HOLD_STREAMS streams open at once; PID's RSS sampled meanwhile.
hold() {
    local name=$1 url=$2 pid=$3
    log "memory: $name, $HOLD_STREAMS open streams held ${HOLD_SECS}s"
    taskset -c "$LOAD_CPU" "$LGBENCH" hold --url "$url/v1/chat/completions" \
        --body "$BODIES/stream.json" --streams "$HOLD_STREAMS" --hold "$HOLD_SECS" \
        --open-rate 2000 --open-timeout 60 ${pid:+--pid "$pid"} \
        >"$OUT/raw/hold-$name.json" 2>"$OUT/logs/hold-$name.err" ||
        skip "hold-$name" "lgbench hold failed: $(tail -n 2 "$OUT/logs/hold-$name.err")"
}
