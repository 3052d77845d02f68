"""Triton BPTT for the LSTM family: ``lstm``, ``peephole_lstm``, ``layernorm_lstm``, ``cifg_lstm``.

The same loop as ``fused/lstm.py`` (its docstring gives the derivatives), with each step's
pointwise work in ONE Triton kernel: forward, per step, ``raw = h_{t-1} W_hh^T`` (cuBLAS), then
the kernel (layer norm of raw, gates, peepholes, c_t, layer norm of c_t, tanh, m = o tanh(.),
the length mask), then with ``proj_size`` ``h_t = m W_hr^T`` (cuBLAS). Backward, per step, with
projection ``dm = dh~_t W_hr`` (cuBLAS), the kernel (every gate's gradient, both layer norms'
backward, dc_{t-1}, the mask), and ``dh~_{t-1} = base_{t-1} + da_t W_hh`` as one ``addmm``
(``common.base_grad``). Weight gradients are one GEMM or one reduction each over all T*B rows.

Each program holds one block of units of one batch row, of every gate (``common.tiles``); for
the layer-norm cell the block is the whole row, so the layer norms over the 4H gates and over
c_t reduce inside the program. Saved for backward: the activated gates,
tanh(c~), every h_{t-1} and c_{t-1}, m (with projection), and for the layer-norm cell the
normalized values and inverse deviations, as ``fused``.

Backward carries dc_t and dh_t from the last step: where a unit keeps its state (past its
sequence's end, or zoned out) its gradient passes whole to s_{t-1}; where it updates, it enters the
step (dh~, dc~). Hidden dropout's mask m (B, R) multiplies h_{t-1} in the recurrent product: the
forward kernel also writes h_t m, the next GEMM's input, and the backward kernel multiplies
d raw_{t+1} W_hh by m.

With projection and no in-loop regularizer, h_t past a sequence's end is not kept (the select
would be one more pointwise pass after the projection GEMM): the state rows there hold the
bounded values of steps that do not count, whose gradients are zero; the outputs are zeroed and
the final h gathered after the loop, and backward forms dh~_t = base_t + d raw_{t+1} W_hh in one
``addmm`` (``common.base_grad``). With projection and hidden dropout or zoneout, a second small
kernel after the projection GEMM selects the kept units (and one before dh~_t W_hr in backward).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ...cells import LSTMState
from .common import (
    GRAPHS,
    base_grad,
    compute_type,
    gather_final,
    grid,
    keeps,
    noise_masks,
    reference_grads,
    rows_gemm,
    sigmoid,
    state_dtype,
    step_mask,
    sum_rows,
    tanh,
    tiles,
)
from .common import full_lengths as _full_lengths

KIND = {"lstm": 0, "peephole_lstm": 1, "cifg_lstm": 2, "layernorm_lstm": 3}
WEIGHTS = ("weight_hh", "bias_hh", "weight_hr", "weight_peephole", "ln_hh_weight", "ln_hh_bias", "ln_c_weight",
           "ln_c_bias")


@triton.jit
def _chunk(ptr, row, j, H, k, valid, ACC: tl.constexpr):
    """Gate j of a row packed gate-major, (H,) in the compute type; zero past H."""
    return tl.load(ptr + row + j * H + k, mask=valid, other=0.0).to(ACC)


@triton.jit
def _ln_gates(raw_ptr, w_ptr, b_ptr, xhat_ptr, rstd_ptr, b, row, H, k, valid, eps, NG: tl.constexpr,
              ACC: tl.constexpr):
    """LayerNorm of a row's NG*H raw gates (its gain and bias): each gate's part, saving x_hat and rstd."""
    r0 = _chunk(raw_ptr, row, 0, H, k, valid, ACC)
    r1 = _chunk(raw_ptr, row, 1, H, k, valid, ACC)
    r2 = _chunk(raw_ptr, row, 2, H, k, valid, ACC)
    r3 = _chunk(raw_ptr, row, 3, H, k, valid, ACC)
    n = NG * H
    mean = (tl.sum(r0, 0) + tl.sum(r1, 0) + tl.sum(r2, 0) + tl.sum(r3, 0)) / n
    d0 = tl.where(valid, r0 - mean, 0.0)
    d1 = tl.where(valid, r1 - mean, 0.0)
    d2 = tl.where(valid, r2 - mean, 0.0)
    d3 = tl.where(valid, r3 - mean, 0.0)
    var = (tl.sum(d0 * d0, 0) + tl.sum(d1 * d1, 0) + tl.sum(d2 * d2, 0) + tl.sum(d3 * d3, 0)) / n
    rstd = 1 / tl.sqrt(var + eps)
    tl.store(rstd_ptr + b, rstd)
    x0, x1, x2, x3 = d0 * rstd, d1 * rstd, d2 * rstd, d3 * rstd
    tl.store(xhat_ptr + row + k, x0, mask=valid)
    tl.store(xhat_ptr + row + H + k, x1, mask=valid)
    tl.store(xhat_ptr + row + 2 * H + k, x2, mask=valid)
    tl.store(xhat_ptr + row + 3 * H + k, x3, mask=valid)
    y0 = x0 * _chunk(w_ptr, 0, 0, H, k, valid, ACC) + _chunk(b_ptr, 0, 0, H, k, valid, ACC)
    y1 = x1 * _chunk(w_ptr, 0, 1, H, k, valid, ACC) + _chunk(b_ptr, 0, 1, H, k, valid, ACC)
    y2 = x2 * _chunk(w_ptr, 0, 2, H, k, valid, ACC) + _chunk(b_ptr, 0, 2, H, k, valid, ACC)
    y3 = x3 * _chunk(w_ptr, 0, 3, H, k, valid, ACC) + _chunk(b_ptr, 0, 3, H, k, valid, ACC)
    return y0, y1, y2, y3


@triton.jit(do_not_specialize=["t"])  # one compiled kernel for every step
def _forward_step(gx_ptr, raw_ptr, h_ptr, c_ptr, len_ptr, t, peep_ptr, lnh_w_ptr, lnh_b_ptr, lnc_w_ptr, lnc_b_ptr,
                  eps_ptr, keep_h_ptr, keep_c_ptr, mh_ptr, act_ptr, tc_ptr, c_out_ptr, c_tilde_ptr, m_ptr, h_out_ptr,
                  out_ptr, h_in_ptr, xhh_ptr, rhh_ptr, xc_ptr, rc_ptr, H, KIND: tl.constexpr, NG: tl.constexpr,
                  PROJ: tl.constexpr, ZONE: tl.constexpr, HIDDEN: tl.constexpr, BLOCK: tl.constexpr,
                  ACC: tl.constexpr):
    """One step of one batch row: gates from gx_t + (LN of) raw, c_t, tanh, m; kept units keep their state."""
    b = tl.program_id(0)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = k < H
    row = b * NG * H
    hrow = b * H
    running = t < tl.load(len_ptr + b)
    c = tl.load(c_ptr + hrow + k, mask=valid, other=0.0).to(ACC)
    if KIND == 3:
        eps = tl.load(eps_ptr).to(ACC)
        y0, y1, y2, y3 = _ln_gates(raw_ptr, lnh_w_ptr, lnh_b_ptr, xhh_ptr, rhh_ptr, b, row, H, k, valid, eps, NG, ACC)
    else:
        y0 = _chunk(raw_ptr, row, 0, H, k, valid, ACC)
        y1 = _chunk(raw_ptr, row, 1, H, k, valid, ACC)
        y2 = _chunk(raw_ptr, row, 2, H, k, valid, ACC)
        if NG == 4:
            y3 = _chunk(raw_ptr, row, 3, H, k, valid, ACC)
    p0 = _chunk(gx_ptr, row, 0, H, k, valid, ACC) + y0
    p1 = _chunk(gx_ptr, row, 1, H, k, valid, ACC) + y1
    p2 = _chunk(gx_ptr, row, 2, H, k, valid, ACC) + y2
    if KIND == 2:  # cifg: f | g | o, i = 1 - f
        f = sigmoid(p0)
        g = tanh(p1)
        o = sigmoid(p2)
        c_new = f * c + (1 - f) * g
        tl.store(act_ptr + row + k, f, mask=valid)
        tl.store(act_ptr + row + H + k, g, mask=valid)
        tl.store(act_ptr + row + 2 * H + k, o, mask=valid)
    else:
        p3 = _chunk(gx_ptr, row, 3, H, k, valid, ACC) + y3
        if KIND == 1:  # peepholes: i and f read c_{t-1}, o reads c_t
            p0 += _chunk(peep_ptr, 0, 0, H, k, valid, ACC) * c
            p1 += _chunk(peep_ptr, 0, 1, H, k, valid, ACC) * c
        i = sigmoid(p0)
        f = sigmoid(p1)
        g = tanh(p2)
        c_new = f * c + i * g
        if KIND == 1:
            p3 += _chunk(peep_ptr, 0, 2, H, k, valid, ACC) * c_new
        o = sigmoid(p3)
        tl.store(act_ptr + row + k, i, mask=valid)
        tl.store(act_ptr + row + H + k, f, mask=valid)
        tl.store(act_ptr + row + 2 * H + k, g, mask=valid)
        tl.store(act_ptr + row + 3 * H + k, o, mask=valid)
    if KIND == 3:  # h = o tanh(LN_c(c_t))
        mean = tl.sum(tl.where(valid, c_new, 0.0), 0) / H
        d = tl.where(valid, c_new - mean, 0.0)
        rstd = 1 / tl.sqrt(tl.sum(d * d, 0) / H + eps)
        xc = d * rstd
        tl.store(xc_ptr + hrow + k, xc, mask=valid)
        tl.store(rc_ptr + b, rstd)
        tc = tanh(xc * _chunk(lnc_w_ptr, 0, 0, H, k, valid, ACC) + _chunk(lnc_b_ptr, 0, 0, H, k, valid, ACC))
    else:
        tc = tanh(c_new)
    tl.store(tc_ptr + hrow + k, tc, mask=valid)
    tl.store(c_out_ptr + hrow + k, tl.where(keeps(keep_c_ptr, hrow + k, valid, running, ZONE), c, c_new), mask=valid)
    if ZONE and KIND == 1:  # c~_t, read by the gradient of w_co
        tl.store(c_tilde_ptr + hrow + k, c_new, mask=valid)
    m = o * tc
    if PROJ:  # h_t = m W_hr^T follows on cuBLAS
        tl.store(m_ptr + hrow + k, m, mask=valid)
    else:
        h = tl.load(h_ptr + hrow + k, mask=valid, other=0.0).to(ACC)
        h = tl.where(keeps(keep_h_ptr, hrow + k, valid, running, ZONE), h, m)
        tl.store(h_out_ptr + hrow + k, h, mask=valid)
        tl.store(out_ptr + hrow + k, tl.where(running, h, 0.0), mask=valid)
        if HIDDEN:
            tl.store(h_in_ptr + hrow + k, h * tl.load(mh_ptr + hrow + k, mask=valid, other=0.0).to(ACC), mask=valid)


@triton.jit(do_not_specialize=["t"])  # one compiled kernel for every step
def _select_h(h_tilde_ptr, h_ptr, len_ptr, t, keep_ptr, mh_ptr, h_out_ptr, out_ptr, h_in_ptr, R, ZONE: tl.constexpr,
              HIDDEN: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """With projection and an in-loop regularizer, after h~_t = m W_hr^T: the kept units, the output, h_t m."""
    b = tl.program_id(0)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = k < R
    row = b * R
    running = t < tl.load(len_ptr + b)
    h = tl.load(h_ptr + row + k, mask=valid, other=0.0).to(ACC)
    h = tl.where(keeps(keep_ptr, row + k, valid, running, ZONE), h,
                 tl.load(h_tilde_ptr + row + k, mask=valid, other=0.0).to(ACC))
    tl.store(h_out_ptr + row + k, h, mask=valid)
    tl.store(out_ptr + row + k, tl.where(running, h, 0.0), mask=valid)
    if HIDDEN:
        tl.store(h_in_ptr + row + k, h * tl.load(mh_ptr + row + k, mask=valid, other=0.0).to(ACC), mask=valid)


@triton.jit(do_not_specialize=["t"])  # one compiled kernel for every step
def _enter_h(dhw_ptr, pass_ptr, dout_ptr, len_ptr, t, keep_ptr, mh_ptr, g_ptr, R, ZONE: tl.constexpr,
             HIDDEN: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """dh~_t of one row: g = dhw (* m) + pass + dout_t [t < len], split into the updating part and the kept part."""
    b = tl.program_id(0)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = k < R
    row = b * R
    running = t < tl.load(len_ptr + b)
    dh = tl.load(dhw_ptr + row + k, mask=valid, other=0.0).to(ACC)
    if HIDDEN:
        dh = dh * tl.load(mh_ptr + row + k, mask=valid, other=0.0).to(ACC)
    g = dh + tl.load(pass_ptr + row + k, mask=valid, other=0.0).to(ACC)
    g += tl.where(running, tl.load(dout_ptr + row + k, mask=valid, other=0.0).to(ACC), 0.0)
    keep = keeps(keep_ptr, row + k, valid, running, ZONE)
    tl.store(g_ptr + row + k, tl.where(keep, 0.0, g), mask=valid)
    tl.store(pass_ptr + row + k, tl.where(keep, g, 0.0), mask=valid)


@triton.jit(do_not_specialize=["t"])  # one compiled kernel for every step
def _backward_step(dm_ptr, dhw_ptr, pass_ptr, dout_ptr, keep_h_ptr, mh_ptr, dc_ptr, keep_c_ptr, len_ptr, t, act_ptr,
                   tc_ptr, cp_ptr, peep_ptr, lnh_w_ptr, lnc_w_ptr, xhh_ptr, rhh_ptr, xc_ptr, rc_ptr, dpre_ptr,
                   draw_ptr, dcn_ptr, H, KIND: tl.constexpr, NG: tl.constexpr, PROJ: tl.constexpr,
                   ZONE: tl.constexpr, HIDDEN: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """BPTT through one step of one row: d(o tanh(.)) and the carried dc -> gate gradients and dc_{t-1}.

    With projection dm (= dh~_t W_hr) comes in; without, dh~_t is formed here as in ``_enter_h``.
    """
    b = tl.program_id(0)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = k < H
    row = b * NG * H
    hrow = b * H
    running = t < tl.load(len_ptr + b)
    if PROJ:
        dm = tl.load(dm_ptr + hrow + k, mask=valid, other=0.0).to(ACC)
    else:
        dh = tl.load(dhw_ptr + hrow + k, mask=valid, other=0.0).to(ACC)
        if HIDDEN:
            dh = dh * tl.load(mh_ptr + hrow + k, mask=valid, other=0.0).to(ACC)
        gh = dh + tl.load(pass_ptr + hrow + k, mask=valid, other=0.0).to(ACC)
        gh += tl.where(running, tl.load(dout_ptr + hrow + k, mask=valid, other=0.0).to(ACC), 0.0)
        keep_h = keeps(keep_h_ptr, hrow + k, valid, running, ZONE)
        dm = tl.where(keep_h, 0.0, gh)
        tl.store(pass_ptr + hrow + k, tl.where(keep_h, gh, 0.0), mask=valid)
    dc_all = tl.load(dc_ptr + hrow + k, mask=valid, other=0.0).to(ACC)
    keep_c = keeps(keep_c_ptr, hrow + k, valid, running, ZONE)
    dc = tl.where(keep_c, 0.0, dc_all)  # the part of dc_t that enters the update; the rest passes to c_{t-1}
    tc = tl.load(tc_ptr + hrow + k, mask=valid, other=0.0).to(ACC)
    c_prev = tl.load(cp_ptr + hrow + k, mask=valid, other=0.0).to(ACC)
    if KIND == 2:
        f = _chunk(act_ptr, row, 0, H, k, valid, ACC)
        g = _chunk(act_ptr, row, 1, H, k, valid, ACC)
        o = _chunk(act_ptr, row, 2, H, k, valid, ACC)
    else:
        i = _chunk(act_ptr, row, 0, H, k, valid, ACC)
        f = _chunk(act_ptr, row, 1, H, k, valid, ACC)
        g = _chunk(act_ptr, row, 2, H, k, valid, ACC)
        o = _chunk(act_ptr, row, 3, H, k, valid, ACC)
    da_o = dm * tc * o * (1 - o)
    dtc = dm * o * (1 - tc * tc)
    if KIND == 3:  # through LN_c: rstd (gw - mean(gw) - x_hat mean(gw x_hat)), gw = dtc * gain
        xc = tl.load(xc_ptr + hrow + k, mask=valid, other=0.0).to(ACC)
        rc = tl.load(rc_ptr + b).to(ACC)
        gw = tl.where(valid, dtc * _chunk(lnc_w_ptr, 0, 0, H, k, valid, ACC), 0.0)
        dc += rc * (gw - tl.sum(gw, 0) / H - xc * (tl.sum(gw * xc, 0) / H))
        tl.store(dcn_ptr + hrow + k, dtc, mask=valid)
    else:
        dc += dtc
    if KIND == 1:
        dc += da_o * _chunk(peep_ptr, 0, 2, H, k, valid, ACC)
    if KIND == 2:
        da_f = tl.where(valid, dc * (c_prev - g) * f * (1 - f), 0.0)
        da_g = tl.where(valid, dc * (1 - f) * (1 - g * g), 0.0)
        da_o = tl.where(valid, da_o, 0.0)
        dc_prev = dc * f
        tl.store(dpre_ptr + row + k, da_f, mask=valid)
        tl.store(dpre_ptr + row + H + k, da_g, mask=valid)
        tl.store(dpre_ptr + row + 2 * H + k, da_o, mask=valid)
    else:
        da_i = tl.where(valid, dc * g * i * (1 - i), 0.0)
        da_f = tl.where(valid, dc * c_prev * f * (1 - f), 0.0)
        da_g = tl.where(valid, dc * i * (1 - g * g), 0.0)
        da_o = tl.where(valid, da_o, 0.0)
        dc_prev = dc * f
        if KIND == 1:
            dc_prev += da_i * _chunk(peep_ptr, 0, 0, H, k, valid, ACC) + da_f * _chunk(peep_ptr, 0, 1, H, k, valid, ACC)
        tl.store(dpre_ptr + row + k, da_i, mask=valid)
        tl.store(dpre_ptr + row + H + k, da_f, mask=valid)
        tl.store(dpre_ptr + row + 2 * H + k, da_g, mask=valid)
        tl.store(dpre_ptr + row + 3 * H + k, da_o, mask=valid)
    tl.store(dc_ptr + hrow + k, dc_prev + tl.where(keep_c, dc_all, 0.0), mask=valid)
    if KIND == 3:  # d raw through LN_hh over the 4H gates
        rh = tl.load(rhh_ptr + b).to(ACC)
        x0 = _chunk(xhh_ptr, row, 0, H, k, valid, ACC)
        x1 = _chunk(xhh_ptr, row, 1, H, k, valid, ACC)
        x2 = _chunk(xhh_ptr, row, 2, H, k, valid, ACC)
        x3 = _chunk(xhh_ptr, row, 3, H, k, valid, ACC)
        g0 = da_i * _chunk(lnh_w_ptr, 0, 0, H, k, valid, ACC)
        g1 = da_f * _chunk(lnh_w_ptr, 0, 1, H, k, valid, ACC)
        g2 = da_g * _chunk(lnh_w_ptr, 0, 2, H, k, valid, ACC)
        g3 = da_o * _chunk(lnh_w_ptr, 0, 3, H, k, valid, ACC)
        mg = (tl.sum(g0, 0) + tl.sum(g1, 0) + tl.sum(g2, 0) + tl.sum(g3, 0)) / (4 * H)
        mgx = (tl.sum(g0 * x0, 0) + tl.sum(g1 * x1, 0) + tl.sum(g2 * x2, 0) + tl.sum(g3 * x3, 0)) / (4 * H)
        tl.store(draw_ptr + row + k, rh * (g0 - mg - x0 * mgx), mask=valid)
        tl.store(draw_ptr + row + H + k, rh * (g1 - mg - x1 * mgx), mask=valid)
        tl.store(draw_ptr + row + 2 * H + k, rh * (g2 - mg - x2 * mgx), mask=valid)
        tl.store(draw_ptr + row + 3 * H + k, rh * (g3 - mg - x3 * mgx), mask=valid)


def recurrence(cell, gx: Tensor, state: LSTMState, w, lengths: Tensor | None, noise=None) -> tuple[Tensor, LSTMState]:
    """The Triton time loop of one LSTM-family layer and direction (contract in fused/__init__.py)."""
    out, h, c = _LSTMLoop.apply(cell, lengths, noise, torch.is_grad_enabled(), gx, state.h, state.c,
                                  *(w.get(k) for k in WEIGHTS))
    return out, LSTMState(h, c)


def _cast(x: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if x is None else x.to(dtype).contiguous()


def _forward_loop(kind: str, eps: float, flags: dict, gx, h0, c0, lens, W, bias_hh, W_hr, peep, lnh_w, lnh_b, lnc_w,
                  lnc_b, mh, keep_h, keep_c):
    """The forward time loop; returns (out, h_T, c_T, *saved). Only tensors in and out, so a CUDA graph can hold it."""
    T, B, G = gx.shape
    H, R = c0.shape[-1], h0.shape[-1]
    dtype, sdtype = gx.dtype, state_dtype(gx.dtype)
    zone, hidden, proj = keep_h is not None, mh is not None, W_hr is not None
    gxb = (gx if bias_hh is None else gx + bias_hh).contiguous()  # (T, B, G): both biases at once
    W_t = W.t()
    hs = gx.new_empty(T + 1, B, R)  # hs[t] = h_{t-1}
    cs = gx.new_empty(T + 1, B, H, dtype=sdtype)  # cs[t] = c_{t-1}, float32 under autocast
    hs[0], cs[0] = h0, c0
    h_in = None if mh is None else h0 * mh  # the next GEMM's input under hidden dropout
    acts = gx.new_empty(T, B, G)
    tcs = gx.new_empty(T, B, H)
    raw = gx.new_empty(B, G)  # h_{t-1} W_hh^T of the step
    out = gx.new_empty(T, B, R)
    ms = gx.new_empty(T, B, H) if proj else None
    h_tilde = gx.new_empty(B, R) if proj and (zone or hidden) else None  # m W_hr^T before the select
    c_tilde = gx.new_empty(T, B, H) if zone and kind == "peephole_lstm" else None
    ln = kind == "layernorm_lstm"
    xhh, rhh = (gx.new_empty(T, B, G), gx.new_empty(T, B)) if ln else (None, None)
    xc, rc = (gx.new_empty(T, B, H), gx.new_empty(T, B)) if ln else (None, None)
    eps_t = torch.full((1,), eps, dtype=torch.float64 if dtype == torch.float64 else torch.float32, device=gx.device)

    def opt(x):  # a placeholder for pointers a configuration does not read
        return raw if x is None else x

    cols, cols_r = grid(B, H, flags["BLOCK"]), grid(B, R, tiles(R)["BLOCK"])

    for t in range(T):
        torch.mm(hs[t] if h_in is None else h_in, W_t, out=raw)
        _forward_step[cols](
            gxb[t], raw, hs[t], cs[t], lens, t, opt(peep), opt(lnh_w), opt(lnh_b), opt(lnc_w), opt(lnc_b), eps_t,
            keep_h[t] if zone else raw, keep_c[t] if zone else raw, opt(mh), acts[t], tcs[t], cs[t + 1],
            c_tilde[t] if c_tilde is not None else raw, ms[t] if proj else raw, hs[t + 1], out[t], opt(h_in),
            xhh[t] if ln else raw, rhh[t] if ln else raw, xc[t] if ln else raw, rc[t] if ln else raw, H, **flags)
        if proj and h_tilde is None:  # no select: past each end the rows hold values that count nowhere
            torch.mm(ms[t], W_hr.t(), out=hs[t + 1])
        elif proj:
            torch.mm(ms[t], W_hr.t(), out=h_tilde)
            _select_h[cols_r](h_tilde, hs[t], lens, t, keep_h[t] if zone else raw, opt(mh), hs[t + 1], out[t],
                            opt(h_in), R, ZONE=zone, HIDDEN=hidden, **tiles(R),
                            ACC=flags["ACC"])
    if proj and h_tilde is None:  # outputs past each end are zero; the final h is the one after each last step
        out = torch.where(step_mask(lens, T), hs[1:], hs.new_zeros(()))
        h_T = gather_final(hs, lens)
    else:
        h_T = hs[T].clone()
    saved = [acts, tcs, hs, cs, ms, c_tilde, xhh, rhh, xc, rc]
    return [out, h_T, cs[T].clone(), *saved]


def _backward_loop(kind: str, flags: dict, grad_out, grad_h, grad_c, lens, W, acts, tcs, hs, cs, W_hr, ms, peep,
                   lnh_w, lnc_w, xhh, rhh, xc, rc, mh, keep_h, keep_c):
    """The backward time loop: (d gx, dh_0, dc_0, d raw for all steps, dh~ for all steps or None, dcn for LN_c).

    With projection and no in-loop regularizer dh~_t is formed as base_t + d raw_{t+1} W_hh (``common.base_grad``)
    by one ``addmm``; otherwise dh_t is carried (pass_t, the kept part, and da_{t+1} W_hh, multiplied by m).
    """
    T, B, G = acts.shape
    H, R = tcs.shape[-1], hs.shape[-1]
    dtype = acts.dtype
    zone, hidden, proj = keep_h is not None, mh is not None, W_hr is not None
    ln = kind == "layernorm_lstm"
    grad_out = grad_out.to(dtype).contiguous()
    dc = grad_c.to(cs.dtype).clone()  # the carried dc_t, in the state's dtype
    dhw = acts.new_zeros(B, R)  # d raw_{t+1} W_hh
    passed = grad_h.to(dtype).clone()  # the part of dh_t that skips step t + 1
    base = proj and not (zone or hidden)
    dh_tilde = base_grad(grad_out, passed, lens) if base else (acts.new_empty(T, B, R) if proj else None)
    dpre = torch.empty_like(acts)  # d gx
    draw = torch.empty_like(acts) if ln else dpre  # d(h W_hh^T)
    dcn = torch.empty_like(tcs) if ln else None  # d LN_c(c_t), for LN_c's gain and bias
    dm = acts.new_empty(B, H) if proj else None

    def opt(x):  # a placeholder for pointers a configuration does not read
        return dhw if x is None else x

    cols, cols_r = grid(B, H, flags["BLOCK"]), grid(B, R, tiles(R)["BLOCK"])

    for t in range(T - 1, -1, -1):
        if proj:
            if not base:
                _enter_h[cols_r](dhw, passed, grad_out[t], lens, t, keep_h[t] if zone else dhw, opt(mh), dh_tilde[t], R,
                               ZONE=zone, HIDDEN=hidden, **tiles(R), ACC=flags["ACC"])
            torch.mm(dh_tilde[t], W_hr, out=dm)
        _backward_step[cols](
            opt(dm), dhw, passed, grad_out[t], keep_h[t] if zone else dhw, opt(mh), dc, keep_c[t] if zone else dhw,
            lens, t, acts[t], tcs[t], cs[t], opt(peep), lnh_w if ln else dhw, lnc_w if ln else dhw,
            xhh[t] if ln else dhw, rhh[t] if ln else dhw, xc[t] if ln else dhw, rc[t] if ln else dhw, dpre[t],
            draw[t], dcn[t] if ln else dhw, H, **flags)
        if base:
            if t > 0:
                dh_tilde[t - 1].addmm_(draw[t], W)
        else:
            torch.mm(draw[t], W, out=dhw)
    dh0 = draw[0] @ W if base else (dhw if mh is None else dhw * mh) + passed
    return [dpre, dh0, dc, draw, dh_tilde, dcn]


class _LSTMLoop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, lengths, noise, grad_enabled, gx, h0, c0, weight_hh, bias_hh, weight_hr, weight_peephole,
                ln_hh_weight, ln_hh_bias, ln_c_weight, ln_c_bias):
        kind = cell.name
        with torch.autocast(gx.device.type, enabled=False):
            dtype = gx.dtype  # under autocast the input GEMM already chose it
            T, B, G = gx.shape
            H = c0.shape[-1]
            lens = _full_lengths(lengths, T, B, gx.device)
            mh, keep = noise_masks(noise, lens, dtype)
            keep_h, keep_c = (None, None) if keep is None else keep
            W, b, W_hr = _cast(weight_hh, dtype), _cast(bias_hh, dtype), _cast(weight_hr, dtype)
            peep = _cast(weight_peephole, dtype)
            ln = [_cast(x, dtype) for x in (ln_hh_weight, ln_hh_bias, ln_c_weight, ln_c_bias)]
            flags = dict(KIND=KIND[kind], NG=G // H, PROJ=W_hr is not None, ZONE=keep is not None,
                         HIDDEN=mh is not None, **tiles(H, whole_row=kind == "layernorm_lstm"), ACC=compute_type(dtype))
            inputs = [gx.contiguous(), h0.to(dtype), c0.to(state_dtype(dtype)), lens, W, b, W_hr, peep, *ln, mh,
                      keep_h, keep_c]
            key = ("lstm", kind, tuple(gx.shape), h0.shape[-1], H, dtype, tuple(x is None for x in inputs))
            eps = getattr(cell, "eps", 0.0)
            out, h, c, *saved = GRAPHS.run(key, lambda *a: _forward_loop(kind, eps, flags, *a), inputs)
        ctx.cell, ctx.lengths, ctx.noise, ctx.flags = cell, lengths, noise, flags
        ctx.dtypes = [x.dtype if x is not None else None
                      for x in (gx, h0, c0, weight_hh, bias_hh, weight_hr, weight_peephole, ln_hh_weight, ln_hh_bias,
                                ln_c_weight, ln_c_bias)]
        if grad_enabled:
            ctx.save_for_backward(gx, h0, c0, weight_hh, bias_hh, weight_hr, weight_peephole, ln_hh_weight,
                                  ln_hh_bias, ln_c_weight, ln_c_bias, lens, W, W_hr, peep, ln[0], ln[2], mh, keep_h,
                                  keep_c, *saved)
        return out.to(dtype), h, c.to(c0.dtype)

    @staticmethod
    def backward(ctx, grad_out, grad_h, grad_c):
        saved = ctx.saved_tensors
        inputs = saved[:11]
        if torch.is_grad_enabled():  # double backward: differentiate the reference loop instead
            gx, h0, c0, *weights = inputs
            grads = reference_grads(ctx.cell, ctx.lengths, gx, LSTMState(h0, c0), dict(zip(WEIGHTS, weights)),
                                    [grad_out, grad_h, grad_c], ctx.noise)
            return (None, None, None, None, *grads)
        lens, W, W_hr, peep, lnh_w, lnc_w, mh, keep_h, keep_c = saved[11:20]
        acts, tcs, hs, cs, ms, c_tilde, xhh, rhh, xc, rc = saved[20:]
        kind = ctx.cell.name
        with torch.autocast(acts.device.type, enabled=False):
            T = acts.shape[0]
            dpre, dh0, dc0, draw, dh_tilde, dcn = _backward_loop(
                kind, ctx.flags, grad_out, grad_h, grad_c, lens, W, acts, tcs, hs, cs, W_hr, ms, peep, lnh_w, lnc_w,
                xhh, rhh, xc, rc, mh, keep_h, keep_c)
            h_in = hs[:T] if mh is None else hs[:T] * mh  # what the products read
            grad_W = rows_gemm(draw, h_in)  # (G, R)
            grad_b = sum_rows(dpre) if inputs[4] is not None else None
            grad_W_hr = rows_gemm(dh_tilde, ms) if W_hr is not None else None  # (R, H)
            grad_peep = None
            if peep is not None:
                H = tcs.shape[-1]
                c_prev = cs[:T].to(dpre.dtype)
                c_all = (cs[1:] if c_tilde is None else c_tilde).to(dpre.dtype)  # c~_t, as the o gate read it
                grad_peep = torch.stack([sum_rows(dpre[..., :H] * c_prev), sum_rows(dpre[..., H:2 * H] * c_prev),
                                         sum_rows(dpre[..., 3 * H:] * c_all)])  # (3, H)
            grad_ln = [None] * 4
            if kind == "layernorm_lstm":
                grad_ln = [sum_rows(dpre * xhh), sum_rows(dpre), sum_rows(dcn * xc), sum_rows(dcn)]
        grads = [dpre, dh0, dc0, grad_W, grad_b, grad_W_hr, grad_peep, *grad_ln]
        grads = [None if g is None else g.to(dt) for g, dt in zip(grads, ctx.dtypes)]
        return (None, None, None, None, *grads)
