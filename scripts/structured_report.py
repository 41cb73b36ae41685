#!/usr/bin/env python3
"""The report of scripts/bench-structured.sh, as Markdown on stdout: from the epas-loadtest
reports OUT/runs/r{ROUND}-{with,without}.json, the median generated tok/s at 16 clients with a
JSON Schema and without, and their ratio against the issue's target (at most 10% slower). With
--write FILE it also replaces the bench-structured section of FILE.

usage: structured_report.py OUT --command CMD --server CMD --revision REV --load TEXT
                            --seconds N [--write BENCHMARKS.md]
"""
import argparse
import datetime
import json
import pathlib
import re
import statistics

from bench_report_common import machine, write_section

RUN_NAME = re.compile(r"r(\d+)-(with|without)\.json$")
TARGET = 0.90


def load_runs(out):
    """{mode: {round: run report}}"""
    runs = {"with": {}, "without": {}}
    for path in sorted(pathlib.Path(out, "runs").iterdir()):
        m = RUN_NAME.search(path.name)
        if m:
            runs[m[2]][int(m[1])] = json.loads(path.read_text())["runs"][0]
    return runs


def report(args):
    runs = load_runs(args.out)
    tps = {mode: {r: run["overall"]["output_throughput"] for r, run in rs.items()}
           for mode, rs in runs.items()}
    if not tps["with"] or not tps["without"]:
        raise SystemExit("no runs to report")
    med = {mode: statistics.median(v.values()) for mode, v in tps.items()}
    ratio = med["with"] / med["without"]
    per_round = [tps["with"][r] / tps["without"][r] for r in sorted(tps["with"])
                 if tps["without"].get(r)]
    cell = lambda v: f"{statistics.median(v):.1f} ({min(v):.0f}-{max(v):.0f})"
    failed = sum(run["overall"]["failed"] for rs in runs.values() for run in rs.values())
    lines = [
        "## Structured outputs (issue 20): `scripts/bench-structured.sh --write`",
        "",
        f"`{args.command}`, {datetime.date.today().isoformat()}, {args.seconds} s of runs. "
        f"Machine: {machine()}, load average before / after: {args.load}. epas {args.revision}.",
        "",
        f"One server, `{args.server}`; 16 clients, every run twice on it with the same prompts "
        "and seed, once with a JSON Schema in `response_format` (a list of at least 50 records "
        "with a bounded string, an integer range and an enum, so no output ends before "
        "max_tokens) and once without, which goes first alternating by round; the median of "
        f"{len(per_round)} interleaved round(s). Generated tok/s is epas-loadtest's output "
        "throughput: completed tokens per second of the whole run, 128 per request "
        "(ignore_eos), temperature 0, 128-token windows of `data/sotu-eval.txt` as prompts.",
        "",
        "| clients | with schema, tok/s (min-max) | without, tok/s (min-max) | with / without "
        "| per-round ratios | target | met |",
        "|---:|---:|---:|---:|---:|---|---|",
        f"| 16 | {cell(list(tps['with'].values()))} | {cell(list(tps['without'].values()))} "
        f"| {ratio:.2f}x | {min(per_round):.2f}-{max(per_round):.2f} | >= 0.90x "
        f"| {'yes' if ratio >= TARGET else 'no'} |",
        "",
    ]
    if failed:
        lines += [f"Note: {failed} failed requests (see all.md).", ""]
    lines.append("Every run's full table: `target/bench-structured/all.md`.")
    return "\n".join(lines) + "\n"


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
        write_section(args.write, "bench-structured", "scripts/bench-structured.sh", text)


if __name__ == "__main__":
    main()
