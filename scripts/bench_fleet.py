#!/usr/bin/env python3
"""N `epas serve` replicas (built-in model) behind SMG (`smg launch --policy cache_aware`), driven
by epas-loadtest at mixed sharing ratios with prompts that share long prefixes; one replica is
killed (SIGKILL) halfway through. Prints a markdown table: requests per replica before and after the kill, failures, and each
replica's prefix-cache hit rate per ratio (hit tokens / queried tokens, from its own counters).

    python3 scripts/bench_fleet.py [--replicas 3] [--duration 20] [--concurrency 6]

Needs target/release/epas and target/release/epas-loadtest (cargo build --release) and smg
(pip install smg)."""

import argparse
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))
from epas_testing import ROOT, start_epas, stop, wait_until  # noqa: E402
from test_router import scrape, smg_router, total  # noqa: E402
from test_router_failover import ROUTER_FLAGS  # noqa: E402

LOADTEST = ROOT / "target" / "release" / "epas-loadtest"
RATIOS = ("0.00", "0.50")
TOPICS = "Roman roads|river deltas|violin making|desert harbors|orbital mechanics|copper mining"


def prompts_file(path, seed=7):
    """Six long shared prefixes (a system-style preamble per topic), 30 questions each, shuffled:
    a .jsonl of prompt strings."""
    rng = random.Random(seed)
    lines = []
    for topic in TOPICS.split("|"):
        prefix = f"You are a careful assistant who answers questions about {topic}. " * 4
        lines += [f"{prefix}Question {i}: what is fact number {i}?" for i in range(30)]
    rng.shuffle(lines)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def counters(base):
    m = scrape(base)
    row = {"served": total(m, "epas_requests_total", 'status="200"')}
    for r in RATIOS:
        label = f'sharing_ratio="{r}"'
        row[r] = (
            total(m, "epas_prefix_cache_hit_tokens_total", label),
            total(m, "epas_prefix_cache_queried_tokens_total", label),
        )
    row["running"] = total(m, "vllm:num_requests_running")
    return row


def rate(pair):
    hits, queried = pair
    return f"{100 * hits / queried:.0f}%" if queried else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--duration", type=float, default=20, help="seconds of load")
    ap.add_argument("--concurrency", type=int, default=6)
    args = ap.parse_args()
    if args.replicas < 2:
        ap.error("--replicas must be at least 2 (one is killed)")
    if not LOADTEST.exists():
        sys.exit("build first: cargo build --release -p epas-loadtest")

    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        procs = [start_epas(model=None) for _ in range(args.replicas)]
        for proc, _ in procs:
            stack.callback(lambda p=proc: p.poll() is None and stop(p))
        bases = [b for _, b in procs]
        router = stack.enter_context(smg_router(bases, *ROUTER_FLAGS, policy="cache_aware"))
        prompts = Path(tmp) / "prompts.jsonl"
        prompts_file(prompts)
        report = Path(tmp) / "load.json"
        command = [
            str(LOADTEST), "--url", router, "--concurrency", str(args.concurrency),
            "--duration", str(args.duration), "--requests", "100000", "--prompts", str(prompts),
            "--max-tokens", "16", "--ratios", "0:0.5,0.5:0.5", "--timeout", "30",
            "--json", str(report), "--no-progress",
        ]
        load = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        victim_proc, victim = procs[0]
        kill_at = time.monotonic() + args.duration / 2
        at_kill = {}

        def halfway():
            assert load.poll() is None, "epas-loadtest ended before the kill"
            at_kill.update(counters(victim))
            return time.monotonic() >= kill_at and at_kill["served"] > 0

        wait_until(halfway, args.duration, "halfway, replica 1 serving", 0.02)
        others_at_kill = [counters(b)["served"] for b in bases[1:]]
        victim_proc.kill()
        victim_proc.wait()
        assert load.wait(timeout=args.duration + 120) == 0, "epas-loadtest failed"
        rows = [at_kill] + [counters(b) for b in bases[1:]]
        before = [at_kill["served"]] + others_at_kill
        overall = json.loads(report.read_text())["runs"][0]["overall"]

    print(f"{args.replicas} replicas (built-in model) behind smg --policy cache_aware, "
          f"{args.concurrency} clients for {args.duration:g} s, ratios 0 and 0.5 half each, "
          f"6 shared 4-sentence prefixes; replica 1 SIGKILLed halfway.\n")
    print("| replica | served before the kill | after | prefix hit rate at ratio 0 | at ratio 0.5 |")
    print("|---|---|---|---|---|")
    for i, (row, b) in enumerate(zip(rows, before), 1):
        note = " (killed)" if i == 1 else ""
        print(f"| {i}{note} | {b:.0f} | {row['served'] - b:.0f} | {rate(row['0.00'])} "
              f"| {rate(row['0.50'])} |")
    errors = ", ".join(f"{k}: {v}" for k, v in overall["errors"].items()) or "none"
    print(f"\nrequests sent {overall['sent']}, completed {overall['completed']}, failed "
          f"{overall['failed']} ({errors}); running on replica 1 at its last scrape before the "
          f"kill: {at_kill['running']:.0f}")


if __name__ == "__main__":
    main()
