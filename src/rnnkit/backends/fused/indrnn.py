"""Fused BPTT for IndRNN (Li et al. 2018): a diagonal recurrence, so no GEMM in the loop.

One ``autograd.Function`` runs the whole time loop of one layer and direction: per step one
``addcmul`` and the activation, written in place into the output. It saves the outputs and h_0
(h_{t-1} is h_0 or out[t-1] wherever step t runs). With u' = clamp(u, -M, M) when the cell has
``recurrent_max`` M (else u' = u), a_t = gx_t + b_hh + u' h_{t-1} and h_t = act(a_t):

    dh~_t = dout_t + dh_t                      (zero where step t does not run)
    da_t  = dh~_t * [h_t > 0]  (relu)   or   dh~_t * (1 - h_t^2)  (tanh)
    dh_{t-1} = da_t u'   (+ dh_t unchanged where step t does not run)
    d gx = da,   du' = sum_t da_t h_{t-1},   db_hh = sum_t da_t,
    du = du' where -M <= u <= M, else 0 (autograd's clamp)

Hidden dropout, a_t = gx_t + b_hh + u' (h_{t-1} * m) with one mask m (B, H) for all steps: the
loop multiplies by u' m (B, H), formed once, so it costs nothing per step, and

    dh_{t-1} = da_t u' m,   du' = sum_t da_t h_{t-1} m

Zoneout, h_t = where(keep_t, h_{t-1}, h~_t) with h~_t = act(a_t) (saved, as out holds h_t), and
keep_t also True past a sequence's end (``common.loop_masks``); with g = dout_t + dh_t:

    da_t = g * (1 - keep_t) * act'(h~_t),   dh_{t-1} = da_t u' (m) + g * keep_t

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
    step_mask,
    sum_rows,
    zoneout_activation_backward,
    zoneout_grads,
)


def recurrence(cell, gx: Tensor, state: Tensor, w, lengths: Tensor | None,
               noise: StepNoise | None = None) -> tuple[Tensor, Tensor]:
    """The fused time loop of one IndRNN layer and direction (contract in fused/__init__.py)."""
    mask = step_mask(lengths, gx.shape[0], gx.device)
    hidden, keep = loop_masks(noise, mask)
    return _IndRNN.apply(cell, mask, hidden, keep, gx, state, w["weight_hh"], w.get("bias_hh"))


class _IndRNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, mask, hidden, keep, gx, h0, weight_hh, bias_hh):
        nonlinearity, recurrent_max = cell.nonlinearity, cell.recurrent_max
        with torch.autocast(gx.device.type, enabled=False):
            dtype = gx.dtype  # under autocast the input GEMM already chose it
            u = weight_hh.to(dtype)  # (H,)
            if recurrent_max is not None:
                u = u.clamp(-recurrent_max, recurrent_max)
            m = None if hidden is None else hidden.to(dtype)  # (B, H)
            um = u if m is None else u * m  # (H,) or (B, H): the factor of h_{t-1}
            gxb = gx if bias_hh is None else gx + bias_hh.to(dtype)  # (T, B, H): both biases at once
            h = h0.to(dtype)
            act_ = torch.Tensor.relu_ if nonlinearity == "relu" else torch.Tensor.tanh_
            out, h, h_tilde = activation_forward(
                gxb, h, mask, keep, lambda gx_t, h_prev, out_t: act_(torch.addcmul(gx_t, um, h_prev, out=out_t)))

        ctx.cell, ctx.mask, ctx.keep = cell, mask, keep
        ctx.nonlinearity, ctx.recurrent_max = nonlinearity, recurrent_max
        ctx.dtypes = (gx.dtype, h0.dtype, weight_hh.dtype, None if bias_hh is None else bias_hh.dtype)
        # the inputs last, by reference, for a double backward
        ctx.save_for_backward(out, h0.to(dtype), um, weight_hh, m, h_tilde, gx, h0, bias_hh)
        # a view of out would tie the state to out
        return out, h.clone() if mask is None and keep is None else h

    @staticmethod
    def backward(ctx, grad_out, grad_h):
        out, h0, um, weight_hh, m, h_tilde, gx_in, h0_in, bias_hh = ctx.saved_tensors
        if double_backward_needed():
            def run(gx, h0, weight_hh, bias_hh):
                weights = {"weight_hh": weight_hh, "bias_hh": bias_hh}
                return reference_loop(ctx.cell, gx, h0, weights, ctx.mask, m, ctx.keep)

            inputs = (gx_in, h0_in, weight_hh, bias_hh)
            return (None,) * 4 + tuple(differentiable_grads(run, inputs, (grad_out, grad_h)))
        mask, recurrent_max = ctx.mask, ctx.recurrent_max
        need_gx, need_h0, need_u, need_b = ctx.needs_input_grad[4:]
        with torch.autocast(out.device.type, enabled=False):
            dtype = out.dtype
            grad_out, dh = grad_out.to(dtype), grad_h.to(dtype)

            def propagate(da_t, dh_pass):  # dh_{t-1} = da_t u' (m)
                return da_t * um if dh_pass is None else torch.addcmul(dh_pass, da_t, um)

            if ctx.keep is None:
                da, dh = activation_backward(out, grad_out, dh, ctx.nonlinearity, mask, need_h0, propagate)
            else:
                zone = zoneout_grads(ctx.keep, mask, grad_out)
                da, dh = zoneout_activation_backward(h_tilde, zone, dh, ctx.nonlinearity, need_h0, propagate)

            grad_u = None
            if need_u:
                h_prev = h_prev_all(out, h0)  # (T, B, H)
                grad_u = sum_rows(da * (h_prev if m is None else h_prev * m))  # (H,)
                if recurrent_max is not None:  # clamp passes the gradient only inside [-M, M]
                    inside = (weight_hh >= -recurrent_max) & (weight_hh <= recurrent_max)
                    grad_u = torch.where(inside, grad_u, 0.0)
            grad_b = sum_rows(da) if need_b else None

        grads = (da if need_gx else None, dh if need_h0 else None, grad_u, grad_b)
        grads = [None if g is None else g.to(dt) for g, dt in zip(grads, ctx.dtypes)]
        return (None, None, None, None, *grads)
