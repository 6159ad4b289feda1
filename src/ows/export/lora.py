"""A PEFT LoRA adapter from a fine-tune's changed linears: a truncated SVD of each weight difference.

For every changed 2-D weight of a decoder layer, ΔW = W_tuned - W_base ≈ B A with B = U_r S_r
(out x r) and A = V_r^T (r x in): the best rank-r approximation. The adapter uses ``lora_alpha = r``
(scaling 1) and ``target_modules`` = the full paths of the changed linears, so ``PeftModel.from_pretrained``
rebuilds exactly B A on top of the base, on those linears only. The captured energy of a matrix is Σ_{i<r} s_i² / Σ s_i². Tensors a
LoRA cannot hold (norms, biases, embeddings, the head) are listed in the report. With ``alpha`` the adapter holds
``alpha`` times each change (the interpolated model's). The folder is written through a staging folder: a
failure (a full disk) leaves nothing behind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..jsonio import write_json
from .delta import compute_delta
from .folders import check_new_folder, staged
from .weights import Weights, save_tensors

_LAYER = re.compile(r"^(?P<path>.*\.(?:layers|h|blocks)\.(?P<index>\d+)\..+)\.weight$")
ADAPTER_FILE, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"


@dataclass
class LoraReport:
    """What the adapter captured: energy per matrix, and what it left out."""

    rank: int
    energy: dict[str, float] = field(default_factory=dict)
    left_out: dict[str, int] = field(default_factory=dict)  # name -> parameters

    def summary(self) -> dict[str, Any]:
        values = list(self.energy.values())
        return {"rank": self.rank, "matrices": len(values),
                "mean_energy": sum(values) / len(values) if values else None,
                "min_energy": min(values) if values else None,
                "left_out_tensors": len(self.left_out), "left_out_params": sum(self.left_out.values())}


def low_rank(difference: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(B, A, captured energy) of the best rank-``rank`` approximation B A of a 2-D ``difference``."""
    u, s, vh = torch.linalg.svd(difference.float(), full_matrices=False)
    r = min(rank, s.numel())
    total = float((s * s).sum())
    energy = float((s[:r] * s[:r]).sum()) / total if total > 0 else 1.0
    return (u[:, :r] * s[:r]).contiguous(), vh[:r].contiguous(), energy


def check_rank(rank: int, shapes: dict[str, tuple[int, ...]]) -> None:
    """A ``ValueError`` when ``rank`` exceeds the smaller side of a linear (before anything is written)."""
    if not shapes:
        return
    name, shape = min(shapes.items(), key=lambda item: min(item[1]))
    if rank > min(shape):
        raise ValueError(f"--rank {rank} is larger than {name} {shape}: use a rank <= {min(shape)}")


def extract_lora(base: str | Path, tuned: str | Path, out: str | Path, rank: int, dtype: torch.dtype | None = None,
                 model_type: str | None = None, alpha: float = 1.0, base_name: str | None = None) -> LoraReport:
    """Write a PEFT LoRA adapter (rank ``rank``) for ``tuned`` over ``base`` into ``out`` (new or empty); returns the
    report. ``alpha``: the adapter of ``base + alpha * (tuned - base)``; ``base_name``: the adapter's
    ``base_model_name_or_path`` (the base as its user names it; default ``base``)."""
    from peft import LoraConfig

    if model_type in ("gpt2", "gpt_bigcode"):
        raise ValueError(f"LoRA extraction needs nn.Linear weights; {model_type} stores Conv1D (in, out): not supported")
    folder = check_new_folder(out)
    base_weights = Weights(base)
    shapes = {n: base_weights.shape(n) for n in base_weights.names if _LAYER.match(n)}
    check_rank(rank, {n: shape for n, shape in shapes.items() if len(shape) == 2})  # before reading any tensor
    delta = compute_delta(base, tuned, alpha)
    report, weights, modules = LoraReport(rank), {}, set()
    linears = {n: _LAYER.match(n) for n, t in delta.changed.items() if t.dim() == 2 and _LAYER.match(n)}
    for name, tensor in sorted(delta.changed.items()):
        match = linears.get(name)
        if match is None:
            report.left_out[name] = tensor.numel()
            continue
        b, a, energy = low_rank(tensor.float() - base_weights.get(name).float(), rank)
        keep = dtype or tensor.dtype
        weights[f"base_model.model.{match['path']}.lora_A.weight"] = a.to(keep)
        weights[f"base_model.model.{match['path']}.lora_B.weight"] = b.to(keep)
        report.energy[name] = energy
        modules.add(match["path"])
    if not weights:
        raise ValueError(f"{str(tuned)!r} changed no linear weight of a decoder layer: there is nothing for a LoRA "
                         "adapter to hold")
    # target_modules: the full path of each changed linear (PEFT matches a name by its end), so that exactly
    # those carry an adapter
    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=sorted(modules),
                        base_model_name_or_path=base_name or str(base), task_type="CAUSAL_LM")
    with staged(folder) as staging:
        config.save_pretrained(str(staging))
        save_tensors(weights, staging / ADAPTER_FILE)
        write_json(report.summary() | {"energy": report.energy, "left_out": report.left_out},
                   staging / "lora_report.json")
    return report
