"""Triton BPTT for minGRU and minLSTM (Feng et al. 2024): the whole time loop in one kernel.

Both are a linear recurrence h_t = a_t h_{t-1} + b_t whose coefficients depend on gx alone
(``fused/minimal.py`` gives the derivatives), so, as IndRNN, one program per batch row and block of
units runs all T steps with h in registers, forward and backward; there is no GEMM in the loop.
Backward recomputes the gates from gx (pointwise, cheaper than storing them) and reads h_{t-1}
from the saved states (T + 1, B, H):

    mingru:  a = 1 - z, b = z h~;   da_z = dh~ (h~ - h_{t-1}) z (1 - z),   da_h = dh~ z g'(a_h)
    minlstm: a = f', b = i' h~ with f' = sigma(d), i' = sigma(-d), d = log sigma(a_f) - log sigma(a_i);
             k = (h_{t-1} - h~) f' i';  da_f = dh~ k (1 - f),  da_i = -dh~ k (1 - i),  da_h = dh~ i' g'(a_h)

with g(a) = a + 1/2 (a >= 0), sigma(a) (a < 0), and dh_{t-1} = a_t dh~_t. Backward carries dh_t from the
last step: dh~_t = dh_t + dout_t [t < len] enters the update where the unit updates; where it keeps
its state (past its sequence's end, or zoned out), dh~_t passes to dh_{t-1} whole and its gates get 0.
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
    sigmoid,
    tiles,
)


@triton.jit
def _log_sigmoid(x):
    return tl.minimum(x, 0.0) - tl.log(1 + tl.exp(-tl.abs(x)))


@triton.jit
def _coefficients(gx_ptr, row, k, valid, H, MINLSTM: tl.constexpr, ACC: tl.constexpr):
    """(a, b, and what backward needs) of one step: decay a, the candidate h~ and the gates."""
    if MINLSTM:
        a_f = tl.load(gx_ptr + row + k, mask=valid, other=0.0).to(ACC)
        a_i = tl.load(gx_ptr + row + H + k, mask=valid, other=0.0).to(ACC)
        a_h = tl.load(gx_ptr + row + 2 * H + k, mask=valid, other=0.0).to(ACC)
        d = _log_sigmoid(a_f) - _log_sigmoid(a_i)  # log f - log i: no 0/0 when both underflow
        decay = sigmoid(d)  # f' = f / (f + i)
        gate = sigmoid(-d)  # i'
        f = sigmoid(a_f)
        i = sigmoid(a_i)
    else:
        a_z = tl.load(gx_ptr + row + k, mask=valid, other=0.0).to(ACC)
        a_h = tl.load(gx_ptr + row + H + k, mask=valid, other=0.0).to(ACC)
        gate = sigmoid(a_z)  # z
        decay = 1 - gate
        f = gate
        i = gate
    s = sigmoid(tl.minimum(a_h, 0.0))
    h_tilde = tl.where(a_h >= 0, a_h + 0.5, s)
    dg = tl.where(a_h >= 0, 1.0, s * (1 - s))
    return decay, gate, h_tilde, dg, f, i


@triton.jit
def _forward(gx_ptr, h0_ptr, len_ptr, keep_ptr, hs_ptr, out_ptr, T, B, H, NG: tl.constexpr, MINLSTM: tl.constexpr,
             ZONE: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """All T steps of one batch row: hs (T + 1, B, H) with kept units kept, out zero past the end."""
    b = tl.program_id(0)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = k < H
    n = tl.load(len_ptr + b)
    h = tl.load(h0_ptr + b * H + k, mask=valid, other=0.0).to(ACC)
    tl.store(hs_ptr + b * H + k, h, mask=valid)
    for t in range(0, T):
        decay, gate, h_tilde, dg, f, i = _coefficients(gx_ptr, (t * B + b) * NG * H, k, valid, H, MINLSTM, ACC)
        h_new = decay * h + gate * h_tilde
        running = t < n
        if ZONE:
            keep = tl.load(keep_ptr + (t * B + b) * H + k, mask=valid, other=1) != 0
        else:
            keep = (k < 0) | (t >= n)
        h = tl.where(keep, h, h_new)
        tl.store(hs_ptr + ((t + 1) * B + b) * H + k, h, mask=valid)
        tl.store(out_ptr + (t * B + b) * H + k, tl.where(running, h, 0.0), mask=valid)


@triton.jit
def _backward(gx_ptr, hs_ptr, dout_ptr, dh_last_ptr, len_ptr, keep_ptr, dgx_ptr, dh0_ptr, T, B, H, NG: tl.constexpr,
              MINLSTM: tl.constexpr, ZONE: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """All T steps of one batch row from the last: d gx (T, B, NG*H) and dh_0."""
    b = tl.program_id(0)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = k < H
    n = tl.load(len_ptr + b)
    dh = tl.load(dh_last_ptr + b * H + k, mask=valid, other=0.0).to(ACC)
    for s in range(0, T):
        t = T - 1 - s
        row = (t * B + b) * NG * H
        decay, gate, h_tilde, dg, f, i = _coefficients(gx_ptr, row, k, valid, H, MINLSTM, ACC)
        h_prev = tl.load(hs_ptr + (t * B + b) * H + k, mask=valid, other=0.0).to(ACC)
        g = dh + tl.where(t < n, tl.load(dout_ptr + (t * B + b) * H + k, mask=valid, other=0.0).to(ACC), 0.0)
        if ZONE:
            keep = tl.load(keep_ptr + (t * B + b) * H + k, mask=valid, other=1) != 0
        else:
            keep = (k < 0) | (t >= n)
        gu = tl.where(keep | (k >= H), 0.0, g)  # the part of g that enters the update
        if MINLSTM:
            kk = (h_prev - h_tilde) * decay * gate
            tl.store(dgx_ptr + row + k, gu * kk * (1 - f), mask=valid)
            tl.store(dgx_ptr + row + H + k, -gu * kk * (1 - i), mask=valid)
            tl.store(dgx_ptr + row + 2 * H + k, gu * gate * dg, mask=valid)
        else:
            tl.store(dgx_ptr + row + k, gu * (h_tilde - h_prev) * gate * decay, mask=valid)
            tl.store(dgx_ptr + row + H + k, gu * gate * dg, mask=valid)
        dh = gu * decay + tl.where(keep, g, 0.0)
    tl.store(dh0_ptr + b * H + k, dh, mask=valid)


def recurrence(cell, gx: Tensor, state: Tensor, w, lengths: Tensor | None, noise=None) -> tuple[Tensor, Tensor]:
    """The Triton time loop of one minGRU or minLSTM layer and direction (contract in fused/__init__.py)."""
    if noise is not None and noise.hidden is not None:
        raise ValueError(f"hidden dropout needs a recurrent product, but cell {cell.name!r} has none")
    return _Minimal.apply(cell, lengths, noise, torch.is_grad_enabled(), gx, state)


class _Minimal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, lengths, noise, grad_enabled, gx, h0):
        minlstm = cell.name == "minlstm"
        with torch.autocast(gx.device.type, enabled=False):
            dtype = gx.dtype  # under autocast the input GEMM already chose it
            T, B, G = gx.shape
            H = h0.shape[-1]
            lens = full_lengths(lengths, T, B, gx.device)
            keep = noise_masks(noise, lens, dtype)[1]
            keep = None if keep is None else keep[0]
            gxc, h0c = gx.contiguous(), h0.to(dtype).contiguous()
            hs, out = gx.new_empty(T + 1, B, H), gx.new_empty(T, B, H)
            flags = dict(NG=G // H, MINLSTM=minlstm, ZONE=keep is not None, **tiles(H),
                         ACC=compute_type(dtype))
            BLOCK = flags["BLOCK"]
            _forward[grid(B, H, BLOCK)](gxc, h0c, lens, gxc if keep is None else keep, hs, out, T, B, H, **flags)
        ctx.cell, ctx.lengths, ctx.noise, ctx.flags = cell, lengths, noise, flags
        ctx.dtypes = (gx.dtype, h0.dtype)
        if grad_enabled:
            ctx.save_for_backward(gx, h0, gxc, lens, hs, keep)
        return out, hs[T].clone()

    @staticmethod
    def backward(ctx, grad_out, grad_h):
        gx, h0, gxc, lens, hs, keep = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: differentiate the reference loop instead
            grads = reference_grads(ctx.cell, ctx.lengths, gx, h0, {}, [grad_out, grad_h], ctx.noise)
            return (None, None, None, None, *grads)
        with torch.autocast(hs.device.type, enabled=False):
            T, B, G = gxc.shape
            H = hs.shape[-1]
            dgx, dh0 = torch.empty_like(gxc), hs.new_empty(B, H)
            dout, dh_last = grad_out.to(hs.dtype).contiguous(), grad_h.to(hs.dtype).contiguous()
            _backward[grid(B, H, ctx.flags["BLOCK"])](gxc, hs, dout, dh_last, lens, gxc if keep is None else keep, dgx,
                                                      dh0, T, B, H, **ctx.flags)
        return (None, None, None, None, dgx.to(ctx.dtypes[0]), dh0.to(ctx.dtypes[1]))
