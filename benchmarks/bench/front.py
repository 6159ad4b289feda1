"""The rows of the equal-memory front (``frontier.py``): ows at its defaults and several gamma, the lean
settings (the least memory) with and without NF4 frozen layers, the planner's own picks at three budgets,
and the peers' sizes that the main table lacks.

Every row is (``ows train --method``, extra flags, label), as in ``bench/settings.py``. The settings are
spelled out as flags, so a row means the same whatever the product's defaults are. The planner's rows are
computed here, from the project's estimator, for the memory axis that matters to a GPU user: Llama-3.1-8B's
shapes at ``PLAN_SIZES`` (bf16, batch 16 x 512 tokens, gradient checkpointing, the chunked loss). The budget is
the estimate of QLoRA, LoRA or GaLore there; the planner starts from ``ows train``'s defaults for OWS, as
``ows memory --max_memory`` does, with the sizes fixed (as a user who gave them would) and no headroom (the
budgets are estimates already), and the row trains SmolLM2 with the OWS settings the planner chose (gamma
capped at SmolLM2's 30 layers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ows.config import OWSConfig
from ows.memory.estimate import estimate_memory
from ows.memory.plan import plan_for_budget
from ows.methods import get_method, method_names
from ows.model_facts import PRESETS
from ows.recipe.budget import OWS_FIELDS

DEFAULTS = ("--outside_optimizer", "galore")  # GaLore moments outside the layers: an ows default since 2026-12-06
LEAN = ("--train_embeddings", "false", "--train_lm_head", "false", "--fused_step", "true")  # the least memory
PLAN_MODEL = "llama-3.1-8b"
PLAN_SIZES = dict(dtype="bfloat16", per_device_train_batch_size=16, max_seq_length=512, lora_r=16,
                  gradient_checkpointing=True, loss_chunk_size=1024, attn_implementation="sdpa", device="cuda")
PLANNED_FIELDS = ("num_active_layers", "rank", "fused_step", "train_embeddings", "train_lm_head", "outside_optimizer",
                  "svd_method", "frozen_quantization", "sampling_granularity", "project_head_grad")
SMOLLM2_LAYERS = 30
# The budgets: the memory of the product's methods that train adapters (LoRA, QLoRA) or every layer with GaLore;
# not the peers' package methods (``peer-*``: peer-dora, ...), which register once bench.peers is imported.
BUDGET_METHODS = tuple(m for m in method_names() if not m.startswith("peer-") and (
    get_method(m).layers == "adapters" or (get_method(m).layers == "all" and get_method(m).galore)))


def flag(value: Any) -> str:
    """A setting as ``ows train`` reads it on the command line (booleans as ``true``/``false``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def plan_budget(budget_method: str) -> int:
    """The estimate of ``budget_method`` on ``PLAN_MODEL`` at ``PLAN_SIZES`` (bytes): the budget of a planned row."""
    return estimate_memory(PRESETS[PLAN_MODEL], budget_method, **PLAN_SIZES).total


def product_defaults() -> OWSConfig:
    """``ows train``'s defaults for method ows, the method's own defaults filled in: where a plan starts."""
    return OWSConfig().with_defaults(get_method("ows").resolved_defaults())


def planned_flags(budget_method: str) -> tuple[str, ...]:
    """The ``ows train`` flags of the OWS settings the planner picks at ``budget_method``'s estimate (with the
    default sampling strategy spelled out, as every setting of a row is)."""
    defaults = product_defaults()
    start = dict(PLAN_SIZES, **{name: getattr(defaults, name) for name in OWS_FIELDS}, gradient_accumulation_steps=1)
    fixed = frozenset(("dtype", "per_device_train_batch_size", "max_seq_length", "loss_chunk_size",
                       "gradient_checkpointing"))
    plan = plan_for_budget(PRESETS[PLAN_MODEL], "ows", plan_budget(budget_method), start, fixed)
    chosen = dict(plan.settings, num_active_layers=min(plan.settings["num_active_layers"], SMOLLM2_LAYERS))
    return (*(item for name in PLANNED_FIELDS for item in (f"--{name}", flag(chosen[name]))),
            "--sampling_strategy", defaults.sampling_strategy)


def _past_pick(gamma: int, svd_method: str, quantization: str, *more: str) -> tuple[str, ...]:
    """The flags of a pick the planner made in the past (kept as rows, so their runs still match): whole layers
    drawn by owl when those were the benchmark's start (2026-12-06/07), ``MODULE_PICK`` added for single weights."""
    return ("--num_active_layers", str(gamma), "--rank", "128", "--fused_step", "false", "--train_embeddings", "true",
            "--train_lm_head", "true", "--outside_optimizer", "galore", "--svd_method", svd_method,
            "--frozen_quantization", quantization, *more)


MODULE_PICK = ("--sampling_granularity", "module", "--project_head_grad", "true", "--sampling_strategy", "uniform")


def _rows() -> tuple[dict[str, tuple[str, tuple[str, ...], str]], dict[str, str]]:
    """The rows, and for each budget method the row that holds the planner's pick at its budget."""
    plan_row: dict[str, str] = {}
    rows = {
        "lora-r4": ("lora", ("--lora_r", "4"), "LoRA r4"),
        "lora-r64": ("lora", ("--lora_r", "64"), "LoRA r64"),
        "dora": ("peer-dora", (), "DoRA r16 (peft use_dora)"),
    }
    for gamma in (2, 5, 10, 30):
        rows[f"ows-g{gamma}"] = ("ows", (*DEFAULTS, "--num_active_layers", str(gamma)),
                                 f"OWS (GaLore outside, whole layers by owl), γ={gamma}")
    module = {gamma: (*DEFAULTS, "--num_active_layers", str(gamma), "--sampling_strategy", "uniform",
                      "--sampling_granularity", "module") for gamma in (2, 5, 8, 10, 30)}
    for gamma in (2, 5, 10, 30):  # today's defaults: single weights drawn uniformly, gamma layers' worth
        rows[f"ows-module-g{gamma}"] = ("ows", module[gamma],
                                        f"OWS defaults (single weights drawn uniformly), {gamma} layers' worth")
    rows["ows-lean-g5"] = ("ows", (*LEAN, "--num_active_layers", "5"), "OWS lean (embeddings and head frozen, "
                           "fused step), γ=5")
    for gamma in (5, 10):  # with the fused step and nothing trained outside the layers, gamma costs little memory
        rows[f"ows-lean-module-g{gamma}"] = ("ows", (*LEAN, *module[gamma]), "OWS lean, single "
                                             f"weights drawn uniformly, {gamma} layers' worth")
    for gamma in (2, 5, 8, 10):  # 2: fits QLoRA's measured bytes on SmolLM2, 8: QLoRA's 8B estimate
        rows[f"ows-lean-nf4-g{gamma}"] = ("ows", (*LEAN, "--frozen_quantization", "nf4", *module[gamma]),
                                          f"OWS lean + NF4 frozen layers, single weights drawn uniformly, {gamma} "
                                          "layers' worth")
    # The planner's pick at LoRA's 8B memory before int8 frozen layers were one of its levers (2026-12-06).
    rows["ows-nf4-g8"] = ("ows", _past_pick(8, "gram", "nf4"), "OWS + NF4 frozen layers, γ=8 (the planner's "
                          "earlier pick at LoRA's 8B memory)")
    # The planner's picks from whole layers drawn by owl (the benchmark's start before 2026-12-07's rows).
    rows["ows-plan-layer-lora"] = ("ows", _past_pick(8, "gram", "int8"), "OWS + int8 frozen layers, whole layers, "
                                   "γ=8 (the planner's pick at LoRA's 8B memory from whole layers)")
    rows["ows-plan-layer-qlora"] = ("ows", _past_pick(2, "gram", "nf4"), "OWS + NF4 frozen layers, whole layers, "
                                    "γ=2 (the planner's pick at QLoRA's 8B memory from whole layers)")
    rows["ows-plan-galore-g8"] = ("ows", _past_pick(8, "auto", "none", *MODULE_PICK), "OWS, 8 layers' worth (the "
                                  "planner's pick at galore's 8B memory while it spent up to a quarter of the layers)")
    for method in BUDGET_METHODS:  # a pick the planner made at a smaller budget already is that row
        flags = planned_flags(method)
        same = [row for row in plan_row.values() if rows[row][1] == flags]
        plan_row[method] = same[0] if same else f"ows-plan-{method}"
        if not same:
            rows[plan_row[method]] = ("ows", flags, f"OWS, the planner's pick at {method}'s 8B memory")
    return rows, plan_row


FRONT_ROWS, PLAN_ROW = _rows()
# The rows of the front that the main table already measured at the same settings (reused with --reuse).
MAIN_TABLE = Path(__file__).resolve().parents[1] / "results" / "2026-12-02-main" / "results.json"
MAIN_TABLE_ROWS = tuple(json.loads(MAIN_TABLE.read_text())["settings"]["methods"])
FRONT = (*MAIN_TABLE_ROWS, "qlora", "apollo-mini", *FRONT_ROWS)
