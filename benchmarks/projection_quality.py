"""Exact SVD vs the randomized SVD vs the Gram matrix for GaLore projectors, on real gradients of the real model.

One forward + backward of SmolLM2-135M on calibration text gives the gradient of every 2-D weight
in the decoder layers and of the (tied) embedding matrix, the largest weight ``outside_optimizer: galore``
projects. For each, every projector is computed at rank ``--rank`` (with the optimizer's own functions)
and compared side by side:

- time: seconds to compute the projector (summed over all matrices), as a ratio to exact;
- captured energy: ||P(G)||_F / ||G||_F, the share of the gradient the rank-r projection keeps
  (exact SVD is the optimum for that rank), reported as mean and worst ratio to exact.

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
    embedding = model.get_input_embeddings().weight
    if embedding.grad is not None:
        grads.append(("embedding", embedding.grad.detach().clone()))
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


METHODS = ("exact", "randomized", "gram")


def run(args: argparse.Namespace) -> dict:
    grads = _gradients(args.model, args.samples, args.seq_len)
    rows = []
    for name, grad in grads:
        row: dict = {"matrix": name, "shape": list(grad.shape)}
        for method in METHODS:
            row[f"{method}_s"], row[f"{method}_energy"] = _measure(grad, args.rank, method)
        rows.append(row)
    result = {"command": "python benchmarks/projection_quality.py " + " ".join(sys.argv[1:]),
              "model": args.model, "rank": args.rank, "matrices": len(rows), "rows": rows}
    for method in METHODS:
        ratios = [r[f"{method}_energy"] / r["exact_energy"] for r in rows]
        result[method] = {"seconds": sum(r[f"{method}_s"] for r in rows),
                          "mean_energy": sum(r[f"{method}_energy"] for r in rows) / len(rows),
                          "mean_energy_ratio": sum(ratios) / len(ratios), "worst_energy_ratio": min(ratios),
                          "embedding_seconds": next((r[f"{method}_s"] for r in rows if r["matrix"] == "embedding"),
                                                    None)}
    return result


def table(result: dict) -> str:
    exact = result["exact"]["seconds"]
    lines = [f"command: {result['command']}",
             f"{result['model']}: {result['matrices']} matrices (the decoder's and the embedding), rank {result['rank']}",
             "", "| projector | total seconds | of it the embedding | captured energy (mean) | vs exact (mean / worst) |",
             "|---|---|---|---|---|"]
    for method in METHODS:
        m = result[method]
        emb = "–" if m["embedding_seconds"] is None else f"{m['embedding_seconds']:.2f}"
        lines.append(f"| {method} | {m['seconds']:.2f} ({m['seconds'] / exact:.2f}×) | {emb} | {m['mean_energy']:.3f} | "
                     f"{m['mean_energy_ratio']:.3f} / {m['worst_energy_ratio']:.3f} |")
    return "\n".join(lines)


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
