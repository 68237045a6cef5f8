#!/usr/bin/env bash
# `make bench`: throughput and latency of the rate-limit service, in ONE run on this machine,
# against baselines measured in the same run. Prints a markdown table and writes it to
# bench/out/results.md (raw records: bench/out/results.jsonl, logs: bench/out/logs/).
#
#   a. Redis' own ceiling for the service's script: redis-benchmark, EVALSHA of check.lua with
#      the KEYS/ARGV of a three-descriptor check, -c 50, not pipelined (-P 1) and -P 16.
#      Pinning: redis-server on the SUT core, redis-benchmark on the other core.
#   b. The service alone: service on the SUT core; rls-load (one HTTP/2 connection, 50 calls in
#      flight, lean h2 client) and redis-server on the other core (Redis stands in for a
#      separate machine). Memory store (plus two reference rows: tonic's client instead of the
#      lean one, and 4 connections x 50 in flight), then Redis store; service CPU per decision
#      from utime+stime in /proc/PID/stat; then the exactness check (one counter, limit
#      100/hour fixed, 200 in flight, 3000 calls) on each store.
#   c. Through Envoy (--concurrency 1): Envoy AND the service share the SUT core (one gateway
#      node), wrk (1 thread, 50 connections) and redis-server on the other core. (i) plain
#      Envoy, (ii) + envoy.filters.http.ratelimit -> service (memory), (iii) same, Redis store.
#
# Knobs (environment): BENCH_SECS (12) per measured phase, BENCH_WARM_SECS (2) warm-up before
# each, BENCH_CONCURRENCY (50), BENCH_TENANTS (1000), BENCH_SUT_CORE (0), BENCH_AUX_CORE (1),
# BENCH_IDLE_WAIT (20): before each phase, wait up to this many seconds for both cores to be
# quiet (other builds/tests on the machine skew the numbers), RLS_BIN, LOAD_BIN, ENVOY,
# BENCH_SKIP_BUILD=1, BENCH_ONLY="a b c" (a subset of the phases).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${BENCH_SECS:-12}
WARM=${BENCH_WARM_SECS:-2}
CONC=${BENCH_CONCURRENCY:-50}
TENANTS=${BENCH_TENANTS:-1000}
SUT=${BENCH_SUT_CORE:-0}
AUX=${BENCH_AUX_CORE:-1}
ONLY=${BENCH_ONLY:-a b c}
IDLE_WAIT=${BENCH_IDLE_WAIT:-20}
EXACT_LIMIT=100 # bench/ratelimit.yaml, key "exact"
RLS_BIN=${RLS_BIN:-target/release/ratelimit-service}
LOAD_BIN=${LOAD_BIN:-target/release/rls-load}
ENVOY=${ENVOY:-.venv/bin/envoy}
CONFIG=bench/ratelimit.yaml
LUA=ratelimit-service/src/store/check.lua
OUT=bench/out
LOGS=$OUT/logs
RECORDS=$OUT/results.jsonl
HZ=$(getconf CLK_TCK)
export BENCH_TENANTS=$TENANTS

say() { echo "bench: $*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}
want() { [[ " $ONLY " == *" $1 "* ]]; }

# ---------------------------------------------------------------- processes we start (by PID)
PIDS=()
LAST_PID=
start_bg() { # name core cmd...: starts cmd pinned to core, output to $LOGS/name.log
    local name=$1 core=$2
    shift 2
    taskset -c "$core" "$@" >"$LOGS/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}
cleanup() {
    local p
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do stop_pid "$p"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_until() { # seconds description cmd...
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 10; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    die "$what not ready after ${secs}s (logs: $LOGS)"
}
alive() { kill -0 "$1" 2>/dev/null || die "$2 (pid $1) died; see $LOGS/$2.log"; }

# ---------------------------------------------------------------- measurements
# utime+stime of a process in clock ticks (fields 14+15; the command name may hold spaces).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# "busy total irq" jiffies of one core from /proc/stat (busy includes irq + softirq, which
# processes are not charged for: mostly the loopback traffic of the benchmark itself).
core_jiffies() {
    awk -v c="cpu$1" '$1 == c {i = $7 + $8; b = $2 + $3 + $4 + $9 + i; print b, b + $5 + $6, i}' /proc/stat
}
# {"busy":jiffies,"total":jiffies,"irq":jiffies} of one core between two "busy total" snapshots.
core_delta() { # before after
    awk -v a="$1" -v b="$2" 'BEGIN {split(a, x, " "); split(b, y, " ");
        printf "{\"busy\":%d,\"total\":%d,\"irq\":%d}", y[1] - x[1], y[2] - x[2], y[3] - x[3]}'
}
snapshot() { # pids...: "ticks..." of each pid, then the two cores
    local p out=()
    for p in "$@"; do out+=("$(cpu_ticks "$p")"); done
    SNAP_TICKS=("${out[@]}")
    SNAP_SUT=$(core_jiffies "$SUT")
    SNAP_AUX=$(core_jiffies "$AUX")
}
free_ports() { # n: n distinct free loopback ports
    python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
record() { echo "$1" >>"$RECORDS"; }
# Waits (at most $IDLE_WAIT s) until both cores are < 15% busy over half a second: other people's
# builds and tests on this machine would otherwise end up in the numbers. Proceeds anyway after
# the wait; the table then shows how much of the SUT core other processes took.
wait_quiet() {
    local deadline=$((SECONDS + IDLE_WAIT)) a0 b0 a1 b1 warned=0
    while :; do
        a0=$(core_jiffies "$SUT") b0=$(core_jiffies "$AUX")
        sleep 0.5
        a1=$(core_jiffies "$SUT") b1=$(core_jiffies "$AUX")
        if awk -v a="$a0" -v b="$a1" -v c="$b0" -v d="$b1" 'BEGIN {split(a, w, " "); split(b, x, " ");
            split(c, y, " "); split(d, z, " "); tx = x[2] - w[2]; tz = z[2] - y[2];
            exit !(tx > 0 && tz > 0 && (x[1] - w[1]) / tx < 0.15 && (z[1] - y[1]) / tz < 0.15)}'; then
            return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            say "   the machine is still busy with other processes; measuring anyway"
            return 0
        fi
        if [ "$warned" = 0 ]; then
            say "   other processes are using the CPUs; waiting up to ${IDLE_WAIT}s for quiet"
            warned=1
        fi
    done
}
jstr() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

# ---------------------------------------------------------------- preflight
[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (nproc = $(nproc))"
for tool in taskset redis-server redis-cli redis-benchmark python3 curl; do
    command -v "$tool" >/dev/null || die "$tool is missing (make deps)"
done
if want c; then
    command -v wrk >/dev/null || die "wrk is missing (make deps, or apt-get install -y wrk)"
    [ -x "$ENVOY" ] || die "$ENVOY is missing (make deps)"
fi
mkdir -p "$LOGS"
rm -f "$RECORDS" "$LOGS"/*.log
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    say "building (release)"
    cargo build --release -q -p ratelimit-service -p rls-bench
fi
[ -x "$RLS_BIN" ] || die "$RLS_BIN missing"
[ -x "$LOAD_BIN" ] || die "$LOAD_BIN missing"
"$RLS_BIN" validate --config "$CONFIG" >/dev/null || die "$CONFIG is invalid"

read -r REDIS_PORT GRPC_PORT HTTP_PORT GW_PORT UP_PORT ADMIN_PORT <<<"$(free_ports 6)"
# Other processes on this machine skew every number: measure how busy the two cores are
# before we start anything (the table also shows, per phase, the share of the SUT core that went
# to processes other than ours).
q0=$(core_jiffies "$SUT") q1=$(core_jiffies "$AUX")
sleep 1
IDLE_CHECK="{\"sut\":$(core_delta "$q0" "$(core_jiffies "$SUT")"),\"aux\":$(core_delta "$q1" "$(core_jiffies "$AUX")")}"
say "before starting, cores busy for 1 s: $IDLE_CHECK (jiffies)"
record "$(printf '{"kind":"meta","idle_check":%s,"cpu":%s,"kernel":%s,"secs":%s,"warm":%s,"concurrency":%s,"tenants":%s,"sut_core":%s,"aux_core":%s,"hz":%s,"rls_bin":%s,"redis":%s,"envoy":%s,"date":%s}' "$IDLE_CHECK" \
    "$(jstr "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)")" "$(jstr "$(uname -r)")" \
    "$SECS" "$WARM" "$CONC" "$TENANTS" "$SUT" "$AUX" "$HZ" "$(jstr "$RLS_BIN")" \
    "$(jstr "$(redis-server --version | awk '{print $3}')")" \
    "$(jstr "$( { [ -x "$ENVOY" ] && "$ENVOY" --version 2>/dev/null | sed -n 's|.*version: [0-9a-f]*/\([^/]*\)/.*|\1|p'; } || true)")" \
    "$(jstr "$(date -u +%FT%TZ)")")"

# ---------------------------------------------------------------- Redis (all phases)
start_bg redis "$SUT" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --protected-mode yes --daemonize no
REDIS_PID=$LAST_PID
wait_until 10 redis redis-cli -p "$REDIS_PORT" ping

# ---------------------------------------------------------------- a. redis-benchmark
if want a; then
    SHA=$(redis-cli -p "$REDIS_PORT" SCRIPT LOAD "$(cat "$LUA")")
    [[ "$SHA" =~ ^[0-9a-f]{40}$ ]] || die "SCRIPT LOAD failed: $SHA"
    now=$(date +%s%3N)
    idx=$((now / 60000)) el=$((now % 60000))
    ttl=$((60000 - el + 60000))
    # The keys and arguments the service sends for [tenant=T], [tenant=T, kind=tokens],
    # [tier=free] (sliding minute windows): 2 keys and 7 arguments per charge. The "rb" domain
    # keeps these counters apart from the service's own.
    t='rb|tenant=t__rand_int__'
    BENCH_CMD=(EVALSHA "$SHA" 6
        "rls:$t|60000:$idx" "rls:$t|60000:$((idx - 1))"
        "rls:$t|kind=tokens|60000:$idx" "rls:$t|kind=tokens|60000:$((idx - 1))"
        "rls:rb|tier=free|60000:$idx" "rls:rb|tier=free|60000:$((idx - 1))"
        100000000 1 60000 sliding enforce "$el" "$ttl"
        1000000000000 1000 60000 sliding enforce "$el" "$ttl"
        100000000000 1 60000 sliding enforce "$el" "$ttl")
    reply=$(redis-cli -p "$REDIS_PORT" "${BENCH_CMD[@]}" | sed -n 1p)
    [ "$reply" = 1 ] || die "EVALSHA with the bench arguments did not admit (reply: $reply)"
    for p in 1 16; do
        # Calibrate the count so the measured run lasts about $SECS seconds.
        cal=$(timeout 30 taskset -c "$AUX" redis-benchmark -p "$REDIS_PORT" -c "$CONC" -P "$p" \
            -r "$TENANTS" -n 20000 --csv "${BENCH_CMD[@]}" | tail -1 | awk -F'","' '{print int($2)}')
        n=$((cal * SECS))
        [ "$n" -ge 20000 ] || n=20000
        say "a. redis-benchmark EVALSHA -c $CONC -P $p: $n requests (~${SECS}s)"
        wait_quiet
        snapshot "$REDIS_PID"
        r0=${SNAP_TICKS[0]} s0=$SNAP_SUT x0=$SNAP_AUX
        t0=$(date +%s%N)
        line=$(timeout $((SECS * 4 + 30)) taskset -c "$AUX" redis-benchmark -p "$REDIS_PORT" \
            -c "$CONC" -P "$p" -r "$TENANTS" -n "$n" --csv "${BENCH_CMD[@]}" | tail -1)
        t1=$(date +%s%N)
        snapshot "$REDIS_PID"
        read -r rps p50 p99 <<<"$(awk -F'","' '{print $2, $5, $7}' <<<"$line")"
        record "$(printf '{"kind":"redis-benchmark","id":"a%s","pipeline":%s,"clients":%s,"requests":%s,"elapsed_s":%s,"rps":%s,"p50_ms":%s,"p99_ms":%s,"redis_ticks":%s,"sut":%s,"aux":%s}' \
            "$p" "$p" "$CONC" "$n" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b - a) / 1e9}')" \
            "$rps" "$p50" "$p99" "$((SNAP_TICKS[0] - r0))" "$(core_delta "$s0" "$SNAP_SUT")" "$(core_delta "$x0" "$SNAP_AUX")")"
        say "   $rps requests/s, p50 ${p50} ms, p99 ${p99} ms"
    done
fi
# From here on Redis runs on the other core, as if it were a separate machine.
taskset -apc "$AUX" "$REDIS_PID" >/dev/null
redis-cli -p "$REDIS_PORT" SCRIPT FLUSH >/dev/null

start_service() { # name store: on the SUT core
    start_bg "$1" "$SUT" "$RLS_BIN" --config "$CONFIG" --grpc-addr "127.0.0.1:$GRPC_PORT" \
        --http-addr "127.0.0.1:$HTTP_PORT" --store "$2" --redis-url "redis://127.0.0.1:$REDIS_PORT" \
        --failure-mode open --log-format text
    SVC_PID=$LAST_PID
    wait_until 15 "$1" curl -sf "http://127.0.0.1:$HTTP_PORT/healthz"
}
load() { # log, rls-load args...: on the other core, JSON on stdout
    local log=$1
    shift
    timeout $((SECS * 3 + 30)) taskset -c "$AUX" "$LOAD_BIN" --addr "http://127.0.0.1:$GRPC_PORT" \
        --tenants "$TENANTS" "$@" 2>>"$LOGS/$log.log"
}

# ---------------------------------------------------------------- b. the service alone
EXACT_FAILED=0
if want b; then
    for store in memory redis; do
        start_service "svc-b-$store" "$store"
        # The lean h2 client on one connection for both stores. With the memory store also
        # tonic's client (how much of the number is the load generator's, see
        # bench/src/main.rs), and 4 connections x $CONC in flight (4 Envoy workers): with one
        # connection the two ends take turns, with four the service's core can saturate.
        variants=(h2:1)
        [ "$store" != memory ] || variants+=(tonic:1 h2:4)
        for variant in "${variants[@]}"; do
            client=${variant%:*} conns=${variant#*:}
            id=b-$store
            [ "$client" = h2 ] || id=$id-$client
            [ "$conns" = 1 ] || id=$id-${conns}conn
            say "b. service ($store store) on core $SUT, rls-load ($client client, $conns conn) on core $AUX: ${WARM}s warm-up, ${SECS}s measured"
            wait_quiet
            load "load-$id" --client "$client" --connections "$conns" --duration "$WARM" \
                --concurrency "$CONC" --label warmup >/dev/null
            snapshot "$SVC_PID" "$REDIS_PID"
            s_t0=${SNAP_TICKS[0]} r_t0=${SNAP_TICKS[1]} s0=$SNAP_SUT x0=$SNAP_AUX
            json=$(load "load-$id" --client "$client" --connections "$conns" --duration "$SECS" \
                --concurrency "$CONC" --label "$id")
            snapshot "$SVC_PID" "$REDIS_PID"
            alive "$SVC_PID" "svc-b-$store"
            record "$(printf '{"kind":"service","id":"%s","store":"%s","load":%s,"svc_ticks":%s,"redis_ticks":%s,"sut":%s,"aux":%s}' \
                "$id" "$store" "$json" "$((SNAP_TICKS[0] - s_t0))" "$((SNAP_TICKS[1] - r_t0))" \
                "$(core_delta "$s0" "$SNAP_SUT")" "$(core_delta "$x0" "$SNAP_AUX")")"
            tail -4 "$LOGS/load-$id.log" | sed 's/^/   /' >&2
        done
        if [ "$store" = redis ]; then
            # The keys the service wrote, to compare with the ones phase a benchmarks.
            redis-cli -p "$REDIS_PORT" --scan --pattern 'rls:*' >"$LOGS/redis-keys.log"
            say "   e.g. Redis key written by the service: $(sed -n 1p "$LOGS/redis-keys.log")"
        fi

        say "b. exactness ($store store): limit $EXACT_LIMIT/hour fixed, 200 in flight, 3000 calls"
        rc=0
        id=b-$store
        json=$(load "exact-$id" --mode exact --concurrency 200 --requests 3000 --duration 30 \
            --expect-admitted "$EXACT_LIMIT" --label "exact-$store") || rc=$?
        [ "$rc" = 0 ] || [ "$rc" = 2 ] || die "rls-load --mode exact failed (exit $rc); see $LOGS/exact-$id.log"
        [ "$rc" = 0 ] || EXACT_FAILED=1
        record "$(printf '{"kind":"exact","id":"exact-%s","store":"%s","load":%s}' "$store" "$store" "$json")"
        tail -1 "$LOGS/exact-$id.log" | sed 's/^/   /' >&2
        stop_pid "$SVC_PID"
    done
fi

# ---------------------------------------------------------------- c. through Envoy
envoy_config() { # with_rls(0|1) file
    local filter=''
    if [ "$1" = 1 ]; then
        filter="
          - name: envoy.filters.http.ratelimit
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
              domain: bench
              failure_mode_deny: false
              timeout: 1s
              rate_limit_service:
                grpc_service:
                  envoy_grpc: {cluster_name: ratelimit}
                transport_api_version: V3"
    fi
    cat >"$2" <<EOF
# Generated by bench/run.sh. Gateway listener -> (ratelimit filter ->) router -> cluster
# "upstream" = a direct_response listener of the same Envoy, like envoy/demo.yaml.
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: $ADMIN_PORT}}
static_resources:
  listeners:
  - name: gateway
    address: {socket_address: {address: 127.0.0.1, port_value: $GW_PORT}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: gateway
          route_config:
            name: gateway
            virtual_hosts:
            - name: gateway
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route:
                  cluster: upstream
                  timeout: 30s
                  rate_limits:
                  - actions:
                    - request_headers: {header_name: x-tenant, descriptor_key: tenant}
                  - actions:
                    - request_headers: {header_name: x-tenant, descriptor_key: tenant}
                    - generic_key: {descriptor_key: kind, descriptor_value: tokens}
                    hits_addend:
                      format: "%REQ(x-llm-tokens)%"
                  - actions:
                    - request_headers: {header_name: x-tier, descriptor_key: tier}
          http_filters:$filter
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  - name: upstream
    address: {socket_address: {address: 127.0.0.1, port_value: $UP_PORT}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: upstream
          route_config:
            name: upstream
            virtual_hosts:
            - name: upstream
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                direct_response:
                  status: 200
                  body:
                    inline_string: '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello."},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}'
                response_headers_to_add:
                - header: {key: content-type, value: application/json}
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: ratelimit
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
    load_assignment:
      cluster_name: ratelimit
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $GRPC_PORT}}}
  # HTTP/2 to the fake provider: over HTTP/1.1 a direct_response that answers a POST before
  # reading its body makes Envoy close the connection, i.e. one new upstream connection per
  # request, which would dominate the baseline.
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $UP_PORT}}}
EOF
}
envoy_stats() { # JSON object of the counters that tell whether the RLS really decided
    curl -sf "http://127.0.0.1:$ADMIN_PORT/stats" | awk -F': ' '
        $2 ~ /^[0-9]+$/ && ($1 ~ /^cluster\.upstream\.ratelimit\./ ||
            $1 ~ /^cluster\.(ratelimit|upstream)\.upstream_(cx_total|rq_total|rq_timeout|rq_pending_overflow)$/ ||
            $1 ~ /^http\.gateway\.downstream_rq_[2-5]xx$/) {
            printf "%s\"%s\":%s", (n++ ? "," : ""), $1, $2 }
        END { if (!n) printf "" }' | sed 's/^/{/; s/$/}/'
}
wrk_run() { # url secs log: JSON of wrk.lua
    timeout $(($2 + 30)) taskset -c "$AUX" wrk -t 1 -c "$CONC" -d "${2}s" --timeout 5s \
        -s bench/wrk.lua "$1" 2>>"$LOGS/$3.log" | tee -a "$LOGS/$3.log" | sed -n 's/^JSON //p'
}

if want c; then
    for variant in plain memory redis; do
        id=c-$variant
        cfg=$OUT/envoy-$variant.yaml
        if [ "$variant" = plain ]; then envoy_config 0 "$cfg"; else envoy_config 1 "$cfg"; fi
        SVC_PID=
        if [ "$variant" != plain ]; then start_service "svc-$id" "$variant"; fi
        say "c. Envoy ($variant) --concurrency 1 on core $SUT${SVC_PID:+ with the service}, wrk on core $AUX: ${WARM}s warm-up, ${SECS}s measured"
        start_bg "envoy-$id" "$SUT" "$ENVOY" -c "$cfg" --concurrency 1 --disable-hot-restart -l warning
        ENVOY_PID=$LAST_PID
        wait_until 20 "envoy-$id" curl -sf "http://127.0.0.1:$ADMIN_PORT/ready"
        url="http://127.0.0.1:$GW_PORT/v1/chat/completions"
        code=$(curl -s -o /dev/null -w '%{http_code}' -H 'x-tenant: t1' -H 'x-tier: free' \
            -H 'x-llm-tokens: 10' -X POST -d '{}' "$url")
        [ "$code" = 200 ] || die "Envoy ($variant) answered $code to a probe request"
        wait_quiet
        wrk_run "$url" "$WARM" "wrk-$id" >/dev/null
        pids=("$ENVOY_PID" "$REDIS_PID")
        [ -z "$SVC_PID" ] || pids+=("$SVC_PID")
        snapshot "${pids[@]}"
        t0=("${SNAP_TICKS[@]}") s0=$SNAP_SUT x0=$SNAP_AUX st0=$(envoy_stats)
        json=$(wrk_run "$url" "$SECS" "wrk-$id")
        snapshot "${pids[@]}"
        st1=$(envoy_stats)
        alive "$ENVOY_PID" "envoy-$id"
        [ -n "$json" ] || die "wrk produced no result; see $LOGS/wrk-$id.log"
        svc_ticks=null
        [ -z "$SVC_PID" ] || svc_ticks=$((SNAP_TICKS[2] - t0[2]))
        record "$(printf '{"kind":"envoy","id":"%s","variant":"%s","wrk":%s,"envoy_ticks":%s,"redis_ticks":%s,"svc_ticks":%s,"stats_before":%s,"stats_after":%s,"sut":%s,"aux":%s}' \
            "$id" "$variant" "$json" "$((SNAP_TICKS[0] - t0[0]))" "$((SNAP_TICKS[1] - t0[1]))" \
            "$svc_ticks" "$st0" "$st1" "$(core_delta "$s0" "$SNAP_SUT")" "$(core_delta "$x0" "$SNAP_AUX")")"
        stop_pid "$ENVOY_PID"
        [ -z "$SVC_PID" ] || stop_pid "$SVC_PID"
    done
fi

cleanup
python3 bench/report.py "$RECORDS" "$OUT/results.md"
say "table written to $OUT/results.md (raw records: $RECORDS, logs: $LOGS/)"
if [ "$EXACT_FAILED" = 1 ]; then
    die "exactness check FAILED: the service admitted a number of calls other than the limit"
fi
