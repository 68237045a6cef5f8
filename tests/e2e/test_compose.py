"""docker-compose.yml: no Docker engine runs here, so check what can be checked without one: the
file validates (`docker-compose config`), and every Dockerfile, build context and mounted file it
names exists in the repository, as do the files those Dockerfiles COPY."""

import shutil
import subprocess

import pytest
import yaml

from conftest import REPO

COMPOSE = REPO / "docker-compose.yml"


@pytest.fixture(scope="module")
def config() -> dict:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose not installed (make deps installs Debian's docker-compose)"
    r = subprocess.run([exe, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def test_compose_file_validates(config):
    assert {"redis", "ratelimit", "envoy", "openai-a", "openai-b", "anthropic"} <= set(config["services"])


def test_builds_and_mounts_exist(config):
    for name, svc in config["services"].items():
        build = svc.get("build")
        if build:
            context = REPO / build["context"]
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            assert context.is_dir(), f"{name}: build context {context}"
            assert dockerfile.is_file(), f"{name}: {dockerfile}"
            for line in dockerfile.read_text().splitlines():
                words = line.split()
                if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
                    for src in words[1:-1]:
                        assert (context / src).exists(), f"{name}: {dockerfile.name} copies missing {src}"
        for volume in svc.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            assert (REPO / source).exists(), f"{name}: mounts missing {source}"


def test_envoy_image_serves_the_demo_config(config):
    dockerfile = (REPO / "wasm-filter" / "Dockerfile").read_text()
    assert "envoy/demo.yaml" in dockerfile
    demo = (REPO / "envoy" / "demo.yaml").read_text()
    assert "target/wasm32-wasip1/release/llm_gateway_filter.wasm" in demo, "the image puts the .wasm there"
