#!/usr/bin/env python
"""Write a copy of a model whose output head is its own matrix (a copy of the tied input embedding).

SmolLM2 ties its head to its input embedding, so options that only act on an untied head (``project_head_grad``)
change nothing on it. The copy computes the same logits before training and trains the two matrices apart:

    python benchmarks/untie_head.py --model smollm2-135m --output /tmp/smollm2-135m-untied
    python benchmarks/compare_methods.py --quick --model /tmp/smollm2-135m-untied --methods ows-module-g5,ows-headgrad-full

The folder holds model weights: keep it out of the repository.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger("untie_head")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="a model folder or smollm2-135m")
    p.add_argument("--output", required=True, help="the folder to write (must not exist or be empty)")
    args = p.parse_args(argv)
    out = Path(args.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        p.error(f"--output {args.output!r} exists and is not an empty folder: name a new folder")
    return args


def untie(model) -> bool:  # noqa: ANN001 (a transformers model)
    """Give ``model`` its own head matrix, a copy of the input embedding; False if the head was not tied."""
    import torch

    head, inputs = model.get_output_embeddings(), model.get_input_embeddings()
    tied = head.weight is inputs.weight
    model.config.tie_word_embeddings = False
    if getattr(model.config, "text_config", None) is not None:
        model.config.text_config.tie_word_embeddings = False
    if tied:
        head.weight = torch.nn.Parameter(inputs.weight.detach().clone())
    return tied


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from ows.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(args.model, "float32")
    tied = untie(model)
    model.save_pretrained(args.output)
    tokenizer.save_pretrained(args.output)
    logger.info("%s: %s written to %s", args.model, "head untied" if tied else "head was not tied, copied as is",
                args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
