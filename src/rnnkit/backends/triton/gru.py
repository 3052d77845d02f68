"""Triton BPTT for the GRU family: ``gru`` (reset-after, torch's) and ``cho_gru`` (reset-before).

The same loops as ``fused/gru.py`` (its docstring gives the derivatives), the pointwise work in
Triton kernels. ``gru``: forward, per step, ``raw = b_hh + h_{t-1} W_hh^T`` (cuBLAS) and one kernel
(r, z, n, the blend, the length mask); backward, per step, one kernel (every gate's gradient and
the dh~_t z part of dh_{t-1}) and one ``addmm`` for the rest, ``d gh_t W_hh``.

``cho_gru`` needs two kernels per step: its candidate reads W_hn (r * h_{t-1}), a GEMM whose input
is the output of the first gates' pointwise pass, so the step is GEMM, kernel, GEMM, kernel in
both directions (forward: r, z and s = r h_{t-1}, then n and the blend; backward: da_n, da_z,
then with ds = da_n W_hn, da_r and ds r).

h_{t-1} is read from the saved states (T + 1, B, H); dh~ is carried in a (T + 1, B, H) buffer whose
row t + 1 holds dh~_t (``common.base_grad`` at first) and row 0 ends as dh_0.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import (
    GRAPHS,
    base_grad,
    block,
    compute_type,
    full_lengths,
    reference_grads,
    rows_gemm,
    sigmoid,
    sum_rows,
    tanh,
)

WEIGHTS = ("weight_hh", "bias_hh")


@triton.jit
def _load(ptr, offs, valid, ACC: tl.constexpr):
    return tl.load(ptr + offs, mask=valid, other=0.0).to(ACC)


@triton.jit
def _blend_store(n, z, h_ptr, running, row, k, valid, h_out_ptr, out_ptr, ACC: tl.constexpr):
    """h_t = n + z (h_{t-1} - n); the state kept and the output zero past the sequence's end."""
    h = _load(h_ptr, row + k, valid, ACC)
    h_new = n + z * (h - n)
    tl.store(h_out_ptr + row + k, tl.where(running, h_new, h), mask=valid)
    tl.store(out_ptr + row + k, tl.where(running, h_new, 0.0), mask=valid)


@triton.jit
def _gru_forward_step(gx_ptr, raw_ptr, h_ptr, len_ptr, t, gates_ptr, n_ptr, h_out_ptr, out_ptr, H,
                      BLOCK: tl.constexpr, ACC: tl.constexpr):
    """torch's GRU step of one batch row; saves r | z | gh_n and n."""
    b = tl.program_id(0)
    k = tl.arange(0, BLOCK)
    valid = k < H
    g3, row = b * 3 * H, b * H
    running = t < tl.load(len_ptr + b)
    r = sigmoid(_load(gx_ptr, g3 + k, valid, ACC) + _load(raw_ptr, g3 + k, valid, ACC))
    z = sigmoid(_load(gx_ptr, g3 + H + k, valid, ACC) + _load(raw_ptr, g3 + H + k, valid, ACC))
    gh_n = _load(raw_ptr, g3 + 2 * H + k, valid, ACC)
    n = tanh(_load(gx_ptr, g3 + 2 * H + k, valid, ACC) + r * gh_n)
    tl.store(gates_ptr + g3 + k, r, mask=valid)
    tl.store(gates_ptr + g3 + H + k, z, mask=valid)
    tl.store(gates_ptr + g3 + 2 * H + k, gh_n, mask=valid)
    tl.store(n_ptr + row + k, n, mask=valid)
    _blend_store(n, z, h_ptr, running, row, k, valid, h_out_ptr, out_ptr, ACC)


@triton.jit
def _gru_backward_step(dh_ptr, dprev_ptr, gates_ptr, n_ptr, hp_ptr, len_ptr, t, dgh_ptr, dgx_ptr, H,
                       BLOCK: tl.constexpr, ACC: tl.constexpr):
    """d gh_t (r | z | n), d gx_t, and dh_{t-1} += dh~_t z, for one batch row; zero where step t does not run."""
    b = tl.program_id(0)
    k = tl.arange(0, BLOCK)
    valid = k < H
    g3, row = b * 3 * H, b * H
    live = valid & (t < tl.load(len_ptr + b))
    g = tl.where(live, _load(dh_ptr, row + k, valid, ACC), 0.0)
    r = _load(gates_ptr, g3 + k, valid, ACC)
    z = _load(gates_ptr, g3 + H + k, valid, ACC)
    gh_n = _load(gates_ptr, g3 + 2 * H + k, valid, ACC)
    n = _load(n_ptr, row + k, valid, ACC)
    h_prev = _load(hp_ptr, row + k, valid, ACC)
    da_n = g * (1 - z) * (1 - n * n)
    da_r = da_n * gh_n * r * (1 - r)
    da_z = g * (h_prev - n) * z * (1 - z)
    tl.store(dgh_ptr + g3 + k, da_r, mask=valid)
    tl.store(dgh_ptr + g3 + H + k, da_z, mask=valid)
    tl.store(dgh_ptr + g3 + 2 * H + k, da_n * r, mask=valid)
    tl.store(dgx_ptr + g3 + k, da_r, mask=valid)
    tl.store(dgx_ptr + g3 + H + k, da_z, mask=valid)
    tl.store(dgx_ptr + g3 + 2 * H + k, da_n, mask=valid)
    tl.store(dprev_ptr + row + k, _load(dprev_ptr, row + k, valid, ACC) + g * z, mask=valid)


@triton.jit
def _cho_gates(gx_ptr, raw_ptr, h_ptr, gates_ptr, s_ptr, H, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """Cho's GRU, first half of a step: r, z from gx_t + raw (r | z, (B, 2H)) and s = r h_{t-1}."""
    b = tl.program_id(0)
    k = tl.arange(0, BLOCK)
    valid = k < H
    g3, g2, row = b * 3 * H, b * 2 * H, b * H
    r = sigmoid(_load(gx_ptr, g3 + k, valid, ACC) + _load(raw_ptr, g2 + k, valid, ACC))
    z = sigmoid(_load(gx_ptr, g3 + H + k, valid, ACC) + _load(raw_ptr, g2 + H + k, valid, ACC))
    tl.store(gates_ptr + g3 + k, r, mask=valid)
    tl.store(gates_ptr + g3 + H + k, z, mask=valid)
    tl.store(s_ptr + row + k, r * _load(h_ptr, row + k, valid, ACC), mask=valid)


@triton.jit
def _cho_candidate(gx_ptr, raw_ptr, h_ptr, len_ptr, t, gates_ptr, h_out_ptr, out_ptr, H, BLOCK: tl.constexpr,
                   ACC: tl.constexpr):
    """Cho's GRU, second half: n = tanh(gx_n + raw) (raw = W_hn s, (B, H)) and the blend."""
    b = tl.program_id(0)
    k = tl.arange(0, BLOCK)
    valid = k < H
    g3, row = b * 3 * H, b * H
    running = t < tl.load(len_ptr + b)
    n = tanh(_load(gx_ptr, g3 + 2 * H + k, valid, ACC) + _load(raw_ptr, row + k, valid, ACC))
    tl.store(gates_ptr + g3 + 2 * H + k, n, mask=valid)
    z = _load(gates_ptr, g3 + H + k, valid, ACC)
    _blend_store(n, z, h_ptr, running, row, k, valid, h_out_ptr, out_ptr, ACC)


@triton.jit
def _cho_backward_nz(dh_ptr, dprev_ptr, gates_ptr, hp_ptr, len_ptr, t, da_ptr, H, BLOCK: tl.constexpr,
                     ACC: tl.constexpr):
    """Cho's GRU backward, first half: da_n, da_z and dh_{t-1} += dh~_t z; zero where step t does not run."""
    b = tl.program_id(0)
    k = tl.arange(0, BLOCK)
    valid = k < H
    g3, row = b * 3 * H, b * H
    live = valid & (t < tl.load(len_ptr + b))
    g = tl.where(live, _load(dh_ptr, row + k, valid, ACC), 0.0)
    z = _load(gates_ptr, g3 + H + k, valid, ACC)
    n = _load(gates_ptr, g3 + 2 * H + k, valid, ACC)
    h_prev = _load(hp_ptr, row + k, valid, ACC)
    tl.store(da_ptr + g3 + 2 * H + k, g * (1 - z) * (1 - n * n), mask=valid)
    tl.store(da_ptr + g3 + H + k, g * (h_prev - n) * z * (1 - z), mask=valid)
    tl.store(dprev_ptr + row + k, _load(dprev_ptr, row + k, valid, ACC) + g * z, mask=valid)


@triton.jit
def _cho_backward_r(ds_ptr, dprev_ptr, gates_ptr, hp_ptr, da_ptr, H, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """Cho's GRU backward, second half, with ds = da_n W_hn: da_r = ds h_{t-1} r (1 - r), dh_{t-1} += ds r."""
    b = tl.program_id(0)
    k = tl.arange(0, BLOCK)
    valid = k < H
    g3, row = b * 3 * H, b * H
    ds = _load(ds_ptr, row + k, valid, ACC)  # zero where step t does not run, as da_n is
    r = _load(gates_ptr, g3 + k, valid, ACC)
    tl.store(da_ptr + g3 + k, ds * _load(hp_ptr, row + k, valid, ACC) * r * (1 - r), mask=valid)
    tl.store(dprev_ptr + row + k, _load(dprev_ptr, row + k, valid, ACC) + ds * r, mask=valid)


def recurrence(cell, gx: Tensor, state: Tensor, w, lengths: Tensor | None, noise=None) -> tuple[Tensor, Tensor]:
    """The Triton time loop of one GRU or Cho-GRU layer and direction (contract in fused/__init__.py)."""
    if noise is not None:
        raise ValueError("the triton backend runs no hidden dropout or zoneout yet (supports() refuses them)")
    return _GRUFamily.apply(cell, lengths, torch.is_grad_enabled(), gx, state, *(w.get(k) for k in WEIGHTS))


def _gru_forward(gx, h0, lens, W, bias_hh):
    T, B, G = gx.shape
    H = G // 3
    cfg = dict(BLOCK=block(H), ACC=compute_type(gx.dtype))
    hs = gx.new_empty(T + 1, B, H)  # hs[t] = h_{t-1}
    hs[0] = h0
    gates = gx.new_empty(T, B, G)  # r | z | gh_n
    ns = gx.new_empty(T, B, H)
    out = gx.new_empty(T, B, H)
    raw = gx.new_empty(B, G)
    W_t = W.t()
    for t in range(T):
        if bias_hh is None:
            torch.mm(hs[t], W_t, out=raw)
        else:
            torch.addmm(bias_hh, hs[t], W_t, out=raw)
        _gru_forward_step[(B,)](gx[t], raw, hs[t], lens, t, gates[t], ns[t], hs[t + 1], out[t], H, **cfg)
    return [out, hs[T].clone(), hs, gates, ns]


def _cho_forward(gx, h0, lens, W, bias_hh):
    T, B, G = gx.shape
    H = G // 3
    cfg = dict(BLOCK=block(H), ACC=compute_type(gx.dtype))
    gxb = gx if bias_hh is None else gx + bias_hh  # (T, B, 3H): both biases at once
    W_rz_t, W_n_t = W[: 2 * H].t(), W[2 * H :].t()
    hs = gx.new_empty(T + 1, B, H)
    hs[0] = h0
    gates = gx.new_empty(T, B, G)  # r | z | n
    s_all = gx.new_empty(T, B, H)  # r * h_{t-1}, the input of the second GEMM
    out = gx.new_empty(T, B, H)
    raw_rz, raw_n = gx.new_empty(B, 2 * H), gx.new_empty(B, H)
    for t in range(T):
        torch.mm(hs[t], W_rz_t, out=raw_rz)
        _cho_gates[(B,)](gxb[t], raw_rz, hs[t], gates[t], s_all[t], H, **cfg)
        torch.mm(s_all[t], W_n_t, out=raw_n)
        _cho_candidate[(B,)](gxb[t], raw_n, hs[t], lens, t, gates[t], hs[t + 1], out[t], H, **cfg)
    return [out, hs[T].clone(), hs, gates, s_all]


class _GRUFamily(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, lengths, grad_enabled, gx, h0, weight_hh, bias_hh):
        cho = cell.name == "cho_gru"
        with torch.autocast(gx.device.type, enabled=False):
            dtype = gx.dtype  # under autocast the input GEMM already chose it
            T, B, _ = gx.shape
            lens = full_lengths(lengths, T, B, gx.device)
            W, b = weight_hh.to(dtype), None if bias_hh is None else bias_hh.to(dtype)
            inputs = [gx.contiguous(), h0.to(dtype), lens, W, b]
            key = (cell.name, tuple(gx.shape), dtype, b is None)
            out, h, hs, gates, extra = GRAPHS.run(key, _cho_forward if cho else _gru_forward, inputs)
        ctx.cell, ctx.lengths = cell, lengths
        ctx.dtypes = [None if x is None else x.dtype for x in (gx, h0, weight_hh, bias_hh)]
        if grad_enabled:
            ctx.save_for_backward(gx, h0, weight_hh, bias_hh, lens, W, hs, gates, extra)
        return out, h

    @staticmethod
    def backward(ctx, grad_out, grad_h):
        gx, h0, weight_hh, bias_hh, lens, W, hs, gates, extra = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: differentiate the reference loop instead
            grads = reference_grads(ctx.cell, ctx.lengths, gx, h0, {"weight_hh": weight_hh, "bias_hh": bias_hh},
                                    [grad_out, grad_h])
            return (None, None, None, *grads)
        with torch.autocast(hs.device.type, enabled=False):
            T, B, G = gates.shape
            H = G // 3
            cfg = dict(BLOCK=block(H), ACC=compute_type(hs.dtype))
            dh = hs.new_zeros(T + 1, B, H)  # dh[t + 1] = dh~_t, dh[0] = dh_0
            dh[1:] = base_grad(grad_out.to(hs.dtype), grad_h.to(hs.dtype), lens)
            if ctx.cell.name == "gru":
                dgh, dgx = torch.empty_like(gates), torch.empty_like(gates)  # d gh_t, d gx_t
                for t in range(T - 1, -1, -1):
                    _gru_backward_step[(B,)](dh[t + 1], dh[t], gates[t], extra[t], hs[t], lens, t, dgh[t], dgx[t],
                                             H, **cfg)
                    dh[t].addmm_(dgh[t], W)
                grad_W = rows_gemm(dgh, hs[:T])  # (3H, H)
                grad_b = sum_rows(dgh) if bias_hh is not None else None
            else:
                W_rz, W_n = W[: 2 * H], W[2 * H :]
                dgx = torch.empty_like(gates)  # da_r | da_z | da_n
                ds = hs.new_empty(B, H)
                for t in range(T - 1, -1, -1):
                    _cho_backward_nz[(B,)](dh[t + 1], dh[t], gates[t], hs[t], lens, t, dgx[t], H, **cfg)
                    torch.mm(dgx[t, :, 2 * H :], W_n, out=ds)
                    _cho_backward_r[(B,)](ds, dh[t], gates[t], hs[t], dgx[t], H, **cfg)
                    dh[t].addmm_(dgx[t, :, : 2 * H], W_rz)
                grad_W = torch.cat([rows_gemm(dgx[..., : 2 * H], hs[:T]), rows_gemm(dgx[..., 2 * H :], extra)])
                grad_b = sum_rows(dgx) if bias_hh is not None else None
        grads = [dgx, dh[0], grad_W, grad_b]
        return (None, None, None, *[None if g is None else g.to(dt) for g, dt in zip(grads, ctx.dtypes)])
