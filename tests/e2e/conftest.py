"""Fixtures for the end-to-end suite: real Envoy, real Redis, the real ratelimit-service binary.

Every test gets a `harness` with its own temp dir. The harness starts processes on free loopback
ports chosen at run time, waits until each one is ready, and stops them all (by PID: terminate,
wait, kill) when the test ends. Each process's stdout+stderr goes to `<tmp>/<name>.log`; when a
test fails, the tail of every log is attached to the failure report.

Envoy's bootstrap is the shipped rate-limit-only example (`envoy/ratelimit-only.yaml`) with its ports, rate-limit domain and
timeout replaced, so the tests exercise the same wiring `make run` uses.

The gateway (`gateway` factory fixture, `start_gateway`, module-scoped `shared_gateway` used
through `demo_gateway`) is envoy/demo.yaml itself, rendered onto free ports (every replacement
counted) with the built filter, its own ratelimit-service and three mock providers; see
test_gateway*.py.

Binaries, overridable through the environment (relative paths are taken from the repo root):
  RLS_BIN   target/release/ratelimit-service
  ENVOY     .venv/bin/envoy
  REDIS_SERVER  redis-server on PATH
  MOCK_PROVIDER_BIN  target/release/mock-provider (the `mock_provider` fixture, start_mock_provider)
  WASM      target/wasm32-wasip1/release/llm_gateway_filter.wasm (the gateway)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]


def _repo_path(env: str, default: str) -> Path:
    p = Path(os.environ.get(env) or default)
    return p if p.is_absolute() else REPO / p


RLS_BIN = _repo_path("RLS_BIN", "target/release/ratelimit-service")
ENVOY_BIN = _repo_path("ENVOY", ".venv/bin/envoy")
REDIS_BIN = os.environ.get("REDIS_SERVER") or shutil.which("redis-server") or "redis-server"
DEMO_ENVOY = REPO / "envoy" / "ratelimit-only.yaml"
DEMO_LIMITS = REPO / "envoy" / "ratelimit" / "demo.yaml"

# Envoy's call to the service. Generous so a busy 2-core CI machine does not turn a slow answer
# into Envoy's own fail-open (which would show up as a 200 where a 429 is expected); the tests
# also check Envoy's `ratelimit.error` counter so a masked failure cannot pass silently.
RLS_TIMEOUT = os.environ.get("E2E_RLS_TIMEOUT", "1s")
START_TIMEOUT = 20.0  # seconds for any process to become ready

# --------------------------------------------------------------------------------------------
# small helpers


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nobody listens on right now (bind to 0), never handed out twice."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port")


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(pred: Callable[[], object], timeout: float, interval: float = 0.1, what: str = "condition"):
    """Polls `pred` until it returns something truthy (returned) or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except AssertionError:
            raise  # e.g. the process being waited for has exited: no point in waiting longer
        except Exception as e:  # noqa: BLE001 - the predicate may race with a starting server
            last_exc = e
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def dedent(s: str) -> str:
    return textwrap.dedent(s).lstrip("\n")


def write_atomic(path: Path, text: str) -> None:
    """Writes via a temp file + rename, the way config management tools replace files."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLS_")}
    # A store call slower than this fails open; the default (tens of ms) is right for production
    # but a loaded CI machine can exceed it. Kept below RLS_TIMEOUT so the service, not Envoy,
    # decides. (An environment variable: a binary that does not know it just ignores it.)
    env["RLS_STORE_TIMEOUT_MS"] = os.environ.get("E2E_STORE_TIMEOUT_MS", "500")
    env.setdefault("RUST_LOG", "info")
    env.setdefault("NO_COLOR", "1")  # readable log files
    env["RUST_BACKTRACE"] = "1"
    if extra:
        env.update(extra)
    return env


# --------------------------------------------------------------------------------------------
# processes


class Proc:
    """A child process with its output in a log file; stopped by PID."""

    def __init__(self, name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self._log.write(f"$ {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env if env is not None else _clean_env(),
            cwd=workdir,
            start_new_session=True,  # a Ctrl-C on the test run is handled by our teardown
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def returncode(self) -> int | None:
        return self.popen.poll()

    def stop(self, timeout: float = 5.0) -> None:
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        self._log.close()

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)
        self._log.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def check_alive(self) -> None:
        if not self.alive():
            raise AssertionError(
                f"{self.name} (pid {self.pid}) exited with {self.returncode()}; log:\n{tail(self.log_text(), 60)}"
            )


def tail(text: str, n: int) -> str:
    lines = text.splitlines()
    if len(lines) > n:
        return f"... ({len(lines) - n} earlier lines in the log file)\n" + "\n".join(lines[-n:])
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the three servers


@dataclass
class Redis:
    harness: "Harness"
    port: int
    proc: Proc | None = None
    generation: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> "Redis":
        assert self.proc is None or not self.proc.alive(), "redis already running"
        self.generation += 1
        self.proc = self.harness.spawn(
            f"redis-{self.port}-{self.generation}",
            [REDIS_BIN, "--port", self.port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", self.harness.tmp],
        )
        wait_until(lambda: self.proc.check_alive() or self.ping(), START_TIMEOUT, what=f"redis on {self.port}")
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        wait_until(lambda: not tcp_open(self.port), 5, what="redis port to close")


@dataclass
class Service:
    harness: "Harness"
    proc: Proc
    grpc_port: int
    http_port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.http + path, timeout=kw.pop("timeout", 5), **kw)

    def healthz(self) -> requests.Response:
        return self.get("/healthz")

    def metrics(self) -> str:
        r = self.get("/metrics")
        assert r.status_code == 200, f"/metrics answered {r.status_code}: {r.text[:500]}"
        return r.text

    def metric_value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """Sum of the samples of `name` whose labels include `labels` (None when absent)."""
        return metric_value(self.metrics(), name, labels)

    def usage(self, domain: str, *entries: str) -> dict:
        """GET /v1/usage: the limit `entries` ("key=value") match in `domain`, and what its
        counter holds now (`used`, `remaining`)."""
        r = self.get("/v1/usage", params=[("domain", domain)] + [("entry", e) for e in entries])
        assert r.status_code == 200, f"/v1/usage answered {r.status_code}: {r.text}"
        return r.json()

    def wait_ready(self) -> "Service":
        def ready():
            self.proc.check_alive()
            if not tcp_open(self.grpc_port):
                return False
            self.get("/healthz", timeout=1)  # any status: the HTTP side answers
            return True

        wait_until(ready, START_TIMEOUT, what=f"ratelimit-service (grpc {self.grpc_port}, http {self.http_port})")
        return self


@dataclass
class Envoy:
    harness: "Harness"
    proc: Proc
    port: int
    upstream_port: int
    admin_port: int
    config_path: Path
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def chat(self, tenant: str | None = None, tokens: int | str | None = None, model: str | None = None,
             headers: dict[str, str] | None = None, session: requests.Session | None = None) -> requests.Response:
        """POST /v1/chat/completions through the gateway listener (pass `session` from threads)."""
        h = {"content-type": "application/json"}
        if tenant is not None:
            h["x-tenant"] = tenant
        if tokens is not None:
            h["x-llm-tokens"] = str(tokens)
        if model is not None:
            h["x-model"] = model
        h.update(headers or {})
        body = {"model": model or "demo-model", "messages": [{"role": "user", "content": "hi"}]}
        return (session or self.session).post(self.url + "/v1/chat/completions", headers=h, json=body, timeout=10)

    def stats(self, filter_re: str = "ratelimit") -> dict[str, int]:
        return envoy_stats(self.admin_port, filter_re)

    def admin(self, path: str) -> str:
        r = requests.get(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5)
        r.raise_for_status()
        return r.text

    def rl_stats(self) -> dict[str, int]:
        """The rate-limit filter's counters (charged to the route's cluster, "upstream")."""
        s = self.stats(r"^cluster\.upstream\.ratelimit\.")
        return {k: s.get(f"cluster.upstream.ratelimit.{k}", 0) for k in ("ok", "over_limit", "error", "failure_mode_allowed")}

    def assert_service_answered_every_call(self) -> None:
        """Envoy never had to fail open on its own (the service answered every check)."""
        s = self.rl_stats()
        assert s["error"] == 0 and s["failure_mode_allowed"] == 0, (
            f"Envoy could not get an answer from ratelimit-service for some requests: {s}")


def render_envoy_config(*, listen_port: int, upstream_port: int, admin_port: int, rls_ports: Iterable[int],
                        domain: str, timeout: str = RLS_TIMEOUT, rls_health_check: bool = False) -> str:
    """envoy/ratelimit-only.yaml with its fixed ports, domain and timeout replaced; optionally with an
    active gRPC health check (grpc.health.v1) of the ratelimit cluster.

    Each replaced pattern must occur exactly as often as expected, so a change of the demo that
    the tests would silently stop following fails here instead."""
    text = DEMO_ENVOY.read_text()
    rls_ports = list(rls_ports)
    assert rls_ports

    def sub(pattern: str, repl: str, count: int) -> None:
        nonlocal text
        text, n = re.subn(pattern, lambda _m: repl, text)
        assert n == count, f"envoy/ratelimit-only.yaml: expected {count} match(es) of {pattern!r}, found {n}"

    sub(r"port_value: 9901\b", f"port_value: {admin_port}", 1)
    sub(r"port_value: 10000\b", f"port_value: {listen_port}", 1)
    sub(r"port_value: 10001\b", f"port_value: {upstream_port}", 2)
    endpoints = "\n".join(
        f"        - endpoint:\n            address:\n              socket_address: {{address: 127.0.0.1, port_value: {p}}}"
        for p in rls_ports
    )
    sub(r"        - endpoint:\n            address:\n              socket_address: \{address: 127\.0\.0\.1, port_value: 8081\}",
        endpoints, 1)
    sub(r"\bdomain: llm-gateway\b", f"domain: {domain}", 1)
    sub(r"\btimeout: 0\.25s\b", f"timeout: {timeout}", 1)
    if rls_health_check:
        sub(r"  - name: ratelimit\n    type: STATIC\n    connect_timeout: 1s\n",
            "  - name: ratelimit\n    type: STATIC\n    connect_timeout: 1s\n"
            "    health_checks:\n"
            "    - {timeout: 1s, interval: 0.5s, unhealthy_threshold: 1, healthy_threshold: 1,\n"
            "       grpc_health_check: {service_name: envoy.service.ratelimit.v3.RateLimitService}}\n", 1)
    return text


def envoy_validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(ENVOY_BIN), "--mode", "validate", "-c", str(path), "-l", "error"],
                          capture_output=True, text=True, timeout=60)


def run_rls(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """Runs the service binary to completion (e.g. `validate`)."""
    return subprocess.run([str(RLS_BIN), *args], capture_output=True, text=True, timeout=timeout,
                          env=_clean_env(env), stdin=subprocess.DEVNULL)


# --------------------------------------------------------------------------------------------
# Prometheus text


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+\d+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _SAMPLE.match(line.strip())
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = dict(_LABEL.findall(m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def envoy_stats(admin_port: int, filter_re: str = "") -> dict[str, int]:
    """Envoy's counters and gauges (admin /stats) whose names match `filter_re`."""
    r = requests.get(f"http://127.0.0.1:{admin_port}/stats", params={"filter": filter_re}, timeout=5)
    r.raise_for_status()
    out = {}
    for line in r.text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            out[name] = int(value)
    return out


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    found = None
    for n, ls, v in parse_metrics(text):
        if n == name and all(ls.get(k) == val for k, val in (labels or {}).items()):
            found = (found or 0.0) + v
    return found


# --------------------------------------------------------------------------------------------
# the harness


class Harness:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[Proc] = []

    def spawn(self, name: str, argv: list, env: dict[str, str] | None = None) -> Proc:
        p = Proc(name, argv, self.tmp, env)
        self.procs.append(p)
        return p

    # ---- files

    def write(self, relpath: str, text: str) -> Path:
        p = self.tmp / relpath
        p.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(p, dedent(text))
        return p

    # ---- servers

    def redis(self) -> Redis:
        return Redis(self, free_port()).start()

    def service(self, config: Path, *, store: str = "memory", redis_url: str | None = None,
                failure_mode: str = "open", log_format: str = "text", args: list[str] | None = None, env: dict[str, str] | None = None,
                via_env: bool = False, wait: bool = True, ports: tuple[int, int] | None = None) -> Service:
        """Starts `ratelimit-service run`; flags by default, or only environment variables (via_env).
        `ports` (grpc, http): listen there instead of on free ports (a restart in place)."""
        grpc, http = ports or (free_port(), free_port())
        settings = {
            "RLS_CONFIG": str(config),
            "RLS_GRPC_ADDR": f"127.0.0.1:{grpc}",
            "RLS_HTTP_ADDR": f"127.0.0.1:{http}",
            "RLS_STORE": store,
            "RLS_FAILURE_MODE": failure_mode,
            "RLS_LOG_FORMAT": log_format,
        }
        if redis_url:
            settings["RLS_REDIS_URL"] = redis_url
        if via_env:
            argv = [RLS_BIN, "run"]
            env = {**settings, **(env or {})}
        else:
            argv = [RLS_BIN, "run", "--config", config, "--grpc-addr", settings["RLS_GRPC_ADDR"],
                    "--http-addr", settings["RLS_HTTP_ADDR"], "--store", store, "--failure-mode", failure_mode,
                    "--log-format", log_format]
            if redis_url:
                argv += ["--redis-url", redis_url]
        argv += args or []
        proc = self.spawn(f"ratelimit-service-{grpc}", argv, _clean_env(env))
        svc = Service(self, proc, grpc, http)
        return svc.wait_ready() if wait else svc

    def envoy(self, services: Service | list[Service], domain: str, timeout: str = RLS_TIMEOUT,
              rls_health_check: bool = False) -> Envoy:
        services = services if isinstance(services, list) else [services]
        listen, upstream, admin = free_port(), free_port(), free_port()
        cfg = self.tmp / f"envoy-{listen}.yaml"
        cfg.write_text(render_envoy_config(listen_port=listen, upstream_port=upstream, admin_port=admin,
                                           rls_ports=[s.grpc_port for s in services], domain=domain,
                                           timeout=timeout, rls_health_check=rls_health_check))
        proc = self.spawn(f"envoy-{listen}", [ENVOY_BIN, "-c", cfg, "-l", "warning", "--disable-hot-restart",
                                               "--concurrency", "1"])
        env = Envoy(self, proc, listen, upstream, admin, cfg)

        def ready():
            proc.check_alive()
            r = requests.get(f"http://127.0.0.1:{admin}/ready", timeout=1)
            return r.status_code == 200 and tcp_open(listen) and tcp_open(upstream)

        wait_until(ready, START_TIMEOUT, what=f"envoy (listener {listen}, admin {admin})")
        return env

    # ---- teardown / reporting

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception:  # noqa: BLE001 - keep stopping the others
                pass

    def report(self) -> str:
        parts = [f"temp dir: {self.tmp}"]
        for p in self.procs:
            status = "running" if p.alive() else f"exited {p.returncode()}"
            parts.append(f"----- {p.name} (pid {p.pid}, {status}) {p.log_path}\n{tail(p.log_text(), 80)}")
        return "\n".join(parts)


_HARNESS = pytest.StashKey[Harness]()


@pytest.fixture
def harness(request, tmp_path) -> Iterable[Harness]:
    for what, path in (("ratelimit-service binary", RLS_BIN), ("envoy binary", ENVOY_BIN)):
        if not Path(path).exists():
            pytest.fail(f"{what} not found at {path}: run `make build deps` (or set RLS_BIN / ENVOY)")
    h = Harness(tmp_path)
    request.node.stash[_HARNESS] = h
    try:
        yield h
    finally:
        h.stop_all()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    h = item.stash.get(_HARNESS, None)
    if h is not None and rep.failed and rep.when in ("setup", "call"):
        rep.sections.append(("process logs", h.report()))
    return rep


# --------------------------------------------------------------------------------------------
# assertion helpers shared by the tests


def rl_headers(r: requests.Response, kind: str) -> tuple[int, int, str]:
    """(limit, remaining, reset) from the x-ratelimit-*-<kind> headers; fails when one is missing."""
    missing = [h for h in (f"x-ratelimit-limit-{kind}", f"x-ratelimit-remaining-{kind}", f"x-ratelimit-reset-{kind}")
               if h not in r.headers]
    assert not missing, f"response {r.status_code} lacks {missing}; headers: {dict(r.headers)}"
    return (int(r.headers[f"x-ratelimit-limit-{kind}"]), int(r.headers[f"x-ratelimit-remaining-{kind}"]),
            r.headers[f"x-ratelimit-reset-{kind}"])


def assert_status(r: requests.Response, status: int, envoy: Envoy | None = None) -> None:
    if r.status_code != status:
        extra = f"\nenvoy rate-limit stats: {envoy.rl_stats()}" if envoy is not None else ""
        raise AssertionError(f"expected HTTP {status}, got {r.status_code}\nheaders: {dict(r.headers)}\n"
                             f"body: {r.text[:600]}{extra}")


def assert_openai_429(r: requests.Response, kind: str, envoy: Envoy | None = None, *,
                      retry_after_required: bool = True) -> dict:
    """A 429 from the gateway: OpenAI-shaped error body, retry-after, x-ratelimit-* headers.

    retry_after_required=False: a request that alone exceeds its limit can never be admitted,
    so the service sends no retry-after (like OpenAI's "Request too large"); one, if sent, must
    still be whole seconds."""
    assert_status(r, 429, envoy)
    try:
        body = r.json()
    except ValueError:
        raise AssertionError(f"429 body is not JSON: {r.text[:600]!r} (headers {dict(r.headers)})") from None
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"not OpenAI-shaped: {body}"
    err = body["error"]
    assert isinstance(err.get("message"), str) and err["message"], f"error.message missing: {body}"
    assert err.get("type") == kind, f"error.type should be {kind!r}: {body}"
    assert "param" in err and err["param"] is None, f"error.param should be null: {body}"
    assert err.get("code") == "rate_limit_exceeded", f"error.code: {body}"
    ra = r.headers.get("retry-after")
    if ra is None and not retry_after_required:
        return body
    assert ra is not None and re.fullmatch(r"\d+", ra.strip()), f"retry-after must be whole seconds, got {ra!r}"
    rl_headers(r, kind)
    return body


def json_body(r: requests.Response) -> dict:
    try:
        return r.json()
    except ValueError:
        raise AssertionError(f"not JSON ({r.status_code}): {r.text[:600]!r}") from None


_DOWN_WORDS = {"down", "unavailable", "unhealthy", "disconnected", "error", "failing", "failed", "unreachable"}
_UP_WORDS = {"up", "ok", "healthy", "connected", "available", "ready", "serving"}


def store_state(health: dict) -> str:
    """'down', 'up' or 'unknown': what a /healthz body says about the store.

    The contract only says the body "contains the store state"; this accepts the usual shapes:
    {"store": "down"}, {"store": {"status": "down"}}, {"store": {"healthy": false}},
    {"store_healthy": false}, {"store_up": true}, {"stores": {...}} ..."""

    def words(v) -> set[str]:
        if isinstance(v, bool):
            return {"up" if v else "down"}
        if isinstance(v, str):
            return {v.lower()}
        if isinstance(v, dict):
            out: set[str] = set()
            for k, x in v.items():
                kl = k.lower()
                if isinstance(x, bool) and kl in {"healthy", "up", "ok", "connected", "available", "ready"}:
                    out.add("up" if x else "down")
                elif isinstance(x, bool) and kl in {"down", "unhealthy", "failed", "error"}:
                    out.add("down" if x else "up")
                elif kl in {"status", "state", "health"}:
                    out |= words(x)
            return out
        return set()

    found: set[str] = set()
    for k, v in health.items():
        kl = k.lower()
        if "store" in kl or "redis" in kl:
            if isinstance(v, bool):
                neg = any(w in kl for w in ("down", "unhealthy", "error", "failed"))
                found.add(("up" if v else "down") if not neg else ("down" if v else "up"))
            else:
                found |= words(v)
    if found & _DOWN_WORDS:
        return "down"
    if found & _UP_WORDS:
        return "up"
    return "unknown"


# --------------------------------------------------------------------------------------------
# mock LLM providers (tests/mock-provider): OpenAI, Azure OpenAI and Anthropic APIs with faults

MOCK_PROVIDER_BIN = _repo_path("MOCK_PROVIDER_BIN", "target/release/mock-provider")
_LISTENING = re.compile(r"^listening on 127\.0\.0\.1:(\d+)$", re.M)


@dataclass
class MockProvider:
    proc: Proc
    port: int
    name: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def program_faults(self, *faults: dict) -> list[dict]:
        """Queues faults for the next provider requests, e.g. {"status": 503, "count": 2}."""
        r = requests.post(self.url + "/_mock/faults", json=list(faults), timeout=5)
        assert r.status_code == 200, f"POST /_mock/faults: {r.status_code} {r.text}"
        return r.json()["faults"]

    def pending_faults(self) -> list[dict]:
        return requests.get(self.url + "/_mock/faults", timeout=5).json()["faults"]

    def clear_faults(self) -> None:
        requests.delete(self.url + "/_mock/faults", timeout=5).raise_for_status()

    def requests(self) -> list[dict]:
        """Every provider request received so far: method, path, query, headers, body, time."""
        return requests.get(self.url + "/_mock/requests", timeout=5).json()

    def clear_requests(self) -> None:
        requests.delete(self.url + "/_mock/requests", timeout=5).raise_for_status()

    def usage(self) -> dict:
        """What this mock charged so far (its /_mock/usage ledger)."""
        return requests.get(self.url + "/_mock/usage", timeout=5).json()


def start_mock_provider(harness: Harness, name: str = "mock", *, openai_key: str | None = None,
                        anthropic_key: str | None = None, azure_key: str | None = None) -> MockProvider:
    """Starts the mock on a free port (it binds port 0 and prints `listening on ADDR`)."""
    argv: list = [MOCK_PROVIDER_BIN, "--listen", "127.0.0.1:0", "--name", name]
    for flag, key in (("--openai-key", openai_key), ("--anthropic-key", anthropic_key), ("--azure-key", azure_key)):
        if key is not None:
            argv += [flag, key]
    n = sum(1 for p in harness.procs if p.name.startswith(f"mock-provider-{name}"))
    proc = harness.spawn(f"mock-provider-{name}" + (f"-{n}" if n else ""), argv)

    def port():
        proc.check_alive()
        m = _LISTENING.search(proc.log_text())
        return int(m.group(1)) if m else None

    return MockProvider(proc, wait_until(port, START_TIMEOUT, interval=0.05, what=f"mock-provider {name}"), name)


@pytest.fixture
def mock_provider(request, tmp_path) -> Iterable[Callable[..., MockProvider]]:
    """Factory fixture: `mock_provider(name=..., openai_key=...)` starts a mock provider; all
    of them are stopped by PID when the test ends. Needs only the mock binary (not Envoy);
    tests that also use `harness` should call `start_mock_provider(harness, ...)` instead."""
    if not MOCK_PROVIDER_BIN.exists():
        pytest.fail(f"mock-provider binary not found at {MOCK_PROVIDER_BIN}: run `make build` (or set MOCK_PROVIDER_BIN)")
    h = request.node.stash.get(_HARNESS, None)
    own = h is None
    if own:
        h = Harness(tmp_path)
        request.node.stash[_HARNESS] = h
    try:
        yield lambda **kw: start_mock_provider(h, **kw)
    finally:
        if own:
            h.stop_all()


# --------------------------------------------------------------------------------------------
# the gateway: envoy/demo.yaml (wasm filter, buffer, rate limits, routes by filter state,
# credential injection) rendered onto free ports, with its mocks and ratelimit-service

DEMO_GATEWAY = REPO / "envoy" / "demo.yaml"
DEMO_SECRETS = REPO / "envoy" / "secrets"
WASM_FILTER = _repo_path("WASM", "target/wasm32-wasip1/release/llm_gateway_filter.wasm")
WASM_REL = "target/wasm32-wasip1/release/llm_gateway_filter.wasm"
GATEWAY_DEPLOYMENTS = ("openai-a", "openai-b", "anthropic")  # demo.yaml's clusters, ports 11001-11003
GATEWAY_DEMO_PORTS = {"openai-a": 11001, "openai-b": 11002, "anthropic": 11003}
MOCK_OPENAI_KEY = "sk-mock-openai"
MOCK_ANTHROPIC_KEY = "sk-ant-mock"
FREE_KEY = "sk-demo-free"
PRO_KEY = "sk-demo-pro"

# The inline plugin configuration: the block under `configuration: ... value: |`.
_PLUGIN_BLOCK = re.compile(r"(?m)^(?P<head>( +)value: \|\n)(?P<body>(?:\2  .*\n)+)")


def demo_plugin_config() -> str:
    """The filter's plugin configuration as envoy/demo.yaml ships it (YAML text, dedented)."""
    text = DEMO_GATEWAY.read_text()
    found = list(_PLUGIN_BLOCK.finditer(text))
    assert len(found) == 1, f"envoy/demo.yaml: expected 1 inline plugin configuration block, found {len(found)}"
    return textwrap.dedent(found[0].group("body"))


def render_gateway_config(*, listen_port: int, admin_port: int, rls_port: int, provider_ports: dict[str, int],
                          secrets_dir: Path = DEMO_SECRETS, wasm: Path = WASM_FILTER,
                          plugin_config: str | Callable[[str], str] | None = None) -> str:
    """envoy/demo.yaml with every fixed port replaced, the .wasm and the secret files made absolute
    (secrets from `secrets_dir`, e.g. a test's copy it can rotate), and optionally another inline
    plugin configuration: a full YAML text, or a function of the shipped one (e.g. appending
    `max_body_bytes: 1024`).

    Each replaced pattern must occur exactly as often as expected, so a change of the demo that
    the tests would silently stop following fails here instead."""
    text = DEMO_GATEWAY.read_text()

    def sub(pattern: str, repl: str, count: int) -> None:
        nonlocal text
        text, n = re.subn(pattern, lambda _m: repl, text)
        assert n == count, f"envoy/demo.yaml: expected {count} match(es) of {pattern!r}, found {n}"

    assert set(provider_ports) == set(GATEWAY_DEPLOYMENTS), provider_ports
    sub(r"port_value: 9901\b", f"port_value: {admin_port}", 1)
    sub(r"port_value: 10000\b", f"port_value: {listen_port}", 1)
    sub(r"port_value: 8081\b", f"port_value: {rls_port}", 1)
    for name, demo_port in GATEWAY_DEMO_PORTS.items():
        sub(rf"port_value: {demo_port}\b", f"port_value: {provider_ports[name]}", 1)
    assert text.count("port_value:") == 6, "envoy/demo.yaml has a socket address the tests do not know about"
    sub(rf"filename: {re.escape(WASM_REL)}\}}", f"filename: {wasm}}}", 1)
    sub(r"path: envoy/secrets/openai\.yaml\}", f"path: {secrets_dir / 'openai.yaml'}}}", 2)
    sub(r"path: envoy/secrets/anthropic\.yaml\}", f"path: {secrets_dir / 'anthropic.yaml'}}}", 1)
    assert not re.search(r"(path|filename): (?!/)", text), "a relative path is left in the rendered config"
    if plugin_config is not None:
        new = plugin_config(demo_plugin_config()) if callable(plugin_config) else plugin_config
        found = list(_PLUGIN_BLOCK.finditer(text))
        assert len(found) == 1, f"envoy/demo.yaml: expected 1 inline plugin configuration block, found {len(found)}"
        m = found[0]
        indent = " " * (len(m.group(2)) + 2)
        body = "".join(indent + line + "\n" if line.strip() else "\n" for line in dedent(new).splitlines())
        text = text[:m.start("body")] + body + text[m.end("body"):]
    return text


@dataclass
class Gateway:
    """The demo gateway of `make run`, on free ports: Envoy (envoy/demo.yaml + the built filter),
    ratelimit-service (memory store) and the three mock providers."""
    harness: Harness
    proc: Proc
    port: int
    admin_port: int
    config_path: Path
    secrets_dir: Path
    service: Service
    mocks: dict[str, MockProvider]
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def post(self, path: str, body: object = None, *, key: str | None = PRO_KEY, headers: dict[str, str] | None = None,
             data: bytes | str | None = None, timeout: float = 30, **kw) -> requests.Response:
        """POST `body` (JSON) or raw `data` to the gateway; `key` as `Authorization: Bearer` (None: no key)."""
        h = {"content-type": "application/json"}
        if key is not None:
            h["authorization"] = f"Bearer {key}"
        h.update(headers or {})
        if data is None:
            data = json.dumps(body)
        return self.session.post(self.url + path, data=data, headers=h, timeout=timeout, **kw)

    def chat(self, model: str = "gpt-4o-mini", *, key: str | None = PRO_KEY, content: str = "hi",
             headers: dict[str, str] | None = None, **fields) -> requests.Response:
        """POST /v1/chat/completions with one user message; extra body fields as keywords."""
        body = {"model": model, "messages": [{"role": "user", "content": content}], **fields}
        return self.post("/v1/chat/completions", body, key=key, headers=headers)

    def get(self, path: str, *, key: str | None = PRO_KEY, headers: dict[str, str] | None = None) -> requests.Response:
        h = {"authorization": f"Bearer {key}"} if key is not None else {}
        h.update(headers or {})
        return self.session.get(self.url + path, headers=h, timeout=30)

    def stats(self, filter_re: str = "") -> dict[str, int]:
        return envoy_stats(self.admin_port, filter_re)

    def upstream_requests(self, deployment: str) -> list[dict]:
        """What the mock behind `deployment` received (its /_mock/requests)."""
        return self.mocks[deployment].requests()

    def clear_mocks(self) -> None:
        for m in self.mocks.values():
            m.clear_requests()
            m.clear_faults()

    def rotate_secret(self, name: str, secret_name: str, value: str) -> None:
        """Replaces `<secrets_dir>/<name>.yaml` atomically (temp file + rename) with a new value."""
        write_atomic(self.secrets_dir / f"{name}.yaml", secret_file(secret_name, value))


def secret_file(secret_name: str, value: str) -> str:
    """An SDS file with one generic secret, as envoy/secrets/*.yaml."""
    return ("resources:\n"
            "- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n"
            f"  name: {secret_name}\n"
            "  generic_secret:\n"
            "    secret:\n"
            f"      inline_string: {json.dumps(value)}\n")


def start_gateway(harness: Harness, *, limits: Path | None = None,
                  plugin_config: str | Callable[[str], str] | None = None, mock_keys: bool = True,
                  wait: bool = True, validate: bool = False, store: str = "memory",
                  redis_url: str | None = None, service_args: list[str] | None = None,
                  beside: Gateway | None = None) -> Gateway:
    """Starts the three mocks (openai-a, openai-b, anthropic; with the demo's keys unless
    mock_keys=False, then they accept any key), ratelimit-service (memory store, `limits`,
    default envoy/ratelimit/demo.yaml) and Envoy with envoy/demo.yaml rendered onto free ports,
    its secrets copied into the test's temp dir (`Gateway.rotate_secret`). validate=True: the
    rendered config is checked with `envoy --mode validate` first (seconds: V8 compiles the
    filter; the shared gateway and test_gateway.py's render test do it). wait=False: Envoy is
    started but not waited for (a config the filter must reject). beside=gw: one more Envoy
    with the same config in front of gw's service and mocks (several gateways)."""
    for what, path in (("mock-provider binary", MOCK_PROVIDER_BIN), ("filter", WASM_FILTER)):
        if not Path(path).exists():
            pytest.fail(f"{what} not found at {path}: run `make build`")
    if beside is not None:
        mocks, svc, secrets = beside.mocks, beside.service, beside.secrets_dir
    else:
        mocks = {}
        for name in GATEWAY_DEPLOYMENTS:
            keys = {"openai_key": MOCK_OPENAI_KEY, "anthropic_key": MOCK_ANTHROPIC_KEY} if mock_keys else {}
            mocks[name] = start_mock_provider(harness, name, **keys)
        svc = harness.service(limits or DEMO_LIMITS, store=store, redis_url=redis_url, args=service_args)
        secrets = harness.tmp / "secrets"
        secrets.mkdir(exist_ok=True)
        for f in DEMO_SECRETS.glob("*.yaml"):
            shutil.copy(f, secrets / f.name)
    listen, admin = free_port(), free_port()
    cfg = harness.tmp / f"gateway-{listen}.yaml"
    cfg.write_text(render_gateway_config(listen_port=listen, admin_port=admin, rls_port=svc.grpc_port,
                                         provider_ports={n: m.port for n, m in mocks.items()},
                                         secrets_dir=secrets, plugin_config=plugin_config))
    if validate:
        v = envoy_validate(cfg)
        assert v.returncode == 0, f"rendered gateway config does not validate:\n{v.stdout}\n{v.stderr}"
    proc = harness.spawn(f"envoy-gateway-{listen}", [ENVOY_BIN, "-c", cfg, "-l", "warning", "--disable-hot-restart",
                                                     "--concurrency", "1"])
    gw = Gateway(harness, proc, listen, admin, cfg, secrets, svc, mocks)
    if wait:
        def ready():
            proc.check_alive()
            r = requests.get(f"http://127.0.0.1:{admin}/ready", timeout=1)
            return r.status_code == 200 and tcp_open(listen)

        wait_until(ready, START_TIMEOUT * 2, what=f"gateway envoy (listener {listen}, admin {admin})")
    return gw


@pytest.fixture
def gateway(harness) -> Callable[..., Gateway]:
    """Factory fixture: `gateway(limits=..., plugin_config=..., mock_keys=...)` starts a gateway
    (see start_gateway) in this test's harness; everything stops when the test ends."""
    return lambda **kw: start_gateway(harness, **kw)


def demo_limits(harness: Harness, *, pro_requests: int | None = None, pro_tokens: int | None = None,
                name: str = "limits.yaml") -> Path:
    """A copy of envoy/ratelimit/demo.yaml in the test's temp dir with demo-pro's per-minute
    request and/or token limit replaced (for tests that need room: hundreds of requests, a huge prompt)."""
    text = DEMO_LIMITS.read_text()

    def sub(pattern: str, repl: str) -> None:
        nonlocal text
        text, n = re.subn(pattern, repl, text)
        assert n == 1, f"envoy/ratelimit/demo.yaml: expected 1 match of {pattern!r}, found {n}"

    if pro_requests is not None:
        sub(r"(value: demo-pro\n    rate_limit: \{unit: minute, requests_per_unit: )600\}", rf"\g<1>{pro_requests}}}")
    if pro_tokens is not None:
        sub(r"(requests_per_unit: )100000(, kind: tokens\})", rf"\g<1>{pro_tokens}\2")
    p = harness.tmp / name
    p.write_text(text)
    return p


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory) -> Iterable[Gateway]:
    """One demo gateway (demo limits, demo keys) for a whole test module: for tests that change
    no lasting state (no circuits opened, demo-free not exhausted, secrets not rotated). Use it
    through `demo_gateway`, which resets the mocks and attaches the logs to a failure."""
    for what, path in (("ratelimit-service binary", RLS_BIN), ("envoy binary", ENVOY_BIN)):
        if not Path(path).exists():
            pytest.fail(f"{what} not found at {path}: run `make build deps` (or set RLS_BIN / ENVOY)")
    h = Harness(tmp_path_factory.mktemp("gateway"))
    try:
        try:
            gw = start_gateway(h, validate=True)
        except Exception as e:  # noqa: BLE001 - show the process logs with the failure
            pytest.fail(f"the shared gateway did not start: {e!r}\n{h.report()}")
        yield gw
    finally:
        h.stop_all()


@pytest.fixture
def demo_gateway(request, shared_gateway) -> Gateway:
    """The module's shared gateway with its mocks' request logs and fault queues cleared."""
    request.node.stash[_HARNESS] = shared_gateway.harness
    shared_gateway.clear_mocks()
    return shared_gateway
