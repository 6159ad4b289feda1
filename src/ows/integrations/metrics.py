"""OWS's own metrics for experiment trackers: the layer schedule, memory, SVD and swap time (torch only).

Keys (all numbers, so that every tracker can plot them): ``ows/active/NN`` (1 while decoder layer NN
trains, else 0), ``ows/visits/NN`` (periods layer NN has been drawn so far; with ``sampling_granularity:
module``, periods in which any of its weights was), ``ows/active_count`` (layers training now),
``ows/active_params`` (parameters in the blocks drawn now),
``ows/memory/<key>`` (``peak_memory()``: CUDA peak allocated/reserved GiB on a GPU, peak RSS GiB on
CPU), ``ows/svd_seconds`` (time GaLore spent computing projectors, cumulative) and
``ows/swap_seconds`` (time moving frozen layers in and out of their quantized form, cumulative).
"""

from __future__ import annotations

from typing import Any

from ..memory.measure import peak_memory


def schedule_metrics(active: tuple[int, ...] | None, visits: dict[int, int], num_layers: int) -> dict[str, float]:
    """One 0/1 key per decoder layer for the active set, one count per layer for the visits, and the count."""
    chosen = set(active or ())
    metrics = {f"ows/active/{i:02d}": float(i in chosen) for i in range(num_layers)}
    metrics.update({f"ows/visits/{i:02d}": float(visits.get(i, 0)) for i in range(num_layers)})
    metrics["ows/active_count"] = float(len(chosen))
    return metrics


def run_metrics(controller: Any, optimizer: Any, steps_done: int) -> dict[str, float]:
    """Every metric of a run after ``steps_done`` optimizer steps: the schedule (visits over the whole run,
    a resumed one included: the sampler recomputes its earlier periods), memory, SVD and swap seconds."""
    visits = controller.layer_visits(max(steps_done, 1))
    metrics = schedule_metrics(controller.active, visits, len(controller.layers))
    drawn = getattr(controller, "active_blocks", None) or ()
    metrics["ows/active_params"] = float(sum(controller.blocks[b].size for b in drawn))
    metrics.update({f"ows/memory/{key}": float(value) for key, value in peak_memory().items()})
    svd = getattr(optimizer, "svd_seconds", None)
    if svd is not None:
        metrics["ows/svd_seconds"] = float(svd)
    if controller.residency is not None:
        metrics["ows/swap_seconds"] = float(controller.residency.swap_seconds)
    return metrics
