"""The gateway end to end: real Envoy running envoy/demo.yaml (rendered onto free ports) with the
built filter, the real ratelimit-service (memory store, envoy/ratelimit/demo.yaml) and three mock
providers (openai-a, openai-b, anthropic).

This file: the gateway's own answers (errors, /v1/models, body limits), the rendered config,
rate limits per tenant (requests and reserved token estimates), spoofing, and a plugin
configuration the filter rejects. Routing, health and credentials: test_gateway_routing.py;
the official SDKs: test_gateway_sdk.py.
"""

from __future__ import annotations

import re

import pytest

from conftest import (DEMO_GATEWAY, FREE_KEY, GATEWAY_DEPLOYMENTS, MOCK_ANTHROPIC_KEY, MOCK_OPENAI_KEY,
                      PRO_KEY, START_TIMEOUT, assert_openai_429, assert_status, demo_limits, demo_plugin_config,
                      envoy_validate, free_port, json_body, render_gateway_config, rl_headers, tail, wait_until)


def assert_gateway_error(r, status: int, code: str, kind: str = "invalid_request_error") -> dict:
    """An error the gateway answered itself: `status`, JSON, {"error":{"message","type","param":null,"code"}}."""
    assert_status(r, status)
    assert r.headers.get("content-type", "").startswith("application/json"), dict(r.headers)
    body = json_body(r)
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, body
    assert isinstance(err["message"], str) and err["message"], body
    assert (err["type"], err["param"], err["code"]) == (kind, None, code), body
    assert "x-mock-provider" not in r.headers, f"a provider answered, not the gateway: {dict(r.headers)}"
    return err


def upstream_count(gw) -> int:
    return sum(len(gw.upstream_requests(d)) for d in GATEWAY_DEPLOYMENTS)


# --------------------------------------------------------------------------------------------
# the rendered config


def test_rendered_demo_config_replaces_every_fixed_port_and_path_and_validates(tmp_path):
    ports = dict(listen_port=free_port(), admin_port=free_port(), rls_port=free_port())
    providers = {d: free_port() for d in GATEWAY_DEPLOYMENTS}
    text = render_gateway_config(**ports, provider_ports=providers, secrets_dir=tmp_path)
    for fixed in (9901, 10000, 8081, 11001, 11002, 11003):
        assert not re.search(rf"port_value: {fixed}\b", text), fixed
    for p in [*ports.values(), *providers.values()]:
        assert text.count(f"port_value: {p}\n") + text.count(f"port_value: {p}}}") == 1, p
    assert text.count(f"path: {tmp_path}/openai.yaml}}") == 2
    assert text.count(f"path: {tmp_path}/anthropic.yaml}}") == 1
    # The plugin-config variant touches only the inline configuration.
    small = render_gateway_config(**ports, provider_ports=providers, secrets_dir=tmp_path,
                                  plugin_config=lambda t: t + "max_body_bytes: 1024\n")
    assert small.replace("                    max_body_bytes: 1024\n", "") == text
    assert "max_body_bytes" not in demo_plugin_config()
    (tmp_path / "openai.yaml").write_text((DEMO_GATEWAY.parent / "secrets" / "openai.yaml").read_text())
    (tmp_path / "anthropic.yaml").write_text((DEMO_GATEWAY.parent / "secrets" / "anthropic.yaml").read_text())
    for i, t in enumerate((text, small)):
        path = tmp_path / f"gateway-{i}.yaml"
        path.write_text(t)
        v = envoy_validate(path)
        assert v.returncode == 0, f"{v.stdout}\n{v.stderr}"


# --------------------------------------------------------------------------------------------
# the gateway's own answers


def test_gateway_errors_are_openai_shaped(demo_gateway):
    gw = demo_gateway
    chat = "/v1/chat/completions"
    ok_body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    err = assert_gateway_error(gw.post(chat, data="{not json"), 400, "invalid_request")
    assert "not valid JSON" in err["message"]
    err = assert_gateway_error(gw.post(chat, {"messages": [{"role": "user", "content": "hi"}]}), 400, "invalid_request")
    assert "model" in err["message"]
    assert_gateway_error(gw.post(chat, ok_body, key=None), 401, "missing_api_key")
    assert_gateway_error(gw.post(chat, ok_body, key="sk-not-a-gateway-key"), 401, "invalid_api_key")
    assert_gateway_error(gw.post(chat, ok_body, key=None, headers={"x-api-key": "sk-nope"}), 401, "invalid_api_key")
    err = assert_gateway_error(gw.chat("gpt-9"), 404, "model_not_found")
    assert "gpt-9" in err["message"]
    assert_gateway_error(gw.post("/v1/nope", ok_body), 404, "unknown_url")
    assert_gateway_error(gw.get(chat), 405, "method_not_allowed")
    # Anthropic has no embeddings: a model without a deployment for the endpoint.
    assert_gateway_error(gw.post("/v1/embeddings", {"model": "claude-haiku", "input": "x"}), 400, "invalid_request")
    assert upstream_count(gw) == 0, "no provider should see a request the gateway rejected"


@pytest.mark.parametrize("data", ["not json at all", "[1, 2, 3]", '"a string"',
                                  '{"model": "gpt-4o-mini", "messages": [{"role": "us', ""],
                         ids=["not-json", "array", "string", "truncated", "empty"])
def test_malformed_bodies_are_400(demo_gateway, data):
    assert_gateway_error(demo_gateway.post("/v1/chat/completions", data=data), 400, "invalid_request")
    assert upstream_count(demo_gateway) == 0


def test_models_list(demo_gateway):
    r = demo_gateway.get("/v1/models")
    assert_status(r, 200)
    body = json_body(r)
    assert body["object"] == "list"
    assert sorted(m["id"] for m in body["data"]) == ["claude-haiku", "gpt-4o", "gpt-4o-mini"]
    assert all(m["object"] == "model" for m in body["data"])
    assert_gateway_error(demo_gateway.get("/v1/models", key=None), 401, "missing_api_key")


def test_a_huge_prompt_within_the_limits_is_routed(gateway, harness):
    """1 MiB of text: estimated (bounded cost), admitted under a roomy token limit, routed, and
    the provider receives it whole."""
    gw = gateway(limits=demo_limits(harness, pro_tokens=10_000_000))
    text = ("The quick brown fox jumps over the lazy dog. " * 23302)[: 1024 * 1024]
    r = gw.chat(content=text, max_tokens=4)
    assert_status(r, 200)
    assert json_body(r)["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3"
    _, remaining, _ = rl_headers(r, "tokens")
    estimate = 10_000_000 - remaining
    assert 150_000 < estimate < 400_000, f"estimate {estimate} for ~230k tokens of English"
    dep = r.headers["x-llm-deployment"]
    seen = gw.upstream_requests(dep)
    assert len(seen) == 1 and seen[0]["body"]["messages"][0]["content"] == text


def test_body_over_max_body_bytes_is_413(gateway):
    gw = gateway(plugin_config=lambda t: t + "max_body_bytes: 4096\n")
    assert_status(gw.chat(content="word " * 500), 200)  # ~2.5 kB: under the limit
    err = assert_gateway_error(gw.chat(content="word " * 1000), 413, "request_too_large")
    assert "4096" in err["message"]
    assert sum(len(gw.upstream_requests(d)) for d in GATEWAY_DEPLOYMENTS) == 1


def test_body_over_envoys_buffer_is_413_from_the_filter(demo_gateway):
    """Above the default 8 MiB limit, and above Envoy's 16 MiB buffers: the filter's JSON 413."""
    for size in (9 * 1024 * 1024, 17 * 1024 * 1024):
        r = demo_gateway.chat(content="x" * size)
        err = assert_gateway_error(r, 413, "request_too_large")
        assert str(8 * 1024 * 1024) in err["message"]
    assert upstream_count(demo_gateway) == 0


# --------------------------------------------------------------------------------------------
# rate limits, tenants, spoofing

SPOOFED = {
    "x-llm-tenant": "demo-pro",
    "x-llm-tier": "pro",
    "x-llm-route": "anthropic|messages",
    "x-llm-deployment": "anthropic",
    "x-llm-estimate": "1",
    "x-llm-model": "claude-haiku",
}


def test_free_tier_limits_spoofing_and_isolation(gateway):
    """demo-free (10 requests, 2,000 tokens a minute), spoofing internal headers on every request:
    token 429s (alone too large; over what is left), the 11th request's 429, demo-pro untouched,
    and tenant 429s do not count against the providers' health."""
    gw = gateway()
    # 1. Alone over the 2,000-token limit: rejected, charged nothing, no retry-after promised.
    r = gw.chat(key=FREE_KEY, max_tokens=5000, headers=SPOOFED)
    assert_openai_429(r, "tokens", retry_after_required=False)
    assert rl_headers(r, "tokens")[0] == 2000
    # 2. 1,500 fits; the next 1,500 does not fit in what is left: 429 with retry-after. (The
    #    first really uses 1,450 output tokens: the reservation's correction to the real usage,
    #    which may land before the second request, leaves too little room either way.)
    r = gw.chat(key=FREE_KEY, max_tokens=1500, headers={**SPOOFED, "x-mock-completion-tokens": "1450"})
    assert_status(r, 200)
    limit, remaining, _ = rl_headers(r, "tokens")
    assert limit == 2000 and 2000 - 1500 - 40 < remaining <= 2000 - 1500, dict(r.headers)
    assert rl_headers(r, "requests")[:2] == (10, 9), "demo-free's request limit, whatever the spoofed headers say"
    r = gw.chat(key=FREE_KEY, max_tokens=1500, headers=SPOOFED)
    assert_openai_429(r, "tokens")
    # 3. Nine small requests fill the request limit (the rejected ones were not counted).
    for i in range(9):
        r = gw.chat(key=FREE_KEY, max_tokens=5, headers=SPOOFED)
        assert_status(r, 200)
        assert rl_headers(r, "requests")[:2] == (10, 8 - i), dict(r.headers)
        assert r.headers["x-llm-deployment"] in ("openai-a", "openai-b"), "x-llm-route / x-llm-deployment ignored"
    # 4. The 11th request in the minute (gpt-4o: these would all be charged to openai-a's health).
    for _ in range(4):
        r = gw.chat("gpt-4o", key=FREE_KEY, max_tokens=5, headers=SPOOFED)
        body = assert_openai_429(r, "requests")
        assert "demo-free" in body["error"]["message"]
    # 5. demo-pro is not affected, and the tenant's own 429s did not open openai-a's circuit:
    #    gpt-4o (openai-a first, anthropic as fallback) still goes to openai-a.
    for i in range(3):
        r = gw.chat("gpt-4o", max_tokens=5)
        assert_status(r, 200)
        assert rl_headers(r, "requests")[:2] == (600, 599 - i)
        assert r.headers["x-llm-deployment"] == "openai-a", "demo-free's 429s opened openai-a's circuit"
    assert gw.upstream_requests("anthropic") == []
    # 6. Providers saw 10 demo-free requests + 3 demo-pro ones, each with the provider's key only.
    seen = gw.upstream_requests("openai-a") + gw.upstream_requests("openai-b")
    assert len(seen) == 13
    for req in seen:
        h = req["headers"]
        assert h.get("authorization") == f"Bearer {MOCK_OPENAI_KEY}", h
        assert not any(k.startswith("x-llm-") for k in h), f"internal headers reached the provider: {h}"
        assert "x-api-key" not in h and "api-key" not in h, h
        assert not any("sk-demo" in v for v in h.values()), f"the gateway key reached the provider: {h}"
        # The client (requests) accepts gzip; the provider must answer plain so the filter can
        # read its usage.
        assert "accept-encoding" not in h, h


def test_rate_limit_429_is_the_gateways_own_body_on_every_route(demo_gateway):
    """The rate limit's 429 comes back as the service wrote it, whatever the model and API: it
    is not mistaken for a provider error and translated (which turned `type` "tokens" into
    "requests" for an OpenAI client on an Anthropic model), and it names no deployment."""
    gw = demo_gateway
    msg = [{"role": "user", "content": "hi"}]
    calls = {
        "chat gpt-4o-mini": lambda: gw.chat("gpt-4o-mini", key=FREE_KEY, max_tokens=5000),
        "chat claude-haiku (translated)": lambda: gw.chat("claude-haiku", key=FREE_KEY, max_tokens=5000),
        "messages claude-haiku": lambda: gw.post("/v1/messages", {"model": "claude-haiku", "max_tokens": 5000,
                                                                  "messages": msg}, key=FREE_KEY),
        "messages gpt-4o-mini (translated)": lambda: gw.post("/v1/messages", {"model": "gpt-4o-mini",
                                                                              "max_tokens": 5000, "messages": msg},
                                                             key=FREE_KEY),
    }
    bodies = {}
    for what, call in calls.items():
        r = call()  # alone over demo-free's 2,000 tokens: rejected, charges nothing
        bodies[what] = assert_openai_429(r, "tokens", retry_after_required=False)
        assert "x-llm-deployment" not in r.headers, (what, dict(r.headers))
    assert len({b["error"]["message"] for b in bodies.values()}) == 1, bodies
    assert upstream_count(gw) == 0


def test_client_keys_and_internal_headers_never_reach_providers(demo_gateway):
    gw = demo_gateway
    extra = {**SPOOFED, "x-api-key": PRO_KEY, "api-key": PRO_KEY}
    for model in ("gpt-4o-mini", "claude-haiku"):
        assert_status(gw.chat(model, max_tokens=3, headers=extra), 200)
    r = gw.post("/v1/messages", {"model": "claude-haiku", "max_tokens": 3,
                                  "messages": [{"role": "user", "content": "hi"}]},
                key=None, headers={"x-api-key": PRO_KEY, "anthropic-version": "2023-06-01", **SPOOFED})
    assert_status(r, 200)
    seen = {d: gw.upstream_requests(d) for d in GATEWAY_DEPLOYMENTS}
    assert sum(len(v) for v in seen.values()) == 3
    for dep, reqs in seen.items():
        for req in reqs:
            h = req["headers"]
            assert not any("sk-demo" in v for v in h.values()), f"{dep} saw the client's gateway key: {h}"
            assert not any(k.startswith("x-llm-") for k in h), f"{dep} saw internal headers: {h}"
            if dep == "anthropic":
                assert h.get("x-api-key") == MOCK_ANTHROPIC_KEY and "authorization" not in h, h
            else:
                assert h.get("authorization") == f"Bearer {MOCK_OPENAI_KEY}" and "x-api-key" not in h, h
            assert "api-key" not in h, h


def test_token_estimate_is_reserved(demo_gateway):
    """x-ratelimit-remaining-tokens drops by about prompt + max_tokens (the reservation)."""
    gw = demo_gateway
    exact = {"x-mock-completion-tokens": "5"}  # the provider uses what was reserved
    r0 = gw.chat(max_tokens=5, headers=exact)
    assert_status(r0, 200)
    limit, before, _ = rl_headers(r0, "tokens")
    assert limit == 100_000
    prompt = "hello " * 50  # 50 tokens in o200k
    r1 = gw.chat(content=prompt, max_tokens=500, headers={"x-mock-completion-tokens": "500"})
    assert_status(r1, 200)
    _, after, _ = rl_headers(r1, "tokens")
    drop = before - after
    assert 500 + 50 <= drop <= 500 + 50 + 25, f"reserved {drop} for 50 prompt tokens + max_tokens 500"
    # Without max_tokens the plugin's default_max_output_tokens (256) is reserved.
    r2 = gw.chat(content=prompt, headers={"x-mock-completion-tokens": "256"})
    _, after2, _ = rl_headers(r2, "tokens")
    assert 256 + 50 <= after - after2 <= 256 + 50 + 25 + 5, (after, after2)


# --------------------------------------------------------------------------------------------
# a configuration the filter rejects


def test_invalid_plugin_configuration_is_rejected_by_envoy(gateway):
    """Envoy 1.40 with an inline plugin configuration the filter's on_configure refuses:
    `envoy --mode validate` fails, and the server exits non-zero at start (the plugin is
    fail-closed: "Unable to create Wasm plugin llm-gateway"), with the filter's precise line in the log."""
    bad = lambda t: t.replace("{name: openai-a, cluster: openai-a, provider: openai, weight: 3}",  # noqa: E731
                              "{name: openai-a, cluster: openai-a, provider: cohere, weight: 3}")
    assert "provider: cohere" in bad(demo_plugin_config())
    gw = gateway(plugin_config=bad, wait=False)
    want = ("llm-gateway: invalid plugin configuration: models.gpt-4o-mini.deployments[0].provider: "
            "unknown provider 'cohere' (expected openai, azure-openai, anthropic or openai-compatible)")
    v = envoy_validate(gw.config_path)
    assert v.returncode != 0, "envoy --mode validate accepted a configuration the filter rejects"
    assert want in v.stdout + v.stderr, v.stdout + v.stderr
    wait_until(lambda: not gw.proc.alive(), START_TIMEOUT * 2, what="envoy to exit on the bad plugin config")
    log = gw.proc.log_text()
    assert gw.proc.returncode() != 0, log
    assert want in log, tail(log, 40)
    assert "Unable to create Wasm plugin llm-gateway" in log, tail(log, 40)
