"""The parameter budget of module-granularity sampling: pure functions, no torch.

With ``sampling_granularity: module`` one draw picks single 2-D weights (q_proj, down_proj, ...) from all
decoder layers until ``sample_budget_params`` parameters are drawn. The draw walks the blocks in the order
the sampler gives (exponential keys) and takes each one that still fits, so the budget is never exceeded.
The config check, the sampler and the memory estimator share these functions.
"""

from __future__ import annotations

from typing import Sequence

BUDGET_FIELD = "sample_budget_params"


def default_budget(num_active: int, layer_sizes: Sequence[Sequence[int]]) -> int:
    """``num_active`` times the mean decoder layer's 2-D parameter count (``layer_sizes``: weight sizes per layer)."""
    if not layer_sizes:
        raise ValueError("no decoder layers: the parameter budget needs the weight sizes of at least one layer")
    return num_active * sum(sum(sizes) for sizes in layer_sizes) // len(layer_sizes)


def resolve_budget(budget: int | None, num_active: int, layer_sizes: Sequence[Sequence[int]]) -> tuple[int, str]:
    """The budget in parameters and how to name it in a message (the field, or the default it came from)."""
    if budget is not None:
        return budget, f"{BUDGET_FIELD}={budget}"
    value = default_budget(num_active, layer_sizes)
    return value, f"{BUDGET_FIELD}={value} (the default: num_active_layers={num_active} x the mean layer's weights)"


def check_budget(budget: int, sizes: Sequence[int], drawable: int | None = None, name: str | None = None) -> None:
    """Raise ``ValueError`` unless one draw of ``budget`` parameters can hold every weight and fits in the model.

    ``sizes``: the parameter count of every weight; ``drawable``: the parameters in weights with a non-zero
    probability (when some have none); ``name``: how the budget is named in the message.
    """
    name = name or f"{BUDGET_FIELD}={budget}"
    largest, total = max(sizes), sum(sizes)
    if budget < largest:
        raise ValueError(f"{name} is smaller than the largest decoder-layer weight ({largest} parameters), which "
                         f"could then never be drawn: set {BUDGET_FIELD} to at least {largest}")
    if budget > total:
        raise ValueError(f"{name} is larger than the model's {total} parameters in decoder-layer weights: set "
                         f"{BUDGET_FIELD} to at most {total}")
    if drawable is not None and drawable < budget:
        raise ValueError(f"{name} but the weights with a non-zero probability hold only {drawable} parameters: "
                         f"lower {BUDGET_FIELD}, or use sampling_strategy='uniform' or sampling_temperature 0")


def fill_budget(order: Sequence[int], sizes: Sequence[int], budget: int) -> tuple[int, ...]:
    """The blocks taken when ``order`` is walked and each block that still fits in ``budget`` is kept (sorted)."""
    chosen, used = [], 0
    for index in order:
        if used + sizes[index] <= budget:
            chosen.append(index)
            used += sizes[index]
            if used == budget:
                break
    return tuple(sorted(chosen))


def most_blocks(sizes: Sequence[int], budget: int) -> int:
    """The largest number of blocks one draw can hold (the smallest ones first): bounds the layers it touches."""
    count, used = 0, 0
    for size in sorted(sizes):
        if used + size > budget:
            break
        count, used = count + 1, used + size
    return count
