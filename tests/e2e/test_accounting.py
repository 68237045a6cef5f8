"""Token accounting end to end: real Envoy with the built filter, ratelimit-service, the mock
providers' usage ledgers. Reservations at admission, corrections from the filter's usage
reports (llmgateway.usage.v1), budgets, the llm_* metrics and the access log."""

import json
import threading
import time

import requests

from conftest import PRO_KEY, wait_until

DOMAIN = "llm-gateway"
# demo-pro's limits with a small token limit in a fixed window (no decay while the test runs)
# and a budget; demo-free unchanged.
LIMITS = """
domain: llm-gateway
descriptors:
  - key: tenant
    value: demo-pro
    rate_limit: {unit: minute, requests_per_unit: 100000}
    descriptors:
      - key: kind
        value: tokens
        rate_limit: {unit: day, requests_per_unit: %(tokens)d, kind: tokens, algorithm: fixed}
      - key: model
        value: gpt-4o-mini
        descriptors:
          - key: kind
            value: tokens
            rate_limit: {unit: day, requests_per_unit: 100000000, kind: tokens, algorithm: fixed}
      - key: kind
        value: budget
        rate_limit: {unit: day, budget: %(budget)s}
"""


def limits(harness, tokens=100_000_000, budget="1000.00"):
    path = harness.tmp / "limits.yaml"
    path.write_text(LIMITS % {"tokens": tokens, "budget": budget})
    return path


def used(gw, *entries):
    return gw.service.usage(DOMAIN, "tenant=demo-pro", *entries)["used"]


def mock_total(gw):
    """Tokens every mock charged (prompt + completion), and the number of requests."""
    us = [m.usage() for m in gw.mocks.values()]
    return sum(u["total_tokens"] for u in us), sum(u["requests"] for u in us)


def reports(gw, result="applied"):
    return gw.service.metric_value("llm_usage_reports_total", {"result": result}) or 0


def test_refund_frees_the_unused_part_of_a_reservation(harness, gateway):
    gw = gateway(limits=limits(harness, tokens=1500))
    # Estimate: 1000 tokens (prompt + max_tokens); the mock produces 5 completion tokens.
    r = gw.chat(max_tokens=992, content="hi", headers={"x-mock-completion-tokens": "5"})
    assert r.status_code == 200, r.text
    estimate = 1000
    real = r.json()["usage"]["total_tokens"]
    assert real < 100
    assert "x-llm-reserved-at" not in r.headers, "the service's internal header reached the client"
    wait_until(lambda: used(gw, "kind=tokens") == real, 10, what="the usage report")
    # Without the refund, 1000 + 1000 would be over the 1500 limit.
    r = gw.chat(max_tokens=992, content="hi")
    assert r.status_code == 200, r.text
    assert estimate + real > 1500 - estimate


def test_budget_spent_is_a_429_that_says_so(harness, gateway):
    # gpt-4o-mini: 0.15 / 0.60 per 1M tokens. A request reserving ~1M output tokens costs 0.60.
    gw = gateway(limits=limits(harness, budget="1.00"))
    r = gw.chat(max_tokens=1_000_000, headers={"x-mock-completion-tokens": "3"})
    assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-limit-budget"] == "1.00"
    assert float(r.headers["x-ratelimit-remaining-budget"]) < 0.41
    wait_until(lambda: reports(gw) >= 1, 10, what="the usage report")
    # The real cost is a few millionths: the budget is nearly whole again.
    spent = gw.service.usage(DOMAIN, "tenant=demo-pro", "kind=budget")["used"]
    assert spent < 100, spent
    r = gw.chat(max_tokens=1_000_000)
    assert r.status_code == 200
    wait_until(lambda: reports(gw) >= 2, 10, what="the second usage report")
    # Two such reservations at once do not fit: the second is refused with OpenAI's quota error.
    gw.mocks["openai-a"].program_faults({"latency_ms": 1500, "count": 1})
    gw.mocks["openai-b"].program_faults({"latency_ms": 1500, "count": 1})
    first = {}
    t = threading.Thread(target=lambda: first.update(r=gw.chat(max_tokens=1_000_000)))
    t.start()
    time.sleep(0.5)
    r = gw.chat(max_tokens=1_000_000)
    t.join()
    assert first["r"].status_code == 200
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert err["code"] == "insufficient_quota" and err["type"] == "insufficient_quota"
    assert "budget" in err["message"] and "is spent" in err["message"], err
    wait_until(lambda: gw.service.metric_value("llm_rate_limit_exceeded_total",
                                               {"tenant": "demo-pro", "kind": "budget"}) == 1, 5,
               what="llm_rate_limit_exceeded_total{kind=budget}")
