"""Learning-rate sweep: the grid per method, the winner per method, and the sweep table."""

from __future__ import annotations

import math
from typing import Any, Sequence

from .settings import GALORE, LABELS, LEARNING_RATES
from .summary import mean_std, ratio

TEST_HELDOUT_SEED = 100000  # compare_methods.py's held-out (test) items: seeds 100000 .. 100000 + n - 1
TEST_HELDOUT_ITEMS = 300


def round_sig(value: float, digits: int = 2) -> float:
    """``value`` rounded to ``digits`` significant digits (1/3 of 1e-4 -> 3.3e-05)."""
    if value == 0:
        return 0.0
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def lr_grid(method: str, factors: Sequence[float], base: float | None = None) -> list[float]:
    """Learning rates tried for ``method``: ``base`` (default its ``LEARNING_RATES`` entry) times each
    factor, sorted."""
    start = LEARNING_RATES[method] if base is None else base
    return sorted({round_sig(start * f) for f in factors})


def configs(method: str, factors: Sequence[float], galore_scales: Sequence[float],
            base: float | None = None) -> list[tuple[float, float | None]]:
    """``(lr, GaLore scale)`` pairs for ``method``; the scale is None for methods without GaLore."""
    scales: list[float | None] = list(galore_scales) if method in GALORE else [None]
    return [(lr, scale) for lr in lr_grid(method, factors, base) for scale in scales]


def widen_rate(lrs: Sequence[float], best: float) -> float | None:
    """The next learning rate past the edge of the grid ``lrs`` that ``best`` sits on, one grid step further
    (the ratio between the edge and its neighbour: 3e-4 won in 1e-4, 3e-4 -> 9e-4); None when ``best`` is
    inside the grid or the grid has a single rate."""
    rates = sorted(set(lrs))
    if len(rates) < 2 or best not in (rates[0], rates[-1]):
        return None
    edge, neighbour = (rates[-1], rates[-2]) if best == rates[-1] else (rates[0], rates[1])
    nxt = round_sig(edge * edge / neighbour)
    return None if nxt in rates else nxt  # grid steps too fine for 2 significant digits: nothing new to try


def parse_rates(text: str, methods: Sequence[str]) -> dict[str, float]:
    """``"badam=1e-4,hf-lomo=0.01"`` -> ``{"badam": 1e-4, "hf-lomo": 0.01}``; ``ValueError`` (naming the
    entry and the fix) for a malformed entry, a method not swept or a rate that is not positive."""
    rates: dict[str, float] = {}
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        method, _, value = entry.partition("=")
        method = method.strip()
        if method not in methods:
            raise ValueError(f"--around {entry!r}: {method!r} is not one of --methods ({','.join(methods)}): "
                             f"write METHOD=LR for a swept method")
        try:
            rates[method] = float(value)
        except ValueError:
            raise ValueError(f"--around {entry!r} is not METHOD=LR: write e.g. {method}=0.0001") from None
        if rates[method] <= 0:
            raise ValueError(f"--around {entry!r}: the learning rate must be positive, e.g. {method}=0.0001")
    return rates


def check_validation_seed(seed: int, items: int) -> None:
    """Raise ``ValueError`` when the validation items ``seed .. seed+items-1`` overlap the test items."""
    test = range(TEST_HELDOUT_SEED, TEST_HELDOUT_SEED + TEST_HELDOUT_ITEMS)
    if seed < test.stop and test.start < seed + items:
        raise ValueError(f"--heldout-seed {seed} overlaps the test items (seeds {test.start}..{test.stop - 1}, "
                         f"item i uses seed+i): use a validation seed outside them, e.g. 200000")


def summarize(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per method, one entry per (lr, scale): mean/std validation loss over seeds, s/step, its ratio to the
    method's best, and ``best`` / ``edge`` flags (edge: the best lr is the smallest or largest tried)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        rows = [r for r in runs if r["method"] == method]
        keys = list(dict.fromkeys((r["lr"], r.get("galore_scale")) for r in rows))
        entries = []
        for lr, scale in keys:
            same = [r for r in rows if r["lr"] == lr and r.get("galore_scale") == scale]
            loss, std = mean_std([r.get("heldout_answer_loss") for r in same])
            step, _ = mean_std([r.get("sec_per_step") for r in same])
            entries.append({"lr": lr, "galore_scale": scale, "val_loss": loss, "val_loss_std": std, "n": len(same),
                            "sec_per_step": step})
        scored = [e for e in entries if e["val_loss"] is not None]
        best = min(scored, key=lambda e: e["val_loss"]) if scored else None
        lrs = sorted({e["lr"] for e in entries})
        for e in entries:
            e["x_best"] = ratio(e["val_loss"], best["val_loss"]) if best else None
            e["best"] = e is best
            e["edge"] = e is best and len(lrs) > 1 and e["lr"] in (lrs[0], lrs[-1])
        out[method] = entries
    return out


def winners(summary: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The best entry of every method that has one."""
    return {m: next(e for e in entries if e["best"]) for m, entries in summary.items() if any(e["best"] for e in entries)}


def sweep_table(summary: dict[str, list[dict[str, Any]]], header: list[str]) -> str:
    """Markdown: one row per (method, lr, scale), the best row per method marked, then the winners."""
    lines = list(header) + ["", "| method | lr | GaLore α | validation answer loss | × method's best | s/step |",
                            "|---|---|---|---|---|---|"]
    for method, entries in summary.items():
        for e in entries:
            loss = "n/a" if e["val_loss"] is None else f"{e['val_loss']:.3f}"
            if e["val_loss"] is not None and e["n"] > 1:
                loss += f" ± {e['val_loss_std']:.3f}"
            mark = " **best**" + (" (grid edge)" if e["edge"] else "") if e["best"] else ""
            scale = "–" if e["galore_scale"] is None else f"{e['galore_scale']:g}"
            x_best = "n/a" if e["x_best"] is None else f"{e['x_best']:.3f}×"
            step = "n/a" if e["sec_per_step"] is None else f"{e['sec_per_step']:.2f}"
            lines.append(f"| {LABELS.get(method, method)} | {e['lr']:g} | {scale} | {loss}{mark} | {x_best} | {step} |")
    lines += ["", "| method | chosen lr | GaLore α | validation answer loss | × full FT's best |", "|---|---|---|---|---|"]
    chosen = winners(summary)
    full = chosen.get("full", {}).get("val_loss")
    for method, e in chosen.items():
        scale = "–" if e["galore_scale"] is None else f"{e['galore_scale']:g}"
        x_full = ratio(e["val_loss"], full)
        lines.append(f"| {LABELS.get(method, method)} | {e['lr']:g}{' (grid edge)' if e['edge'] else ''} | {scale} | "
                     f"{e['val_loss']:.3f} | {'n/a' if x_full is None else f'{x_full:.2f}×'} |")
    lines += ["", "Validation answer loss: token-weighted cross-entropy over the answer tokens of the validation items "
              "(a seed range disjoint from the training and the test items). Lower is better."]
    return "\n".join(lines)
