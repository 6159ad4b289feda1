"""A measured outlier profile next to the Llama-2-7B ratios published with the paper's code.

    python benchmarks/profile_plot.py PROFILE.json [--reference ../shared/llama2_7b_owl_ratios.json]
        [--out docs/results/profiles.png]

PROFILE.json is what ``ows analyze`` / ``ows train`` write (``ratios`` as fractions, ``threshold`` M).
The reference file holds the 32 values of the paper code's ``metric_cache/llama2_7b_ratio_13.txt`` in
percent, with their source. Layers are placed by relative depth (0 = first, 1 = last) so models of
different depth share one axis; each curve is also shown as sampling probabilities (p ∝ D), which is
what the sampler uses. Prints both as a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _probabilities(ratios: list[float]) -> list[float]:
    total = sum(ratios)
    return [r / total for r in ratios]


def _depth(n: int) -> list[float]:
    return [i / (n - 1) for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile")
    parser.add_argument("--reference", default=str(ROOT.parent / "shared" / "llama2_7b_owl_ratios.json"))
    parser.add_argument("--label", default="SmolLM2-135M (ows analyze, news text)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "profiles.png"))
    args = parser.parse_args(argv)
    measured = json.loads(Path(args.profile).read_text())
    reference = json.loads(Path(args.reference).read_text())
    ours = [100 * r for r in measured["ratios"]]
    theirs = list(reference["ratios"])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for values, label in ((ours, f"{args.label}, M={measured['threshold']:g}"),
                          (theirs, f"{reference['model']} (paper code's metric_cache)")):
        left.plot(_depth(len(values)), values, marker="o", ms=3, label=label)
        right.plot(_depth(len(values)), _probabilities(values), marker="o", ms=3, label=label)
    left.set(xlabel="relative depth of the decoder layer", ylabel="outlier ratio D_l (%)", title="Layerwise outlier ratio")
    right.set(xlabel="relative depth of the decoder layer", ylabel="p_l = D_l / sum D", title="Sampling probability (owl)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    print("| model | layers | min % | max % | first layer % | last layer % | largest p | smallest p |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, values in ((args.label, ours), (reference["model"], theirs)):
        p = _probabilities(values)
        print(f"| {name} | {len(values)} | {min(values):.2f} | {max(values):.2f} | {values[0]:.2f} | {values[-1]:.2f} "
              f"| {max(p):.3f} | {min(p):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
