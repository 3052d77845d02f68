"""Triton BPTT for IndRNN (Li et al. 2018): the whole time loop in one kernel, forward and backward.

IndRNN's recurrence is diagonal, h_t = act(gx_t + b_hh + u' h_{t-1}) with u' = clamp(u, -M, M)
(``fused/indrnn.py`` gives the derivatives), so there is no GEMM in the loop and each unit's
recurrence is independent: one program per batch row and block of units (``common.tiles``) runs
all T steps, holding h in registers (FlashRNN's fused form, which needs no on-chip matrix here). Backward runs the
same way from the last step, carrying dh_t:

    g = dh_t + dout_t [t < len],   da_t = g act'(h~_t) where the unit updates, else 0,
    dh_{t-1} = da_t u' (m) + g where the unit keeps its state

A unit keeps its state past its sequence's end and, under zoneout, where its mask says so; hidden
dropout multiplies h_{t-1} by its mask m, so the kernels read u' m (B, H) instead of u' (H,).
Saved: the outputs, h_0 and, under zoneout, h~_t = act(a_t) (T, B, H); h_{t-1} is h_0 or out[t-1]
wherever step t runs, so du' and db_hh are one reduction each after the loop.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import (
    compute_type,
    full_lengths,
    grid,
    noise_masks,
    reference_grads,
    sum_rows,
    tanh,
    tiles,
)

WEIGHTS = ("weight_hh", "bias_hh")


@triton.jit
def _forward(gx_ptr, u_ptr, h0_ptr, len_ptr, keep_ptr, out_ptr, h_tilde_ptr, h_last_ptr, T, B, H,
             RELU: tl.constexpr, U_ROWS: tl.constexpr, ZONE: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """All T steps of one batch row: out (T, B, H), zero past the row's end, and its last state."""
    b = tl.program_id(0)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = k < H
    n = tl.load(len_ptr + b)
    u = tl.load(u_ptr + (b * H if U_ROWS else 0) + k, mask=valid, other=0.0).to(ACC)  # u' or u' m
    h = tl.load(h0_ptr + b * H + k, mask=valid, other=0.0).to(ACC)
    for t in range(0, T):
        offs = t * B * H + b * H + k
        a = tl.load(gx_ptr + offs, mask=valid, other=0.0).to(ACC) + u * h
        if RELU:
            y = tl.maximum(a, 0.0)
        else:
            y = tanh(a)
        running = t < n
        if ZONE:
            keep = tl.load(keep_ptr + offs, mask=valid, other=1) != 0
            tl.store(h_tilde_ptr + offs, y, mask=valid)
        else:
            keep = (k < 0) | (t >= n)
        h = tl.where(keep, h, y)
        tl.store(out_ptr + offs, tl.where(running, h, 0.0), mask=valid)
    tl.store(h_last_ptr + b * H + k, h, mask=valid)


@triton.jit
def _backward(dout_ptr, dh_last_ptr, y_ptr, u_ptr, len_ptr, keep_ptr, da_ptr, dh0_ptr, T, B, H, RELU: tl.constexpr,
              U_ROWS: tl.constexpr, ZONE: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """All T steps of one batch row from the last: da (T, B, H) = d gx, and dh_0. y: act(a_t) per step."""
    b = tl.program_id(0)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = k < H
    n = tl.load(len_ptr + b)
    u = tl.load(u_ptr + (b * H if U_ROWS else 0) + k, mask=valid, other=0.0).to(ACC)
    dh = tl.load(dh_last_ptr + b * H + k, mask=valid, other=0.0).to(ACC)
    for s in range(0, T):
        t = T - 1 - s
        offs = t * B * H + b * H + k
        g = dh + tl.where(t < n, tl.load(dout_ptr + offs, mask=valid, other=0.0).to(ACC), 0.0)
        if ZONE:
            keep = tl.load(keep_ptr + offs, mask=valid, other=1) != 0
        else:
            keep = (k < 0) | (t >= n)
        y = tl.load(y_ptr + offs, mask=valid, other=0.0).to(ACC)
        if RELU:
            da = tl.where(y > 0, g, 0.0)  # as torch's threshold_backward
        else:
            da = g * (1 - y * y)
        da = tl.where(keep | (k >= H), 0.0, da)
        tl.store(da_ptr + offs, da, mask=valid)
        dh = da * u + tl.where(keep, g, 0.0)
    tl.store(dh0_ptr + b * H + k, dh, mask=valid)


def recurrence(cell, gx: Tensor, state: Tensor, w, lengths: Tensor | None, noise=None) -> tuple[Tensor, Tensor]:
    """The Triton time loop of one IndRNN layer and direction (contract in fused/__init__.py)."""
    return _IndRNN.apply(cell, lengths, noise, torch.is_grad_enabled(), gx, state, *(w.get(k) for k in WEIGHTS))


class _IndRNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, lengths, noise, grad_enabled, gx, h0, weight_hh, bias_hh):
        relu = cell.nonlinearity == "relu"
        with torch.autocast(gx.device.type, enabled=False):
            dtype = gx.dtype  # under autocast the input GEMM already chose it
            T, B, H = gx.shape
            lens = full_lengths(lengths, T, B, gx.device)
            m, keep = noise_masks(noise, lens, dtype)
            u = weight_hh.to(dtype)
            if cell.recurrent_max is not None:
                u = u.clamp(-cell.recurrent_max, cell.recurrent_max)
            um = (u if m is None else u * m).contiguous()  # (H,) or (B, H): the factor of h_{t-1}
            gxb = (gx if bias_hh is None else gx + bias_hh.to(dtype)).contiguous()  # both biases at once
            h0c = h0.to(dtype).contiguous()
            out, h = torch.empty_like(gxb), torch.empty_like(h0c)
            h_tilde = torch.empty_like(gxb) if keep is not None else None
            flags = dict(RELU=relu, U_ROWS=m is not None, ZONE=keep is not None, **tiles(H),
                         ACC=compute_type(dtype))
            _forward[grid(B, H, flags["BLOCK"])](gxb, um, h0c, lens, gxb if keep is None else keep[0], out,
                                                 out if keep is None else h_tilde, h, T, B, H, **flags)
        ctx.cell, ctx.lengths, ctx.noise, ctx.flags = cell, lengths, noise, flags
        ctx.dtypes = [None if x is None else x.dtype for x in (gx, h0, weight_hh, bias_hh)]
        if grad_enabled:
            ctx.save_for_backward(gx, h0, weight_hh, bias_hh, lens, um, m, None if keep is None else keep[0], h_tilde,
                                  h0c, out)
        return out, h

    @staticmethod
    def backward(ctx, grad_out, grad_h):
        gx, h0, weight_hh, bias_hh, lens, um, m, keep, h_tilde, h0c, out = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: differentiate the reference loop instead
            grads = reference_grads(ctx.cell, ctx.lengths, gx, h0, {"weight_hh": weight_hh, "bias_hh": bias_hh},
                                    [grad_out, grad_h], ctx.noise)
            return (None, None, None, None, *grads)
        with torch.autocast(out.device.type, enabled=False):
            T, B, H = out.shape
            da, dh0 = torch.empty_like(out), torch.empty_like(h0c)
            BLOCK = ctx.flags["BLOCK"]
            _backward[grid(B, H, BLOCK)](grad_out.to(out.dtype).contiguous(), grad_h.to(out.dtype).contiguous(),
                            out if h_tilde is None else h_tilde, um, lens, out if keep is None else keep, da, dh0,
                            T, B, H, **ctx.flags)
            h_prev = torch.cat([h0c[None], out[:-1]])  # (T, B, H), exact wherever step t runs
            grad_u = sum_rows(da * (h_prev if m is None else h_prev * m))
            M = ctx.cell.recurrent_max
            if M is not None:  # clamp passes the gradient only inside [-M, M]
                grad_u = torch.where((weight_hh >= -M) & (weight_hh <= M), grad_u, 0.0)
            grad_b = sum_rows(da) if bias_hh is not None else None
        grads = [da, dh0, grad_u, grad_b]
        return (None, None, None, None, *[None if g is None else g.to(dt) for g, dt in zip(grads, ctx.dtypes)])
