#!/usr/bin/env bash
# `make run`: three mock providers, ratelimit-service (memory store) and Envoy with the gateway
# filter (envoy/demo.yaml), in the foreground. Ctrl-C (or any process exiting) stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."

RLS_BIN=${RLS_BIN:-target/release/ratelimit-service}
MOCK_BIN=${MOCK_PROVIDER_BIN:-target/release/mock-provider}
ENVOY_BIN=${ENVOY_BIN:-.venv/bin/envoy}
WASM=${WASM:-target/wasm32-wasip1/release/llm_gateway_filter.wasm}
RLS_CONFIG=${RLS_CONFIG:-envoy/ratelimit/demo.yaml}
ENVOY_CONFIG=${ENVOY_CONFIG:-envoy/demo.yaml}

for f in "$RLS_BIN" "$MOCK_BIN" "$ENVOY_BIN" "$WASM"; do
    [ -e "$f" ] || { echo "run-demo: $f not found; run 'make deps build' first" >&2; exit 1; }
done

pids=()
stop() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap 'echo; echo "run-demo: stopping"; stop; exit 0' INT TERM
trap stop EXIT

wait_http() { # url, name
    for _ in $(seq 150); do
        if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null || { echo "run-demo: $2: a process exited" >&2; exit 1; }
        done
        sleep 0.1
    done
    echo "run-demo: $2 not ready at $1 after 15 s" >&2
    exit 1
}

# Mock providers on the ports envoy/demo.yaml's clusters use; keys match envoy/secrets/*.yaml.
for spec in openai-a:11001 openai-b:11002 anthropic:11003; do
    name=${spec%%:*} port=${spec##*:}
    "$MOCK_BIN" --listen "127.0.0.1:$port" --name "$name" \
        --openai-key sk-mock-openai --anthropic-key sk-ant-mock >/dev/null &
    pids+=($!)
    wait_http "http://127.0.0.1:$port/_mock/health" "mock provider $name"
done

"$RLS_BIN" run --config "$RLS_CONFIG" --store memory \
    --grpc-addr 127.0.0.1:8081 --http-addr 127.0.0.1:8080 &
pids+=($!)
wait_http http://127.0.0.1:8080/healthz ratelimit-service

"$ENVOY_BIN" -c "$ENVOY_CONFIG" -l warning --disable-hot-restart &
pids+=($!)
wait_http http://127.0.0.1:9901/ready envoy

cat <<'BANNER'

  LLM gateway demo is up
    gateway            http://127.0.0.1:10000   (Envoy + llm-gateway filter; admin http://127.0.0.1:9901)
    ratelimit-service  grpc 127.0.0.1:8081, http http://127.0.0.1:8080/healthz  /metrics
    providers          mocks: openai-a :11001, openai-b :11002, anthropic :11003
    keys               sk-demo-free (10 requests, 2,000 tokens per minute, 1.00 a day)
                       sk-demo-pro  (600 requests, 100,000 tokens per minute, 50.00 a day)
    models             gpt-4o-mini (openai-a x3, openai-b x1), claude-haiku (anthropic),
                       gpt-4o (openai-a, falls back to anthropic)

  Try:
    curl -s http://127.0.0.1:10000/v1/chat/completions -H 'authorization: Bearer sk-demo-free' \
      -H 'content-type: application/json' \
      -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"max_tokens":50}' -i
    # an OpenAI client on an Anthropic model, streaming:
    curl -sN http://127.0.0.1:10000/v1/chat/completions -H 'authorization: Bearer sk-demo-pro' \
      -H 'content-type: application/json' \
      -d '{"model":"claude-haiku","stream":true,"messages":[{"role":"user","content":"hello"}]}'
    # or any OpenAI / Anthropic SDK with base_url http://127.0.0.1:10000/v1 (Anthropic: .../10000)
    # what a tenant's token counter holds once the real usage is reconciled:
    curl -s 'http://127.0.0.1:8080/v1/usage?domain=llm-gateway&entry=tenant=demo-free&entry=kind=tokens'
    curl -s http://127.0.0.1:8080/metrics | grep ^llm_

  Below: one JSON access-log line per request (tenant, model, deployment, tokens, cost).

  Ctrl-C stops everything.

BANNER

# Whichever exits first ends the demo.
set +e
wait -n "${pids[@]}"
status=$?
echo "run-demo: a process exited (status $status); stopping the others" >&2
exit "$status"
