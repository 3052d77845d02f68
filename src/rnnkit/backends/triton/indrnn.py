"""Triton BPTT for IndRNN (Li et al. 2018): the whole time loop in one kernel, forward and backward.

IndRNN's recurrence is diagonal, h_t = act(gx_t + b_hh + u' h_{t-1}) with u' = clamp(u, -M, M)
(``fused/indrnn.py`` gives the derivatives), so there is no GEMM in the loop and each unit's
recurrence is independent: one program per batch row runs all T steps over its H units, holding
h in registers (FlashRNN's fused form, which needs no on-chip matrix here). Backward runs the
same way from the last step: da_t = dh~_t act'(h_t) and dh_{t-1} = da_t u'. Saved: the outputs
and h_0 (h_{t-1} is h_0 or out[t-1] wherever step t runs); du' and db_hh are one reduction each.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import block, compute_type, full_lengths, reference_grads, sum_rows, tanh

WEIGHTS = ("weight_hh", "bias_hh")


@triton.jit
def _forward(gx_ptr, u_ptr, h0_ptr, len_ptr, out_ptr, h_last_ptr, T, B, H, RELU: tl.constexpr, BLOCK: tl.constexpr,
             ACC: tl.constexpr):
    """All T steps of one batch row: out (T, B, H), zero past the row's end, and its last state."""
    b = tl.program_id(0)
    k = tl.arange(0, BLOCK)
    valid = k < H
    n = tl.load(len_ptr + b)
    u = tl.load(u_ptr + k, mask=valid, other=0.0).to(ACC)
    h = tl.load(h0_ptr + b * H + k, mask=valid, other=0.0).to(ACC)
    for t in range(0, T):
        offs = t * B * H + b * H + k
        a = tl.load(gx_ptr + offs, mask=valid, other=0.0).to(ACC) + u * h
        if RELU:
            y = tl.maximum(a, 0.0)
        else:
            y = tanh(a)
        running = t < n
        tl.store(out_ptr + offs, tl.where(running, y, 0.0), mask=valid)
        h = tl.where(running, y, h)
    tl.store(h_last_ptr + b * H + k, h, mask=valid)


@triton.jit
def _backward(dout_ptr, dh_last_ptr, out_ptr, u_ptr, len_ptr, da_ptr, dh0_ptr, T, B, H, RELU: tl.constexpr,
              BLOCK: tl.constexpr, ACC: tl.constexpr):
    """All T steps of one batch row from the last: da (T, B, H) = d gx, and dh_0."""
    b = tl.program_id(0)
    k = tl.arange(0, BLOCK)
    valid = k < H
    n = tl.load(len_ptr + b)
    u = tl.load(u_ptr + k, mask=valid, other=0.0).to(ACC)
    dh_last = tl.load(dh_last_ptr + b * H + k, mask=valid, other=0.0).to(ACC)
    dh = tl.zeros([BLOCK], dtype=ACC)
    for s in range(0, T):
        t = T - 1 - s
        offs = t * B * H + b * H + k
        g = tl.load(dout_ptr + offs, mask=valid, other=0.0).to(ACC) + dh
        g = tl.where(t == n - 1, g + dh_last, g)  # the final state's gradient enters at the last step
        y = tl.load(out_ptr + offs, mask=valid, other=0.0).to(ACC)
        if RELU:
            da = tl.where(y > 0, g, 0.0)  # as torch's threshold_backward
        else:
            da = g * (1 - y * y)
        da = tl.where(valid & (t < n), da, 0.0)
        tl.store(da_ptr + offs, da, mask=valid)
        dh = da * u
    tl.store(dh0_ptr + b * H + k, dh, mask=valid)


def recurrence(cell, gx: Tensor, state: Tensor, w, lengths: Tensor | None, noise=None) -> tuple[Tensor, Tensor]:
    """The Triton time loop of one IndRNN layer and direction (contract in fused/__init__.py)."""
    if noise is not None:
        raise ValueError("the triton backend runs no hidden dropout or zoneout yet (supports() refuses them)")
    return _IndRNN.apply(cell, lengths, torch.is_grad_enabled(), gx, state, *(w.get(k) for k in WEIGHTS))


class _IndRNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, lengths, grad_enabled, gx, h0, weight_hh, bias_hh):
        relu = cell.nonlinearity == "relu"
        with torch.autocast(gx.device.type, enabled=False):
            dtype = gx.dtype  # under autocast the input GEMM already chose it
            T, B, H = gx.shape
            lens = full_lengths(lengths, T, B, gx.device)
            u = weight_hh.to(dtype)
            if cell.recurrent_max is not None:
                u = u.clamp(-cell.recurrent_max, cell.recurrent_max)
            gxb = (gx if bias_hh is None else gx + bias_hh.to(dtype)).contiguous()  # both biases at once
            h0c = h0.to(dtype).contiguous()
            out, h = torch.empty_like(gxb), torch.empty_like(h0c)
            _forward[(B,)](gxb, u.contiguous(), h0c, lens, out, h, T, B, H, RELU=relu, BLOCK=block(H),
                           ACC=compute_type(dtype))
        ctx.cell, ctx.lengths, ctx.relu = cell, lengths, relu
        ctx.dtypes = [None if x is None else x.dtype for x in (gx, h0, weight_hh, bias_hh)]
        if grad_enabled:
            ctx.save_for_backward(gx, h0, weight_hh, bias_hh, lens, u, h0c, out)
        return out, h

    @staticmethod
    def backward(ctx, grad_out, grad_h):
        gx, h0, weight_hh, bias_hh, lens, u, h0c, out = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: differentiate the reference loop instead
            grads = reference_grads(ctx.cell, ctx.lengths, gx, h0, {"weight_hh": weight_hh, "bias_hh": bias_hh},
                                    [grad_out, grad_h])
            return (None, None, None, *grads)
        with torch.autocast(out.device.type, enabled=False):
            T, B, H = out.shape
            da, dh0 = torch.empty_like(out), torch.empty_like(h0c)
            _backward[(B,)](grad_out.to(out.dtype).contiguous(), grad_h.to(out.dtype).contiguous(), out, u, lens,
                            da, dh0, T, B, H, RELU=ctx.relu, BLOCK=block(H), ACC=compute_type(out.dtype))
            h_prev = torch.cat([h0c[None], out[:-1]])  # (T, B, H), exact wherever step t runs
            grad_u = sum_rows(da * h_prev)
            M = ctx.cell.recurrent_max
            if M is not None:  # clamp passes the gradient only inside [-M, M]
                grad_u = torch.where((weight_hh >= -M) & (weight_hh <= M), grad_u, 0.0)
            grad_b = sum_rows(da) if bias_hh is not None else None
        grads = [da, dh0, grad_u, grad_b]
        return (None, None, None, *[None if g is None else g.to(dt) for g, dt in zip(grads, ctx.dtypes)])
