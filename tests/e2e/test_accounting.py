"""Token accounting end to end: real Envoy with the built filter, ratelimit-service, the mock
providers' usage ledgers. Reservations at admission, corrections from the filter's usage
reports (llmgateway.usage.v1), budgets, the llm_* metrics and the access log."""

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import PRO_KEY, metric_value, wait_until

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


def access_log(path):
    """The service's access-log lines (JSON), oldest first."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stream_chat(gw, body, headers=None, stop_after=None):
    """Streams a chat completion; returns (content deltas seen, usage chunks seen). With
    `stop_after`, the connection is closed after that many non-empty content deltas."""
    h = {"authorization": f"Bearer {PRO_KEY}", **(headers or {})}
    deltas, usages = [], []
    with requests.post(gw.url + "/v1/chat/completions", json={"stream": True, **body}, headers=h,
                       stream=True, timeout=30) as r:
        assert r.status_code == 200, r.text
        for line in r.iter_lines():
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usages.append(chunk["usage"])
            for c in chunk.get("choices", []):
                if c.get("delta", {}).get("content"):
                    deltas.append(c["delta"]["content"])
            if stop_after is not None and len(deltas) >= stop_after:
                break
    return deltas, usages


def test_a_cut_stream_is_charged_for_what_was_streamed(harness, gateway):
    log = harness.tmp / "access.log"
    gw = gateway(limits=limits(harness), service_args=["--access-log", str(log)])
    body = {"model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "count for me"}]}
    # The provider streams 3 tokens and stalls; the client gives up and closes the connection.
    deltas, _ = stream_chat(gw, body, headers={"x-mock-stream-stall-after": "3"}, stop_after=3)
    assert deltas == ["tok0", " tok1", " tok2"]
    wait_until(lambda: access_log(log), 10, what="the cut stream's report")
    (entry,) = access_log(log)
    assert entry["usage_source"] == "counted", entry
    # Each streamed piece is two o200k tokens (a unit test pins that down).
    assert entry["completion_tokens"] == 6, entry
    assert entry["prompt_tokens"] == entry["estimated_tokens"] - 50, entry
    assert entry["status"] == 200 and entry["stream"] is True
    assert used(gw, "kind=tokens") == entry["prompt_tokens"] + 6
    # The mock, too, billed only the 3 tokens it sent (by its own word count for the prompt).
    cut = sum(m.usage()["streams_cut"] for m in gw.mocks.values())
    assert cut == 1


def test_streams_get_usage_only_when_the_client_asked(harness, gateway):
    log = harness.tmp / "access.log"
    gw = gateway(limits=limits(harness), service_args=["--access-log", str(log)])
    body = {"model": "gpt-4o-mini", "max_tokens": 7, "messages": [{"role": "user", "content": "a b c"}]}
    deltas, usages = stream_chat(gw, body)
    assert len(deltas) == 7 and usages == [], "the gateway's own usage chunk reached the client"
    deltas, usages = stream_chat(gw, {**body, "stream_options": {"include_usage": True}})
    assert len(usages) == 1 and usages[0]["completion_tokens"] == 7
    # Both were reconciled with the provider's usage, not with a count of the text.
    wait_until(lambda: len(access_log(log)) == 2, 10, what="two reports")
    assert [e["usage_source"] for e in access_log(log)] == ["provider", "provider"]
    total, n = mock_total(gw)
    assert n == 2 and used(gw, "kind=tokens") == total


def test_reports_survive_a_service_restart_and_are_counted_when_dropped(harness, gateway):
    redis = harness.redis()
    gw = gateway(limits=limits(harness), store="redis", redis_url=redis.url)
    svc = gw.service
    # A slow answer: the service is killed and restarted while the request is in flight, so the
    # report's first attempts fail and a retry after the restart applies it.
    for m in gw.mocks.values():
        m.program_faults({"latency_ms": 1500, "count": 1})
    out = {}
    t = threading.Thread(target=lambda: out.update(r=gw.chat(max_tokens=500)))
    t.start()
    time.sleep(0.7)
    svc.proc.kill()
    t.join()
    assert out["r"].status_code == 200, out["r"].text
    time.sleep(0.3)
    svc2 = harness.service(harness.tmp / "limits.yaml", store="redis", redis_url=redis.url,
                           ports=(svc.grpc_port, svc.http_port))
    gw.service = svc2
    real = out["r"].json()["usage"]["total_tokens"]
    wait_until(lambda: used(gw, "kind=tokens") == real, 15, what="the retried report after the restart")
    assert svc2.metric_value("llm_usage_reports_total", {"result": "applied"}) == 1

    # With the service gone for good, reports are retried a bounded number of times, then
    # dropped and counted in Envoy's stats.
    svc2.proc.kill()
    r = gw.chat(max_tokens=5)
    assert r.status_code == 200  # the rate-limit filter fails open
    wait_until(lambda: gw.stats("usage_reports_dropped").get(
        "wasmcustom.llm_gateway.usage_reports_dropped", 0) >= 1, 20, what="the dropped report counted")


def test_token_limit_is_exact_under_concurrency(harness, gateway):
    """Many concurrent clients, random prompts and outputs, streaming or not, OpenAI-style and
    translated to Anthropic, against a small token limit: what was admitted never passes the
    limit by more than one request's estimate, and once every report is in, the counter equals
    the tokens the providers billed, exactly."""
    limit = 4000
    log = harness.tmp / "access.log"
    gw = gateway(limits=limits(harness, tokens=limit), service_args=["--access-log", str(log)])
    rng = random.Random(20261122)
    jobs = []
    for _ in range(160):
        max_tokens = rng.randint(5, 120)
        jobs.append({
            # OpenAI chat as is, chat translated to Anthropic, Anthropic messages as is, messages
            # translated to OpenAI, embeddings.
            "api": rng.choice(["chat", "chat", "messages", "embeddings"]),
            "model": rng.choice(["gpt-4o-mini", "gpt-4o-mini", "claude-haiku"]),
            "content": " ".join(f"w{rng.randint(0, 999)}" for _ in range(rng.randint(1, 60))),
            "max_tokens": max_tokens,
            "completion": rng.randint(1, max_tokens),
            "stream": rng.random() < 0.5,
        })

    def run(job):
        body = {"model": job["model"], "max_tokens": job["max_tokens"], "stream": job["stream"],
                "messages": [{"role": "user", "content": job["content"]}]}
        path = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "embeddings": "/v1/embeddings"}[job["api"]]
        if job["api"] == "embeddings":
            body = {"model": "gpt-4o-mini", "input": job["content"]}
        h = {"authorization": f"Bearer {PRO_KEY}", "x-mock-completion-tokens": str(job["completion"])}
        with requests.post(gw.url + path, json=body, headers=h, stream=True, timeout=60) as r:
            r.content  # read it all: a stream ends with its last event
            return r.status_code

    day = time.gmtime().tm_yday
    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(run, jobs))
    if time.gmtime().tm_yday != day:
        pytest.skip("the run crossed midnight UTC, where the daily window turns over")
    admitted, refused = statuses.count(200), statuses.count(429)
    assert admitted + refused == len(jobs), statuses
    assert admitted >= 20 and refused >= 20, (admitted, refused)

    wait_until(lambda: reports(gw) == len(jobs), 20, what="every request's report")
    billed, n = mock_total(gw)
    assert n == admitted
    entries = access_log(log)
    assert len(entries) == len(jobs)
    largest = max(e["estimated_tokens"] for e in entries if e["status"] == 200)
    assert billed <= limit + largest, (billed, limit, largest)
    assert used(gw, "kind=tokens") == billed
    assert {e["usage_source"] for e in entries if e["status"] == 200} == {"provider"}
    # The per tenant-and-model counter (the model from the filter's state, through Envoy's CEL
    # descriptor) holds exactly what gpt-4o-mini's requests were billed.
    mini = sum(m.usage()["by_model"].get("gpt-4o-mini", {}).get(k, 0)
               for m in gw.mocks.values() for k in ("prompt_tokens", "completion_tokens"))
    assert 0 < mini < billed
    assert used(gw, "model=gpt-4o-mini", "kind=tokens") == mini

    # The same numbers in the metrics, with their labels.
    m = gw.service.metrics()
    tokens = sum(metric_value(m, "llm_tokens_used_total", {"tenant": "demo-pro", "type": t}) or 0
                 for t in ("prompt", "completion"))
    assert tokens == billed
    assert metric_value(m, "llm_requests_total", {"tenant": "demo-pro", "code": "2xx"}) == admitted
    assert metric_value(m, "llm_requests_total", {"tenant": "demo-pro", "code": "4xx"}) == refused
    assert metric_value(m, "llm_rate_limit_exceeded_total", {"tenant": "demo-pro", "kind": "tokens"}) == refused
    assert metric_value(m, "llm_requests_total", {"model": "claude-haiku", "deployment": "anthropic"}) > 0
    assert metric_value(m, "llm_request_duration_seconds_count", {"model": "gpt-4o-mini"}) > 0
    assert metric_value(m, "llm_time_to_first_token_seconds_count", {"model": "gpt-4o-mini"}) > 0
    assert metric_value(m, "llm_cost_total", {"tenant": "demo-pro", "model": "gpt-4o-mini"}) > 0


def test_a_wrong_accounting_cluster_loses_no_request(harness, gateway):
    """A plugin configuration naming a cluster Envoy does not have: requests are served as usual,
    the reports are dropped and counted, and the failure is logged once, not once per tick."""
    gw = gateway(limits=limits(harness),
                 plugin_config=lambda t: t.replace("  cluster: ratelimit\n", "  cluster: nowhere\n", 1))
    for _ in range(3):
        r = gw.chat(max_tokens=5)
        assert r.status_code == 200, r.text
    wait_until(lambda: gw.stats("usage_reports_dropped").get(
        "wasmcustom.llm_gateway.usage_reports_dropped", 0) == 3, 20, what="3 dropped reports")
    assert reports(gw) == 0
    log = gw.proc.log_text()
    assert log.count("cannot call llmgateway.usage.v1.UsageService on cluster 'nowhere'") == 1, log[-2000:]
