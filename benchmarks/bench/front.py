"""The rows of the equal-memory front (``frontier.py``): ows at its defaults and several gamma, the lean
settings (the least memory) with and without NF4 frozen layers, the planner's own picks at three budgets,
and the peers' sizes that the main table lacks.

Every row is (``ows train --method``, extra flags, label), as in ``bench/settings.py``. The settings are
spelled out as flags, so a row means the same whatever the product's defaults are. The planner's rows are computed here, from the project's estimator, for the
memory axis that matters to a GPU user: Llama-3.1-8B's shapes at ``PLAN_SIZES`` (bf16, batch 16 x 512
tokens, gradient checkpointing, the chunked loss). The budget is the estimate of QLoRA, LoRA or GaLore
there, the planner starts from ows's lean settings with the sizes fixed (as a user who gave them would)
and no headroom (the budgets are estimates already), and the row trains SmolLM2 with the OWS settings
the planner chose (gamma capped at SmolLM2's 30 layers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ows.memory.estimate import estimate_memory
from ows.methods import get_method, method_names
from ows.memory.plan import plan_for_budget
from ows.model_facts import PRESETS

DEFAULTS = ("--outside_optimizer", "galore")  # GaLore moments outside the layers: an ows default since 2026-12-06
LEAN = ("--train_embeddings", "false", "--train_lm_head", "false", "--fused_step", "true")  # the least memory
PLAN_MODEL = "llama-3.1-8b"
PLAN_SIZES = dict(dtype="bfloat16", per_device_train_batch_size=16, max_seq_length=512, lora_r=16,
                  gradient_checkpointing=True, loss_chunk_size=1024, attn_implementation="sdpa", device="cuda")
PLAN_START = dict(num_active_layers=5, rank=128, train_embeddings=True, train_lm_head=True, fused_step=False,
                  master_weights=False, outside_optimizer="galore", svd_method="exact", frozen_quantization="none",
                  sampling_granularity="layer",  # as the rows train (RECORDED_DEFAULTS)
                  project_head_grad=False)  # as the rows were planned (it changes no SmolLM2 run: a tied head)
PLANNED_FIELDS = ("num_active_layers", "rank", "fused_step", "train_embeddings", "train_lm_head", "outside_optimizer",
                  "svd_method", "frozen_quantization")
SMOLLM2_LAYERS = 30
# The budgets: the memory of each method that trains adapters (LoRA, QLoRA) or every layer with GaLore.
BUDGET_METHODS = tuple(m for m in method_names() if get_method(m).layers == "adapters"
                       or (get_method(m).layers == "all" and get_method(m).galore))


def _flag(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def plan_budget(budget_method: str) -> int:
    """The estimate of ``budget_method`` on ``PLAN_MODEL`` at ``PLAN_SIZES`` (bytes): the budget of a planned row."""
    return estimate_memory(PRESETS[PLAN_MODEL], budget_method, **PLAN_SIZES).total


def planned_flags(budget_method: str) -> tuple[str, ...]:
    """The ``ows train`` flags of the OWS settings the planner picks at ``budget_method``'s estimate."""
    start = dict(PLAN_SIZES, **PLAN_START, gradient_accumulation_steps=1)
    fixed = frozenset(("dtype", "per_device_train_batch_size", "max_seq_length", "loss_chunk_size",
                       "gradient_checkpointing"))
    plan = plan_for_budget(PRESETS[PLAN_MODEL], "ows", plan_budget(budget_method), start, fixed)
    chosen = dict(plan.settings, num_active_layers=min(plan.settings["num_active_layers"], SMOLLM2_LAYERS))
    return tuple(item for name in PLANNED_FIELDS for item in (f"--{name}", _flag(chosen[name])))


def _rows() -> dict[str, tuple[str, tuple[str, ...], str]]:
    rows = {
        "lora-r4": ("lora", ("--lora_r", "4"), "LoRA r4"),
        "lora-r64": ("lora", ("--lora_r", "64"), "LoRA r64"),
        "dora": ("peer-dora", (), "DoRA r16 (peft use_dora)"),
    }
    for gamma in (2, 5, 10, 30):
        rows[f"ows-g{gamma}"] = ("ows", (*DEFAULTS, "--num_active_layers", str(gamma)), f"OWS (GaLore outside, whole layers by owl), γ={gamma}")
    for gamma in (2, 5, 10, 30):  # today's defaults: single weights drawn uniformly, gamma layers' worth
        rows[f"ows-module-g{gamma}"] = ("ows", (*DEFAULTS, "--num_active_layers", str(gamma), "--sampling_strategy",
                                                "uniform", "--sampling_granularity", "module"),
                                        f"OWS defaults (single weights drawn uniformly), {gamma} layers' worth")
    rows["ows-lean-g5"] = ("ows", (*LEAN, "--num_active_layers", "5"), "OWS lean (embeddings and head frozen, "
                           "fused step), γ=5")
    rows["ows-lean-module-g5"] = ("ows", (*LEAN, *rows["ows-module-g5"][1]), "OWS lean, single weights drawn "
                                  "uniformly, 5 layers' worth")
    rows["ows-lean-nf4-g5"] = ("ows", (*LEAN, "--frozen_quantization", "nf4", "--num_active_layers", "5"),
                               "OWS lean + NF4 frozen layers, γ=5")
    # The planner's pick at LoRA's 8B memory before int8 frozen layers were one of its levers (2026-12-06).
    rows["ows-nf4-g8"] = ("ows", ("--num_active_layers", "8", "--rank", "128", "--fused_step", "false",
                                  "--train_embeddings", "true", "--train_lm_head", "true", "--outside_optimizer",
                                  "galore", "--svd_method", "gram", "--frozen_quantization", "nf4"),
                          "OWS + NF4 frozen layers, γ=8 (the planner's earlier pick at LoRA's 8B memory)")
    for method in BUDGET_METHODS:
        rows[f"ows-plan-{method}"] = ("ows", planned_flags(method), f"OWS, the planner's pick at {method}'s 8B memory")
    return rows


FRONT_ROWS = _rows()
# The rows of the front that the main table already measured at the same settings (reused with --reuse).
MAIN_TABLE = Path(__file__).resolve().parents[1] / "results" / "2026-12-02-main" / "results.json"
MAIN_TABLE_ROWS = tuple(json.loads(MAIN_TABLE.read_text())["settings"]["methods"])
FRONT = (*MAIN_TABLE_ROWS, "qlora", "apollo-mini", *FRONT_ROWS)
