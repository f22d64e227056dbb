# Tool installation for run.sh: Debian packages, the Python venv of peer routers, our binaries.

# Pinned peer versions. litellm is held at 1.101.6: later releases require a certifi newer than
# the package index serves here, so pip cannot resolve them.
VLLM_ROUTER_VERSION=0.1.17
SGLANG_ROUTER_VERSION=0.3.2
LITELLM_VERSION=1.101.6

install_debian() {
    local missing=() p
    for p in nginx haproxy wrk; do
        command -v "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null 2>&1 || die "need ${missing[*]} and there is no apt-get"
    log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [[ $(id -u) -ne 0 ]] && sudo=sudo
    # Keep the packages' init scripts from starting a system nginx/haproxy on ports 80/others.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod +x "$policy"
        made_policy=1
    fi
    if ! apt-cache policy nginx 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        $sudo apt-get update -qq
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx haproxy wrk >&2
    [[ $made_policy -eq 1 ]] && $sudo rm -f "$policy"
    return 0
}

install_venv() {
    local venv=$1
    local want="vllm-router==$VLLM_ROUTER_VERSION sglang-router==$SGLANG_ROUTER_VERSION litellm==$LITELLM_VERSION"
    if [[ -f $venv/.bench-installed ]] && [[ $(cat "$venv/.bench-installed") == "$want" ]]; then
        return 0
    fi
    log "installing the peer routers into $venv (first time: a few minutes)"
    [[ -x $venv/bin/python ]] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip >&2
    "$venv/bin/pip" install -q "vllm-router==$VLLM_ROUTER_VERSION" \
        "sglang-router==$SGLANG_ROUTER_VERSION" "litellm[proxy]==$LITELLM_VERSION" >&2
    echo "$want" >"$venv/.bench-installed"
}

# build_ours ROOT: release builds of leasegate, replica-sim and lgbench. The first build of the
# workspace takes several minutes on two cores; later runs are incremental.
build_ours() {
    local root=$1
    log "cargo build --release (first build: several minutes)"
    if ! (cd "$root" && cargo build --release -p leasegate-replica-sim --bin replica-sim >&2); then
        die "replica-sim did not build; every case needs it"
    fi
    (cd "$root" && cargo build --release -p leasegate-gateway --bin leasegate >&2) ||
        log "leasegate did not build; its cases will be skipped"
    (cd "$root/loadtests/bench/client" &&
        cargo build --release --target-dir "$root/target/lgbench" >&2) ||
        die "the lgbench load client did not build"
}
