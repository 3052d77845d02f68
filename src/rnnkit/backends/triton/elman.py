"""Triton BPTT for the Elman RNN: ``rnn_tanh`` and ``rnn_relu``.

The same loop as ``fused/elman.py`` (its docstring gives the derivatives). Forward, per step,
``raw = h_{t-1} W_hh^T`` (cuBLAS) and one kernel: h~_t = act(gx_t + b_hh + raw), the state kept
where a unit keeps it, the output zeroed past each sequence's end. Backward carries dh_t from the
last step; per step one kernel and one GEMM:

    dh_t = (da_{t+1} W_hh) (* m) + pass_{t+1},      g = dh_t + dout_t [t < len]
    da_t = g act'(h~_t) where the unit updates, else 0;   pass_t = g where the unit keeps its state

then dW_hh and db_hh as one GEMM and one reduction over all steps. A unit keeps its state past its
sequence's end and, under zoneout, where its mask says so. Hidden dropout's mask m (B, H) multiplies
h_{t-1} in the product: the forward kernel also writes h_t m, the next GEMM's input, and the
backward kernel multiplies the GEMM's result by m. Saved: every state h_t (T + 1, B, H) and, under
zoneout, h~_t (T, B, H).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import (
    GRAPHS,
    compute_type,
    full_lengths,
    grid,
    keeps,
    noise_masks,
    reference_grads,
    rows_gemm,
    sum_rows,
    tanh,
    tiles,
)

WEIGHTS = ("weight_hh", "bias_hh")


@triton.jit(do_not_specialize=["t"])  # one compiled kernel for every step
def _forward_step(gx_ptr, raw_ptr, h_ptr, len_ptr, t, keep_ptr, m_ptr, h_out_ptr, out_ptr, h_tilde_ptr, h_in_ptr, H,
                  RELU: tl.constexpr, ZONE: tl.constexpr, HIDDEN: tl.constexpr, BLOCK: tl.constexpr,
                  ACC: tl.constexpr):
    """h~_t = act(gx_t + raw) for one batch row, the select of kept units, the output, and h_t m for the next GEMM."""
    b = tl.program_id(0)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = k < H
    row = b * H
    running = t < tl.load(len_ptr + b)
    a = tl.load(gx_ptr + row + k, mask=valid, other=0.0).to(ACC) + tl.load(raw_ptr + row + k, mask=valid,
                                                                           other=0.0).to(ACC)
    if RELU:
        y = tl.maximum(a, 0.0)
    else:
        y = tanh(a)
    h = tl.load(h_ptr + row + k, mask=valid, other=0.0).to(ACC)
    h = tl.where(keeps(keep_ptr, row + k, valid, running, ZONE), h, y)
    tl.store(h_out_ptr + row + k, h, mask=valid)
    tl.store(out_ptr + row + k, tl.where(running, h, 0.0), mask=valid)
    if ZONE:
        tl.store(h_tilde_ptr + row + k, y, mask=valid)
    if HIDDEN:
        tl.store(h_in_ptr + row + k, h * tl.load(m_ptr + row + k, mask=valid, other=0.0).to(ACC), mask=valid)


@triton.jit(do_not_specialize=["t"])  # one compiled kernel for every step
def _backward_step(dhw_ptr, pass_ptr, dout_ptr, y_ptr, len_ptr, t, keep_ptr, m_ptr, da_ptr, H, RELU: tl.constexpr,
                   ZONE: tl.constexpr, HIDDEN: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """da_t and pass_t of one batch row from da_{t+1} W_hh (dhw), pass_{t+1} and dout_t."""
    b = tl.program_id(0)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = k < H
    row = b * H
    running = t < tl.load(len_ptr + b)
    dh = tl.load(dhw_ptr + row + k, mask=valid, other=0.0).to(ACC)
    if HIDDEN:
        dh = dh * tl.load(m_ptr + row + k, mask=valid, other=0.0).to(ACC)
    dh += tl.load(pass_ptr + row + k, mask=valid, other=0.0).to(ACC)
    g = dh + tl.where(running, tl.load(dout_ptr + row + k, mask=valid, other=0.0).to(ACC), 0.0)
    keep = keeps(keep_ptr, row + k, valid, running, ZONE)
    y = tl.load(y_ptr + row + k, mask=valid, other=0.0).to(ACC)
    if RELU:
        d = tl.where(y > 0, g, 0.0)  # as torch's threshold_backward
    else:
        d = g * (1 - y * y)
    tl.store(da_ptr + row + k, tl.where(keep, 0.0, d), mask=valid)
    tl.store(pass_ptr + row + k, tl.where(keep, g, 0.0), mask=valid)


def recurrence(cell, gx: Tensor, state: Tensor, w, lengths: Tensor | None, noise=None) -> tuple[Tensor, Tensor]:
    """The Triton time loop of one Elman layer and direction (contract in fused/__init__.py)."""
    return _Elman.apply(cell, lengths, noise, torch.is_grad_enabled(), gx, state, *(w.get(k) for k in WEIGHTS))


def _forward_loop(flags: dict, gx, h0, lens, W, bias_hh, m, keep):
    T, B, H = gx.shape
    W_t = W.t()
    hs = gx.new_empty(T + 1, B, H)  # hs[t] = h_{t-1}
    hs[0] = h0
    h_in = None if m is None else h0 * m  # the next GEMM's input under hidden dropout
    h_tilde = None if keep is None else gx.new_empty(T, B, H)
    raw = gx.new_empty(B, H)
    out = gx.new_empty(T, B, H)
    cols = grid(B, H, flags["BLOCK"])
    for t in range(T):
        x = hs[t] if m is None else h_in
        if bias_hh is None:
            torch.mm(x, W_t, out=raw)
        else:
            torch.addmm(bias_hh, x, W_t, out=raw)
        _forward_step[cols](gx[t], raw, hs[t], lens, t, raw if keep is None else keep[t], raw if m is None else m,
                            hs[t + 1], out[t], raw if keep is None else h_tilde[t], raw if m is None else h_in, H,
                            **flags)
    return [out, hs[T].clone(), hs, h_tilde]


class _Elman(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, lengths, noise, grad_enabled, gx, h0, weight_hh, bias_hh):
        with torch.autocast(gx.device.type, enabled=False):
            dtype = gx.dtype  # under autocast the input GEMM already chose it
            T, B, H = gx.shape
            lens = full_lengths(lengths, T, B, gx.device)
            m, keep = noise_masks(noise, lens, dtype)
            keep = None if keep is None else keep[0]
            flags = dict(RELU=cell.nonlinearity == "relu", ZONE=keep is not None, HIDDEN=m is not None,
                         **tiles(H), ACC=compute_type(dtype))
            W, b = weight_hh.to(dtype), None if bias_hh is None else bias_hh.to(dtype)
            inputs = [gx.contiguous(), h0.to(dtype), lens, W, b, m, keep]
            key = ("elman", tuple(flags.items()), tuple(gx.shape), dtype, b is None)
            out, h, hs, h_tilde = GRAPHS.run(key, lambda *a: _forward_loop(flags, *a), inputs)
        ctx.cell, ctx.lengths, ctx.noise, ctx.flags = cell, lengths, noise, flags
        ctx.dtypes = [None if x is None else x.dtype for x in (gx, h0, weight_hh, bias_hh)]
        if grad_enabled:
            ctx.save_for_backward(gx, h0, weight_hh, bias_hh, lens, W, hs, h_tilde, m, keep)
        return out, h

    @staticmethod
    def backward(ctx, grad_out, grad_h):
        gx, h0, weight_hh, bias_hh, lens, W, hs, h_tilde, m, keep = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: differentiate the reference loop instead
            grads = reference_grads(ctx.cell, ctx.lengths, gx, h0, {"weight_hh": weight_hh, "bias_hh": bias_hh},
                                    [grad_out, grad_h], ctx.noise)
            return (None, None, None, None, *grads)
        with torch.autocast(hs.device.type, enabled=False):
            T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
            grad_out = grad_out.to(hs.dtype).contiguous()
            dhw = hs.new_zeros(B, H)  # da_{t+1} W_hh
            passed = grad_h.to(hs.dtype).clone()  # the part of dh_t that skips step t + 1
            da = hs.new_empty(T, B, H)  # d gx
            cols = grid(B, H, ctx.flags["BLOCK"])
            for t in range(T - 1, -1, -1):
                _backward_step[cols](dhw, passed, grad_out[t], hs[t + 1] if keep is None else h_tilde[t], lens, t,
                                     dhw if keep is None else keep[t], dhw if m is None else m, da[t], H, **ctx.flags)
                torch.mm(da[t], W, out=dhw)
            dh0 = (dhw if m is None else dhw * m) + passed
            h_in = hs[:T] if m is None else hs[:T] * m  # what the products read
            grad_W = rows_gemm(da, h_in)  # (H, H)
            grad_b = sum_rows(da) if bias_hh is not None else None
        grads = [da, dh0, grad_W, grad_b]
        return (None, None, None, None, *[None if g is None else g.to(dt) for g, dt in zip(grads, ctx.dtypes)])
