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


def activation_backward(out: Tensor, grad_out: Tensor, dh: Tensor, nonlinearity: str, mask: Tensor | None,
                        need_h0: bool, propagate) -> tuple[Tensor, Tensor]:
    """BPTT through h_t = act(a_t), the loop the Elman and IndRNN kernels share: (da, dh_0).

    ``propagate(da_t, dh_pass) -> dh_{t-1}`` is the part that differs (``da W_hh`` or ``da * u``),
    with ``dh_pass`` the gradient that skips a step that does not run (None without lengths).
    """
    if nonlinearity == "tanh":
        dact = 1 - out * out  # (T, B, H); zero-output steps get gradient zero anyway
    else:
        dact = out.sign()  # [h_t > 0], as out >= 0; arithmetic beats a bool mask on CPU
    da = torch.empty_like(out)  # (T, B, H) = d gx
    for t in range(out.shape[0] - 1, -1, -1):
        if mask is None:
            torch.mul(grad_out[t] + dh, dact[t], out=da[t])
            dh_pass = None
        else:
            zero = dh.new_zeros(())
            torch.mul(torch.where(mask[t], grad_out[t] + dh, zero), dact[t], out=da[t])
            dh_pass = torch.where(mask[t], zero, dh)
        if t == 0 and not need_h0:
            break
        dh = propagate(da[t], dh_pass)  # (B, H)
    return da, dh
