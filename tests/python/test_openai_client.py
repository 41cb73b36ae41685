"""The official `openai` Python client against a real `epas serve`."""

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "target" / "release" / "epas"
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "SmolLM2-135M-Instruct.Q4_1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    assert BINARY.exists(), "build first: cargo build --release"
    assert MODEL.exists(), "run scripts/fetch-models.sh"
    port = free_port()
    env = dict(os.environ, EPAS_THREADS="2", RUST_LOG="warn")
    proc = subprocess.Popen(
        [str(BINARY), "serve", "--model", str(MODEL), "--port", str(port),
         "--allow-untrained-sharing", "--api-key", "sk-test"],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if json.load(r)["status"] == "ok":
                    break
        except OSError:
            pass
        assert proc.poll() is None, "server exited"
        assert time.time() < deadline, "server did not become healthy"
        time.sleep(0.05)
    yield base
    proc.terminate()
    assert proc.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="sk-test", max_retries=0)


def test_completion_with_sharing_ratio_extension(client):
    r = client.completions.create(
        model=NAME,
        prompt="Mr. Speaker, Mr. Vice President, Members of Congress",
        max_tokens=8,
        temperature=0,
        extra_body={"sharing_ratio": 0.5},
    )
    assert r.object == "text_completion"
    assert len(r.choices) == 1 and r.choices[0].text
    assert r.usage.completion_tokens == 8
    epas = r.model_extra["epas"]
    assert epas["sharing_layers"] == 15 and epas["source_layer"] == 14


def test_ratio_zero_matches_llamacpp_continuation(client):
    r = client.completions.create(
        model=NAME,
        prompt="Mr. Speaker, Mr. Vice President, Members of Congress",
        max_tokens=6,
        temperature=0,
    )
    assert r.choices[0].text.startswith(", and the President.")


def test_chat_stream(client):
    stream = client.chat.completions.create(
        model=f"{NAME}@0.25",
        messages=[{"role": "user", "content": "Name a color."}],
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, roles, finish, usage = "", set(), None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.role:
                roles.add(c.delta.role)
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert roles == {"assistant"}
    assert text
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens >= 1


def test_models_list(client):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert ids == [NAME]


def test_errors_surface_as_openai_exceptions(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=NAME, prompt="hi", max_tokens=4, extra_body={"sharing_ratio": 2.0})
    assert "maximum" in str(e.value)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="hi", max_tokens=4)
    bad = openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
