"""Exact vs randomized SVD for GaLore projectors, on real gradients of the real model.

One forward + backward of SmolLM2-135M on calibration text gives the gradient of every 2-D weight
in the decoder layers. For each, both projectors are computed at rank ``--rank`` (with the
optimizer's own functions) and compared side by side:

- time: seconds to compute the projector (summed over all matrices), as a ratio randomized / exact;
- captured energy: ||P(G)||_F / ||G||_F, the share of the gradient the rank-r projection keeps
  (exact SVD is the optimum for that rank), reported as mean and worst ratio randomized / exact.

    python benchmarks/projection_quality.py                 # rank 128, 4 x 256 tokens
    python benchmarks/projection_quality.py --rank 32 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _gradients(model_name: str, samples: int, seq_len: int) -> list[tuple[str, "torch.Tensor"]]:
    import torch

    from ows.data.calibration import builtin_calibration_texts, calibration_batches
    from ows.layers import find_decoder_layers
    from ows.loading import load_model_and_tokenizer
    from ows.outliers import weight_in_out

    model, tokenizer = load_model_and_tokenizer(model_name)
    for batch in calibration_batches(tokenizer, builtin_calibration_texts(), samples, seq_len):
        ids = batch["input_ids"] if isinstance(batch, dict) else batch
        model(input_ids=ids, labels=ids).loss.backward()
    grads = []
    for i, layer in enumerate(find_decoder_layers(model)):
        for name, module in layer.named_modules():
            weight = weight_in_out(module)
            if weight is not None and module.weight.grad is not None:
                grad = module.weight.grad if weight is module.weight else module.weight.grad.t()
                grads.append((f"{i}.{name}", grad.detach().clone()))
    del model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return grads


def _measure(grad: "torch.Tensor", rank: int, method: str) -> tuple[float, float]:
    from ows.optim.galore_adamw import _robust_projector
    from ows.optim.projector import project, project_back, projection_side

    side = projection_side(grad.shape, "std")
    start = time.perf_counter()
    projector = _robust_projector(grad, rank, side, None, method)
    seconds = time.perf_counter() - start
    kept = project_back(project(grad, projector, side), projector, side).norm() / grad.norm().clamp(min=1e-30)
    return seconds, float(kept)


def run(args: argparse.Namespace) -> dict:
    grads = _gradients(args.model, args.samples, args.seq_len)
    rows = []
    for name, grad in grads:
        (t_exact, e_exact), (t_rand, e_rand) = _measure(grad, args.rank, "exact"), _measure(grad, args.rank, "randomized")
        rows.append({"matrix": name, "shape": list(grad.shape), "exact_s": t_exact, "randomized_s": t_rand,
                     "exact_energy": e_exact, "randomized_energy": e_rand})
    ratios = [r["randomized_energy"] / r["exact_energy"] for r in rows]
    return {
        "command": "python benchmarks/projection_quality.py " + " ".join(sys.argv[1:]),
        "model": args.model, "rank": args.rank, "matrices": len(rows),
        "exact_seconds": sum(r["exact_s"] for r in rows), "randomized_seconds": sum(r["randomized_s"] for r in rows),
        "mean_exact_energy": sum(r["exact_energy"] for r in rows) / len(rows),
        "mean_randomized_energy": sum(r["randomized_energy"] for r in rows) / len(rows),
        "mean_energy_ratio": sum(ratios) / len(ratios), "worst_energy_ratio": min(ratios), "rows": rows,
    }


def table(result: dict) -> str:
    time_ratio = result["randomized_seconds"] / result["exact_seconds"]
    return "\n".join([
        f"command: {result['command']}",
        f"{result['model']}: {result['matrices']} decoder matrices, rank {result['rank']}",
        "",
        "| projector | total seconds | captured energy (mean) | vs exact (mean / worst) |",
        "|---|---|---|---|",
        f"| exact SVD | {result['exact_seconds']:.2f} (1.00×) | {result['mean_exact_energy']:.3f} | 1.000 / 1.000 |",
        f"| randomized SVD | {result['randomized_seconds']:.2f} ({time_ratio:.2f}×) | "
        f"{result['mean_randomized_energy']:.3f} | {result['mean_energy_ratio']:.3f} / {result['worst_energy_ratio']:.3f} |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rank", type=int, default=128)
    parser.add_argument("--samples", type=int, default=4, help="calibration windows for the gradient")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result, indent=1) if args.json else table(result))


if __name__ == "__main__":
    main()
