"""Three `epas serve` replicas (built-in model) behind the SMG router (PyPI `smg`, policy
`cache_aware`), on loopback: every request is answered, each replica serves a share, requests
sharing a long prefix stay on one replica (its prefix-cache hits rise, the others' do not), and
each replica's `vllm:*` counters agree with its `epas_*` ones."""

import contextlib
import random
import re
import subprocess
import tempfile
import threading

from epas_testing import epas_server, free_port, http, require_tool, wait_until

REPLICAS = 3
WORDS = (
    "apple river mountain quantum violin desert harbor lantern meadow orbit pixel saddle "
    "thunder velvet whisper zebra copper falcon glacier hammock island jungle kettle lemon"
).split()


def scrape(base):
    """{series: value} of one /metrics scrape, the series as written (name plus labels)."""
    status, text = http("GET", base + "/metrics")
    assert status == 200
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples[series] = float(value)
    return samples


def total(samples, name, label_filter=""):
    """The sum of the series of metric `name` whose labels contain `label_filter`."""
    pattern = re.compile(rf"^{re.escape(name)}(\{{.*\}})?$")
    return sum(
        v for s, v in samples.items() if pattern.match(s) and label_filter in s
    )


def answered(base):
    return total(scrape(base), "epas_requests_total", 'status="200"')


def prefix_hit_tokens(base):
    return total(scrape(base), "epas_prefix_cache_hit_tokens_total")


@contextlib.contextmanager
def smg_router(workers, *flags, policy="cache_aware", model="builtin"):
    """`smg launch --policy POLICY *flags` in front of `workers` until the block ends; yields its
    base URL once a completion for `model` through it succeeds."""
    smg = require_tool("smg")
    port = free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [smg, "launch", "--host", "127.0.0.1", "--port", str(port),
         "--prometheus-port", str(free_port()), "--policy", policy,
         *flags, "--worker-urls", *workers],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def routes():
        if proc.poll() is not None:
            log.seek(0)
            raise AssertionError("smg exited:\n" + log.read().decode()[-3000:])
        try:
            body = {"model": model, "prompt": "ready?", "max_tokens": 1}
            return http("POST", base + "/v1/completions", body, timeout=5)[0] == 200
        except OSError:
            return False

    try:
        wait_until(routes, 60, "smg to route a completion", 0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def complete(router, prompt):
    body = {"model": "builtin", "prompt": prompt, "max_tokens": 4}
    status, r = http("POST", router + "/v1/completions", body)
    assert status == 200, r
    assert r["choices"][0]["finish_reason"] in ("stop", "length"), r
    return r


def test_three_replicas_behind_smg_share_the_traffic_and_keep_prefix_affinity():
    with contextlib.ExitStack() as stack:
        replicas = [stack.enter_context(epas_server(model=None)) for _ in range(REPLICAS)]
        router = stack.enter_context(smg_router(replicas))

        # Distinct prompts from four clients at once: all answered, every replica serves some.
        before = [answered(r) for r in replicas]
        rng = random.Random(7)
        prompts = [" ".join(rng.sample(WORDS, 8)) for _ in range(30)]
        failures = []

        def client(share):
            for p in share:
                try:
                    complete(router, p)
                except AssertionError as e:
                    failures.append(str(e))

        threads = [threading.Thread(target=client, args=(prompts[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures, failures
        served = [answered(r) - b for r, b in zip(replicas, before)]
        print(f"distinct prompts per replica: {served}")
        assert sum(served) == len(prompts), served
        assert all(n > 0 for n in served), f"a replica served nothing: {served}"

        # One long prefix, several tails, one at a time: cache_aware keeps them on one replica,
        # whose prefix cache then hits; the other replicas' hits do not move.
        before = [answered(r) for r in replicas]
        hits_before = [prefix_hit_tokens(r) for r in replicas]
        prefix = "You are a careful assistant who answers questions about Roman history. " * 4
        for i in range(6):
            complete(router, f"{prefix}Question {i}: who built road number {i}?")
        served = [answered(r) - b for r, b in zip(replicas, before)]
        hits = [prefix_hit_tokens(r) - h for r, h in zip(replicas, hits_before)]
        print(f"shared-prefix requests per replica: {served}, prefix-hit tokens: {hits}")
        home = max(range(REPLICAS), key=lambda i: served[i])
        assert served[home] == 6, f"the shared prefix was spread: {served}"
        assert hits[home] > 0, f"no prefix hits where the prefix went: {hits}"
        assert all(hits[i] == 0 for i in range(REPLICAS) if i != home), hits

        # Each replica's vLLM-named counters (what the router reads) equal its epas_* ones.
        for r in replicas:
            m = scrape(r)
            for vllm, epas in [
                ("vllm:prompt_tokens_total", "epas_prompt_tokens_total"),
                ("vllm:generation_tokens_total", "epas_generation_tokens_total"),
                ("vllm:request_success_total", "epas_requests_finished_total"),
                ("vllm:prefix_cache_hits_total", "epas_prefix_cache_hit_tokens_total"),
                ("vllm:e2e_request_latency_seconds_count", "epas_e2e_request_latency_seconds_count"),
            ]:
                assert total(m, vllm) == total(m, epas), (r, vllm, total(m, vllm), total(m, epas))
            assert total(m, "vllm:prompt_tokens_total") > 0, r
