"""Preference tuning (DPO) with OWS inside TRL's DPOTrainer: the optimizer + callback pattern.

    python examples/dpo_trl.py                        # the demo model (SmolLM2-135M), 30 steps
    python examples/dpo_trl.py --model PATH --steps 100

The preference pairs are generated: for "What is 17 + 25?" the chosen answer is "42" and the rejected
one a near miss. OWS samples gamma decoder layers every K steps and trains them with GaLore, exactly as
in SFT; TRL computes the DPO loss. The reference log-probabilities are computed once before training
(``precompute_ref_log_probs``), so no second copy of the model is kept. Prints the reward margin
(chosen minus rejected, in units of beta) at the start and at the end: it grows as the model learns the
preference. The same run from the command line: ``ows train --task dpo --dataset pairs.jsonl ...``.
"""

from __future__ import annotations

import argparse
import logging
import random

import ows
from ows.loading import load_model_and_tokenizer


def preference_pairs(n: int, seed: int) -> list[dict[str, str]]:
    """``{prompt, chosen, rejected}`` rows: the right sum against an off-by-some answer."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        wrong = a + b + rng.choice([-10, -2, -1, 1, 2, 10])
        rows.append({"prompt": f"Question: What is {a} + {b}? Answer:", "chosen": f" {a + b}", "rejected": f" {wrong}"})
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="HF model folder, hub id, or smollm2-135m")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--num-active-layers", type=int, default=4)
    parser.add_argument("--sample-interval", type=int, default=10)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=512, help="generated preference pairs")
    parser.add_argument("--output-dir", default="outputs/dpo-example")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = load_model_and_tokenizer(args.model)
    # 'uniform' sampling needs no outlier profile; for 'owl' pass a profile as prepare_for_trainer's third argument:
    # ows.profile_outliers(model, ows.data.calibration.calibration_batches(tokenizer, texts, 32, 256))
    config = ows.OWSConfig(num_active_layers=args.num_active_layers, sample_interval=args.sample_interval,
                           rank=args.rank, sampling_strategy="uniform", seed=0)
    optimizer, callback = ows.prepare_for_trainer(model, config, lr=args.lr)
    training = DPOConfig(output_dir=args.output_dir, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                         learning_rate=args.lr, beta=args.beta, precompute_ref_log_probs=True, max_length=64,
                         logging_steps=1, save_strategy="no", report_to="none", seed=0, lr_scheduler_type="constant",
                         bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    trainer = DPOTrainer(model=model, args=training, train_dataset=Dataset.from_list(preference_pairs(args.pairs, 0)),
                         processing_class=tokenizer, optimizers=(optimizer, None), callbacks=[callback])
    ows.attach_trainer(trainer)
    trainer.train()
    margins = [h["rewards/margins"] for h in trainer.state.log_history if "rewards/margins" in h]
    head, tail = sum(margins[:5]) / len(margins[:5]), sum(margins[-5:]) / len(margins[-5:])
    print(f"reward margin: first 5 steps {head:.3f}, last 5 steps {tail:.3f}")
    return {"margins": margins, "visits": dict(callback.controller.visits), "draws": len(callback.controller.schedule)}


if __name__ == "__main__":
    main()
