"""Triton BPTT for the Elman RNN: ``rnn_tanh`` and ``rnn_relu``.

The same loop as ``fused/elman.py`` (its docstring gives the derivatives). Forward, per step,
``raw = h_{t-1} W_hh^T`` (cuBLAS) and one kernel: h_t = act(gx_t + b_hh + raw), the state kept
and the output zeroed past each sequence's end. Backward, per step, one kernel
(da_t = dh~_t act'(h_t), zero where step t does not run) and ``dh~_{t-1} = base_{t-1} + da_t W_hh``
as one ``addmm`` (``common.base_grad``); then dW_hh and db_hh as one GEMM and one reduction over
all steps. Saved: every state h_t (T + 1, B, H), so act'(h_t) and h_{t-1} are both at hand.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import GRAPHS, base_grad, block, compute_type, full_lengths, reference_grads, rows_gemm, sum_rows, tanh

WEIGHTS = ("weight_hh", "bias_hh")


@triton.jit
def _forward_step(gx_ptr, raw_ptr, h_ptr, len_ptr, t, h_out_ptr, out_ptr, H, RELU: tl.constexpr,
                  BLOCK: tl.constexpr, ACC: tl.constexpr):
    """h_t = act(gx_t + raw) for one batch row; past the sequence's end the state stays and the output is 0."""
    b = tl.program_id(0)
    k = tl.arange(0, BLOCK)
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
    tl.store(h_out_ptr + row + k, tl.where(running, y, h), mask=valid)
    tl.store(out_ptr + row + k, tl.where(running, y, 0.0), mask=valid)


@triton.jit
def _backward_step(dh_ptr, h_ptr, len_ptr, t, da_ptr, H, RELU: tl.constexpr, BLOCK: tl.constexpr,
                   ACC: tl.constexpr):
    """da_t = dh~_t act'(h_t) for one batch row, zero where step t does not run."""
    b = tl.program_id(0)
    k = tl.arange(0, BLOCK)
    valid = k < H
    row = b * H
    live = valid & (t < tl.load(len_ptr + b))
    g = tl.load(dh_ptr + row + k, mask=valid, other=0.0).to(ACC)
    y = tl.load(h_ptr + row + k, mask=valid, other=0.0).to(ACC)
    if RELU:
        d = tl.where(y > 0, g, 0.0)  # as torch's threshold_backward
    else:
        d = g * (1 - y * y)
    tl.store(da_ptr + row + k, tl.where(live, d, 0.0), mask=valid)


def recurrence(cell, gx: Tensor, state: Tensor, w, lengths: Tensor | None, noise=None) -> tuple[Tensor, Tensor]:
    """The Triton time loop of one Elman layer and direction (contract in fused/__init__.py)."""
    if noise is not None:
        raise ValueError("the triton backend runs no hidden dropout or zoneout yet (supports() refuses them)")
    return _Elman.apply(cell, lengths, torch.is_grad_enabled(), gx, state, *(w.get(k) for k in WEIGHTS))


def _forward_loop(relu: bool, gx, h0, lens, W, bias_hh):
    T, B, H = gx.shape
    W_t = W.t()
    hs = gx.new_empty(T + 1, B, H)  # hs[t] = h_{t-1}
    hs[0] = h0
    raw = gx.new_empty(B, H)
    out = gx.new_empty(T, B, H)
    gx = gx.contiguous()
    for t in range(T):
        if bias_hh is None:
            torch.mm(hs[t], W_t, out=raw)
        else:
            torch.addmm(bias_hh, hs[t], W_t, out=raw)
        _forward_step[(B,)](gx[t], raw, hs[t], lens, t, hs[t + 1], out[t], H, RELU=relu, BLOCK=block(H),
                            ACC=compute_type(gx.dtype))
    return [out, hs[T].clone(), hs]


def _backward_loop(relu: bool, grad_out, grad_h, lens, W, hs):
    T = hs.shape[0] - 1
    B, H = hs.shape[1:]
    dh = hs.new_zeros(T + 1, B, H)  # dh[t + 1] = dh~_t, dh[0] = dh_0
    dh[1:] = base_grad(grad_out.to(hs.dtype), grad_h.to(hs.dtype), lens)
    da = torch.empty_like(hs[1:])  # (T, B, H) = d gx
    for t in range(T - 1, -1, -1):
        _backward_step[(B,)](dh[t + 1], hs[t + 1], lens, t, da[t], H, RELU=relu, BLOCK=block(H),
                             ACC=compute_type(hs.dtype))
        dh[t].addmm_(da[t], W)
    return da, dh[0]


class _Elman(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, lengths, grad_enabled, gx, h0, weight_hh, bias_hh):
        relu = cell.nonlinearity == "relu"
        with torch.autocast(gx.device.type, enabled=False):
            dtype = gx.dtype  # under autocast the input GEMM already chose it
            T, B, _ = gx.shape
            lens = full_lengths(lengths, T, B, gx.device)
            W, b = weight_hh.to(dtype), None if bias_hh is None else bias_hh.to(dtype)
            inputs = [gx, h0.to(dtype), lens, W, b]
            key = ("elman", relu, tuple(gx.shape), dtype, b is None)
            out, h, hs = GRAPHS.run(key, lambda *a: _forward_loop(relu, *a), inputs)
        ctx.cell, ctx.lengths, ctx.relu = cell, lengths, relu
        ctx.dtypes = [None if x is None else x.dtype for x in (gx, h0, weight_hh, bias_hh)]
        if grad_enabled:
            ctx.save_for_backward(gx, h0, weight_hh, bias_hh, lens, W, hs)
        return out, h

    @staticmethod
    def backward(ctx, grad_out, grad_h):
        gx, h0, weight_hh, bias_hh, lens, W, hs = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: differentiate the reference loop instead
            grads = reference_grads(ctx.cell, ctx.lengths, gx, h0, {"weight_hh": weight_hh, "bias_hh": bias_hh},
                                    [grad_out, grad_h])
            return (None, None, None, *grads)
        with torch.autocast(hs.device.type, enabled=False):
            da, dh0 = _backward_loop(ctx.relu, grad_out, grad_h, lens, W, hs)
            grad_W = rows_gemm(da, hs[:-1])  # (H, H)
            grad_b = sum_rows(da) if bias_hh is not None else None
        grads = [da, dh0, grad_W, grad_b]
        return (None, None, None, *[None if g is None else g.to(dt) for g, dt in zip(grads, ctx.dtypes)])
