"""Summarises scripts/quality-experiment.sh: perplexity per ratio for both runs, training
tokens/s per sharing phase against the baseline's same steps, and the analytic FLOP saving."""
import csv
import json
import sys
from pathlib import Path


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def main():
    out = Path(sys.argv[1])
    cfg = json.loads((out / "epas/config.json").read_text())
    print("## Perplexity on SOTU 2000-2021 (ctx 256)\n")
    print("| run | " + " | ".join(f"ratio {r}" for r in ("0", "0.25", "0.5")) + " |")
    print("|---|---|---|---|")
    for run in ("baseline", "epas"):
        ev = json.loads((out / f"{run}-eval.json").read_text())
        cells = [f"{e['perplexity']:.2f} (k={e['sharing_layers']})" for e in ev]
        print(f"| {run} | " + " | ".join(cells) + " |")
    base, epas = rows(out / "baseline/train_log.csv"), rows(out / "epas/train_log.csv")
    vb = [float(r["val_loss"]) for r in base if r["val_loss"]]
    ve = [float(r["val_loss"]) for r in epas if r["val_loss"]]
    print(f"\nFinal validation loss (in-training, at the run's own sharing): baseline {vb[-1]:.4f}, "
          f"EPAS {ve[-1]:.4f}\n")
    print("## Training tokens/s per number of sharing layers (`epas bench-train`, median of "
          "interleaved full steps)\n")
    print("| sharing layers | training tok/s | measured speed-up | analytic FLOP saving | analytic speed-up |")
    print("|---|---|---|---|---|")
    for r in json.loads((out / "bench-train.json").read_text()):
        print(f"| {r['sharing_layers']} | {r['tokens_per_second']:.0f} | "
              f"{r['speedup_vs_no_sharing']:+.1%} | {r['analytic_flop_saving']:.1%} | "
              f"{r['analytic_speedup']:+.1%} |")
    print("\nWall time of the two runs (same machine, not isolated): baseline "
          f"{float(base[-1]['elapsed_s']):.0f} s, EPAS {float(epas[-1]['elapsed_s']):.0f} s.")


main()
