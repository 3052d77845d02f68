"""Triton BPTT for the GRU family: ``gru`` (reset-after, torch's) and ``cho_gru`` (reset-before).

The same loops as ``fused/gru.py`` (its docstring gives the derivatives), the pointwise work in
Triton kernels. ``gru``: forward, per step, ``raw = b_hh + h_{t-1} W_hh^T`` (cuBLAS) and one kernel
(r, z, n, the blend, the kept units, the output); backward, per step, one kernel (every gate's
gradient, the dh~ z part of dh_{t-1}) and one GEMM, ``d gh_t W_hh``, which the next kernel reads.

``cho_gru`` needs two kernels per step: its candidate reads W_hn (r * h_{t-1}), a GEMM whose input
is the output of the first gates' pointwise pass, so the step is GEMM, kernel, GEMM, kernel in
both directions (forward: r, z and s = r h_{t-1}, then n and the blend; backward: da_n, da_z,
then with ds = da_n W_hn, da_r and ds r).

Backward carries dh_t from the last step: g = dh_t + dout_t [t < len] enters the step where a unit
updates (dh~), and passes whole to dh_{t-1} where it keeps its state (past its sequence's end, or
zoned out). Hidden dropout's mask m (B, H) multiplies h_{t-1} in the products only (the blend reads
h_{t-1} itself): the forward kernel writes h_t m, the next GEMM's input, and the backward kernel
multiplies the products' share of dh_{t-1} by m. Saved: every state h_t (T + 1, B, H), the gates,
and n (gru) or s = r h_{t-1} m (cho_gru).
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
    sigmoid,
    sum_rows,
    tanh,
    tiles,
)

WEIGHTS = ("weight_hh", "bias_hh")


@triton.jit
def _load(ptr, offs, valid, ACC: tl.constexpr):
    return tl.load(ptr + offs, mask=valid, other=0.0).to(ACC)


@triton.jit
def _blend_store(n, z, h_ptr, running, keep_ptr, m_ptr, row, k, valid, h_out_ptr, out_ptr, h_in_ptr,
                 ZONE: tl.constexpr, HIDDEN: tl.constexpr, ACC: tl.constexpr):
    """h_t = n + z (h_{t-1} - n) where a unit updates, h_{t-1} where it keeps; the output; h_t m for the next GEMM."""
    h = _load(h_ptr, row + k, valid, ACC)
    h = tl.where(keeps(keep_ptr, row + k, valid, running, ZONE), h, n + z * (h - n))
    tl.store(h_out_ptr + row + k, h, mask=valid)
    tl.store(out_ptr + row + k, tl.where(running, h, 0.0), mask=valid)
    if HIDDEN:
        tl.store(h_in_ptr + row + k, h * _load(m_ptr, row + k, valid, ACC), mask=valid)


@triton.jit
def _enter(dhw_ptr, pass_ptr, dout_ptr, keep_ptr, m_ptr, running, row, k, valid, ZONE: tl.constexpr,
           HIDDEN: tl.constexpr, ACC: tl.constexpr):
    """(dh~, the part of g that passes, g): g = dh_t + dout_t [t < len], dh_t = dhw (* m) + pass_{t+1}."""
    dh = _load(dhw_ptr, row + k, valid, ACC)
    if HIDDEN:
        dh = dh * _load(m_ptr, row + k, valid, ACC)
    g = dh + _load(pass_ptr, row + k, valid, ACC) + tl.where(running, _load(dout_ptr, row + k, valid, ACC), 0.0)
    keep = keeps(keep_ptr, row + k, valid, running, ZONE)
    return tl.where(keep, 0.0, g), tl.where(keep, g, 0.0)


@triton.jit(do_not_specialize=["t"])  # one compiled kernel for every step
def _gru_forward_step(gx_ptr, raw_ptr, h_ptr, len_ptr, t, keep_ptr, m_ptr, gates_ptr, n_ptr, h_out_ptr, out_ptr,
                      h_in_ptr, H, ZONE: tl.constexpr, HIDDEN: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """torch's GRU step of one batch row; saves r | z | gh_n and n."""
    b = tl.program_id(0)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
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
    _blend_store(n, z, h_ptr, running, keep_ptr, m_ptr, row, k, valid, h_out_ptr, out_ptr, h_in_ptr, ZONE, HIDDEN,
                 ACC)


@triton.jit(do_not_specialize=["t"])  # one compiled kernel for every step
def _gru_backward_step(dhw_ptr, pass_ptr, dout_ptr, gates_ptr, n_ptr, hp_ptr, len_ptr, t, keep_ptr, m_ptr, dgh_ptr,
                       dgx_ptr, H, ZONE: tl.constexpr, HIDDEN: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """d gh_t (r | z | n), d gx_t, and pass_t (the kept part and dh~ z) for one batch row."""
    b = tl.program_id(0)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = k < H
    g3, row = b * 3 * H, b * H
    running = t < tl.load(len_ptr + b)
    g, passed = _enter(dhw_ptr, pass_ptr, dout_ptr, keep_ptr, m_ptr, running, row, k, valid, ZONE, HIDDEN, ACC)
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
    tl.store(pass_ptr + row + k, passed + g * z, mask=valid)


@triton.jit
def _cho_gates(gx_ptr, raw_ptr, h_ptr, m_ptr, gates_ptr, s_ptr, H, HIDDEN: tl.constexpr, BLOCK: tl.constexpr,
               ACC: tl.constexpr):
    """Cho's GRU, first half of a step: r, z from gx_t + raw (r | z, (B, 2H)) and s = r h_{t-1} (* m)."""
    b = tl.program_id(0)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = k < H
    g3, g2, row = b * 3 * H, b * 2 * H, b * H
    r = sigmoid(_load(gx_ptr, g3 + k, valid, ACC) + _load(raw_ptr, g2 + k, valid, ACC))
    z = sigmoid(_load(gx_ptr, g3 + H + k, valid, ACC) + _load(raw_ptr, g2 + H + k, valid, ACC))
    tl.store(gates_ptr + g3 + k, r, mask=valid)
    tl.store(gates_ptr + g3 + H + k, z, mask=valid)
    h_in = _load(h_ptr, row + k, valid, ACC)
    if HIDDEN:
        h_in = h_in * _load(m_ptr, row + k, valid, ACC)
    tl.store(s_ptr + row + k, r * h_in, mask=valid)


@triton.jit(do_not_specialize=["t"])  # one compiled kernel for every step
def _cho_candidate(gx_ptr, raw_ptr, h_ptr, len_ptr, t, keep_ptr, m_ptr, gates_ptr, h_out_ptr, out_ptr, h_in_ptr, H,
                   ZONE: tl.constexpr, HIDDEN: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """Cho's GRU, second half: n = tanh(gx_n + raw) (raw = W_hn s, (B, H)) and the blend."""
    b = tl.program_id(0)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = k < H
    g3, row = b * 3 * H, b * H
    running = t < tl.load(len_ptr + b)
    n = tanh(_load(gx_ptr, g3 + 2 * H + k, valid, ACC) + _load(raw_ptr, row + k, valid, ACC))
    tl.store(gates_ptr + g3 + 2 * H + k, n, mask=valid)
    z = _load(gates_ptr, g3 + H + k, valid, ACC)
    _blend_store(n, z, h_ptr, running, keep_ptr, m_ptr, row, k, valid, h_out_ptr, out_ptr, h_in_ptr, ZONE, HIDDEN,
                 ACC)


@triton.jit(do_not_specialize=["t"])  # one compiled kernel for every step
def _cho_backward_nz(dhw_ptr, pass_ptr, dout_ptr, gates_ptr, hp_ptr, len_ptr, t, keep_ptr, m_ptr, da_ptr, H,
                     ZONE: tl.constexpr, HIDDEN: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """Cho's GRU backward, first half: da_n, da_z, and pass_t (the kept part and dh~ z)."""
    b = tl.program_id(0)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = k < H
    g3, row = b * 3 * H, b * H
    running = t < tl.load(len_ptr + b)
    g, passed = _enter(dhw_ptr, pass_ptr, dout_ptr, keep_ptr, m_ptr, running, row, k, valid, ZONE, HIDDEN, ACC)
    z = _load(gates_ptr, g3 + H + k, valid, ACC)
    n = _load(gates_ptr, g3 + 2 * H + k, valid, ACC)
    h_prev = _load(hp_ptr, row + k, valid, ACC)
    tl.store(da_ptr + g3 + 2 * H + k, g * (1 - z) * (1 - n * n), mask=valid)
    tl.store(da_ptr + g3 + H + k, g * (h_prev - n) * z * (1 - z), mask=valid)
    tl.store(pass_ptr + row + k, passed + g * z, mask=valid)


@triton.jit
def _cho_backward_r(ds_ptr, hp_ptr, m_ptr, gates_ptr, da_ptr, dhw_ptr, H, HIDDEN: tl.constexpr, BLOCK: tl.constexpr,
                    ACC: tl.constexpr):
    """Cho's GRU backward, second half, with ds = da_n W_hn: da_r = ds h_in r (1 - r); dhw = ds r (the GEMM adds)."""
    b = tl.program_id(0)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = k < H
    g3, row = b * 3 * H, b * H
    ds = _load(ds_ptr, row + k, valid, ACC)  # zero where step t does not update, as da_n is
    r = _load(gates_ptr, g3 + k, valid, ACC)
    h_in = _load(hp_ptr, row + k, valid, ACC)
    if HIDDEN:
        h_in = h_in * _load(m_ptr, row + k, valid, ACC)
    tl.store(da_ptr + g3 + k, ds * h_in * r * (1 - r), mask=valid)
    tl.store(dhw_ptr + row + k, ds * r, mask=valid)


def _without_zone(flags: dict) -> dict:
    """The flags of the kernels that never read a zoneout mask."""
    return {k: v for k, v in flags.items() if k != "ZONE"}


def recurrence(cell, gx: Tensor, state: Tensor, w, lengths: Tensor | None, noise=None) -> tuple[Tensor, Tensor]:
    """The Triton time loop of one GRU or Cho-GRU layer and direction (contract in fused/__init__.py)."""
    return _GRUFamily.apply(cell, lengths, noise, torch.is_grad_enabled(), gx, state, *(w.get(k) for k in WEIGHTS))


def _gru_forward(flags: dict, gx, h0, lens, W, bias_hh, m, keep):
    T, B, G = gx.shape
    H = G // 3
    hs = gx.new_empty(T + 1, B, H)  # hs[t] = h_{t-1}
    hs[0] = h0
    h_in = None if m is None else h0 * m  # the next GEMM's input under hidden dropout
    gates = gx.new_empty(T, B, G)  # r | z | gh_n
    ns = gx.new_empty(T, B, H)
    out = gx.new_empty(T, B, H)
    raw = gx.new_empty(B, G)
    W_t = W.t()
    cols = grid(B, H, flags["BLOCK"])
    for t in range(T):
        x = hs[t] if m is None else h_in
        if bias_hh is None:
            torch.mm(x, W_t, out=raw)
        else:
            torch.addmm(bias_hh, x, W_t, out=raw)
        _gru_forward_step[cols](gx[t], raw, hs[t], lens, t, raw if keep is None else keep[t], raw if m is None else m,
                                gates[t], ns[t], hs[t + 1], out[t], raw if m is None else h_in, H, **flags)
    return [out, hs[T].clone(), hs, gates, ns]


def _cho_forward(flags: dict, gx, h0, lens, W, bias_hh, m, keep):
    T, B, G = gx.shape
    H = G // 3
    gxb = gx if bias_hh is None else gx + bias_hh  # (T, B, 3H): both biases at once
    W_rz_t, W_n_t = W[: 2 * H].t(), W[2 * H :].t()
    hs = gx.new_empty(T + 1, B, H)
    hs[0] = h0
    h_in = None if m is None else h0 * m
    gates = gx.new_empty(T, B, G)  # r | z | n
    s_all = gx.new_empty(T, B, H)  # r * h_{t-1} (* m), the input of the second GEMM
    out = gx.new_empty(T, B, H)
    raw_rz, raw_n = gx.new_empty(B, 2 * H), gx.new_empty(B, H)
    cols = grid(B, H, flags["BLOCK"])
    for t in range(T):
        torch.mm(hs[t] if m is None else h_in, W_rz_t, out=raw_rz)
        _cho_gates[cols](gxb[t], raw_rz, hs[t], raw_n if m is None else m, gates[t], s_all[t], H,
                         **_without_zone(flags))
        torch.mm(s_all[t], W_n_t, out=raw_n)
        _cho_candidate[cols](gxb[t], raw_n, hs[t], lens, t, raw_n if keep is None else keep[t],
                             raw_n if m is None else m, gates[t], hs[t + 1], out[t], raw_n if m is None else h_in, H,
                             **flags)
    return [out, hs[T].clone(), hs, gates, s_all]


class _GRUFamily(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, lengths, noise, grad_enabled, gx, h0, weight_hh, bias_hh):
        cho = cell.name == "cho_gru"
        with torch.autocast(gx.device.type, enabled=False):
            dtype = gx.dtype  # under autocast the input GEMM already chose it
            T, B, G = gx.shape
            lens = full_lengths(lengths, T, B, gx.device)
            m, keep = noise_masks(noise, lens, dtype)
            keep = None if keep is None else keep[0]
            flags = dict(ZONE=keep is not None, HIDDEN=m is not None, **tiles(G // 3),
                         ACC=compute_type(dtype))
            W, b = weight_hh.to(dtype), None if bias_hh is None else bias_hh.to(dtype)
            inputs = [gx.contiguous(), h0.to(dtype), lens, W, b, m, keep]
            key = (cell.name, tuple(flags.items()), tuple(gx.shape), dtype, b is None)
            loop = _cho_forward if cho else _gru_forward
            out, h, hs, gates, extra = GRAPHS.run(key, lambda *a: loop(flags, *a), inputs)
        ctx.cell, ctx.lengths, ctx.noise, ctx.flags = cell, lengths, noise, flags
        ctx.dtypes = [None if x is None else x.dtype for x in (gx, h0, weight_hh, bias_hh)]
        if grad_enabled:
            ctx.save_for_backward(gx, h0, weight_hh, bias_hh, lens, W, hs, gates, extra, m, keep)
        return out, h

    @staticmethod
    def backward(ctx, grad_out, grad_h):
        gx, h0, weight_hh, bias_hh, lens, W, hs, gates, extra, m, keep = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: differentiate the reference loop instead
            grads = reference_grads(ctx.cell, ctx.lengths, gx, h0, {"weight_hh": weight_hh, "bias_hh": bias_hh},
                                    [grad_out, grad_h], ctx.noise)
            return (None, None, None, None, *grads)
        flags = ctx.flags
        with torch.autocast(hs.device.type, enabled=False):
            T, B, G = gates.shape
            H = G // 3
            grad_out = grad_out.to(hs.dtype).contiguous()
            dhw = hs.new_zeros(B, H)  # the products' share of dh_t, before the hidden-dropout mask
            passed = grad_h.to(hs.dtype).clone()  # the rest of dh_t
            h_in = hs[:T] if m is None else hs[:T] * m  # what the products read
            any_ = dhw  # a placeholder for pointers a configuration does not read
            cols = grid(B, H, flags["BLOCK"])
            if ctx.cell.name == "gru":
                dgh, dgx = torch.empty_like(gates), torch.empty_like(gates)  # d gh_t, d gx_t
                for t in range(T - 1, -1, -1):
                    _gru_backward_step[cols](dhw, passed, grad_out[t], gates[t], extra[t], hs[t], lens, t,
                                             any_ if keep is None else keep[t], any_ if m is None else m, dgh[t],
                                             dgx[t], H, **flags)
                    torch.mm(dgh[t], W, out=dhw)
                grad_W = rows_gemm(dgh, h_in)  # (3H, H)
                grad_b = sum_rows(dgh) if bias_hh is not None else None
            else:
                W_rz, W_n = W[: 2 * H], W[2 * H :]
                dgx = torch.empty_like(gates)  # da_r | da_z | da_n
                ds = hs.new_empty(B, H)
                for t in range(T - 1, -1, -1):
                    _cho_backward_nz[cols](dhw, passed, grad_out[t], gates[t], hs[t], lens, t,
                                           any_ if keep is None else keep[t], any_ if m is None else m, dgx[t], H,
                                           **flags)
                    torch.mm(dgx[t, :, 2 * H :], W_n, out=ds)
                    _cho_backward_r[cols](ds, hs[t], any_ if m is None else m, gates[t], dgx[t], dhw, H,
                                          **_without_zone(flags))
                    dhw.addmm_(dgx[t, :, : 2 * H], W_rz)
                grad_W = torch.cat([rows_gemm(dgx[..., : 2 * H], h_in), rows_gemm(dgx[..., 2 * H :], extra)])
                grad_b = sum_rows(dgx) if bias_hh is not None else None
            dh0 = (dhw if m is None else dhw * m) + passed
        grads = [dgx, dh0, grad_W, grad_b]
        return (None, None, None, None, *[None if g is None else g.to(dt) for g, dt in zip(grads, ctx.dtypes)])
