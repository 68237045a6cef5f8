"""Every Envoy config the project ships or the tests generate passes `envoy --mode validate`."""

import pytest

from conftest import DEMO_ENVOY, ENVOY_BIN, REPO, envoy_validate, free_port, render_envoy_config

SHIPPED = sorted((REPO / "envoy").glob("*.yaml"))


def test_envoy_binary_is_1_40():
    import subprocess

    out = subprocess.run([str(ENVOY_BIN), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "/1.40." in out.stdout, out.stdout


def test_shipped_envoy_configs_validate():
    """scripts/validate-envoy.sh (also `make validate-envoy`): every envoy/*.yaml, the production
    example with its /etc/llm-gateway mounts pointed at placeholders."""
    import subprocess

    r = subprocess.run([str(REPO / "scripts" / "validate-envoy.sh")], capture_output=True, text=True,
                       timeout=120, env={"PATH": "/usr/bin:/bin", "ENVOY": str(ENVOY_BIN)})
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    for path in SHIPPED:
        assert f"envoy config OK: envoy/{path.name}" in r.stdout, r.stdout


def test_demo_envoy_config_is_shipped():
    assert DEMO_ENVOY in SHIPPED


@pytest.mark.parametrize("rls_count,health_check", [(1, False), (2, False), (1, True)])
def test_generated_envoy_config_validates(tmp_path, rls_count, health_check):
    text = render_envoy_config(listen_port=free_port(), upstream_port=free_port(), admin_port=free_port(),
                               rls_ports=[free_port() for _ in range(rls_count)], domain="e2e-generated",
                               rls_health_check=health_check)
    assert text.count("port_value") == 4 + rls_count
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    r = envoy_validate(path)
    assert r.returncode == 0, f"{text}\n{r.stdout}\n{r.stderr}"
