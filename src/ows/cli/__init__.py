"""Command line: ``ows train``, ``analyze``, ``eval``, ``memory``, ``export``, ``merge``. Heavy imports happen inside each command."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .common import UsageError, setup_logging

COMMANDS = {
    "train": ("ows.cli.train", "fine-tune a model with OWS (or a baseline method); no config = the demo"),
    "analyze": ("ows.cli.analyze", "outlier profile of a model: table, JSON and a bar chart"),
    "eval": ("ows.cli.eval", "evaluate a model (MMLU, GSM8K, perplexity, reasoning-gym, local files); compare runs"),
    "memory": ("ows.cli.memory", "estimated training memory per method from a model config alone"),
    "export": ("ows.cli.export", "a run's changed tensors only (delta), or a PEFT LoRA adapter extracted from them"),
    "merge": ("ows.cli.merge", "the full fine-tuned model again from its base and a delta, bit for bit"),
}

EPILOG = """examples:
  ows train                                  # the demo: SmolLM2-135M on a reasoning task, CPU, ~6 min
  ows train configs/demo.yaml --max_steps 20 # a YAML config with flag overrides
  ows analyze smollm2-135m --num-samples 16  # outlier table of the demo model
  ows eval outputs/demo --tasks mmlu,gsm8k --limit 50   # evaluate a model; ows eval --compare a.json b.json
  ows memory llama-2-7b --dtype bfloat16     # estimated memory of full / LoRA / GaLore / LISA / OWS
  ows export delta outputs/demo demo-delta   # only the tensors the run changed; ows merge rebuilds the model
  ows COMMAND --help                         # every option of a command
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ows`` command; returns the exit code (0 ok, 2 usage error, 1 runtime error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="ows", description="Outlier-weighed Layerwise Sampling for LLM fine-tuning.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=sorted(COMMANDS), help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items()))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        parser.print_usage(sys.stderr)
        print(f"ows: unknown command {argv[0]!r}: use one of {', '.join(sorted(COMMANDS))}", file=sys.stderr)
        return 2
    setup_logging()
    module = importlib.import_module(COMMANDS[argv[0]][0])
    try:
        return int(module.run(argv[1:]) or 0)
    except UsageError as err:
        print(f"ows {argv[0]}: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as err:  # bad input found by the library before long work
        print(f"ows {argv[0]}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ows {argv[0]}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # runtime failure: one line, the traceback in the debug log
        logging.getLogger("ows").debug("traceback", exc_info=True)
        print(f"ows {argv[0]}: failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
