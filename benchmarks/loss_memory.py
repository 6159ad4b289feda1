"""Standard vs chunked causal-LM loss on the real model: memory and time of forward + backward.

Each mode runs in its own fresh subprocess (peak RSS is a per-process high-water mark). A child
loads the model, records its RSS, then runs ``--steps`` forward + backward passes of a full
fine-tune (every parameter requires grad; no optimizer, so the figure isolates the loss) on random
token batches whose first half is masked like a prompt. It reports the peak RSS above the loaded
model and the median seconds per pass.

    python benchmarks/loss_memory.py                  # SmolLM2-135M, batch 8 x 256 tokens, 3 passes
    python benchmarks/loss_memory.py --batch 16 --seq 512
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

MODES = {"standard": 0, "chunked": 1024}


def child(args: argparse.Namespace) -> dict:
    import torch

    from ows.integrations.chunked_loss import enable_chunked_loss
    from ows.memory.measure import peak_rss_bytes
    from ows.loading import load_model_and_tokenizer

    torch.manual_seed(0)
    model, _ = load_model_and_tokenizer(args.model)
    if MODES[args.child]:
        assert enable_chunked_loss(model, MODES[args.child])
    model.train()
    base = peak_rss_bytes()
    vocab = model.get_output_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (args.batch, args.seq))
    labels = ids.clone()
    labels[:, : args.seq // 2] = -100
    times, losses = [], []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
        model.zero_grad(set_to_none=True)
    return {"mode": args.child, "peak_above_model_gib": (peak_rss_bytes() - base) / 2**30,
            "median_s": statistics.median(times), "loss": losses[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--child", choices=sorted(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    print("command: python benchmarks/loss_memory.py " + " ".join(sys.argv[1:]))
    rows = []
    for mode in MODES:
        cmd = [sys.executable, __file__, "--child", mode, "--model", args.model, "--batch", str(args.batch),
               "--seq", str(args.seq), "--steps", str(args.steps)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    std = rows[0]
    print(f"model {args.model}, batch {args.batch} x {args.seq} tokens (half masked), fp32, forward + backward\n")
    print("| loss | peak RSS above model GiB | s/pass | loss value |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['peak_above_model_gib']:.2f} ({r['peak_above_model_gib'] / std['peak_above_model_gib']:.2f}×)"
              f" | {r['median_s']:.2f} ({r['median_s'] / std['median_s']:.2f}×) | {r['loss']:.4f} |")


if __name__ == "__main__":
    main()
