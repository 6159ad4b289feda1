"""Seconds per training step of a packed batch with and without example boundaries (docs/TEMPLATES.md).

    python benchmarks/packing_cost.py [--steps 8] [--threads 1]

A 4-layer Llama (hidden 256) with random weights, batch 4 x 512 tokens packed by ``ows.data.encode`` from
examples of 20-120 tokens; forward + backward + AdamW, the two variants interleaved, medians printed:
position ids per example (transformers' block-diagonal mask) against the same tokens with a plain causal mask.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch
    import transformers

    from ows.data.encode import PadCollator, _pack

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    rng = random.Random(0)
    config = transformers.LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                                      use_cache=False)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    examples = []
    for _ in range(400):
        ids = [rng.randrange(512) for _ in range(rng.randint(20, 120))]
        examples.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": ids})
    packed = PadCollator(0)(_pack(examples, 512)[:4])
    plain = {"input_ids": packed["input_ids"], "labels": packed["labels"],
             "attention_mask": torch.ones_like(packed["input_ids"])}

    def step(batch: dict) -> float:
        started = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    step(packed), step(plain)
    times: dict[str, list[float]] = {"position ids per example": [], "no boundaries": []}
    for _ in range(args.steps):
        times["position ids per example"].append(step(packed))
        times["no boundaries"].append(step(plain))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"{name}: {value:.3f} s/step")
    print(f"ratio: {medians['position ids per example'] / medians['no boundaries']:.2f}")


if __name__ == "__main__":
    main()
