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
"""

from __future__ import annotations

import torch
from torch import Tensor

from .common import activation_backward, h_prev_all, step_mask, sum_rows


def recurrence(cell, gx: Tensor, state: Tensor, w, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    """The fused time loop of one IndRNN layer and direction (contract in fused/__init__.py)."""
    mask = step_mask(lengths, gx.shape[0], gx.device)
    return _IndRNN.apply(cell.nonlinearity, cell.recurrent_max, mask, gx, state, w["weight_hh"], w.get("bias_hh"))


class _IndRNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, nonlinearity, recurrent_max, mask, gx, h0, weight_hh, bias_hh):
        with torch.autocast(gx.device.type, enabled=False):
            dtype = gx.dtype  # under autocast the input GEMM already chose it
            u = weight_hh.to(dtype)  # (H,)
            if recurrent_max is not None:
                u = u.clamp(-recurrent_max, recurrent_max)
            gxb = gx if bias_hh is None else gx + bias_hh.to(dtype)  # (T, B, H): both biases at once
            h = h0.to(dtype)
            out = torch.empty_like(gxb)  # (T, B, H)
            act_ = torch.Tensor.relu_ if nonlinearity == "relu" else torch.Tensor.tanh_
            for t, gx_t in enumerate(gxb.unbind(0)):
                if mask is None:
                    h = act_(torch.addcmul(gx_t, u, h, out=out[t]))  # (B, H)
                else:
                    h_new = act_(torch.addcmul(gx_t, u, h))
                    torch.where(mask[t], h_new, h_new.new_zeros(()), out=out[t])
                    h = torch.where(mask[t], h_new, h)

        ctx.nonlinearity, ctx.recurrent_max, ctx.mask = nonlinearity, recurrent_max, mask
        ctx.dtypes = (gx.dtype, h0.dtype, weight_hh.dtype, None if bias_hh is None else bias_hh.dtype)
        ctx.save_for_backward(out, h0.to(dtype), u, weight_hh)
        return out, h.clone() if mask is None else h  # a view of out would tie the state to out

    @staticmethod
    def backward(ctx, grad_out, grad_h):
        out, h0, u, weight_hh = ctx.saved_tensors
        mask, recurrent_max = ctx.mask, ctx.recurrent_max
        need_gx, need_h0, need_u, need_b = ctx.needs_input_grad[3:]
        with torch.autocast(out.device.type, enabled=False):
            dtype = out.dtype
            da, dh = activation_backward(
                out, grad_out.to(dtype), grad_h.to(dtype), ctx.nonlinearity, mask, need_h0,
                lambda da_t, dh_pass: da_t * u if dh_pass is None else torch.addcmul(dh_pass, da_t, u),
            )

            grad_u = None
            if need_u:
                grad_u = sum_rows(da * h_prev_all(out, h0))  # (H,)
                if recurrent_max is not None:  # clamp passes the gradient only inside [-M, M]
                    inside = (weight_hh >= -recurrent_max) & (weight_hh <= recurrent_max)
                    grad_u = torch.where(inside, grad_u, 0.0)
            grad_b = sum_rows(da) if need_b else None

        grads = (da if need_gx else None, dh if need_h0 else None, grad_u, grad_b)
        grads = [None if g is None else g.to(dt) for g, dt in zip(grads, ctx.dtypes)]
        return (None, None, None, *grads)
