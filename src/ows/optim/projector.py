"""Low-rank gradient projection (GaLore) as pure functions over plain tensors.

For a gradient G of shape (m, n) a projector is either
- ``left``:  Q of shape (m, r), orthonormal columns; low = Q^T G (r, n); back = Q low
- ``right``: P of shape (r, n), orthonormal rows;    low = G P^T (m, r); back = low P
The side is a pure function of the weight shape and ``proj_type``, so only the matrix is stored.
"""

from __future__ import annotations

from typing import Literal

import torch

from ..choices import PROJ_TYPES
from ..choices import UPDATE_CHUNK as GRAM_CHUNK

Side = Literal["left", "right"]


def projection_side(shape: torch.Size | tuple[int, ...], proj_type: str) -> Side:
    """Which side of an (m, n) gradient is projected.

    ``std`` projects the larger dimension away (right when m >= n), ``reverse_std`` the opposite,
    ``left`` / ``right`` force a side. Same rule as the GaLore reference implementation.
    """
    if len(shape) != 2:
        raise ValueError(f"GaLore projects 2-D weights only, got a tensor of shape {tuple(shape)}")
    rows, cols = shape
    if proj_type == "std":
        return "right" if rows >= cols else "left"
    if proj_type == "reverse_std":
        return "left" if rows >= cols else "right"
    if proj_type in ("left", "right"):
        return proj_type  # type: ignore[return-value]
    raise ValueError(f"proj_type={proj_type!r} is unknown: use one of {', '.join(PROJ_TYPES)}")


def compute_projector(grad: torch.Tensor, rank: int, side: Side) -> torch.Tensor:
    """Top-``rank`` singular vectors of ``grad`` on ``side``, in the gradient's dtype.

    The SVD runs in float32 (bf16/fp16 SVD is not supported or not accurate enough).
    """
    matrix = grad.float()
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    basis = u[:, :rank] if side == "left" else vh[:rank, :]
    return basis.to(grad.dtype).contiguous()


def randomized_projector(grad: torch.Tensor, rank: int, side: Side, oversample: int = 8, seed: int = 0) -> torch.Tensor:
    """Approximate top-``rank`` singular vectors by a randomized SVD (Halko et al.), seeded.

    ``svd_method='randomized'`` uses it, and the exact path falls back to it when an SVD fails;
    ``torch.svd_lowrank`` with ``niter=2``. The global random state (CPU and the gradient's device) is
    left as it was.
    """
    matrix = grad.float()
    k = min(rank, *matrix.shape)
    # manual_seed reseeds every CUDA device too, so fork all of them (fork_rng saves only what it is given)
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else []):
        torch.manual_seed(seed)
        u, _, v = torch.svd_lowrank(matrix, q=min(k + oversample, *matrix.shape), niter=2)
    basis = u[:, :k] if side == "left" else v[:, :k].t()
    return basis.to(grad.dtype).contiguous()


def slices(count: int, item_size: int, chunk: int) -> list[slice]:
    """Consecutive slices over ``count`` items (rows or columns) of ``item_size`` elements each, every slice
    holding at most ``chunk`` elements (at least one item): how a large tensor is worked on piece by piece."""
    step = max(1, chunk // max(item_size, 1))
    return [slice(start, start + step) for start in range(0, count, step)]


def gram_projector(grad: torch.Tensor, rank: int, side: Side) -> torch.Tensor:
    """Top-``rank`` singular vectors of ``grad`` on ``side`` from the eigenvectors of its Gram matrix.

    ``right``: eigenvectors of G^T G (n x n); ``left``: of G G^T (m x m). The Gram matrix is summed in
    fp32 over slices of the gradient, so the only large temporaries are the Gram matrix and its
    eigenvectors (for the ``std`` side, the smaller dimension squared) instead of the SVD's full-size
    factors and an fp32 copy of the gradient. Squaring doubles the condition number; the top
    vectors GaLore keeps are unaffected (quality measured in benchmarks/projection_quality.py).
    """
    rows, cols = grad.shape
    size = cols if side == "right" else rows
    gram = torch.zeros(size, size, dtype=torch.float32, device=grad.device)
    if side == "right":
        for part in slices(rows, cols, GRAM_CHUNK):
            block = grad[part].float()
            gram.addmm_(block.t(), block)
    else:
        for part in slices(cols, rows, GRAM_CHUNK):
            block = grad[:, part].float()
            gram.addmm_(block, block.t())
    _, vectors = torch.linalg.eigh(gram)  # ascending eigenvalues
    top = vectors[:, -min(rank, size):].flip(-1)
    basis = top.t() if side == "right" else top
    return basis.to(grad.dtype).contiguous()


def project(grad: torch.Tensor, projector: torch.Tensor, side: Side) -> torch.Tensor:
    """Project an (m, n) gradient to the low-rank space: (r, n) for left, (m, r) for right."""
    return projector.t() @ grad if side == "left" else grad @ projector.t()


def project_back(low_rank: torch.Tensor, projector: torch.Tensor, side: Side, scale: float = 1.0) -> torch.Tensor:
    """Map a low-rank update back to the full (m, n) shape, multiplied by ``scale``."""
    full = projector @ low_rank if side == "left" else low_rank @ projector
    return full * scale if scale != 1.0 else full


def add_projected(target: torch.Tensor, low_rank: torch.Tensor, projector: torch.Tensor, side: Side,
                  alpha: float) -> None:
    """``target += alpha * project_back(low_rank, projector, side)``, in place and in slices of rows.

    Row i of the full update is ``projector[i] @ low_rank`` (left) or ``low_rank[i] @ projector`` (right),
    so each slice is one ``addmm_`` into ``target`` and the full-size update never exists: the only
    temporary is a slice's product. ``alpha`` carries the step's sign, learning rate and GaLore scale.
    """
    rows, cols = target.shape
    for part in slices(rows, cols, GRAM_CHUNK):
        if side == "left":
            target[part].addmm_(projector[part], low_rank, alpha=alpha)
        else:
            target[part].addmm_(low_rank[part], projector, alpha=alpha)
