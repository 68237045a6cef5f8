"""SIGTERM: the service stops taking new work, answers the calls already in flight, then exits 0."""

import os
import signal
import threading

from conftest import assert_status, wait_until

LIMITS = """
domain: e2e
descriptors:
  - key: tenant
    rate_limit: {unit: hour, requests_per_unit: 5, algorithm: fixed}
"""


def test_sigterm_drains_in_flight_calls(harness):
    redis = harness.redis()
    cfg = harness.write("limits.yaml", LIMITS)
    # A long store timeout so a call can be held in flight while Redis is paused.
    svc = harness.service(cfg, store="redis", redis_url=redis.url, failure_mode="envoy",
                          env={"RLS_STORE_TIMEOUT_MS": "8000"})
    envoy = harness.envoy(svc, "e2e", timeout="10s")
    assert_status(envoy.chat("t"), 200, envoy)

    os.kill(redis.proc.pid, signal.SIGSTOP)  # the next check waits inside the store
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", envoy.chat("t")))
    t.start()
    try:
        wait_until(lambda: svc.metric_value("ratelimit_requests_total") == 1 or None, 5,
                   what="the first call to be counted")
        # The second call is now in flight (not counted until it finishes).
        wait_until(lambda: envoy.stats("ratelimit")
                   .get("cluster.ratelimit.upstream_rq_active", 0) >= 1 or None, 5,
                   what="the check to be in flight")
        os.kill(svc.proc.pid, signal.SIGTERM)
        wait_until(lambda: "draining in-flight calls" in svc.proc.log_text() or None, 5,
                   what="the service to start draining")
        assert svc.proc.alive(), "the service must wait for the call in flight"
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    t.join(15)
    r = result["r"]
    assert_status(r, 200, envoy)
    assert r.headers["x-ratelimit-remaining-requests"] == "3", "the drained call was decided by the store"
    wait_until(lambda: not svc.proc.alive() or None, 10, what="the service to exit")
    assert svc.proc.returncode() == 0, svc.proc.log_text()
    envoy.assert_service_answered_every_call()
