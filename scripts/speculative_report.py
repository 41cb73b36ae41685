#!/usr/bin/env python3
"""The report of scripts/bench-speculative.sh, as Markdown on stdout: from the epas-loadtest
reports OUT/runs/r{ROUND}-{WORKLOAD}-c{CLIENTS}-{with,without}.json, the median generated tok/s
of each workload and concurrency with drafts and without, their ratio against the issue's
target, and the acceptance rate of the draft tokens. With --write FILE it also replaces the
bench-speculative section of FILE (appending it the first time).

usage: speculative_report.py OUT --command CMD --server CMD --revision REV --load TEXT
                             --seconds N [--write BENCHMARKS.md]
"""
import argparse
import datetime
import json
import pathlib
import re
import statistics

from bench_report_common import machine, write_section

RUN_NAME = re.compile(r"r(\d+)-(editing|sotu)-c(\d+)-(with|without)\.json$")
# The targets: with / without drafts, at least this much.
TARGETS = {("editing", 1): (2.0, ">= 2x"), ("sotu", 1): (0.97, "within 3%"),
           ("editing", 16): (1.0, "no worse"), ("sotu", 16): (1.0, "no worse")}
WORKLOAD_NAMES = {"editing": "editing", "sotu": "SOTU"}


def load_runs(out):
    """{(workload, clients, mode): [(round, run report), ...]}"""
    runs = {}
    for path in sorted(pathlib.Path(out, "runs").iterdir()):
        m = RUN_NAME.search(path.name)
        if not m:
            continue
        round_, workload, clients, mode = int(m[1]), m[2], int(m[3]), m[4]
        run = json.loads(path.read_text())["runs"][0]
        runs.setdefault((workload, clients, mode), []).append((round_, run))
    return runs


def spec_totals(runs):
    """Draft and accepted tokens summed over runs (those without counters add nothing)."""
    drafted = accepted = 0
    for _, run in runs:
        overall = (run.get("speculation") or {}).get("overall") or {}
        drafted += overall.get("draft_tokens", 0)
        accepted += overall.get("accepted_tokens", 0)
    return drafted, accepted


def table(runs):
    lines = [
        "| workload | clients | with drafts, tok/s (min-max) | without, tok/s (min-max) "
        "| with / without | per-round ratios | target | met | acceptance (draft tokens) |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    notes = []
    for (workload, clients), (target, target_text) in TARGETS.items():
        with_runs = runs.get((workload, clients, "with"), [])
        without_runs = runs.get((workload, clients, "without"), [])
        if not with_runs or not without_runs:
            notes.append(f"{WORKLOAD_NAMES[workload]} c={clients}: no runs")
            continue
        tps = {mode: {r: run["overall"]["output_throughput"] for r, run in rs}
               for mode, rs in (("with", with_runs), ("without", without_runs))}
        med = {mode: statistics.median(v.values()) for mode, v in tps.items()}
        ratio = med["with"] / med["without"] if med["without"] else float("nan")
        per_round = [tps["with"][r] / tps["without"][r]
                     for r in sorted(tps["with"]) if tps["without"].get(r)]
        drafted, accepted = spec_totals(with_runs)
        acceptance = f"{accepted / drafted:.1%} ({drafted})" if drafted else f"- ({drafted})"
        cell = lambda v: f"{statistics.median(v):.1f} ({min(v):.0f}-{max(v):.0f})"
        lines.append(
            f"| {WORKLOAD_NAMES[workload]} | {clients} | {cell(list(tps['with'].values()))} "
            f"| {cell(list(tps['without'].values()))} | {ratio:.2f}x "
            f"| {min(per_round):.2f}-{max(per_round):.2f} | {target_text} "
            f"| {'yes' if ratio >= target else 'no'} | {acceptance} |")
        opted_out, _ = spec_totals(without_runs)
        if opted_out:
            notes.append(f"{WORKLOAD_NAMES[workload]} c={clients}: {opted_out} draft tokens in "
                         "the runs with `\"speculative\": false` (expected none)")
        failed = sum(run["overall"]["failed"] for _, run in with_runs + without_runs)
        if failed:
            notes.append(f"{WORKLOAD_NAMES[workload]} c={clients}: {failed} failed requests "
                         "(see all.md)")
    return "\n".join(lines) + "\n", notes


def report(args):
    runs = load_runs(args.out)
    rounds = len({r for rs in runs.values() for r, _ in rs})
    body, notes = table(runs)
    text = [
        "## Speculative decoding (issue 22): `scripts/bench-speculative.sh --write`",
        "",
        f"`{args.command}`, {datetime.date.today().isoformat()}, {args.seconds} s of runs. "
        f"Machine: {machine()}, load average before / after: {args.load}. epas {args.revision}.",
        "",
        f"One server, `{args.server}`; every run twice on it, with drafts and with "
        "`\"speculative\": false` in the body (same prompts and seed, which goes first "
        f"alternating by round); the median of {rounds} interleaved round(s). Generated tok/s is "
        "epas-loadtest's output throughput: completed tokens per second of the whole run, 128 "
        "per request (ignore_eos), temperature 0. Editing: prompts from "
        "`scripts/editing_prompts.py` (a State of the Union passage to repeat with its spelling "
        "corrected, with one word replaced throughout, or quoted in a summary; each prompt ends "
        "inside the text to reproduce). SOTU: 256-token windows of `data/sotu-eval.txt`. "
        "Acceptance: draft tokens the model kept, of those checked, in the runs with drafts "
        "(the server's `epas_spec_decode_*` counters); at 16 clients the server drafts only "
        "while at most `--speculative-max-batch` (8) sequences run.",
        "",
        body,
    ]
    if notes:
        text += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    text.append("Every run's full table: `target/bench-speculative/all.md`.")
    return "\n".join(text) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    for flag in ("--command", "--server", "--revision", "--load", "--seconds"):
        ap.add_argument(flag, required=True)
    ap.add_argument("--write", metavar="FILE")
    args = ap.parse_args()
    text = report(args)
    print(text, end="")
    if args.write:
        write_section(args.write, "bench-speculative", "scripts/bench-speculative.sh", text)


if __name__ == "__main__":
    main()
