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
"""

from __future__ import annotations

import torch
from torch import Tensor

from .common import activation_backward, h_prev_all, rows_gemm, step_mask, sum_rows


def recurrence(cell, gx: Tensor, state: Tensor, w, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    """The fused time loop of one Elman layer and direction (contract in fused/__init__.py)."""
    mask = step_mask(lengths, gx.shape[0], gx.device)
    return _Elman.apply(cell.nonlinearity, mask, gx, state, w["weight_hh"], w.get("bias_hh"))


class _Elman(torch.autograd.Function):
    @staticmethod
    def forward(ctx, nonlinearity, mask, gx, h0, weight_hh, bias_hh):
        with torch.autocast(gx.device.type, enabled=False):
            dtype = gx.dtype  # under autocast the input GEMM already chose it
            W = weight_hh.to(dtype)  # (H, H)
            W_t = W.t()
            gxb = gx if bias_hh is None else gx + bias_hh.to(dtype)  # (T, B, H): both biases at once
            h = h0.to(dtype)
            out = torch.empty_like(gxb)  # (T, B, H)
            act_ = torch.Tensor.tanh_ if nonlinearity == "tanh" else torch.Tensor.relu_
            for t, gx_t in enumerate(gxb.unbind(0)):
                if mask is None:
                    h = act_(torch.addmm(gx_t, h, W_t, out=out[t]))  # (B, H)
                else:
                    h_new = act_(torch.addmm(gx_t, h, W_t))
                    torch.where(mask[t], h_new, h_new.new_zeros(()), out=out[t])
                    h = torch.where(mask[t], h_new, h)

        ctx.nonlinearity, ctx.mask = nonlinearity, mask
        ctx.dtypes = (gx.dtype, h0.dtype, weight_hh.dtype, None if bias_hh is None else bias_hh.dtype)
        ctx.save_for_backward(out, h0.to(dtype), W)
        return out, h.clone() if mask is None else h  # a view of out would tie the state to out

    @staticmethod
    def backward(ctx, grad_out, grad_h):
        out, h0, W = ctx.saved_tensors
        mask = ctx.mask
        need_gx, need_h0, need_W, need_b = ctx.needs_input_grad[2:]
        with torch.autocast(out.device.type, enabled=False):
            dtype = out.dtype
            da, dh = activation_backward(
                out, grad_out.to(dtype), grad_h.to(dtype), ctx.nonlinearity, mask, need_h0,
                lambda da_t, dh_pass: da_t @ W if dh_pass is None else torch.addmm(dh_pass, da_t, W),
            )

            grad_W = rows_gemm(da, h_prev_all(out, h0)) if need_W else None  # (H, H)
            grad_b = sum_rows(da) if need_b else None

        grads = (da if need_gx else None, dh if need_h0 else None, grad_W, grad_b)
        grads = [None if g is None else g.to(dt) for g, dt in zip(grads, ctx.dtypes)]
        return (None, None, *grads)
