"""Summarises scripts/quality-experiment.sh: for each method (baseline, epas, flexible) the
perplexity at every sharing depth, mean and spread over the seeds; how far each depth is from the
method's best depth (the goal: within 1% up to the trained ratio); the final validation loss; and
training tokens/s per sharing phase with the analytic FLOP saving.
Usage: quality_report.py OUT STEPS SEED..."""
import csv
import json
import statistics
import sys
from pathlib import Path

METHODS = ("baseline", "epas", "flexible")


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def mean_spread(values):
    m = statistics.mean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return m, s


def main():
    out, steps, seeds = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    evals = {(m, s): json.loads((out / f"{m}-s{s}-eval.json").read_text())
             for m in METHODS for s in seeds}
    depths = [e["sharing_layers"] for e in evals[(METHODS[0], seeds[0])]]
    print(f"## Perplexity on SOTU 2000-2021 (ctx 256), {steps} steps, seeds {', '.join(seeds)}\n")
    print("Mean ± standard deviation over the seeds; the baseline above 0 layers is forced "
          "sharing.\n")
    print("| method | " + " | ".join(f"{d} sharing layers" for d in depths) + " |")
    print("|---|" + "---|" * len(depths))
    for m in METHODS:
        cells = []
        for i, _ in enumerate(depths):
            mu, sd = mean_spread([evals[(m, s)][i]["perplexity"] for s in seeds])
            cells.append(f"{mu:.2f} ± {sd:.2f}")
        print(f"| {m} | " + " | ".join(cells) + " |")
    print("\n## Each depth against the method's best depth (per seed, then mean ± sd)\n")
    print("| method | " + " | ".join(f"{d}" for d in depths) + " | worst |")
    print("|---|" + "---|" * (len(depths) + 1))
    for m in METHODS:
        per_depth = [[] for _ in depths]
        worst = []
        for s in seeds:
            ppl = [e["perplexity"] for e in evals[(m, s)]]
            best = min(ppl)
            gaps = [p / best - 1 for p in ppl]
            for i, g in enumerate(gaps):
                per_depth[i].append(g)
            worst.append(max(gaps))
        cells = [f"{mean_spread(g)[0]:+.1%} ± {mean_spread(g)[1]:.1%}" for g in per_depth]
        mu, sd = mean_spread(worst)
        print(f"| {m} | " + " | ".join(cells) + f" | {mu:+.1%} ± {sd:.1%} |")
    trained = len(depths) - 1
    epas_top = [evals[("epas", s)][trained]["perplexity"] for s in seeds]
    flex_top = [evals[("flexible", s)][trained]["perplexity"] for s in seeds]
    diffs = [f / e - 1 for f, e in zip(flex_top, epas_top)]
    mu, sd = mean_spread(diffs)
    print(f"\nFlexible against the plain schedule at the trained depth ({depths[trained]} layers), "
          f"same seed: {mu:+.2%} ± {sd:.2%} (per seed: "
          + ", ".join(f"{d:+.2%}" for d in diffs) + ")\n")
    print("Final validation loss (in training, at the run's own sharing), mean ± sd: " + ", ".join(
        "{} {:.4f} ± {:.4f}".format(m, *mean_spread(
            [float([r for r in rows(out / f"{m}-s{s}/train_log.csv") if r["val_loss"]][-1]
                   ["val_loss"]) for s in seeds]))
        for m in METHODS) + "\n")
    print("## Training tokens/s per number of sharing layers (`epas bench-train`, median of "
          "interleaved full steps)\n")
    print("| sharing layers | training tok/s | measured speed-up | analytic FLOP saving | "
          "analytic speed-up |")
    print("|---|---|---|---|---|")
    for r in json.loads((out / "bench-train.json").read_text()):
        print(f"| {r['sharing_layers']} | {r['tokens_per_second']:.0f} | "
              f"{r['speedup_vs_no_sharing']:+.1%} | {r['analytic_flop_saving']:.1%} | "
              f"{r['analytic_speedup']:+.1%} |")


main()
