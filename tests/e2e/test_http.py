"""The service's HTTP side (/healthz, /healthcheck, /metrics), env-var configuration, log format."""

import json

from conftest import DEMO_LIMITS, dedent, json_body, parse_metrics, store_state, wait_until

LIMITS = """
    domain: e2e
    descriptors:
      - key: tenant
        rate_limit: {unit: hour, requests_per_unit: 2, algorithm: fixed}
"""


def test_healthz_healthcheck_and_metrics(harness):
    svc = harness.service(harness.write("limits.yaml", LIMITS))
    for path in ("/healthz", "/healthcheck"):
        r = svc.get(path)
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text}"
        body = json_body(r)
        assert isinstance(body, dict), body
        assert store_state(body) != "down", f"{path} with the memory store: {body}"

    envoy = harness.envoy(svc, "e2e")
    assert [envoy.chat("t").status_code for _ in range(3)] == [200, 200, 429]

    r = svc.get("/metrics")
    assert r.status_code == 200, r.text[:300]
    assert r.headers.get("content-type", "").startswith("text/plain"), r.headers
    samples = parse_metrics(r.text)
    names = {n for n, _, _ in samples}
    ours = sorted(n for n in names if n.startswith("ratelimit_"))
    assert ours, f"no ratelimit_* metrics: {sorted(names)}"
    others = sorted(n for n in names if not n.startswith(("ratelimit_", "llm_")))
    assert not others, f"metric names must be prefixed ratelimit_: {others}"
    # Traffic happened: some ratelimit_ counter is non-zero.
    assert any(v > 0 for n, _, v in samples if n.startswith("ratelimit_")), r.text[:2000]


def test_configured_through_environment_only(harness):
    svc = harness.service(harness.write("limits.yaml", LIMITS), via_env=True)
    assert svc.healthz().status_code == 200
    envoy = harness.envoy(svc, "e2e")
    assert [envoy.chat("t").status_code for _ in range(3)] == [200, 200, 429]
    envoy.assert_service_answered_every_call()


def test_json_logs(harness):
    svc = harness.service(harness.write("limits.yaml", LIMITS), log_format="json")
    envoy = harness.envoy(svc, "e2e")
    envoy.chat("t")
    svc.proc.stop()
    lines = [ln for ln in svc.proc.log_text().splitlines()[1:] if ln.strip()]  # [0] is our "$ argv"
    assert lines, "the service logged nothing"
    for ln in lines:
        try:
            json.loads(ln)
        except ValueError:
            raise AssertionError(f"not a JSON log line: {ln!r}") from None


def test_start_with_invalid_config_is_refused_or_unhealthy(harness):
    """Either the service refuses to start (non-zero exit naming the problem) or it runs and
    /healthz answers 503 because no valid config is loaded."""
    cfg = harness.write("limits.yaml", dedent("""
        domain: e2e
        descriptors:
          - key: tenant
            rate_limit: {unit: hour, requests_per_unit: -3}
    """))
    svc = harness.service(cfg, wait=False)

    def settled():
        if not svc.proc.alive():
            return "exited"
        try:
            return "http" if svc.healthz() is not None else None
        except Exception:  # noqa: BLE001
            return None

    how = wait_until(settled, 20, interval=0.2, what="the service to exit or answer /healthz")
    if how == "exited":
        assert svc.proc.returncode() != 0
        log = svc.proc.log_text()
        assert "limits.yaml" in log and "requests_per_unit" in log, log
    else:
        r = svc.healthz()
        assert r.status_code == 503, f"no valid config loaded, /healthz must be 503: {r.status_code} {r.text}"


def test_demo_config_serves(harness):
    svc = harness.service(DEMO_LIMITS)
    envoy = harness.envoy(svc, "llm-gateway")
    r = envoy.chat("demo-free", tokens=100)
    assert r.status_code == 200, r.text
    assert r.headers.get("x-ratelimit-limit-requests") == "10", dict(r.headers)
    assert r.headers.get("x-ratelimit-limit-tokens") == "2000", dict(r.headers)
    r = envoy.chat("demo-pro", tokens=100)
    assert r.headers.get("x-ratelimit-limit-requests") == "600", dict(r.headers)
    assert r.headers.get("x-ratelimit-limit-tokens") == "100000", dict(r.headers)
    envoy.assert_service_answered_every_call()


def test_grpc_health_seen_by_envoy_active_health_check(harness):
    """grpc.health.v1 checked the way production uses it: Envoy's active health check of the
    ratelimit cluster (no gRPC client library needed here)."""
    svc = harness.service(harness.write("limits.yaml", LIMITS))
    envoy = harness.envoy(svc, "e2e", rls_health_check=True)
    flag = f"ratelimit::127.0.0.1:{svc.grpc_port}::health_flags::healthy"

    def healthy():
        stats = envoy.stats(r"^cluster\.ratelimit\.health_check\.")
        return stats.get("cluster.ratelimit.health_check.success", 0) > 0 and flag in envoy.admin("/clusters")

    wait_until(healthy, 10, interval=0.25, what="Envoy's gRPC health check of the service to pass")
    stats = envoy.stats(r"^cluster\.ratelimit\.health_check\.")
    assert stats.get("cluster.ratelimit.health_check.failure", 0) == 0, stats
    assert [envoy.chat("t").status_code for _ in range(3)] == [200, 200, 429]
