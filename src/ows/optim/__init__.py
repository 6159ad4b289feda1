"""Optimizers: AdamW with low-rank gradient projection (GaLore) and OWS param groups."""

from .fused import FusedStep, enable_fused_step
from .galore_adamw import GaLoreAdamW, adam_direction
from .param_groups import build_param_groups
from .projector import compute_projector, project, project_back, projection_side

__all__ = [
    "FusedStep",
    "GaLoreAdamW",
    "adam_direction",
    "build_param_groups",
    "enable_fused_step",
    "compute_projector",
    "project",
    "project_back",
    "projection_side",
]
