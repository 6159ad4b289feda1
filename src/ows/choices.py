"""The choice lists and fixed sizes of ows, defined here once (this module imports no torch) and imported
everywhere else: what each OWSConfig field may hold, the method defaults of ows and of the published methods,
and the projector each GaLore weight uses."""

from __future__ import annotations

SAMPLING_STRATEGIES = ("owl", "uniform", "owl_reverse", "increase", "decrease", "weights", "gradient")
PROFILE_STRATEGIES = ("owl", "owl_reverse")  # the strategies that need an outlier profile
SAMPLING_GRANULARITIES = ("layer", "module")  # what one draw picks: whole decoder layers or single 2-D weights
SAMPLING_PRIORS = ("uniform", "owl")  # the order in which 'gradient' visits blocks it has not measured yet
PROJ_TYPES = ("std", "reverse_std", "left", "right")
PROJECTOR_METHODS = ("exact", "randomized", "gram")  # how GaLoreAdamW computes a projector
SVD_METHODS = ("auto", *PROJECTOR_METHODS)  # the run field: auto picks per weight (svd_for)
OUTSIDE_OPTIMIZERS = ("adamw", "adamw8bit", "galore")
FROZEN_QUANTIZATIONS = ("none", "nf4", "int8")
# bitsandbytes' blockwise 8-bit moments: one fp32 absmax per block; smaller tensors keep full moments.
EIGHT_BIT_BLOCK = 256
EIGHT_BIT_MIN_SIZE = 4096
# Elements of a tensor that one slice of a plain AdamW update, or of a Gram-matrix sum, works on at a time.
UPDATE_CHUNK = 1 << 22
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# OWSConfig fields whose default (None) is the method's own (``ows.methods.Method.defaults``): ows's follow the
# measurements (docs/RESULTS.md), the other methods' are as published. The paper's recipe: configs/paper.yaml.
OWS_DEFAULTS = {"outside_optimizer": "galore", "sampling_granularity": "module", "sampling_strategy": "uniform"}
PUBLISHED = {"outside_optimizer": "adamw", "sampling_granularity": "layer", "sampling_strategy": "owl"}
DTYPES = tuple(DTYPE_BYTES)


def svd_for(svd_method: str, outside: bool) -> str:
    """The projector method of one GaLore weight: ``auto`` is gram for the weights outside the decoder layers
    (vocabulary-sized; the same subspace, 4.3x faster on SmolLM2's embedding, docs/PERFORMANCE.md) and exact
    for the decoder layers (as published); any other value is used as it is."""
    if svd_method != "auto":
        return svd_method
    return "gram" if outside else "exact"


def head_grad_kept_whole(*, several_processes: bool, grad_scaler: bool, fused_step: bool, tied: bool,
                         head_bias: bool) -> str | None:
    """Why ``project_head_grad`` keeps the output head's full gradient in a run that asked for it (a GaLore head
    trained through the chunked loss), or None when the head's gradient is summed projected. One rule for the
    run (``optim.head_grad``) and the estimator (``memory.estimate``)."""
    return ("several processes" if several_processes else "fp16's grad scaler" if grad_scaler
            else "fused_step" if fused_step else "a tied head" if tied
            else "a trained head bias" if head_bias else None)
