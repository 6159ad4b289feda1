"""Child side: one ``ows train`` run (``ows.train`` on the parsed flags) with measurements added around it.

Run as ``python benchmarks/bench/child.py SPEC.json`` (``runner.run_child`` does). A ``RunCallback``
adds, without changing training: forgetting perplexity after training, peak RSS, peak tracked tensor
memory (parameters + gradients + optimizer state), per-step wall times, time and count of GaLore's SVDs
(the optimizer's own counters) and the loss curve; with quantized frozen layers (``frozen_quantization``),
``heldout_answer_loss_quantized`` and ``forgetting_ppl_quantized``: the held-out answer loss and the news
perplexity after the last step, before the frozen layers go back to their exact weights (the model as
training saw it; the other figures are the exact model's; these passes count in ``train_seconds``, not in
the step times). The run keeps no weights (``keep_weights=False``) unless the spec asks, and, unless it
asks, skips the base-model metrics (``heldout_before=False``).
"""

from __future__ import annotations

import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the `bench` package: its peers register methods
import bench.peers  # noqa: E402,F401  (registers the peer methods in this process too)


def forgetting_perplexity(model: Any, tokenizer: Any, samples: int, seq_len: int, seed: int = 1234) -> float:
    """exp(token-weighted mean NLL) on a fixed slice of gensim's English news text."""
    import torch

    from ows.data.calibration import builtin_calibration_texts, calibration_batches

    batches = calibration_batches(tokenizer, builtin_calibration_texts(), samples, seq_len, batch_size=4, seed=seed)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for batch in batches:
                ids = batch["input_ids"].to(device)
                logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device)).logits[:, :-1].float()
                targets = ids[:, 1:]
                total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                                 targets.reshape(-1), reduction="sum"))
                count += targets.numel()
    finally:
        model.train(was_training)
    return math.exp(total / count)


def _bench_callback(spec: dict[str, Any], bench: dict[str, Any], script: Any) -> Any:
    """An ``ows.RunCallback`` recording per-step wall time, tracked tensor memory, SVD time, forgetting and the
    loss curve; ``bench`` receives the figures."""
    from ows import RunCallback
    from ows.eval.heldout import answer_loss
    from ows.integrations.hf import unwrap_optimizer
    from ows.memory.measure import gradient_bytes, tensor_bytes
    from ows.recipe.outputs import HELDOUT_BATCH_SIZE

    from bench.peers import state_bytes

    forgetting = spec["forgetting_samples"] > 0

    def perplexity(model: Any, tokenizer: Any) -> float | None:
        return forgetting_perplexity(model, tokenizer, spec["forgetting_samples"], spec["forgetting_seq_len"]) \
            if forgetting else None

    class BenchCallback(RunCallback):
        """Per-step wall time and tracked tensor memory (params + grads + optimizer state).

        Parameters include the quantized bytes of frozen layers (``frozen_quantization``); optimizer
        state the peers' hidden copies where they can be seen (``bench.peers.state_bytes``).
        """

        def __init__(self) -> None:
            self.controller: Any = None  # the frozen layers' residency, from on_setup
            self.tokenizer: Any = None
            self.heldout: list[dict] = []  # the run's held-out records, from on_datasets
            self.optimizer: Any = None
            self.state_hidden = False  # the optimizer's state could not be read (transformers' layerwise)
            self.t0: float | None = None
            self.step_times: list[float] = []
            self.peak_tracked = 0
            self.peak_state = 0
            self.peak_grads = 0

        def on_datasets(self, datasets: Any) -> None:
            self.heldout = datasets.heldout

        def on_setup(self, setup: Any, trainer: Any, tokenizer: Any) -> None:
            self.controller, self.tokenizer = setup.controller, tokenizer
            if spec["measure_before"] and forgetting:  # the starting model (an untrained adapter changes nothing)
                bench["before_forgetting_ppl"] = perplexity(setup.model, tokenizer)

        def on_trained(self, setup: Any, trainer: Any, tokenizer: Any) -> None:
            optimizer = unwrap_optimizer(trainer.optimizer)
            bench["svd_seconds"] = float(getattr(optimizer, "svd_seconds", 0.0))
            bench["svd_calls"] = int(getattr(optimizer, "svd_calls", 0))
            bench["forgetting_ppl"] = perplexity(setup.model, tokenizer)
            bench["loss_curve"] = [[h["step"], h["loss"]] for h in trainer.state.log_history if "loss" in h]

        def _sample(self, kwargs: dict) -> None:
            model = kwargs.get("model")
            optimizer = unwrap_optimizer(kwargs.get("optimizer"))
            if model is None:
                return
            params = tensor_bytes(model.parameters())
            residency = getattr(self.controller, "residency", None)
            if residency is not None:
                params += residency.frozen_weight_bytes()
            grads = gradient_bytes(model)
            state = state_bytes(optimizer) if optimizer is not None else 0
            if state is None:
                self.state_hidden, state = True, 0
            self.peak_grads = max(self.peak_grads, grads)
            self.peak_state = max(self.peak_state, state)
            self.peak_tracked = max(self.peak_tracked, params + grads + state)

        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self.t0 = time.perf_counter()

        def on_pre_optimizer_step(self, args, state, control, **kwargs):  # noqa: ANN001
            self._sample(kwargs)

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if self.t0 is not None:
                self.step_times.append(time.perf_counter() - self.t0)
            self._sample(kwargs)
            last = state.global_step == state.max_steps
            if last and getattr(self.controller, "residency", None) is not None:
                # the model as training saw it (frozen layers still quantized), scored as the run scores it after
                bench["heldout_answer_loss_quantized"] = answer_loss(kwargs["model"], self.tokenizer, self.heldout,
                                                                     HELDOUT_BATCH_SIZE, script.max_seq_length)
                bench["forgetting_ppl_quantized"] = perplexity(kwargs["model"], self.tokenizer)

    return BenchCallback()


def child_main(spec_path: str) -> int:
    """Run the spec's ``ows train`` (``ows.train`` with the parsed flags) with measurements; writes
    ``spec['bench_json']``. Returns the exit code."""
    import ows
    from ows.cli.common import setup_logging
    from ows.cli.train import parse
    from ows.memory.measure import peak_rss_bytes

    spec = json.loads(Path(spec_path).read_text())
    bench: dict[str, Any] = {"svd_seconds": 0.0, "svd_calls": 0}
    setup_logging()
    script, config, training = parse(spec["argv"])
    callback = _bench_callback(spec, bench, script)
    result = ows.train(script, config, training, callbacks=[callback], keep_weights=spec.get("keep_weights", False),
                       heldout_before=spec["measure_before"], echo=print)
    if result.exit_code != 0:
        return result.exit_code
    if spec["measure_before"]:
        bench["before"] = dict(result.before, forgetting_ppl=bench.pop("before_forgetting_ppl", None))
    argv = spec["argv"]
    out = Path(result.output_dir)
    results = json.loads((out / "results.json").read_text())
    times = callback.step_times
    bench.update(
        method=result.method, seed=int(argv[argv.index("--seed") + 1]), steps=result.steps,
        train_seconds=result.train_seconds,
        heldout_answer_loss=result.after.get("heldout_answer_loss"),
        heldout_exact_match=result.after.get("heldout_exact_match"),
        heldout_exact_match_items=result.after.get("heldout_exact_match_items"),
        peak_rss_gib=peak_rss_bytes() / 2**30,
        peak_tracked_gib=callback.peak_tracked / 2**30,
        peak_grad_gib=callback.peak_grads / 2**30,
        peak_optimizer_state_gib=callback.peak_state / 2**30,
        sec_per_step=statistics.median(times) if times else None,
        svd_share=bench["svd_seconds"] / sum(times) if times else None,
        optimizer_state_hidden=callback.state_hidden,
        swap_seconds=getattr(getattr(callback.controller, "residency", None), "swap_seconds", None),
        command="ows train " + " ".join(shlex.quote(a) for a in argv),
    )
    results["benchmark"] = {k: v for k, v in bench.items() if k != "loss_curve"}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    Path(spec["bench_json"]).write_text(json.dumps(bench, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1]))
