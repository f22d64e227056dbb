# Shared helpers for run.sh: logging, ports, process bookkeeping, /proc readings. Sourced, not run.

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Every process we start goes in here; cleanup() stops exactly these (and their process groups).
STARTED_PIDS=()

# A free loopback port (the kernel picks it; released before use, a small race we accept).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start NAME CPU LOGFILE CMD... : runs CMD in its own session, pinned to CPU (empty: unpinned).
# Sets START_PID. setsid/taskset exec in place, so START_PID is the server's own pid.
start() {
    local name=$1 cpu=$2 logfile=$3
    shift 3
    if [[ -n $cpu ]]; then
        setsid taskset -c "$cpu" "$@" >"$logfile" 2>&1 &
    else
        setsid "$@" >"$logfile" 2>&1 &
    fi
    START_PID=$!
    STARTED_PIDS+=("$START_PID")
    log "started $name (pid $START_PID, cpu ${cpu:-any}): $*"
}

# stop PID: TERM its process group, then KILL after 5 s; forgets the pid (no stale kill later).
stop() {
    local pid=$1 i keep=() p
    [[ -z $pid ]] && return 0
    for p in "${STARTED_PIDS[@]}"; do
        [[ $p != "$pid" ]] && keep+=("$p")
    done
    STARTED_PIDS=("${keep[@]}")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if alive "$pid"; then
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        stop "$pid"
    done
}

alive() { kill -0 "$1" 2>/dev/null; }

# wait_http PID URL BODYFILE TIMEOUT_S LOGFILE: until a POST of BODYFILE to URL answers 2xx.
wait_http() {
    local pid=$1 url=$2 body=$3 timeout=$4 logfile=$5 code end=$((SECONDS + $4))
    while ((SECONDS < end)); do
        if ! alive "$pid"; then
            log "process $pid exited; last lines of $logfile:"
            tail -n 20 "$logfile" >&2 || true
            return 1
        fi
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
            -H 'Content-Type: application/json' -H 'Authorization: Bearer bench-key' \
            --data-binary "@$body" "$url" 2>/dev/null || true)
        [[ $code == 2* ]] && return 0
        sleep 0.2
    done
    log "no 2xx from $url after ${timeout}s (last status: ${code:-none}); last lines of $logfile:"
    tail -n 20 "$logfile" >&2 || true
    return 1
}

# wait_line PID LOGFILE REGEX TIMEOUT_S: until the log shows REGEX; prints the first match.
wait_line() {
    local pid=$1 logfile=$2 re=$3 end=$((SECONDS + $4))
    while ((SECONDS < end)); do
        if grep -Eo -m1 "$re" "$logfile" 2>/dev/null; then return 0; fi
        alive "$pid" || break
        sleep 0.1
    done
    log "no line matching /$re/ from pid $pid; last lines of $logfile:"
    tail -n 20 "$logfile" >&2 || true
    return 1
}

# CPU seconds (user+system, all threads) a process has used so far.
cpu_secs() {
    local stat rest
    stat=$(cat "/proc/$1/stat") || return 1
    rest=${stat##*) }   # fields after the command name; utime, stime are fields 12, 13 here
    awk -v tck="$CLK_TCK" '{ printf "%.3f\n", ($12 + $13) / tck }' <<<"$rest"
}

# KiB of a /proc/PID/status field (VmRSS, VmHWM).
proc_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

CLK_TCK=$(getconf CLK_TCK)
