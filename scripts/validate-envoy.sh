#!/usr/bin/env bash
# `make validate-envoy`: `envoy --mode validate` for every envoy/*.yaml. Paths under
# /etc/llm-gateway (the production example's mounts) point into a temporary copy holding the
# built .wasm and one SDS secret file per referenced name, so the check needs no root.
set -euo pipefail
cd "$(dirname "$0")/.."
ENVOY=${ENVOY:-.venv/bin/envoy}
WASM=target/wasm32-wasip1/release/llm_gateway_filter.wasm
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/etc/secrets"
[ -f "$WASM" ] && cp "$WASM" "$tmp/etc/" || touch "$tmp/etc/llm_gateway_filter.wasm"
for f in envoy/*.yaml; do
    cfg=$f
    if grep -q /etc/llm-gateway "$f"; then
        for name in $(grep -o '/etc/llm-gateway/secrets/[A-Za-z0-9_-]*\.yaml' "$f" | sed 's|.*/||; s|\.yaml$||' | sort -u); do
            printf 'resources:\n- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  name: %s\n  generic_secret: {secret: {inline_string: "placeholder"}}\n' \
                "$name" > "$tmp/etc/secrets/$name.yaml"
        done
        cfg="$tmp/$(basename "$f")"
        sed "s|/etc/llm-gateway|$tmp/etc|g" "$f" > "$cfg"
    fi
    if ! "$ENVOY" --mode validate -c "$cfg" -l error >/dev/null 2>"$tmp/err"; then
        echo "invalid Envoy config: $f" >&2
        cat "$tmp/err" >&2
        exit 1
    fi
    echo "envoy config OK: $f"
done
