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
#   d, e, f. The gateway (envoy/demo.yaml rendered by bench/gateway.py: wasm filter + buffer +
#      rate-limit filter -> service, router -> ONE mock provider behind all three clusters) against
#      plain Envoy (same listener, one route to the mock's cluster, only the router) proxying to
#      the same mock. Both Envoys --concurrency 1 on the SUT core (with the service), the mock,
#      gw-load (bench/src/gw_load.rs) and Redis on the other core. Chat bodies of 100, 1,000,
#      10,000 (and 100,000) prompt tokens, sized with the filter's own tokenizer and built once
#      per run by the gateway-prompts example (bench/examples/gateway_prompts.rs), which also
#      times the estimator natively on those bodies. 1,000 API keys sk-bench-<i> (tenants
#      bench-<i>, BENCH_GW_KEYS), drawn uniformly per request; limits bench/gateway-limits.yaml
#      (nothing is ever rejected).
#      d. Added latency: open loop at a constant BENCH_GW_RATE (500) requests/s, BENCH_GW_SECS
#         (10) s per prompt size and Envoy after a warm-up; memory store. p50/p99 of both.
#      e. Throughput at saturation: closed loop, BENCH_CONCURRENCY connections, 1,000-token
#         prompts, Redis store; also the gateway without its rate-limit filter (e-norl), which
#         splits the gateway's cost between the wasm filter and Envoy's rate-limit filter, and
#         the gateway with the service moved to the other core (e-gateway-svcaux: Envoy alone
#         on the SUT core, as beside a separately deployed service), and with the service there
#         the gateway with only issue 3's two descriptors (e-rpmtpm-svcaux), once more with a
#         prompt the filter does not estimate (e-rpmtpm-svcaux-shadow: what all but the BPE
#         costs).
#      f. The estimator inside Envoy's V8 (N = 1,000: exact BPE; 10,000 and 100,000: above
#         32 KiB, the sampled estimator): latency (1 request in flight, BENCH_EST_SECS (4) s
#         each) of chat-N and of shadow-N (the same text in the top-level `user` field, which
#         the estimator does not read) through the gateway without its rate-limit filter and
#         through plain Envoy; estimating N tokens in Envoy = (gateway chat - gateway shadow) -
#         (plain chat - plain shadow), p50s (the mock's extra work on chat-N cancels out).
#   g. Over-admission of a token limit under a concurrent burst (tokens admitted / limit), per
#      way of accounting tokens, in one run against ONE service (memory store, SUT core) with
#      bench/accounting-limits.yaml (200,000 tokens/day fixed per tenant, one tenant = one
#      counter per mode): rls-accounting (bench/src/accounting.rs, other core) sends the same
#      BENCH_ACCT_REQUESTS (3000) simulated LLM requests (prompt 50-1500, max_tokens 50-1000,
#      real completion 1-max_tokens, provider latency 50-400 ms, seeded) from
#      BENCH_ACCT_CONCURRENCY (200) workers in each mode for 4 s, a refused request retried
#      after 20 ms (clients honouring retry-after keep pressing on the limit while refunds
#      come back), one mode after the other:
#      estimate-only (charge prompt+max_tokens, never corrected), usage-only (check with 0 hits,
#      charge the real usage by a usage report after the response) and reserve-then-reconcile
#      (reserve prompt+max_tokens, report corrects it to the real usage: the gateway).
#      Tokens admitted = real usage of the admitted requests; also the final counter
#      (GET /v1/usage). Target: reserve-then-reconcile <= 1.01.
#
# Knobs (environment): BENCH_SECS (12) per measured phase, BENCH_WARM_SECS (2) warm-up before
# each, BENCH_CONCURRENCY (50), BENCH_TENANTS (1000), BENCH_SUT_CORE (0), BENCH_AUX_CORE (1),
# BENCH_IDLE_WAIT (20): before each phase, wait up to this many seconds for both cores to be
# quiet (other builds/tests on the machine skew the numbers), RLS_BIN, LOAD_BIN, ENVOY,
# BENCH_SKIP_BUILD=1, BENCH_ONLY="a b c d e f g" (a subset of the phases), BENCH_GW_RATE (500),
# BENCH_GW_SECS (10), BENCH_GW_KEYS (1000), BENCH_EST_SECS (4), MOCK_BIN, GW_LOAD_BIN,
# BENCH_PYTHON (.venv/bin/python: bench/gateway.py imports the e2e suite's renderer),
# BENCH_ACCT_REQUESTS (3000), BENCH_ACCT_CONCURRENCY (200), ACCT_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${BENCH_SECS:-12}
WARM=${BENCH_WARM_SECS:-2}
CONC=${BENCH_CONCURRENCY:-50}
TENANTS=${BENCH_TENANTS:-1000}
SUT=${BENCH_SUT_CORE:-0}
AUX=${BENCH_AUX_CORE:-1}
ONLY=${BENCH_ONLY:-a b c d e f g}
IDLE_WAIT=${BENCH_IDLE_WAIT:-20}
EXACT_LIMIT=100 # bench/ratelimit.yaml, key "exact"
RLS_BIN=${RLS_BIN:-target/release/ratelimit-service}
LOAD_BIN=${LOAD_BIN:-target/release/rls-load}
ENVOY=${ENVOY:-.venv/bin/envoy}
CONFIG=bench/ratelimit.yaml
GW_RATE=${BENCH_GW_RATE:-500}
GW_SECS=${BENCH_GW_SECS:-10}
GW_KEYS=${BENCH_GW_KEYS:-1000}
EST_SECS=${BENCH_EST_SECS:-4}
MOCK_BIN=${MOCK_BIN:-target/release/mock-provider}
GW_LOAD_BIN=${GW_LOAD_BIN:-target/release/gw-load}
PROMPTS_BIN=target/release/examples/gateway-prompts
PY=${BENCH_PYTHON:-.venv/bin/python}
WASM=target/wasm32-wasip1/release/llm_gateway_filter.wasm
GW_LIMITS=bench/gateway-limits.yaml
ACCT_BIN=${ACCT_BIN:-target/release/rls-accounting}
ACCT_LIMITS=bench/accounting-limits.yaml
ACCT_REQUESTS=${BENCH_ACCT_REQUESTS:-3000}
ACCT_CONC=${BENCH_ACCT_CONCURRENCY:-200}
ACCT_TARGET=1.01 # tokens admitted / limit of reserve-then-reconcile
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
fi
GATEWAY=0
if want d || want e || want f; then GATEWAY=1; fi
if want c || [ "$GATEWAY" = 1 ]; then
    [ -x "$ENVOY" ] || die "$ENVOY is missing (make deps)"
fi
if [ "$GATEWAY" = 1 ]; then
    [ -x "$PY" ] || die "$PY is missing (make deps)"
fi
mkdir -p "$LOGS"
rm -f "$RECORDS" "$LOGS"/*.log
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    say "building (release)"
    cargo build --release -q -p ratelimit-service -p rls-bench
    if [ "$GATEWAY" = 1 ]; then
        cargo build --release -q -p mock-provider
        cargo build --release -q -p rls-bench --example gateway-prompts
        cargo build --release -q -p wasm-filter --target wasm32-wasip1
    fi
fi
[ -x "$RLS_BIN" ] || die "$RLS_BIN missing"
[ -x "$LOAD_BIN" ] || die "$LOAD_BIN missing"
"$RLS_BIN" validate --config "$CONFIG" >/dev/null || die "$CONFIG is invalid"
if [ "$GATEWAY" = 1 ]; then
    for f in "$MOCK_BIN" "$GW_LOAD_BIN" "$PROMPTS_BIN"; do [ -x "$f" ] || die "$f missing"; done
    [ -f "$WASM" ] || die "$WASM missing (make build)"
    "$RLS_BIN" validate --config "$GW_LIMITS" >/dev/null || die "$GW_LIMITS is invalid"
fi
if want g; then
    [ -x "$ACCT_BIN" ] || die "$ACCT_BIN missing"
    "$RLS_BIN" validate --config "$ACCT_LIMITS" >/dev/null || die "$ACCT_LIMITS is invalid"
fi

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

start_service() { # name store [limits file [core]]: on the SUT core unless told
    start_bg "$1" "${4:-$SUT}" "$RLS_BIN" --config "${3:-$CONFIG}" --grpc-addr "127.0.0.1:$GRPC_PORT" \
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

# ---------------------------------------------------------------- d, e, f. the gateway
# Counters that tell whether the gateway really did its work: rate-limit decisions per route
# cluster, upstream connections and retries, downstream statuses, the filter's own counters.
gw_stats() { # admin port: JSON object
    curl -sf "http://127.0.0.1:$1/stats" | awk -F': ' '
        $2 ~ /^[0-9]+$/ && ($1 ~ /^cluster\.[^.]+\.ratelimit\.(ok|over_limit|error|failure_mode_allowed)$/ ||
            $1 ~ /^cluster\.(openai-a|openai-b|anthropic|ratelimit)\.upstream_(cx_total|rq_total|rq_retry)$/ ||
            $1 ~ /^http\.gateway\.downstream_rq_[2-5]xx$/ || $1 ~ /^wasmcustom\./) {
            printf "%s\"%s\":%s", (n++ ? "," : ""), $1, $2 }' | sed 's/^/{/; s/$/}/'
}
gw_load() { # log, gw-load args...: on the other core, JSON on stdout
    local log=$1
    shift
    timeout $((GW_SECS * 3 + SECS * 3 + 60)) taskset -c "$AUX" "$GW_LOAD_BIN" --keys "$GW_KEYS" \
        "$@" 2>>"$LOGS/$log.log"
}
start_envoy() { # name kind listen admin: renders bench/gateway.py KIND, starts Envoy on the SUT core
    local name=$1 kind=$2 listen=$3 admin=$4 cfg=$OUT/envoy-gw-$2.yaml
    "$PY" bench/gateway.py "$kind" --listen "$listen" --admin "$admin" --rls "$GRPC_PORT" \
        --mock "$MOCK_PORT" --keys "$GW_KEYS" --out "$cfg" || die "bench/gateway.py $kind failed"
    start_bg "$name" "$SUT" "$ENVOY" -c "$cfg" --concurrency 1 --disable-hot-restart -l warning
    ENVOY_PID=$LAST_PID
    # The gateway's V8 compiles the filter and loads the tokenizers first: seconds.
    wait_until 90 "$name" curl -sf "http://127.0.0.1:$admin/ready"
    local code
    code=$(curl -s -o "$LOGS/$name-probe.json" -w '%{http_code}' -H 'authorization: Bearer sk-bench-0' \
        -H 'content-type: application/json' --data-binary "@$BODIES/chat-100.json" \
        "http://127.0.0.1:$listen/v1/chat/completions")
    [ "$code" = 200 ] || die "$name answered $code to a probe request (body: $LOGS/$name-probe.json)"
}
clear_mock() { curl -sf -X DELETE "http://127.0.0.1:$MOCK_PORT/_mock/requests" >/dev/null || true; }

if [ "$GATEWAY" = 1 ]; then
    read -r MOCK_PORT GWE_PORT GWE_ADMIN PLE_PORT PLE_ADMIN NRE_PORT NRE_ADMIN RTE_PORT RTE_ADMIN <<<"$(free_ports 9)"
    BODIES=$OUT/bodies
    rm -rf "$BODIES"
    say "d-f. prompt bodies (sized with the filter's tokenizer) and the estimator natively, on core $SUT"
    wait_quiet
    taskset -c "$SUT" "$PROMPTS_BIN" --out "$BODIES" --sizes 100,1000,10000,100000 \
        --shadow 1000,10000,100000 >"$LOGS/prompts.log" 2>&1 || die "gateway-prompts failed; see $LOGS/prompts.log"
    while read -r line; do
        record "$(printf '{"kind":"prompt","id":"prompt-%s",%s' "$(sed 's/.*"name":"\([^"]*\)".*/\1/' <<<"$line")" "${line#\{}")"
    done <"$LOGS/prompts.log"
    record "$(printf '{"kind":"gw-meta","rate":%s,"secs":%s,"keys":%s,"est_secs":%s,"wasm_bytes":%s}' \
        "$GW_RATE" "$GW_SECS" "$GW_KEYS" "$EST_SECS" "$(stat -c %s "$WASM")")"
    # The mock logs at warn only (a line per request would be its main cost); its request log
    # (bodies included) is cleared after every run.
    start_bg mock "$AUX" env RUST_LOG=warn NO_COLOR=1 "$MOCK_BIN" --listen "127.0.0.1:$MOCK_PORT" --name bench
    MOCK_PID=$LAST_PID
    wait_until 15 mock curl -sf "http://127.0.0.1:$MOCK_PORT/_mock/health"
fi

# One measured gateway run: snapshot CPU of the given pids and both cores around gw-load.
# Sets RUN_JSON (gw-load's line), RUN_TICKS (per pid), RUN_SUT, RUN_AUX, RUN_ST0/1 (gw_stats).
gw_run() { # id admin_port pids(comma) gw-load args...
    local id=$1 admin=$2 pids
    IFS=, read -r -a pids <<<"$3"
    shift 3
    snapshot "${pids[@]}"
    local t0=("${SNAP_TICKS[@]}") s0=$SNAP_SUT x0=$SNAP_AUX
    RUN_ST0=$(gw_stats "$admin")
    RUN_JSON=$(gw_load "gw-$id" --label "$id" "$@") || die "gw-load failed; see $LOGS/gw-$id.log"
    snapshot "${pids[@]}"
    RUN_ST1=$(gw_stats "$admin")
    local i out=()
    for i in "${!pids[@]}"; do out+=("$((SNAP_TICKS[i] - t0[i]))"); done
    RUN_TICKS=$(IFS=,; echo "${out[*]}")
    RUN_SUT=$(core_delta "$s0" "$SNAP_SUT") RUN_AUX=$(core_delta "$x0" "$SNAP_AUX")
    tail -1 "$LOGS/gw-$id.log" | sed 's/^/   /' >&2
}

if want d; then
    start_service svc-d memory "$GW_LIMITS"
    start_envoy envoy-d-gateway gateway "$GWE_PORT" "$GWE_ADMIN"
    GW_PID=$ENVOY_PID
    start_envoy envoy-d-plain plain "$PLE_PORT" "$PLE_ADMIN"
    PL_PID=$ENVOY_PID
    for n in 100 1000 10000; do
        for variant in plain gateway; do
            id=d-$variant-$n
            if [ "$variant" = plain ]; then port=$PLE_PORT admin=$PLE_ADMIN epid=$PL_PID
            else port=$GWE_PORT admin=$GWE_ADMIN epid=$GW_PID; fi
            url="http://127.0.0.1:$port/v1/chat/completions"
            say "d. $variant Envoy, $n-token prompts, open loop $GW_RATE/s: ${WARM}s warm-up, ${GW_SECS}s measured"
            wait_quiet
            gw_load "gw-$id" --url "$url" --body "$BODIES/chat-$n.json" --rate "$GW_RATE" \
                --connections 32 --duration "$WARM" --label warmup >/dev/null
            gw_run "$id" "$admin" "$epid,$SVC_PID,$MOCK_PID" --url "$url" --body "$BODIES/chat-$n.json" \
                --rate "$GW_RATE" --connections 32 --duration "$GW_SECS"
            alive "$epid" "envoy-d-$variant"
            record "$(printf '{"kind":"gw-latency","id":"%s","variant":"%s","size":%s,"load":%s,"ticks":{"envoy":%s,"svc":%s,"mock":%s},"stats_before":%s,"stats_after":%s,"sut":%s,"aux":%s}' \
                "$id" "$variant" "$n" "$RUN_JSON" $(tr , ' ' <<<"$RUN_TICKS") "$RUN_ST0" "$RUN_ST1" "$RUN_SUT" "$RUN_AUX")"
            clear_mock
        done
    done
    stop_pid "$GW_PID"
    stop_pid "$PL_PID"
    stop_pid "$SVC_PID"
fi

if want e; then
    start_service svc-e redis "$GW_LIMITS"
    start_envoy envoy-e-gateway gateway "$GWE_PORT" "$GWE_ADMIN"
    GW_PID=$ENVOY_PID
    start_envoy envoy-e-norl gateway-norl "$NRE_PORT" "$NRE_ADMIN"
    NR_PID=$ENVOY_PID
    start_envoy envoy-e-plain plain "$PLE_PORT" "$PLE_ADMIN"
    PL_PID=$ENVOY_PID
    start_envoy envoy-e-rpmtpm gateway-rpmtpm "$RTE_PORT" "$RTE_ADMIN"
    RT_PID=$ENVOY_PID
    # norl: the gateway without its rate-limit filter, to split the gateway's cost between the
    # wasm filter and Envoy's rate-limit filter. gateway-svcaux: the same gateway with the
    # service moved to the other core (with Redis), Envoy alone on its core as beside a
    # separately deployed service; Envoy reconnects to the new process. rpmtpm-svcaux: only
    # issue 3's two descriptors (tenant requests and tokens); rpmtpm-svcaux-shadow: the same
    # with shadow-1000 (the text in `user`): everything but the BPE of the prompt.
    for variant in plain norl gateway gateway-svcaux rpmtpm-svcaux rpmtpm-svcaux-shadow; do
        id=e-$variant
        body=chat-1000
        case $variant in
        plain) port=$PLE_PORT admin=$PLE_ADMIN epid=$PL_PID what="plain Envoy" ;;
        norl) port=$NRE_PORT admin=$NRE_ADMIN epid=$NR_PID what="gateway without the rate-limit filter" ;;
        gateway) port=$GWE_PORT admin=$GWE_ADMIN epid=$GW_PID what="gateway (+ service, Redis store)" ;;
        gateway-svcaux)
            stop_pid "$SVC_PID"
            start_service svc-e-aux redis "$GW_LIMITS" "$AUX"
            port=$GWE_PORT admin=$GWE_ADMIN epid=$GW_PID what="gateway, service on core $AUX"
            ;;
        rpmtpm-svcaux)
            port=$RTE_PORT admin=$RTE_ADMIN epid=$RT_PID what="gateway with 2 descriptors, service on core $AUX" ;;
        *)
            port=$RTE_PORT admin=$RTE_ADMIN epid=$RT_PID body=shadow-1000
            what="gateway with 2 descriptors, service on core $AUX, prompt not estimated"
            ;;
        esac
        url="http://127.0.0.1:$port/v1/chat/completions"
        say "e. $what, 1000-token prompts ($body), closed loop, $CONC connections: ${WARM}s warm-up, ${SECS}s measured"
        wait_quiet
        gw_load "gw-$id" --url "$url" --body "$BODIES/$body.json" --connections "$CONC" \
            --duration "$WARM" --label warmup >/dev/null
        gw_run "$id" "$admin" "$epid,$SVC_PID,$MOCK_PID,$REDIS_PID" --url "$url" \
            --body "$BODIES/$body.json" --connections "$CONC" --duration "$SECS"
        alive "$epid" "envoy-e-$variant"
        record "$(printf '{"kind":"gw-throughput","id":"%s","variant":"%s","body":"%s","size":1000,"load":%s,"ticks":{"envoy":%s,"svc":%s,"mock":%s,"redis":%s},"stats_before":%s,"stats_after":%s,"sut":%s,"aux":%s}' \
            "$id" "$variant" "$body" "$RUN_JSON" $(tr , ' ' <<<"$RUN_TICKS") "$RUN_ST0" "$RUN_ST1" "$RUN_SUT" "$RUN_AUX")"
        clear_mock
    done
    stop_pid "$GW_PID"
    stop_pid "$NR_PID"
    stop_pid "$PL_PID"
    stop_pid "$RT_PID"
    stop_pid "$SVC_PID"
fi

if want f; then
    start_envoy envoy-f-gateway gateway-norl "$GWE_PORT" "$GWE_ADMIN"
    GW_PID=$ENVOY_PID
    start_envoy envoy-f-plain plain "$PLE_PORT" "$PLE_ADMIN"
    PL_PID=$ENVOY_PID
    for n in 1000 10000 100000; do
        for body in chat shadow; do
            for variant in plain gateway; do
                id=f-$variant-$body-$n
                if [ "$variant" = plain ]; then port=$PLE_PORT admin=$PLE_ADMIN epid=$PL_PID
                else port=$GWE_PORT admin=$GWE_ADMIN epid=$GW_PID; fi
                url="http://127.0.0.1:$port/v1/chat/completions"
                what=$variant
                [ "$variant" = plain ] || what="gateway without the rate-limit filter"
                say "f. $what, $body-$n, 1 in flight: 1s warm-up, ${EST_SECS}s measured"
                wait_quiet
                gw_load "gw-$id" --url "$url" --body "$BODIES/$body-$n.json" --connections 1 \
                    --duration 1 --label warmup >/dev/null
                gw_run "$id" "$admin" "$epid,$MOCK_PID" --url "$url" --body "$BODIES/$body-$n.json" \
                    --connections 1 --duration "$EST_SECS"
                alive "$epid" "envoy-f-$variant"
                record "$(printf '{"kind":"gw-estimate","id":"%s","variant":"%s","body":"%s","size":%s,"load":%s,"ticks":{"envoy":%s,"mock":%s},"stats_before":%s,"stats_after":%s,"sut":%s,"aux":%s}' \
                    "$id" "$variant" "$body" "$n" "$RUN_JSON" $(tr , ' ' <<<"$RUN_TICKS") "$RUN_ST0" "$RUN_ST1" "$RUN_SUT" "$RUN_AUX")"
                clear_mock
            done
        done
    done
    stop_pid "$GW_PID"
    stop_pid "$PL_PID"
fi

# ---------------------------------------------------------------- g. over-admission under a burst
ACCT_FAILED=0
if want g; then
    # A fresh service: every counter starts at 0 (rls-accounting checks it).
    start_service svc-g memory "$ACCT_LIMITS"
    say "g. over-admission under a burst: service (memory store) on core $SUT, rls-accounting on core $AUX: $ACCT_REQUESTS requests, $ACCT_CONC in flight, per mode"
    wait_quiet
    rc=0
    json=$(timeout 200 taskset -c "$AUX" "$ACCT_BIN" --grpc "http://127.0.0.1:$GRPC_PORT" \
        --http "http://127.0.0.1:$HTTP_PORT" --requests "$ACCT_REQUESTS" --concurrency "$ACCT_CONC" \
        --timeout-secs 120 --target "$ACCT_TARGET" 2>>"$LOGS/accounting.log") || rc=$?
    [ "$rc" = 0 ] || [ "$rc" = 2 ] || die "rls-accounting failed (exit $rc); see $LOGS/accounting.log"
    [ "$rc" = 0 ] || ACCT_FAILED=1
    [ -n "$json" ] || die "rls-accounting produced no result; see $LOGS/accounting.log"
    alive "$SVC_PID" svc-g
    while read -r line; do record "$line"; done <<<"$json"
    sed 's/^/   /' "$LOGS/accounting.log" >&2
    stop_pid "$SVC_PID"
fi

# The markdown table of phase g (records of kind "accounting"), appended to the report.
accounting_table() { # records target
    python3 - "$1" "$2" <<'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
rows = {r["mode"]: r for r in recs if r.get("kind") == "accounting"}
if not rows:
    sys.exit(0)
target = float(sys.argv[2])
what = {"estimate-only": "charge prompt + max_tokens at admission, never corrected",
        "usage-only": "check with 0 hits, charge the real usage after the response",
        "reconcile": "reserve prompt + max_tokens, correct to the real usage after the response"}
label = {"reconcile": "reserve-then-reconcile"}
any_r = next(iter(rows.values()))
out = ["", "### Over-admission under a burst (phase g)", "",
       f"{any_r['requests']:,} simulated LLM requests per mode (prompt 50–1,500 tokens, max_tokens "
       f"50–1,000, real completion 1–max_tokens, provider 50–400 ms; seed {any_r['seed']}), "
       f"{any_r['concurrency']} in flight, one service (memory store), a limit of "
       f"{any_r['limit']:,} tokens per tenant (bench/accounting-limits.yaml); for 4 s per mode, a "
       "refused request retried after 20 ms. "
       "Tokens admitted = the real usage of the admitted requests (what the provider bills).", "",
       "| mode | accounting | admitted | refusals | tokens admitted | tokens admitted ÷ limit | counter at the end | notes |",
       "|---|---|---|---|---|---|---|---|"]
for mode in ("estimate-only", "usage-only", "reconcile"):
    r = rows.get(mode)
    if not r:
        continue
    notes = [f"{r['elapsed_s']:.2f} s"]
    if r["counter"] != r["counter_expected"]:
        notes.append(f"**counter ≠ expected {r['counter_expected']:,}**")
    elif mode == "estimate-only":
        notes.append("counter = estimates charged")
    else:
        notes.append("counter = real usage charged")
    if r["errors"] or r["report_errors"]:
        notes.append(f"{r['errors']} call / {r['report_errors']} report errors: {r['first_error']}")
    notes += r.get("warnings", [])
    out.append(f"| {label.get(mode, mode)} | {what.get(mode, mode)} | {r['admitted']:,} | {r['refused']:,} | "
               f"{r['tokens_admitted']:,} | {r['over_admission']:.3f} | {r['counter']:,} | "
               + "; ".join(notes) + " |")
rec = rows.get("reconcile")
if rec:
    ok = rec["over_admission"] <= target
    out += ["", f"Target: reserve-then-reconcile ≤ {target:.2f}: {rec['over_admission']:.3f} "
            + ("✅" if ok else "❌")
            + "; " + "; ".join(f"{m} {rows[m]['over_admission']:.3f}" for m in ("estimate-only", "usage-only")
                               if m in rows) + " for contrast."]
print("\n".join(out))
EOF
}

cleanup
python3 bench/report.py "$RECORDS" "$OUT/results.md"
if want g; then
    accounting_table "$RECORDS" "$ACCT_TARGET" | tee -a "$OUT/results.md"
fi
say "table written to $OUT/results.md (raw records: $RECORDS, logs: $LOGS/)"
if [ "$EXACT_FAILED" = 1 ]; then
    die "exactness check FAILED: the service admitted a number of calls other than the limit"
fi
if [ "$ACCT_FAILED" = 1 ]; then
    die "over-admission target missed: reserve-then-reconcile admitted more than $ACCT_TARGET x its limit"
fi
