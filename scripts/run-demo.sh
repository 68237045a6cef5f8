#!/usr/bin/env bash
# `make run`: ratelimit-service (memory store) + Envoy with envoy/demo.yaml, in the foreground.
# Ctrl-C (or either process exiting) stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

RLS_BIN=${RLS_BIN:-target/release/ratelimit-service}
ENVOY_BIN=${ENVOY_BIN:-.venv/bin/envoy}
RLS_CONFIG=${RLS_CONFIG:-envoy/ratelimit/demo.yaml}
ENVOY_CONFIG=${ENVOY_CONFIG:-envoy/demo.yaml}

for f in "$RLS_BIN" "$ENVOY_BIN"; do
    [ -x "$f" ] || { echo "run-demo: $f not found; run 'make deps build' first" >&2; exit 1; }
done

rls_pid=""
envoy_pid=""
stop() {
    trap - INT TERM EXIT
    for pid in $envoy_pid $rls_pid; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $envoy_pid $rls_pid; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap 'echo; echo "run-demo: stopping"; stop; exit 0' INT TERM
trap stop EXIT

wait_http() { # url, name
    for _ in $(seq 100); do
        if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        for pid in $rls_pid $envoy_pid; do
            kill -0 "$pid" 2>/dev/null || { echo "run-demo: $2 exited" >&2; exit 1; }
        done
        sleep 0.1
    done
    echo "run-demo: $2 not ready at $1 after 10 s" >&2
    exit 1
}

"$RLS_BIN" run --config "$RLS_CONFIG" --store memory \
    --grpc-addr 127.0.0.1:8081 --http-addr 127.0.0.1:8080 &
rls_pid=$!
wait_http http://127.0.0.1:8080/healthz ratelimit-service

"$ENVOY_BIN" -c "$ENVOY_CONFIG" -l warning --disable-hot-restart &
envoy_pid=$!
wait_http http://127.0.0.1:9901/ready envoy

cat <<'BANNER'

  LLM gateway demo is up
    gateway            http://127.0.0.1:10000   (Envoy; admin http://127.0.0.1:9901)
    ratelimit-service  grpc 127.0.0.1:8081, http http://127.0.0.1:8080/healthz  /metrics
    limits             envoy/ratelimit/demo.yaml (edit it: reloaded live)
                       demo-free: 10 requests/min, 2000 tokens/min; demo-pro: 600/min, 100000/min

  Try:
    curl -i -H 'x-tenant: demo-free' http://127.0.0.1:10000/v1/chat/completions
    curl -i -H 'x-tenant: demo-free' -H 'x-llm-tokens: 500' http://127.0.0.1:10000/v1/chat/completions
    for i in $(seq 12); do curl -s -o /dev/null -w '%{http_code}\n' -H 'x-tenant: demo-free' http://127.0.0.1:10000/v1/chat/completions; done

  Ctrl-C stops both.

BANNER

# Whichever exits first ends the demo.
set +e
wait -n "$rls_pid" "$envoy_pid"
status=$?
echo "run-demo: a process exited (status $status); stopping the other" >&2
exit "$status"
