"""Fused BPTT for the Elman RNN: ``rnn_tanh`` and ``rnn_relu``.

One ``autograd.Function`` runs the whole time loop of one layer and direction. Forward: per
step one ``addmm`` and the activation, written in place into the output. It saves only the
outputs and h_0: wherever step t runs, h_{t-1} is h_0 or out[t-1] (a sequence that has ended
runs no later step), so no separate state buffer is kept.

Derivatives, with a_t = gx_t + b_hh + W_hh h_{t-1} and h_t = act(a_t):

    dh~_t = dout_t + dh_t                      (zero where step t does not run)
    da_t  = dh~_t * (1 - h_t^2)  (tanh)   or   dh~_t * [h_t > 0]  (relu, as torch's threshold_backward)
    dh_{t-1} = da_t W_hh   (+ dh_t unchanged where step t does not run)
    d gx = da,   dW_hh = sum_t da_t^T h_{t-1},   db_hh = sum_t da_t

Hidden dropout, a_t = gx_t + b_hh + W_hh (h_{t-1} * m) with one mask m (B, H) for all steps:

    dh_{t-1} = (da_t W_hh) * m,   dW_hh = sum_t da_t^T (h_{t-1} * m)

Zoneout, h_t = where(keep_t, h_{t-1}, h~_t) with h~_t = act(a_t) (saved, as out holds h_t), and
keep_t also True past a sequence's end (``common.loop_masks``); with g = dout_t + dh_t:

    da_t = g * (1 - keep_t) * act'(h~_t),   dh_{t-1} = da_t W_hh (* m) + g * keep_t

Double backward: forward also saves gx (by reference), and a backward under ``create_graph=True``
differentiates the cell's reference loop instead (``common.differentiable_grads``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...regularize import StepNoise
from .common import (
    activation_backward,
    activation_forward,
    differentiable_grads,
    double_backward_needed,
    h_prev_all,
    loop_masks,
    reference_loop,
    rows_gemm,
    step_mask,
    sum_rows,
    zoneout_activation_backward,
    zoneout_grads,
)


def recurrence(cell, gx: Tensor, state: Tensor, w, lengths: Tensor | None,
               noise: StepNoise | None = None) -> tuple[Tensor, Tensor]:
    """The fused time loop of one Elman layer and direction (contract in fused/__init__.py)."""
    mask = step_mask(lengths, gx.shape[0], gx.device)
    hidden, keep = loop_masks(noise, mask)
    return _Elman.apply(cell, mask, hidden, keep, gx, state, w["weight_hh"], w.get("bias_hh"))


class _Elman(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, mask, hidden, keep, gx, h0, weight_hh, bias_hh):
        nonlinearity = cell.nonlinearity
        with torch.autocast(gx.device.type, enabled=False):
            dtype = gx.dtype  # under autocast the input GEMM already chose it
            W = weight_hh.to(dtype)  # (H, H)
            W_t = W.t()
            gxb = gx if bias_hh is None else gx + bias_hh.to(dtype)  # (T, B, H): both biases at once
            h = h0.to(dtype)
            m = None if hidden is None else hidden.to(dtype)  # (B, H)
            act_ = torch.Tensor.tanh_ if nonlinearity == "tanh" else torch.Tensor.relu_

            def step(gx_t, h_prev, out_t):
                h_in = h_prev if m is None else h_prev * m
                return act_(torch.addmm(gx_t, h_in, W_t, out=out_t))

            out, h, h_tilde = activation_forward(gxb, h, mask, keep, step)

        ctx.cell, ctx.nonlinearity, ctx.mask, ctx.keep = cell, nonlinearity, mask, keep
        ctx.dtypes = (gx.dtype, h0.dtype, weight_hh.dtype, None if bias_hh is None else bias_hh.dtype)
        # the inputs last, by reference, for a double backward
        ctx.save_for_backward(out, h0.to(dtype), W, m, h_tilde, gx, h0, weight_hh, bias_hh)
        # a view of out would tie the state to out
        return out, h.clone() if mask is None and keep is None else h

    @staticmethod
    def backward(ctx, grad_out, grad_h):
        out, h0, W, m, h_tilde, *inputs = ctx.saved_tensors
        if double_backward_needed():
            def run(gx, h0, weight_hh, bias_hh):
                weights = {"weight_hh": weight_hh, "bias_hh": bias_hh}
                return reference_loop(ctx.cell, gx, h0, weights, ctx.mask, m, ctx.keep)

            return (None,) * 4 + tuple(differentiable_grads(run, inputs, (grad_out, grad_h)))
        mask = ctx.mask
        need_gx, need_h0, need_W, need_b = ctx.needs_input_grad[4:]
        with torch.autocast(out.device.type, enabled=False):
            dtype = out.dtype
            grad_out, dh = grad_out.to(dtype), grad_h.to(dtype)
            if m is None:
                def propagate(da_t, dh_pass):
                    return da_t @ W if dh_pass is None else torch.addmm(dh_pass, da_t, W)
            else:  # hidden dropout: h_{t-1} entered the product as h_{t-1} * m
                def propagate(da_t, dh_pass):
                    return (da_t @ W).mul_(m) if dh_pass is None else torch.addcmul(dh_pass, da_t @ W, m)
            if ctx.keep is None:
                da, dh = activation_backward(out, grad_out, dh, ctx.nonlinearity, mask, need_h0, propagate)
            else:
                zone = zoneout_grads(ctx.keep, mask, grad_out)
                da, dh = zoneout_activation_backward(h_tilde, zone, dh, ctx.nonlinearity, need_h0, propagate)

            grad_W = None
            if need_W:
                h_prev = h_prev_all(out, h0)  # (T, B, H)
                grad_W = rows_gemm(da, h_prev if m is None else h_prev * m)  # (H, H)
            grad_b = sum_rows(da) if need_b else None

        grads = (da if need_gx else None, dh if need_h0 else None, grad_W, grad_b)
        grads = [None if g is None else g.to(dt) for g, dt in zip(grads, ctx.dtypes)]
        return (None, None, None, None, *grads)
