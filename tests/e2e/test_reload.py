"""Hot reload of the config file or directory; invalid configs are rejected and the old one stays."""

import time

from conftest import assert_status, dedent, metric_value, rl_headers, run_rls, wait_until, write_atomic


def limits(n: int, tenant: str = "t-reload", domain: str = "e2e") -> str:
    return dedent(f"""
        domain: {domain}
        descriptors:
          - key: tenant
            value: {tenant}
            rate_limit: {{unit: hour, requests_per_unit: {n}, algorithm: fixed}}
    """)


INVALID_UNIT = dedent("""
    domain: e2e
    descriptors:
      - key: tenant
        value: t-reload
        rate_limit: {unit: fortnight, requests_per_unit: 1, algorithm: fixed}
""")


def reload_failures(svc) -> float:
    return metric_value(svc.metrics(), "ratelimit_config_reload_total", {"result": "failure"}) or 0.0


def test_file_reload_valid_then_invalid_then_valid(harness):
    cfg = harness.write("limits.yaml", limits(2))
    svc = harness.service(cfg)
    envoy = harness.envoy(svc, "e2e")
    assert [envoy.chat("t-reload").status_code for _ in range(3)] == [200, 200, 429]

    # Raise the limit: applies within a few seconds, counters carry over (2 already used).
    write_atomic(cfg, limits(5))
    r = wait_until(lambda: (lambda r: r if r.status_code == 200 else None)(envoy.chat("t-reload")), 10,
                   interval=0.2, what="the raised limit (5) to apply")
    assert rl_headers(r, "requests")[:2] == (5, 2), f"counters should survive a reload: {dict(r.headers)}"
    assert [envoy.chat("t-reload").status_code for _ in range(3)] == [200, 200, 429]

    # An invalid file: rejected, counted, and the old config (5) stays in force.
    failures_before = reload_failures(svc)
    write_atomic(cfg, INVALID_UNIT)
    wait_until(lambda: reload_failures(svc) > failures_before, 10, interval=0.2,
               what='ratelimit_config_reload_total{result="failure"} to increase')
    time.sleep(0.5)
    r = envoy.chat("t-reload")
    assert_status(r, 429, envoy)
    assert rl_headers(r, "requests")[0] == 5, f"the old config must stay in force: {dict(r.headers)}"
    assert svc.healthz().status_code == 200, "the old config is still valid and loaded"
    svc.proc.check_alive()

    v = run_rls("validate", "--config", str(cfg))
    out = v.stdout + v.stderr
    assert v.returncode != 0, out
    assert "limits.yaml" in out and "descriptors[0].rate_limit.unit" in out and "fortnight" in out, out
    # The service logged the same message as `validate` (from the file path on).
    line = next(ln for ln in out.splitlines() if "descriptors[0].rate_limit.unit" in ln)
    message = line[line.index(str(cfg)):].strip()
    assert message in svc.proc.log_text(), f"expected in the service log: {message!r}"

    # A valid file again: the watcher is still alive after the failure.
    write_atomic(cfg, limits(7))
    r = wait_until(lambda: (lambda r: r if r.status_code == 200 else None)(envoy.chat("t-reload")), 10,
                   interval=0.2, what="the limit 7 to apply")
    assert rl_headers(r, "requests")[:2] == (7, 1), dict(r.headers)
    envoy.assert_service_answered_every_call()


def test_in_place_edit_is_picked_up(harness):
    cfg = harness.write("limits.yaml", limits(1))
    svc = harness.service(cfg)
    envoy = harness.envoy(svc, "e2e")
    assert [envoy.chat("t-reload").status_code for _ in range(2)] == [200, 429]
    with open(cfg, "w") as f:  # truncate + write, like `echo > file` or many editors
        f.write(limits(3))
    wait_until(lambda: envoy.chat("t-reload").status_code == 200, 10, interval=0.2, what="the edited limit")
    envoy.assert_service_answered_every_call()


def test_directory_config_two_domains_and_reload(harness):
    d = harness.tmp / "limits.d"
    harness.write("limits.d/alpha.yaml", limits(1, tenant="t", domain="alpha"))
    harness.write("limits.d/beta.yaml", limits(2, tenant="t", domain="beta"))
    v = run_rls("validate", "--config", str(d))
    assert v.returncode == 0, v.stdout + v.stderr

    svc = harness.service(d)
    alpha = harness.envoy(svc, "alpha")
    beta = harness.envoy(svc, "beta")
    assert [alpha.chat("t").status_code for _ in range(2)] == [200, 429]
    assert [beta.chat("t").status_code for _ in range(3)] == [200, 200, 429]

    write_atomic(d / "beta.yaml", limits(3, tenant="t", domain="beta"))
    wait_until(lambda: beta.chat("t").status_code == 200, 10, interval=0.2, what="beta's raised limit")
    assert beta.chat("t").status_code == 429
    assert alpha.chat("t").status_code == 429, "alpha untouched by beta's reload"

    # A new file in the directory adds a domain.
    gamma = harness.envoy(svc, "gamma")
    assert [gamma.chat("t").status_code for _ in range(3)] == [200, 200, 200], "unknown domain: no limits"
    harness.write("limits.d/gamma.yaml", limits(1, tenant="t", domain="gamma"))
    wait_until(lambda: gamma.chat("t").status_code == 429, 10, interval=0.2, what="gamma.yaml to be loaded")
    for e in (alpha, beta, gamma):
        e.assert_service_answered_every_call()
