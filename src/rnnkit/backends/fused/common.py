"""Pieces every fused kernel shares: the step mask and the masked state update."""

from __future__ import annotations

import torch
from torch import Tensor


def step_mask(lengths: Tensor | None, T: int, device: torch.device) -> Tensor | None:
    """(T, B, 1) bool: True where step t of sequence b is inside the sequence; None for all-full."""
    if lengths is None:
        return None
    return (torch.arange(T, device=device)[:, None] < lengths)[..., None]


def sum_rows(x: Tensor) -> Tensor:
    """Sum a (T, B, N) tensor over its first two dims: a bias gradient over all steps."""
    return x.reshape(-1, x.shape[-1]).sum(0)


def rows_gemm(a: Tensor, b: Tensor) -> Tensor:
    """sum_t a_t^T b_t for a (T, B, M) and b (T, B, N) as one (M, N) GEMM over all T*B rows."""
    return a.reshape(-1, a.shape[-1]).t() @ b.reshape(-1, b.shape[-1])


def h_prev_all(out: Tensor, h0: Tensor) -> Tensor:
    """h_{t-1} for every step t, (T, B, H): h_0, then the outputs.

    Exact wherever step t runs; where it does not, every gradient it multiplies is zero.
    """
    return torch.cat([h0[None], out[:-1]])
