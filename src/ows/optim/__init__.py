"""Optimizers: AdamW with low-rank gradient projection (GaLore) and OWS param groups."""

from .galore_adamw import GaLoreAdamW, adam_direction
from .param_groups import build_param_groups
from .projector import compute_projector, project, project_back, projection_side

__all__ = [
    "GaLoreAdamW",
    "adam_direction",
    "build_param_groups",
    "compute_projector",
    "project",
    "project_back",
    "projection_side",
]
