"""Limits enforced through real Envoy against the real service (memory store).

Every limit here is a fixed window of an hour, so no assertion depends on wall-clock timing."""

import pytest

from conftest import assert_openai_429, assert_status, dedent, json_body, rl_headers


def start(harness, limits: str, domain: str = "e2e"):
    cfg = harness.write("limits.yaml", f"domain: {domain}\n" + dedent(limits))
    svc = harness.service(cfg)
    return svc, harness.envoy(svc, domain)


def test_requests_limit_enforced_with_openai_headers_and_body(harness):
    _, envoy = start(harness, """
        descriptors:
          - key: tenant
            value: t-basic
            rate_limit: {unit: hour, requests_per_unit: 3, algorithm: fixed}
    """)
    for i in range(3):
        r = envoy.chat("t-basic")
        assert_status(r, 200, envoy)
        assert json_body(r)["object"] == "chat.completion", "the upstream's body must pass through"
        limit, remaining, reset = rl_headers(r, "requests")
        assert (limit, remaining) == (3, 2 - i), f"request {i + 1}: {dict(r.headers)}"
        assert reset.strip(), "x-ratelimit-reset-requests is empty"
        assert "x-ratelimit-limit-tokens" not in r.headers, "no token limit matched, no -tokens headers"
    for _ in range(2):  # the 4th and 5th: still rejected, and rejected requests are not counted
        r = envoy.chat("t-basic")
        body = assert_openai_429(r, "requests", envoy)
        limit, remaining, _ = rl_headers(r, "requests")
        assert (limit, remaining) == (3, 0), dict(r.headers)
        assert "rate" in body["error"]["message"].lower() or "limit" in body["error"]["message"].lower()
    envoy.assert_service_answered_every_call()
    s = envoy.rl_stats()
    assert (s["ok"], s["over_limit"]) == (3, 2), s


def test_429_is_served_as_json(harness):
    _, envoy = start(harness, """
        descriptors:
          - key: tenant
            value: t-json
            rate_limit: {unit: hour, requests_per_unit: 1, algorithm: fixed}
    """)
    assert_status(envoy.chat("t-json"), 200, envoy)
    r = envoy.chat("t-json")
    assert_status(r, 429, envoy)
    assert r.headers.get("content-type", "").startswith("application/json"), (
        f"OpenAI SDKs expect a JSON error; content-type was {r.headers.get('content-type')!r}")


def test_token_limit_from_hits_addend_header(harness):
    _, envoy = start(harness, """
        descriptors:
          - key: tenant
            value: t-tok
            rate_limit: {unit: hour, requests_per_unit: 100, algorithm: fixed}
            descriptors:
              - key: kind
                value: tokens
                rate_limit: {unit: hour, requests_per_unit: 1000, algorithm: fixed, kind: tokens}
    """)
    r = envoy.chat("t-tok", tokens=400)
    assert_status(r, 200, envoy)
    assert rl_headers(r, "tokens")[:2] == (1000, 600), dict(r.headers)
    assert rl_headers(r, "requests")[:2] == (100, 99), dict(r.headers)

    r = envoy.chat("t-tok", tokens=600)  # exactly at the limit: admitted
    assert_status(r, 200, envoy)
    assert rl_headers(r, "tokens")[:2] == (1000, 0), dict(r.headers)
    assert rl_headers(r, "requests")[:2] == (100, 98), dict(r.headers)

    r = envoy.chat("t-tok", tokens=1)
    assert_openai_429(r, "tokens", envoy)
    assert rl_headers(r, "tokens")[:2] == (1000, 0), dict(r.headers)

    # Without x-llm-tokens Envoy sends only the requests descriptor: admitted, no -tokens headers,
    # and the rejected token request above did not charge the request counter (98 -> 97).
    r = envoy.chat("t-tok")
    assert_status(r, 200, envoy)
    assert rl_headers(r, "requests")[:2] == (100, 97), dict(r.headers)
    assert "x-ratelimit-limit-tokens" not in r.headers, dict(r.headers)
    envoy.assert_service_answered_every_call()


def test_large_token_request_rejected_without_charging(harness):
    _, envoy = start(harness, """
        descriptors:
          - key: tenant
            value: t-big
            rate_limit: {unit: hour, requests_per_unit: 10, algorithm: fixed}
            descriptors:
              - key: kind
                value: tokens
                rate_limit: {unit: hour, requests_per_unit: 500, algorithm: fixed, kind: tokens}
    """)
    for _ in range(3):  # each alone is over the limit: never admitted, never charged
        body = assert_openai_429(envoy.chat("t-big", tokens=501), "tokens", envoy, retry_after_required=False)
        assert "501" in body["error"]["message"], body
    r = envoy.chat("t-big", tokens=500)
    assert_status(r, 200, envoy)
    assert rl_headers(r, "tokens")[:2] == (500, 0), dict(r.headers)
    assert rl_headers(r, "requests")[:2] == (10, 9), dict(r.headers)
    envoy.assert_service_answered_every_call()


def test_all_or_nothing_across_descriptors(harness):
    _, envoy = start(harness, """
        descriptors:
          - key: tenant
            value: t-aon
            rate_limit: {unit: hour, requests_per_unit: 5, algorithm: fixed}
          - key: generic_key
            value: model
            descriptors:
              - key: model
                value: m-small
                rate_limit: {unit: hour, requests_per_unit: 2, algorithm: fixed}
    """)
    for _ in range(2):
        assert_status(envoy.chat("t-aon", model="m-small"), 200, envoy)
    for _ in range(4):  # the model limit rejects these; the tenant counter must not move
        assert_openai_429(envoy.chat("t-aon", model="m-small"), "requests", envoy)
    admitted = []
    for _ in range(5):
        r = envoy.chat("t-aon")
        admitted.append(r.status_code)
        if r.status_code == 200 and len(admitted) == 1:
            assert rl_headers(r, "requests")[:2] == (5, 2), dict(r.headers)
    assert admitted == [200, 200, 200, 429, 429], (
        f"tenant t-aon (5/hour) had 2 admitted requests; rejected ones must not count: {admitted}")
    envoy.assert_service_answered_every_call()


def test_tenants_are_isolated(harness):
    _, envoy = start(harness, """
        descriptors:
          - key: tenant
            rate_limit: {unit: hour, requests_per_unit: 2, algorithm: fixed}
    """)
    assert [envoy.chat("tenant-a").status_code for _ in range(4)] == [200, 200, 429, 429]
    r = envoy.chat("tenant-b")
    assert_status(r, 200, envoy)
    assert rl_headers(r, "requests")[:2] == (2, 1), dict(r.headers)
    assert_status(envoy.chat("tenant-b"), 200, envoy)
    assert_openai_429(envoy.chat("tenant-b"), "requests", envoy)
    # Still exhausted, and a request without x-tenant produces no descriptor at all.
    assert_status(envoy.chat("tenant-a"), 429, envoy)
    assert_status(envoy.chat(None), 200, envoy)
    envoy.assert_service_answered_every_call()


def test_specific_value_beats_wildcard_and_unknown_keys_pass(harness):
    _, envoy = start(harness, """
        descriptors:
          - key: tenant
            value: vip
            rate_limit: {unit: hour, requests_per_unit: 4, algorithm: fixed}
          - key: tenant
            rate_limit: {unit: hour, requests_per_unit: 1, algorithm: fixed}
    """)
    codes = [envoy.chat("vip").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 200, 429], codes
    codes = [envoy.chat("someone").status_code for _ in range(2)]
    assert codes == [200, 429], codes
    # A descriptor the config does not know (model) is not limited.
    assert all(envoy.chat(None, model="m-any").status_code == 200 for _ in range(3))
    envoy.assert_service_answered_every_call()


def test_unlimited_and_shadow_mode(harness):
    _, envoy = start(harness, """
        descriptors:
          - key: tenant
            value: t-unlimited
            rate_limit: {unlimited: true}
          - key: tenant
            value: t-shadow
            shadow_mode: true
            rate_limit: {unit: hour, requests_per_unit: 1, algorithm: fixed}
    """)
    codes = [envoy.chat("t-unlimited").status_code for _ in range(8)]
    assert codes == [200] * 8, codes
    codes = [envoy.chat("t-shadow").status_code for _ in range(4)]
    assert codes == [200] * 4, f"shadow_mode limits must never reject: {codes}"
    envoy.assert_service_answered_every_call()


@pytest.mark.parametrize("algorithm", ["sliding", None])
def test_sliding_window_default_enforces_within_window(harness, algorithm):
    algo = f", algorithm: {algorithm}" if algorithm else ""
    _, envoy = start(harness, f"""
        descriptors:
          - key: tenant
            value: t-slide
            rate_limit: {{unit: hour, requests_per_unit: 3{algo}}}
    """)
    codes = [envoy.chat("t-slide").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429], codes
    envoy.assert_service_answered_every_call()
