"""Failover and graceful shutdown behind the SMG router, on loopback: three `epas serve`
replicas (built-in model) under concurrent load through `smg launch`.

- SIGKILL one replica mid-run: at most the requests in flight at that moment fail, every request
  started once the router has noticed succeeds on the others; restarted on the same port, the
  replica receives traffic again (its own counters rise).
- SIGTERM one replica mid-run: no client request fails (the replica drains: /ready and /health
  say 503, its streams finish, it exits 0)."""

import contextlib
import itertools
import json
import threading
import time
import urllib.request

from epas_testing import http, start_epas, stop, wait_until
from test_router import answered, smg_router

REPLICAS = 3
CLIENTS = 4
# The router probes /ready every second and takes a replica out after one failed probe, back in
# after one good one; its retries (on by default) resend a request a dead replica refused.
ROUTER_FLAGS = [
    "--health-check-endpoint", "/ready",
    "--health-check-interval-secs", "1",
    "--health-failure-threshold", "1",
    "--health-success-threshold", "1",
    "--cb-timeout-duration-secs", "1",
]


def stream_completion(router, prompt, max_tokens, started=None):
    """One streamed completion through the router: (ok, detail). ok means status 200 and the
    stream ended with [DONE] after a finish_reason. `started` (an Event) is set once the response
    headers came (the request was admitted)."""
    body = {"model": "builtin", "prompt": prompt, "max_tokens": max_tokens, "stream": True}
    request = urllib.request.Request(
        router + "/v1/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            if started is not None:
                started.set()
            text = r.read().decode()
    except Exception as e:  # HTTP error, reset, timeout: a failed request either way
        return False, repr(e)
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    finished = any(
        c.get("finish_reason") for e in events[:-1] for c in json.loads(e).get("choices", [])
    )
    return (bool(events) and events[-1] == "[DONE]" and finished), text[-300:]


class Load:
    """CLIENTS threads sending distinct streamed completions until `stop`; each outcome is
    recorded as (start, end, ok, detail)."""

    def __init__(self, router, max_tokens):
        self.router, self.max_tokens = router, max_tokens
        self.results, self.lock = [], threading.Lock()
        self.done = threading.Event()
        self.counter = itertools.count()
        self.threads = [threading.Thread(target=self.client) for _ in range(CLIENTS)]

    def client(self):
        while not self.done.is_set():
            n = next(self.counter)
            start = time.monotonic()
            ok, detail = stream_completion(
                self.router, f"Request {n}: tell me about the number {n * 7919}.", self.max_tokens
            )
            with self.lock:
                self.results.append((start, time.monotonic(), ok, detail))

    def count(self, since=0.0, ok=None):
        with self.lock:
            return sum(1 for s, _, k, _ in self.results if s >= since and (ok is None or k == ok))

    def failures(self):
        with self.lock:
            return [r for r in self.results if not r[2]]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        for t in self.threads:
            t.join(timeout=90)


@contextlib.contextmanager
def replicas():
    procs = [start_epas(model=None) for _ in range(REPLICAS)]
    try:
        yield procs
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                stop(proc)


def test_sigkill_fails_only_in_flight_requests_and_the_restarted_replica_gets_traffic():
    with contextlib.ExitStack() as stack:
        procs = stack.enter_context(replicas())
        bases = [b for _, b in procs]
        router = stack.enter_context(smg_router(bases, *ROUTER_FLAGS, policy="round_robin"))
        victim_proc, victim = procs[0]
        port = int(victim.rsplit(":", 1)[1])
        load = stack.enter_context(Load(router, max_tokens=24))

        wait_until(lambda: answered(victim) >= 3, 30, "the victim to serve some requests")
        victim_proc.kill()
        victim_proc.wait()
        killed = time.monotonic()
        # Poll past the router's health probe (1 s) plus one interval, then count what follows.
        wait_until(lambda: load.count(since=killed) >= 12, 45, "requests after the kill")
        noticed = killed + 2.5
        wait_until(lambda: load.count(since=noticed) >= 12, 45, "requests after the router noticed")
        failed = load.failures()
        print(f"requests: {load.count()}, failed: {len(failed)} (clients: {CLIENTS})")
        assert len(failed) <= CLIENTS, f"more failures than requests in flight: {failed}"
        assert all(s < noticed for s, _, _, _ in failed), f"failures after the kill: {failed}"
        assert load.count(since=noticed, ok=True) == load.count(since=noticed)

        # Restarted on the same port, the replica is taken back and serves again.
        restarted, _ = start_epas(model=None, port=port)
        stack.callback(lambda: restarted.poll() is None and stop(restarted))
        wait_until(lambda: answered(victim) >= 3, 30, "the restarted replica to get traffic", 0.2)
        load.done.set()
        for t in load.threads:
            t.join(timeout=90)
        late = [f for f in load.failures() if f[0] >= noticed]
        assert not late, f"requests failed after the router noticed the kill: {late}"
        for _, base in procs[1:]:
            assert answered(base) > 0, base


def test_sigterm_drains_the_replica_and_no_request_fails():
    with contextlib.ExitStack() as stack:
        procs = stack.enter_context(replicas())
        bases = [b for _, b in procs]
        router = stack.enter_context(smg_router(bases, *ROUTER_FLAGS, policy="round_robin"))
        victim_proc, victim = procs[0]
        load = stack.enter_context(Load(router, max_tokens=48))

        wait_until(lambda: answered(victim) >= 3, 30, "the victim to serve some requests")
        # Long streams straight to the victim, so that it has work to drain when SIGTERM comes.
        direct, admitted = [], [threading.Event() for _ in range(3)]
        streams = [
            threading.Thread(
                target=lambda i=i: direct.append(
                    stream_completion(victim, f"Story {i}:", 480, admitted[i])
                )
            )
            for i in range(3)
        ]
        for t in streams:
            t.start()
        wait_until(lambda: all(e.is_set() for e in admitted) or direct, 30,
                   "streams admitted on the victim", 0.005)
        assert not direct, f"a stream ended before the SIGTERM: {direct}"
        stopped = time.monotonic()
        victim_proc.terminate()
        # Draining: both probes say 503 while the streams are still going.
        wait_until(lambda: http("GET", victim + "/ready", timeout=5)[0] == 503, 5,
                   "/ready to say 503", 0.005)
        assert http("GET", victim + "/health", timeout=5)[0] == 503
        assert len(direct) < 3, "the streams finished before the drain began"
        for t in streams:
            t.join(timeout=60)
        assert len(direct) == 3 and all(ok for ok, _ in direct), direct
        assert victim_proc.wait(timeout=45) == 0, "a draining replica exits 0"
        wait_until(lambda: load.count(since=stopped) >= 12, 45, "requests after the SIGTERM")
        load.done.set()
        for t in load.threads:
            t.join(timeout=90)
        print(f"requests: {load.count()}, failed: {len(load.failures())}")
        assert not load.failures(), load.failures()
