"""Routing through the gateway (envoy/demo.yaml + the built filter, see test_gateway.py):
weights, priorities and the local circuit (3 failures open a deployment for 10 s), the circuit
shared by several Envoys through the service, 503 when no deployment is left, Envoy's retries,
and provider credentials rotated through file SDS.

Faults are queued on the mocks (`/_mock/faults`): Envoy retries a 5xx twice (3 upstream
attempts per client request), and the filter records one outcome per client request.
"""

from __future__ import annotations

import json
from collections import Counter

from conftest import (GATEWAY_DEPLOYMENTS, MOCK_ANTHROPIC_KEY, MOCK_OPENAI_KEY, assert_status, demo_limits,
                      json_body, start_gateway, wait_until)

FAIL = {"status": 503, "count": 1000}  # every attempt fails until cleared


def test_weights_split_gpt_4o_mini_3_to_1(gateway, harness):
    gw = gateway(limits=demo_limits(harness, pro_requests=100_000))
    by_header, by_mock = Counter(), Counter()
    for _ in range(400):
        r = gw.chat(max_tokens=1)
        assert_status(r, 200)
        by_header[r.headers["x-llm-deployment"]] += 1
        by_mock[r.headers["x-mock-provider"]] += 1
    assert by_header == by_mock, (by_header, by_mock)
    assert set(by_header) == {"openai-a", "openai-b"}, by_header
    share = by_header["openai-a"] / 400
    # Binomial(400, 0.75): sd ~0.022, so [0.65, 0.85] is > 4 sd either side.
    assert 0.65 <= share <= 0.85, by_header
    assert len(gw.upstream_requests("openai-a")) == by_header["openai-a"]
    assert len(gw.upstream_requests("openai-b")) == by_header["openai-b"]
    assert gw.upstream_requests("anthropic") == []


def test_priority_fallback_to_anthropic_when_openai_a_fails(gateway):
    gw = gateway()
    # Healthy: gpt-4o (openai-a priority 1, anthropic priority 2) only ever goes to openai-a.
    for _ in range(20):
        r = gw.chat("gpt-4o", max_tokens=3)
        assert_status(r, 200)
        assert r.headers["x-llm-deployment"] == "openai-a"
        assert json_body(r)["model"] == "gpt-4o"
    assert gw.upstream_requests("anthropic") == []
    assert len(gw.upstream_requests("openai-a")) == 20
    # openai-a fails every attempt: after 3 failed client requests its circuit opens and
    # gpt-4o is served by anthropic, translated back into an OpenAI chat.completion.
    gw.mocks["openai-a"].program_faults(FAIL)
    outcomes = []
    for _ in range(10):
        r = gw.chat("gpt-4o", max_tokens=3)
        outcomes.append((r.status_code, r.headers.get("x-llm-deployment")))
        if r.status_code == 200:
            break
    assert outcomes[-1] == (200, "anthropic"), outcomes
    assert all(s >= 500 for s, _ in outcomes[:-1]) and 3 <= len(outcomes) - 1 <= 4, outcomes
    body = json_body(r)
    assert body["object"] == "chat.completion" and body["model"] == "gpt-4o", body
    assert body["choices"][0]["message"]["content"] == "tok0 tok1 tok2", body
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3 and body["usage"]["prompt_tokens"] == 4, body
    seen = gw.upstream_requests("anthropic")
    assert len(seen) == 1
    assert seen[0]["path"] == "/v1/messages"
    assert seen[0]["body"]["model"] == "claude-sonnet-4-5" and seen[0]["body"]["max_tokens"] == 3, seen[0]["body"]
    assert seen[0]["headers"]["x-api-key"] == MOCK_ANTHROPIC_KEY
    assert seen[0]["headers"]["anthropic-version"] == "2023-06-01"
    # While the circuit is open, openai-a gets nothing more.
    attempts = len(gw.upstream_requests("openai-a"))
    for _ in range(3):
        r = gw.chat("gpt-4o", max_tokens=3)
        assert_status(r, 200)
        assert r.headers["x-llm-deployment"] == "anthropic"
    assert len(gw.upstream_requests("openai-a")) == attempts


def test_503_no_deployment_available_when_every_deployment_is_down(gateway):
    gw = gateway()
    for d in ("openai-a", "openai-b"):
        gw.mocks[d].program_faults(FAIL)
    statuses = []
    for _ in range(30):
        r = gw.chat(max_tokens=3)
        statuses.append(r.status_code)
        if r.status_code == 503 and r.headers.get("content-type", "").startswith("application/json") \
                and json_body(r).get("error", {}).get("code") == "no_deployment_available":
            break
    else:
        raise AssertionError(f"never answered no_deployment_available: {statuses}")
    assert all(s >= 500 for s in statuses), statuses
    err = json_body(r)["error"]
    assert (err["type"], err["param"]) == ("server_error", None), err
    assert "gpt-4o-mini" in err["message"]
    assert "x-mock-provider" not in r.headers
    # Both circuits are open: nothing reaches the providers any more; claude-haiku is unaffected.
    before = {d: len(gw.upstream_requests(d)) for d in ("openai-a", "openai-b")}
    for _ in range(3):
        assert json_body(gw.chat(max_tokens=3))["error"]["code"] == "no_deployment_available"
    assert {d: len(gw.upstream_requests(d)) for d in ("openai-a", "openai-b")} == before
    assert_status(gw.chat("claude-haiku", max_tokens=3), 200)


def test_envoy_retries_a_failed_attempt(demo_gateway):
    gw = demo_gateway
    a = gw.mocks["openai-a"]
    for fault in ({"status": 503}, {"reset": True}):
        a.clear_requests()
        a.program_faults(fault)
        r = gw.chat("gpt-4o", max_tokens=3)  # gpt-4o: always openai-a while it is healthy
        assert_status(r, 200)
        assert r.headers["x-llm-deployment"] == "openai-a"
        assert json_body(r)["choices"][0]["message"]["content"] == "tok0 tok1 tok2"
        assert len(a.requests()) == 2, f"{fault}: one failed attempt + one retry"
        assert a.pending_faults() == []
    assert gw.upstream_requests("anthropic") == []


def test_provider_credentials_rotate_without_restart(gateway):
    """The secrets are the test's copies of envoy/secrets/*.yaml; replacing one atomically changes
    the key Envoy injects on later requests (the mocks here accept any key)."""
    gw = gateway(mock_keys=False)

    def injected(dep: str, header: str) -> str:
        return gw.upstream_requests(dep)[-1]["headers"].get(header)

    assert_status(gw.chat("gpt-4o", max_tokens=1), 200)
    assert_status(gw.chat("claude-haiku", max_tokens=1), 200)
    assert injected("openai-a", "authorization") == f"Bearer {MOCK_OPENAI_KEY}"
    assert injected("anthropic", "x-api-key") == MOCK_ANTHROPIC_KEY
    gw.rotate_secret("openai", "openai-key", "Bearer sk-rotated-openai-1")
    gw.rotate_secret("anthropic", "anthropic-key", "sk-ant-rotated-1")

    def rotated():
        assert_status(gw.chat("gpt-4o", max_tokens=1), 200)
        assert_status(gw.chat("claude-haiku", max_tokens=1), 200)
        return (injected("openai-a", "authorization") == "Bearer sk-rotated-openai-1"
                and injected("anthropic", "x-api-key") == "sk-ant-rotated-1")

    wait_until(rotated, 15, interval=0.2, what="the rotated keys to be injected")
    # And a second rotation (the watch survives the rename).
    gw.rotate_secret("openai", "openai-key", "Bearer sk-rotated-openai-2")

    def rotated_again():
        assert_status(gw.chat("gpt-4o", max_tokens=1), 200)
        return injected("openai-a", "authorization") == "Bearer sk-rotated-openai-2"

    wait_until(rotated_again, 15, interval=0.2, what="the second rotation")
    for dep in GATEWAY_DEPLOYMENTS:
        for req in gw.upstream_requests(dep):
            assert "sk-demo" not in json.dumps(req["headers"]), req["headers"]


def test_failures_seen_by_one_envoy_keep_the_deployment_out_of_another(gateway, harness):
    """Provider health is shared: Envoy A's failed requests reach the service in its usage
    reports, the service opens openai-a's circuit, and Envoy B, which never saw a failure,
    stops choosing openai-a after its next poll (accounting.health_poll_ms, 1 s in the demo)."""
    a = gateway()
    b = start_gateway(harness, beside=a)
    for gw in (a, b):
        r = gw.chat("gpt-4o", max_tokens=3)
        assert_status(r, 200)
        assert r.headers["x-llm-deployment"] == "openai-a"
    a.mocks["openai-a"].program_faults(FAIL)
    for _ in range(3):
        r = a.chat("gpt-4o", max_tokens=3)
        assert r.status_code >= 500 and r.headers.get("x-llm-deployment") == "openai-a", (r.status_code, r.text)
    opened = 'llm_deployment_circuit_opened_total'
    wait_until(lambda: a.service.metric_value(opened, {"deployment": "openai-a"}) == 1, 5,
               what="the service to open openai-a's shared circuit from A's reports")

    def polls():
        return b.stats(r"health_polls$").get("wasmcustom.llm_gateway.health_polls", 0)

    # A poll of B's that answered after the circuit opened.
    seen = polls()
    wait_until(lambda: polls() > seen, 5, what="Envoy B to poll the shared circuits")
    attempts = len(a.upstream_requests("openai-a"))
    for _ in range(3):
        r = b.chat("gpt-4o", max_tokens=3)
        assert_status(r, 200)
        assert r.headers["x-llm-deployment"] == "anthropic"
    assert len(a.upstream_requests("openai-a")) == attempts, "B sent a request to openai-a"
    # B saw no failure of its own: its choice came from the service's answers.
    assert b.stats(r"health_polls_failed").get("wasmcustom.llm_gateway.health_polls_failed") == 0
