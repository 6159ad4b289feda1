"""OWS in a plain PyTorch loop: profile outliers, sample layers, train with GaLoreAdamW.

    python examples/plain_pytorch.py                      # the demo model (SmolLM2-135M), 40 steps
    python examples/plain_pytorch.py --model PATH --steps 100 --rank 64

Trains on generated two-number additions ("Question: What is 17 + 25? Answer: 42") with the loss on
the answer tokens only, and prints the held-out answer loss before and after.
"""

from __future__ import annotations

import argparse
import logging
import random
import time

import torch

import ows
from ows.loading import load_model_and_tokenizer


def addition_examples(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = [(rng.randint(10, 99), rng.randint(10, 99)) for _ in range(n)]
    return [(f"Question: What is {a} + {b}? Answer:", f" {a + b}") for a, b in pairs]


def encode(tokenizer, examples: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Right-padded batch; labels are -100 except on the answer tokens and the end-of-text token."""
    rows = []
    for prompt, answer in examples:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((p + a, [-100] * len(p) + a))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r, _ in rows])
    labels = torch.tensor([l + [-100] * (width - len(l)) for _, l in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in rows])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def answer_loss(model, batch) -> float:
    model.eval()
    loss = float(model(**batch).loss)
    model.train()
    return loss


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="HF model folder, hub id, or smollm2-135m")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--num-active-layers", type=int, default=5)
    parser.add_argument("--sample-interval", type=int, default=10)
    parser.add_argument("--sampling-granularity", choices=("layer", "module"), default="layer",
                        help="whole decoder layers (the paper; the default here) or single weights (ows train's default)")
    parser.add_argument("--rank", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(args.seed)

    model, tokenizer = load_model_and_tokenizer(args.model)
    train = addition_examples(args.steps * args.batch_size, seed=args.seed)
    held_out = encode(tokenizer, addition_examples(64, seed=args.seed + 1000))

    calibration = [encode(tokenizer, train[i : i + 8]) for i in range(0, 32, 8)]
    profile = ows.profile_outliers(model, calibration, threshold=5.0)
    config = ows.OWSConfig(num_active_layers=args.num_active_layers, sample_interval=args.sample_interval,
                           sampling_granularity=args.sampling_granularity, sampling_strategy="owl", rank=args.rank,
                           update_proj_gap=50,
                           seed=args.seed)
    optimizer, controller = ows.create_ows(model, config, profile, lr=args.lr)

    before = answer_loss(model, held_out)
    print(f"held-out answer loss before: {before:.3f}")
    losses, start = [], time.perf_counter()
    for step in range(args.steps):
        active = controller.begin_step(step)
        batch = encode(tokenizer, train[step * args.batch_size : (step + 1) * args.batch_size])
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        print(f"step {step + 1:3d}/{args.steps}  loss {loss.item():.3f}  active layers {list(active)}")
    after = answer_loss(model, held_out)
    print(f"held-out answer loss after:  {after:.3f}  ({time.perf_counter() - start:.0f} s of training)")
    return {"before": before, "after": after, "losses": losses, "visits": dict(controller.visits)}


if __name__ == "__main__":
    main()
