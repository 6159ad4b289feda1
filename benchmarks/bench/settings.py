"""What the method comparison runs: methods, their labels and learning rates, metrics and presets."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ows.config import OWSConfig
from ows.methods import get_method, method_names

from .front import DEFAULTS, FRONT_ROWS
from .peers import PEERS

BENCHMARKS_DIR = Path(__file__).resolve().parents[1]
# The product's defaults for these flags when the recorded runs were measured (until 2026-12-06): every row
# passes them, so that a row means the same after the defaults moved (ows: GaLore moments outside the layers,
# docs/RESULTS.md); a variant's own flags come after and win.
RECORDED_DEFAULTS = {"--outside_optimizer": "adamw", "--svd_method": "exact", "--sampling_granularity": "layer",
                     "--sampling_strategy": "owl"}
# Benchmark rows that run a product method with extra `ows train` flags: name -> (method, flags, label).
VARIANTS = {
    "ows-lean": ("ows", ("--train_embeddings", "false"), "OWS, input embeddings not trained"),
    "ows-fused": ("ows", ("--fused_step", "true"), "OWS, fused step"),
    "ows-8bit": ("ows", ("--outside_optimizer", "adamw8bit"), "OWS, 8-bit moments outside the layers"),
    "ows-galorehead": ("ows", ("--outside_optimizer", "galore"), "OWS, GaLore outside the layers"),
    "ows-frozen": ("ows", ("--train_embeddings", "false", "--train_lm_head", "false"),
                   "OWS, embeddings and head frozen"),
    "ows-frozen-fused": ("ows", ("--train_embeddings", "false", "--train_lm_head", "false", "--fused_step", "true"),
                         "OWS, embeddings and head frozen, fused step"),
    "ows-fused-galorehead": ("ows", ("--fused_step", "true", "--outside_optimizer", "galore"),
                             "OWS, fused step, GaLore outside the layers"),
    "ows-bf16": ("ows", ("--dtype", "bfloat16"), "OWS, pure bf16"),
    "ows-bf16-masters": ("ows", ("--dtype", "bfloat16", "--master_weights", "true"), "OWS, bf16 + fp32 masters"),
}
VARIANTS["ows-nf4"] = ("ows", ("--frozen_quantization", "nf4"), "OWS, frozen layers in NF4")
VARIANTS["ows-int8"] = ("ows", ("--frozen_quantization", "int8"), "OWS, frozen layers in int8")
# Today's defaults with the head's full gradient (project_head_grad off): the same run as ows-module-g5 except
# for what gradient clipping counts, on a model with an untied head (benchmarks/untie_head.py).
VARIANTS["ows-headgrad-full"] = ("ows", (*FRONT_ROWS["ows-module-g5"][1], "--project_head_grad", "false"),
                                 "OWS defaults, the head's full gradient (project_head_grad off)")


def resample_by_depth(values: Sequence[float], count: int) -> list[float]:
    """``values`` (one per layer of one model) at the relative depths of a model with ``count`` layers: layer j of
    ``count`` sits at depth j / (count - 1), read between the two nearest source layers by linear interpolation
    (the first and last layers map onto the first and last)."""
    if count < 1 or not values:
        raise ValueError(f"resample_by_depth needs values and count >= 1, got {len(values)} values, count={count}")
    if count == 1 or len(values) == 1:
        return [float(values[0])] * count
    last = len(values) - 1
    out = []
    for j in range(count):
        x = j * last / (count - 1)
        i = min(int(x), last - 1)
        out.append(values[i] + (x - i) * (values[i + 1] - values[i]))
    return out


# The paper code's Llama-2-7B OWL ratios (percent; llama2_7b_owl_ratios.json here, with its source) mapped onto
# SmolLM2-135M's 30 layers by resample_by_depth, to 6 significant digits (tests/benchmarks checks the mapping):
# a 15x spread with 27 % of the weight on layers 0-1, where SmolLM2's own ratios span 5x and favour the top.
LLAMA2_7B_ON_30 = (0.267809, 0.283703, 0.125647, 0.111203, 0.0958882, 0.0881866, 0.086158, 0.082019, 0.075747,
                   0.0712329, 0.0699612, 0.0645743, 0.0597484, 0.0556208, 0.053767, 0.0465655, 0.0386475, 0.0336525,
                   0.0334, 0.0304386, 0.0278646, 0.0256459, 0.0242257, 0.0227864, 0.023077, 0.019844, 0.0183358,
                   0.0205104, 0.0238464, 0.0824612)


def _ablations() -> dict[str, tuple[str, tuple[str, ...], str]]:
    """One idea at a time around the ablation base (owl, GaLore, tau 1, the run's gamma and K)."""
    rows = {}
    for strategy in ("owl", "uniform", "owl_reverse", "decrease", "increase"):
        for galore in (True, False):
            rows[f"abl-{strategy}-{'galore' if galore else 'adamw'}"] = (
                "ows" if galore else "ows-fullrank", ("--sampling_strategy", strategy),
                f"{strategy}, {'GaLore' if galore else 'plain AdamW'}")
    for tau in ("0.5", "2"):
        rows[f"abl-tau{tau}"] = ("ows", ("--sampling_temperature", tau), f"owl, GaLore, τ={tau}")
    for gamma in ("1", "5"):
        rows[f"abl-gamma{gamma}"] = ("ows", ("--num_active_layers", gamma), f"owl, GaLore, γ={gamma}")
    for interval in ("5", "20", "50"):
        rows[f"abl-K{interval}"] = ("ows", ("--sample_interval", interval), f"owl, GaLore, K={interval}")
    # What to sample x how fine (issue 24), at the product's defaults (front.DEFAULTS), not the recorded ones.
    for strategy in ("owl", "uniform", "gradient"):
        for granularity in ("layer", "module"):
            rows[f"abl-{strategy}-{granularity}"] = (
                "ows", (*DEFAULTS, "--sampling_strategy", strategy, "--sampling_granularity", granularity),
                f"{strategy}, {'whole layers' if granularity == 'layer' else 'single weights'}, GaLore")
    rows["abl-llama7b-skew"] = ("ows", (*DEFAULTS, "--sampling_strategy", "weights", "--sampling_weights",
                                        ",".join(f"{w:g}" for w in LLAMA2_7B_ON_30)),
                                "Llama-2-7B's OWL ratios by depth, GaLore")
    return rows


ABLATIONS = _ablations()
# Benchmark rows beyond the product's methods: name -> (ows train --method, extra flags, label).
ROWS = {**VARIANTS, **ABLATIONS, **PEERS, **FRONT_ROWS}
PRODUCT_METHODS = tuple(m for m in method_names() if not m.startswith("peer-"))
METHODS = (*PRODUCT_METHODS, *ROWS)
LABELS = {**{m: get_method(m).label for m in PRODUCT_METHODS}, **{v: spec[2] for v, spec in ROWS.items()}}


def product_method(row: str) -> str:
    """The ``ows train --method`` of a benchmark row (a variant's, ablation's or peer's method, else the row)."""
    return ROWS[row][0] if row in ROWS else row


SAMPLING = tuple(m for m in METHODS if get_method(product_method(m)).samples_layers)
GALORE = tuple(m for m in METHODS if get_method(product_method(m)).galore)
PROFILED = tuple(m for m in METHODS if get_method(product_method(m)).needs_profile(OWSConfig()))
# Learning rates per method: the winners of benchmarks/tune_lr.py on validation items from seed 200000
# (never the test items), quick settings, grid = the earlier choices (full 1e-4, LoRA 5e-4, the others
# 3e-4) x 1/3, 1, 3; results/2026-11-29-lr-sweep/. full, galore and ows won at an edge of that grid.
# The variants were not swept: each uses its product method's rate.
LEARNING_RATES = {"full": 3.3e-5, "lora": 5e-4, "galore": 1e-4, "lisa": 3e-4, "ows-fullrank": 3e-4, "ows": 9e-4}
# QLoRA: its own sweep (results/2026-12-07-lr-sweep-qlora: LoRA's 5e-4 x 1/9, 1/3, 1, 3, then 9 past the edge):
# 1.5e-3 won inside the grid (validation 1.741 against 1.759 at 5e-4 and 1.819 at 4.5e-3).
LEARNING_RATES["qlora"] = 1.5e-3
LEARNING_RATES.update({row: LEARNING_RATES[spec[0]] for row, spec in {**VARIANTS, **ABLATIONS}.items()})
LEARNING_RATES.update({row: LEARNING_RATES[spec[0] if spec[0] in LEARNING_RATES else "lora"]
                       for row, spec in FRONT_ROWS.items()})  # the front's rows: their method's rate (DoRA: LoRA's)
# Peers: the winners of the same sweep (results/2026-12-02-lr-sweep-peers, grid = each package's documented
# starting rate x 1/3, 1, 3; the two edge winners, BAdam's and LOMO's, were checked one step further out in
# results/2026-12-02-lr-sweep-peers-edges and lost). Not swept, still at their packages' starting rates:
# apollo-mini, hf-galore-layerwise, hf-apollo, hf-adalomo.
LEARNING_RATES.update({"badam": 3e-4, "apollo": 3e-4, "apollo-mini": 3e-4, "galore-torch": 4e-4,
                       "hf-galore-layerwise": 4e-4, "hf-apollo": 3e-4, "hf-lomo": 3.3e-3, "hf-adalomo": 1e-3})

# Metrics: key, header, format. Lower is better for all but exact match.
METRICS = [
    ("heldout_answer_loss", "held-out answer loss", "{:.3f}"),
    ("heldout_exact_match", "exact match", "{:.1%}"),
    ("forgetting_ppl", "forgetting ppl", "{:.2f}"),
    ("peak_rss_gib", "peak RSS GiB", "{:.2f}"),
    ("peak_tracked_gib", "peak tracked GiB", "{:.3f}"),
    ("sec_per_step", "s/step", "{:.2f}"),
    ("svd_share", "SVD share", "{:.1%}"),
]
QUICK = dict(seeds=[0], steps=30, batch_size=8, num_heldout=300, heldout_generate=50,
             forgetting_samples=8, forgetting_seq_len=256)
FULL = dict(seeds=[0, 1, 2], steps=200, batch_size=16, num_heldout=300, heldout_generate=300,
            forgetting_samples=16, forgetting_seq_len=256)
