# Starting the stand-in replica and each path under test. Sourced by run.sh.
#
# start_path NAME REPLICA_URL sets SRV_PID (empty for direct) and SRV_URL (base URL of the path),
# or returns 1 with SKIP_REASON set. Every proxy runs pinned to $PROXY_CPU; the replica and the
# load generators run on $LOAD_CPU.

# start_replica TAG ITL TOKENS: sets REPLICA_PID and REPLICA_URL.
start_replica() {
    local tag=$1 itl=$2 tokens=$3 port logfile
    port=$(free_port)
    logfile=$OUT/logs/replica-$tag.log
    start "replica-$tag" "$LOAD_CPU" "$logfile" "$REPLICA_SIM" --listen "127.0.0.1:$port" \
        --model bench-model --ttft 0ms --itl "$itl" --tokens "$tokens" --max-concurrency 50000
    REPLICA_PID=$START_PID
    wait_line "$REPLICA_PID" "$logfile" 'replica-sim listening on http://[0-9.:]+' 30 >/dev/null ||
        die "replica-sim ($tag) did not start"
    REPLICA_URL="http://127.0.0.1:$port"
}

start_path() {
    local name=$1 replica=$2
    SRV_PID="" SRV_URL="" SKIP_REASON=""
    "start_$name" "$replica" || return 1
    # Every path must answer a chat completion before it is measured.
    if [[ -n $SRV_PID ]] && ! wait_http "$SRV_PID" "$SRV_URL/v1/chat/completions" \
        "$BODIES/probe.json" 90 "$OUT/logs/$name.log"; then
        SKIP_REASON=${SKIP_REASON:-"$name did not answer a chat completion; last log line: $(
            grep -v '^[[:space:]]*$' "$OUT/logs/$name.log" 2>/dev/null | tail -n 1 | cut -c1-300)"}
        stop "$SRV_PID"
        return 1
    fi
}

start_direct() { SRV_URL=$1; }

start_leasegate() {
    local replica=$1 port admin logfile=$OUT/logs/leasegate.log
    if [[ ! -x $LEASEGATE ]]; then
        SKIP_REASON="no leasegate binary at $LEASEGATE"
        return 1
    fi
    port=$(free_port)
    admin=$(free_port)
    mkdir -p "$OUT/leasegate"
    # Defaults, except the in-flight caps (gateway and endpoint), raised for the memory case
    # as nginx's worker_connections and haproxy's maxconn are.
    cat >"$OUT/leasegate/bench.toml" <<EOF
[limits]
max_concurrency = 20000
EOF
    # Request logs off, as for the peers (nginx access_log off, routers at warning).
    start leasegate "$PROXY_CPU" "$logfile" env RUST_LOG=warn "$LEASEGATE" gateway \
        --config "$OUT/leasegate/bench.toml" --endpoint "$replica,max_concurrency=20000" \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin"
    SRV_PID=$START_PID
    if ! wait_line "$SRV_PID" "$logfile" 'leasegate listening on http://[0-9.:]+' 30 >/dev/null; then
        SKIP_REASON="leasegate did not print 'leasegate listening on' (binary without 'gateway' yet?)"
        stop "$SRV_PID"
        return 1
    fi
    SRV_URL="http://127.0.0.1:$port"
}

start_nginx() {
    local replica=$1 port dir=$OUT/nginx
    port=$(free_port)
    mkdir -p "$dir/tmp"
    # One worker, keep-alive to the upstream, default proxy buffering, no access log.
    cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
user root;
pid $dir/nginx.pid;
error_log $OUT/logs/nginx.log warn;
worker_rlimit_nofile $(ulimit -n);
events { worker_connections $((NOFILE_ROOM * 2 + 100)); }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    client_max_body_size 64m;
    keepalive_requests 1000000;
    upstream replica {
        server ${replica#http://};
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://replica;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            ${NGINX_EXTRA:-}
        }
    }
}
EOF
    start nginx "$PROXY_CPU" "$OUT/logs/nginx.out" nginx -p "$dir" -c "$dir/nginx.conf" \
        -e "$OUT/logs/nginx.log"
    SRV_PID=$START_PID
    SRV_URL="http://127.0.0.1:$port"
}

# measured_pid NAME PID: the process doing a path's work (nginx's worker, not its master).
measured_pid() {
    local name=$1 pid=$2 worker i
    if [[ $name == nginx && -n $pid ]]; then
        for ((i = 0; i < 50; i++)); do
            worker=$(pgrep -P "$pid" | head -n 1)
            [[ -n $worker ]] && { echo "$worker"; return 0; }
            sleep 0.1
        done
    fi
    echo "$pid"
}

start_haproxy() {
    local replica=$1 port dir=$OUT/haproxy
    port=$(free_port)
    mkdir -p "$dir"
    cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $NOFILE_ROOM
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend bench
    bind 127.0.0.1:$port
    default_backend replica
backend replica
    server r1 ${replica#http://}
EOF
    start haproxy "$PROXY_CPU" "$OUT/logs/haproxy.log" haproxy -db -f "$dir/haproxy.cfg"
    SRV_PID=$START_PID
    SRV_URL="http://127.0.0.1:$port"
}

start_vllm_router() {
    local replica=$1 port prom
    port=$(free_port)
    prom=$(free_port)
    start vllm-router "$PROXY_CPU" "$OUT/logs/vllm_router.log" "$VENV/bin/vllm-router" \
        --host 127.0.0.1 --port "$port" --worker-urls "$replica" --policy round_robin \
        --prometheus-host 127.0.0.1 --prometheus-port "$prom" --log-level warning
    SRV_PID=$START_PID
    SRV_URL="http://127.0.0.1:$port"
}

start_sglang_router() {
    local replica=$1 port prom
    port=$(free_port)
    prom=$(free_port)
    start sglang-router "$PROXY_CPU" "$OUT/logs/sglang_router.log" "$VENV/bin/sglang-router" \
        launch --host 127.0.0.1 --port "$port" --worker-urls "$replica" --policy round_robin \
        --prometheus-host 127.0.0.1 --prometheus-port "$prom" --log-level warn
    SRV_PID=$START_PID
    SRV_URL="http://127.0.0.1:$port"
}

start_litellm() {
    local replica=$1 port dir=$OUT/litellm
    port=$(free_port)
    mkdir -p "$dir"
    cat >"$dir/config.yaml" <<EOF
model_list:
  - model_name: bench-model
    litellm_params:
      model: openai/bench-model
      api_base: $replica/v1
      api_key: bench-replica-key
litellm_settings:
  telemetry: false
EOF
    # uvicorn's access log off, as for the other paths.
    cat >"$dir/log_config.json" <<'EOF'
{"version": 1, "disable_existing_loggers": false,
 "handlers": {"default": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
 "loggers": {"uvicorn": {"handlers": ["default"], "level": "WARNING"},
             "uvicorn.error": {"level": "WARNING"},
             "uvicorn.access": {"handlers": ["default"], "level": "WARNING", "propagate": false}}}
EOF
    # The local cost map keeps LiteLLM from fetching one over the network at start.
    start litellm "$PROXY_CPU" "$OUT/logs/litellm.log" \
        env LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR "$VENV/bin/litellm" \
        --config "$dir/config.yaml" --host 127.0.0.1 --port "$port" --num_workers 1 \
        --log_config "$dir/log_config.json"
    SRV_PID=$START_PID
    SRV_URL="http://127.0.0.1:$port"
}
