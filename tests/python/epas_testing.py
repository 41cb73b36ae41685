"""Helpers for the Python end-to-end tests: start the real `epas serve` (and other programs) on
free ports, send requests, find system tools. Not a test module itself."""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "target" / "release" / "epas"
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "SmolLM2-135M-Instruct.Q4_1"
ARTIFACTS = ROOT / "target" / "test-artifacts"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def skips_allowed():
    """Whether a test may skip for a missing tool or module: only with EPAS_TEST_ALLOW_SKIPS=1
    and not under CI (CI=true). Otherwise a missing install step fails the test, so it cannot
    pass silently; scripts/test-deps.sh installs everything."""
    return os.environ.get("EPAS_TEST_ALLOW_SKIPS") == "1" and not os.environ.get("CI")


def require_tool(*names):
    """The path of the first of `names` on PATH; missing, it fails the test (skips it only where
    skips_allowed())."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    message = f"{' or '.join(names)} not installed (scripts/test-deps.sh installs it)"
    if not skips_allowed():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_module(name):
    """Imports `name`; missing, it fails the tests that need it (skips them only where
    skips_allowed())."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"python module {name} not installed (scripts/test-deps.sh installs it)"
        if not skips_allowed():
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)


def http(method, url, body=None, headers=None, timeout=60):
    """(status, parsed JSON or text) of one request; HTTP errors are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    h = {"content-type": "application/json"} if body is not None else {}
    h.update(headers or {})
    request = urllib.request.Request(url, data=data, headers=h, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            status, raw, ctype = r.status, r.read(), r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        status, raw, ctype = e.code, e.read(), e.headers.get("content-type", "")
    text = raw.decode()
    return status, json.loads(text) if "json" in ctype else text


def wait_until(predicate, timeout, what, interval=0.1):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


@contextlib.contextmanager
def epas_server(*flags, model=MODEL):
    """Runs `epas serve --model MODEL --port FREE *flags` (the built-in model when `model` is
    None) until the block ends; yields the base URL once /health says ok."""
    with epas_process(*flags, model=model) as (_, base):
        yield base


def start_epas(*flags, model=MODEL, port=None):
    """Starts `epas serve` on `port` (a free one when None) and returns (process, base URL)
    once /health says ok; the caller stops the process (see `stop`)."""
    assert BINARY.exists(), "build first: cargo build --release --bin epas"
    assert model is None or model.exists(), "run scripts/fetch-models.sh"
    port = port or free_port()
    env = dict(os.environ, EPAS_THREADS="2", RUST_LOG="warn")
    model_flags = [] if model is None else ["--model", str(model)]
    proc = subprocess.Popen(
        [str(BINARY), "serve", *model_flags, "--port", str(port), *flags],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"

    def healthy():
        assert proc.poll() is None, "epas serve exited"
        try:
            return http("GET", base + "/health", timeout=2)[0] == 200
        except OSError:
            return False

    try:
        wait_until(healthy, 60, "epas serve to become healthy", 0.05)
    except BaseException:
        stop(proc)
        raise
    return proc, base


def stop(proc):
    """SIGTERM, then SIGKILL after 30 s; returns the exit status."""
    proc.terminate()
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@contextlib.contextmanager
def epas_process(*flags, model=MODEL, port=None):
    """`start_epas` until the block ends; yields (process, base URL)."""
    proc, base = start_epas(*flags, model=model, port=port)
    try:
        yield proc, base
    finally:
        stop(proc)


def completion(base, ratio, max_tokens=16, prompt="The economy of the United States", **extra):
    body = {"prompt": prompt, "max_tokens": max_tokens, "sharing_ratio": ratio, **extra}
    return http("POST", base + "/v1/completions", body)


def send_traffic(base, ratios, seconds, min_requests=4, max_seconds=90, max_tokens=8):
    """Completions at each of `ratios` (one client thread per ratio) for at least `seconds` and
    `min_requests` per ratio (a busy machine is slow; `max_seconds` bounds it), plus one invalid
    request. Returns the number of successful requests per ratio."""
    import threading

    done = {r: 0 for r in ratios}
    start = time.time()

    def client(ratio):
        while time.time() - start < max_seconds:
            if time.time() - start >= seconds and done[ratio] >= min_requests:
                break
            status, body = completion(base, ratio, max_tokens)
            assert status == 200, body
            done[ratio] += 1

    threads = [threading.Thread(target=client, args=(r,)) for r in ratios]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert completion(base, 0.0, echo=True)[0] == 400
    return done


def exported_metrics(base):
    """Names a live /metrics scrape exports: every `# TYPE` family, with `_bucket`, `_sum` and
    `_count` for histograms."""
    status, text = http("GET", base + "/metrics")
    assert status == 200
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind in ("histogram", "summary"):
                names.update({name + "_sum", name + "_count"})
            if kind == "histogram":
                names.add(name + "_bucket")
    return names


METRIC_NAME = r"(?<![\w:])(?:epas_[a-z0-9_]+|vllm:[a-z0-9_]+)"


def metric_names_in(text):
    """`epas_*` and `vllm:*` metric names in PromQL or any text (recording-rule names like
    `sharing_ratio:epas_x:rate1m` are not metric names and are left out)."""
    import re

    return set(re.findall(METRIC_NAME, text))
