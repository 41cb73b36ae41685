"""Runs README.md's shell examples as written, so they cannot drift from the program.

Every ```sh block of README.md carries, on the line before its fence, one marker:
  <!-- test: serve -->        the Quick start's servers: each `cargo run --release -- serve ...`
                              line is started (the built binary with the same arguments, on a
                              free port through EPAS_PORT) and must become healthy and answer a
                              completion; its other lines run as written;
  <!-- test: run -->          run by bash as written against the built-in model's server started
                              from the serve block (`localhost:8080` is that server's port,
                              `cargo run --release --` the built binary); it must exit 0 and no
                              response may be an error;
  <!-- not-run: REASON -->    not run here (docker, training, the test command itself...).
A block without a marker fails, and the count of run blocks is checked against the total."""

import os
import re
import shlex
import subprocess

import pytest

from epas_testing import BINARY, ROOT, free_port, http, require_tool, wait_until

README = ROOT / "README.md"
FENCE = re.compile(r"^```sh\n(.*?)^```$", re.S | re.M)
MARKER = re.compile(r"<!-- (test: (serve|run)|not-run: (.+?)) -->\s*$")
CARGO_RUN = "cargo run --release --"


def blocks():
    """(line number, marker kind or None, not-run reason, text) of every sh block."""
    text = README.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        line = text.count("\n", 0, match.start()) + 1
        marker = MARKER.search(before)
        if marker is None:
            found.append((line, None, None, match.group(1)))
        elif marker.group(2):
            found.append((line, marker.group(2), None, match.group(1)))
        else:
            found.append((line, "not-run", marker.group(3).strip(), match.group(1)))
    return found


BLOCKS = blocks()
RUN = [b for b in BLOCKS if b[1] == "run"]
SERVE = [b for b in BLOCKS if b[1] == "serve"]


def test_every_block_is_marked_and_every_unmarked_kind_runs():
    unmarked = [line for line, kind, _, _ in BLOCKS if kind is None]
    assert not unmarked, f"README.md sh blocks at lines {unmarked} need a test or not-run marker"
    assert len(SERVE) == 1, "README.md needs exactly one <!-- test: serve --> block"
    not_run = [b for b in BLOCKS if b[1] == "not-run"]
    assert all(reason for _, _, reason, _ in not_run)
    # Everything not marked not-run is one of the blocks the tests below run.
    assert len(RUN) + len(SERVE) + len(not_run) == len(BLOCKS)
    assert RUN, "README.md has no example run against the server"


def serve_commands():
    """(argv after `serve`'s binary, line) of every serve line, and the other commands."""
    servers, others = [], []
    for raw in SERVE[0][3].splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(CARGO_RUN + " serve"):
            servers.append(shlex.split(line[len(CARGO_RUN) :]))
        else:
            others.append(line)
    return servers, others


def start(argv):
    port = free_port()
    env = dict(os.environ, EPAS_PORT=str(port), EPAS_THREADS="2", RUST_LOG="warn")
    env.pop("EPAS_HOST", None)
    proc = subprocess.Popen([str(BINARY), *argv], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"

    def healthy():
        assert proc.poll() is None, f"{argv} exited with {proc.returncode}"
        try:
            return http("GET", base + "/health", timeout=2)[0] == 200
        except OSError:
            return False

    try:
        wait_until(healthy, 90, f"{argv} to become healthy", 0.05)
    except BaseException:
        stop(proc)
        raise
    return proc, port


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def builtin_port():
    servers, _ = serve_commands()
    assert servers and servers[0] == ["serve"], "the Quick start's first server is the built-in one"
    proc, port = start(servers[0])
    yield port
    stop(proc)


def test_serve_block_starts_every_server_it_shows():
    servers, others = serve_commands()
    assert len(servers) == 2, servers  # the built-in model and SmolLM2
    for command in others:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=ROOT, timeout=600)
        assert done.returncode == 0, command
    for argv in servers:
        proc, port = start(argv)
        try:
            base = f"http://127.0.0.1:{port}"
            status, models = http("GET", base + "/v1/models")
            assert status == 200, models
            name = models["data"][0]["id"]
            body = {"model": name, "prompt": "Hello", "max_tokens": 4, "sharing_ratio": 0.25}
            status, answer = http("POST", base + "/v1/completions", body)
            assert status == 200, (argv, answer)
        finally:
            stop(proc)


@pytest.mark.parametrize("line,text", [(b[0], b[3]) for b in RUN], ids=[f"line{b[0]}" for b in RUN])
def test_example_runs_as_written(builtin_port, line, text):
    require_tool("curl")
    script = text.replace("localhost:8080", f"localhost:{builtin_port}")
    script = script.replace(CARGO_RUN, shlex.quote(str(BINARY)))
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"README.md block at line {line} failed:\n{output}"
    assert done.stdout.strip(), f"README.md block at line {line} printed nothing"
    assert '"error"' not in output, f"README.md block at line {line} got an error:\n{output}"
