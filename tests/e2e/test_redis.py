"""Redis store: several service processes share one limit; Redis failures and the failure modes;
atomic admission under concurrency (Redis and memory)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import assert_openai_429, assert_status, json_body, rl_headers, store_state, wait_until

SHARED = """
domain: e2e
descriptors:
  - key: tenant
    value: shared-sliding
    rate_limit: {unit: hour, requests_per_unit: 4}
  - key: tenant
    rate_limit: {unit: hour, requests_per_unit: 6, algorithm: fixed}
"""


def test_two_services_one_redis_enforce_one_global_limit(harness):
    redis = harness.redis()
    cfg = harness.write("limits.yaml", SHARED)
    svc1 = harness.service(cfg, store="redis", redis_url=redis.url)
    svc2 = harness.service(cfg, store="redis", redis_url=redis.url)
    envoy_a = harness.envoy(svc1, "e2e")
    envoy_b = harness.envoy(svc2, "e2e")

    remaining = []
    for i in range(6):
        r = (envoy_a if i % 2 == 0 else envoy_b).chat("global")
        assert_status(r, 200, envoy_a if i % 2 == 0 else envoy_b)
        remaining.append(rl_headers(r, "requests")[1])
    assert remaining == [5, 4, 3, 2, 1, 0], f"one counter across both services expected: {remaining}"
    assert_openai_429(envoy_a.chat("global"), "requests", envoy_a)
    assert_openai_429(envoy_b.chat("global"), "requests", envoy_b)

    # One Envoy balancing over both services sees the same counters.
    envoy_c = harness.envoy([svc1, svc2], "e2e")
    assert_status(envoy_c.chat("global"), 429, envoy_c)
    codes = [envoy_c.chat("other").status_code for _ in range(8)]
    assert codes == [200] * 6 + [429] * 2, codes

    # The default (sliding) window on Redis, alternating services.
    codes = [(envoy_a, envoy_b)[i % 2].chat("shared-sliding").status_code for i in range(6)]
    assert codes == [200] * 4 + [429] * 2, codes

    for e in (envoy_a, envoy_b, envoy_c):
        e.assert_service_answered_every_call()
    assert svc1.proc.alive() and svc2.proc.alive()


@pytest.mark.parametrize("store", ["redis", "memory"])
def test_concurrent_requests_admit_exactly_the_limit(harness, store):
    """Atomic check-and-charge under concurrency: Redis with two services, memory with one."""
    cfg = harness.write("limits.yaml", """
        domain: e2e
        descriptors:
          - key: tenant
            rate_limit: {unit: hour, requests_per_unit: 12, algorithm: fixed}
            descriptors:
              - key: kind
                value: tokens
                rate_limit: {unit: hour, requests_per_unit: 1000, algorithm: fixed, kind: tokens}
    """)
    if store == "redis":
        redis = harness.redis()
        svc1 = harness.service(cfg, store="redis", redis_url=redis.url)
        svc2 = harness.service(cfg, store="redis", redis_url=redis.url)
    else:
        svc1 = svc2 = harness.service(cfg)
    envoys = [harness.envoy(svc1, "e2e"), harness.envoy(svc2, "e2e")]
    local = threading.local()

    def one(i: int, tenant: str, tokens: int | None) -> int:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return envoys[i % 2].chat(tenant, tokens=tokens, session=local.session).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(lambda i: one(i, "burst", None), range(30)))
        assert codes.count(200) == 12 and codes.count(429) == 18, codes
        # Tokens: 100 each against 1000, so exactly 10 of 25 fit (requests allow 12).
        codes = list(pool.map(lambda i: one(i, "burst-tokens", 100), range(25)))
        assert codes.count(200) == 10 and codes.count(429) == 15, codes
    for e in envoys:
        e.assert_service_answered_every_call()


def test_redis_down_fails_open_and_recovers_without_restart(harness):
    redis = harness.redis()
    cfg = harness.write("limits.yaml", """
        domain: e2e
        descriptors:
          - key: tenant
            rate_limit: {unit: hour, requests_per_unit: 3, algorithm: fixed}
    """)
    svc = harness.service(cfg, store="redis", redis_url=redis.url, failure_mode="open")
    envoy = harness.envoy(svc, "e2e")
    h = svc.healthz()
    assert h.status_code == 200, h.text
    assert store_state(json_body(h)) == "up", f"/healthz with Redis up: {h.text}"

    assert [envoy.chat("t").status_code for _ in range(4)] == [200, 200, 200, 429]
    redis.kill()

    before = envoy.rl_stats()
    for _ in range(5):
        assert_status(envoy.chat("t"), 200, envoy)
        time.sleep(0.05)
    after = envoy.rl_stats()
    svc.proc.check_alive()
    assert after["error"] == before["error"] and after["failure_mode_allowed"] == before["failure_mode_allowed"], (
        f"the service itself must answer OK when failing open (Envoy saw errors): {before} -> {after}")
    assert after["ok"] == before["ok"] + 5, (before, after)

    def reports_down():
        r = svc.healthz()
        return r.status_code == 200 and store_state(json_body(r)) == "down"

    try:
        wait_until(reports_down, 10, interval=0.25, what="/healthz to report the store down")
    except TimeoutError:
        r = svc.healthz()
        raise AssertionError(f"/healthz with Redis down, failure mode open: {r.status_code} {r.text}") from None
    open_metrics = svc.metrics()
    assert "ratelimit_" in open_metrics

    redis.start()  # same port, empty: counters start again from zero

    def enforced_again():
        return envoy.chat("t").status_code == 429

    wait_until(enforced_again, 30, interval=0.2, what="limits enforced again after Redis came back")
    wait_until(lambda: store_state(json_body(svc.healthz())) == "up", 10, interval=0.25,
               what="/healthz to report the store up again")
    svc.proc.check_alive()
    assert svc.proc.returncode() is None
    # Fresh counters after the recovery: a new tenant gets exactly its 3.
    codes = [envoy.chat("fresh").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429], codes


def test_failure_mode_closed_reports_unhealthy_then_recovers(harness):
    redis_port_holder = harness.redis()
    port = redis_port_holder.port
    redis_port_holder.kill()  # a port where Redis will appear later
    cfg = harness.write("limits.yaml", """
        domain: e2e
        descriptors:
          - key: tenant
            rate_limit: {unit: hour, requests_per_unit: 2, algorithm: fixed}
    """)
    svc = harness.service(cfg, store="redis", redis_url=f"redis://127.0.0.1:{port}", failure_mode="closed")

    def unhealthy():
        return svc.healthz().status_code == 503

    wait_until(unhealthy, 10, interval=0.25, what="/healthz 503 with failure mode closed and no Redis")
    svc.proc.check_alive()
    assert store_state(json_body(svc.healthz())) == "down", svc.healthz().text

    # Closed: the service itself rejects (a 429 through Envoy, not an error Envoy fails open on).
    envoy = harness.envoy(svc, "e2e")
    for _ in range(3):
        assert_status(envoy.chat("t"), 429, envoy)
    envoy.assert_service_answered_every_call()

    redis_port_holder.start()
    wait_until(lambda: svc.healthz().status_code == 200, 30, interval=0.25,
               what="/healthz 200 once Redis is reachable")
    codes = [envoy.chat("t2").status_code for _ in range(3)]
    assert codes == [200, 200, 429], codes
    envoy.assert_service_answered_every_call()


def test_failure_mode_envoy_leaves_the_decision_to_envoy(harness):
    """--failure-mode envoy: the service answers UNAVAILABLE; Envoy (failure_mode_deny: false
    here) lets the request through and counts an error."""
    dead = harness.redis()
    dead.kill()
    cfg = harness.write("limits.yaml", """
        domain: e2e
        descriptors:
          - key: tenant
            rate_limit: {unit: hour, requests_per_unit: 1, algorithm: fixed}
    """)
    svc = harness.service(cfg, store="redis", redis_url=dead.url, failure_mode="envoy")
    envoy = harness.envoy(svc, "e2e")
    for _ in range(3):
        assert_status(envoy.chat("t"), 200, envoy)
    s = envoy.rl_stats()
    assert s["error"] == 3 and s["failure_mode_allowed"] == 3, s
    svc.proc.check_alive()
