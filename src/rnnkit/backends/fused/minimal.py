"""Fused BPTT for minGRU and minLSTM (Feng et al. 2024): gates from x_t only.

Both cells are a linear recurrence h_t = a_t h_{t-1} + b_t whose coefficients depend on gx
alone, so every gate is computed for all steps at once and only the recurrence itself, one
``addcmul`` per step, runs in the loop. A step that does not run has a_t = 1, b_t = 0, which
keeps the state exactly.

Backward runs the same recurrence in reverse, dh~_t = dout_t + dh_t and dh_{t-1} = a_t dh~_t;
every gate gradient is then dh~_t times a coefficient that forward already formed for all
steps at once (zero where a step does not run), so backward is the loop and one product. With
g'(a) = 1 (a >= 0) or sigma(a)(1 - sigma(a)) (a < 0):

    mingru:  a = 1 - z, b = z h~;   da_z = dh~ (h~ - h_{t-1}) z (1 - z),   da_h = dh~ z g'(a_h)
    minlstm: f' = f / (f + i), i' = i / (f + i), a = f', b = i' h~;   k = (h_{t-1} - h~) f' i'
             da_f = dh~ k (1 - f),   da_i = -dh~ k (1 - i),   da_h = dh~ i' g'(a_h)

Masks enter as multiplications by a float (T, B, 1) mask: the ops that take a full-size bool
condition (``where``, ``masked_fill``) run several times slower on CPU than arithmetic.

Zoneout (no hidden dropout: there is no recurrent product) is the same device per unit: a
zoned-out unit keeps h_{t-1} by a = 1, b = 0, so with free = 1 - keep (T, B, H), keep also True
past a sequence's end (``common.loop_masks``), the recurrence runs a free + (1 - free), b free,
and the gate coefficients are multiplied by free; backward is unchanged, dh_{t-1} = a_t dh~_t:

    dh_{t-1} = dh~_t (1 - keep_t) a_t + dh~_t keep_t,   da_* = dh~_t (1 - keep_t) (coefficient above)

Double backward: forward also saves gx and h_0 (by reference), and a backward under
``create_graph=True`` differentiates the cell's reference loop instead (``common.differentiable_grads``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...regularize import StepNoise
from .common import differentiable_grads, double_backward_needed, loop_masks, reference_loop, step_mask


def recurrence(
    cell, gx: Tensor, state: Tensor, w, lengths: Tensor | None, noise: StepNoise | None = None
) -> tuple[Tensor, Tensor]:
    """The fused time loop of one minGRU or minLSTM layer and direction (contract in fused/__init__.py)."""
    mask = step_mask(lengths, gx.shape[0], gx.device)
    hidden, keep = loop_masks(noise, mask)
    if hidden is not None:
        raise ValueError(f"hidden dropout needs a recurrent product, but cell {cell.name!r} has none")
    need_grad = torch.is_grad_enabled() and (gx.requires_grad or state.requires_grad)
    return _Minimal.apply(cell, mask, keep, need_grad, gx, state)


def _candidate(a: Tensor) -> tuple[Tensor, Tensor]:
    """g(a) and g'(a), where g(a) = a + 1/2 for a >= 0 and sigma(a) below.

    Written as relu(a) + sigma(min(a, 0)), exact on both sides since sigma(0) = 1/2, and
    g'(a) = s (1 - s) + 3/4 [a >= 0] with s = sigma(min(a, 0)), exactly 1 for a >= 0.
    """
    s = torch.sigmoid(a.clamp(max=0))
    nonneg = a.sign().add_(1).clamp_(max=1)  # [a >= 0] as 0/1 without a bool tensor
    return torch.relu(a).add_(s), torch.addcmul(nonneg.mul_(0.75), s, 1 - s)


def _prev_minus(a: Tensor, out: Tensor, h0: Tensor, result: Tensor) -> Tensor:
    """a_t - h_{t-1} for all t into result: h_{t-1} is h_0, then out[t-1] (the unmasked states)."""
    torch.sub(a[0], h0, out=result[0])
    torch.sub(a[1:], out[:-1], out=result[1:])
    return result


class _Minimal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, mask, keep, need_grad, gx, h0):
        kind = cell.name
        with torch.autocast(gx.device.type, enabled=False):
            T, B, G = gx.shape
            H = h0.shape[-1]
            h_tilde, dg = _candidate(gx[..., G - H :])  # (T, B, H); the candidate is last in both packings
            if kind == "mingru":
                z = torch.sigmoid(gx[..., :H])
                decay, drive = 1 - z, z * h_tilde  # (T, B, H)
            else:
                a_f, a_i = gx[..., :H], gx[..., H : 2 * H]
                f, i = torch.sigmoid(a_f), torch.sigmoid(a_i)
                d = F.logsigmoid(a_f) - F.logsigmoid(a_i)  # log f - log i: no 0/0 when both underflow
                decay, i_norm = torch.sigmoid(d), torch.sigmoid(-d)  # f' = f / (f + i), i'
                drive = i_norm * h_tilde
            mf = None if mask is None else mask.to(gx.dtype)  # (T, B, 1)
            free = mf if keep is None else (~keep).to(gx.dtype)  # (T, B, 1 or H): 0 where h stays h_{t-1}
            decay_run = decay
            if free is not None:  # a step that does not run, or a zoned-out unit, keeps h exactly: 1 * h + 0
                decay_run = torch.addcmul(1 - free, decay, free)
                drive.mul_(free)

            out = torch.empty_like(drive)  # (T, B, H), the states until masked below
            h = h0.to(gx.dtype)
            for t in range(T):
                h = torch.addcmul(drive[t], decay_run[t], h, out=out[t])
            h = h.clone()  # the final state, not a view of out

            if need_grad:  # d gx = dh~ * coef, coef packed like gx
                coef = torch.empty_like(gx)
                if kind == "mingru":
                    _prev_minus(h_tilde, out, h0, coef[..., :H]).mul_(z).mul_(decay)  # (h~ - h_{t-1}) z (1-z)
                    torch.mul(z, dg, out=coef[..., H:])  # z g'
                else:
                    k = _prev_minus(h_tilde, out, h0, coef[..., :H]).neg_().mul_(decay).mul_(i_norm)
                    torch.sub(i, 1, out=coef[..., H : 2 * H]).mul_(k)  # -k (1 - i)
                    k.mul_(1 - f)  # k (1 - f), in place over k
                    torch.mul(i_norm, dg, out=coef[..., 2 * H :])  # i' g'
                # steps that do not run and zoned-out units get no gate gradient
                if keep is not None:
                    coef.view(T, B, -1, H).mul_(free[:, :, None])  # free (T, B, H), per unit of every gate
                elif free is not None:
                    coef.mul_(free)
                # the inputs last, by reference, for a double backward
                ctx.save_for_backward(decay_run, coef, gx, h0)
            if mf is not None:
                out.mul_(mf)  # outputs past each sequence's end are zero

        ctx.cell, ctx.mask, ctx.keep = cell, mask, keep
        ctx.dtypes = (gx.dtype, h0.dtype)
        return out, h

    @staticmethod
    def backward(ctx, grad_out, grad_h):
        decay, coef, *inputs = ctx.saved_tensors
        mask = ctx.mask
        if double_backward_needed():
            def run(gx, h0):
                return reference_loop(ctx.cell, gx, h0, {}, mask, None, ctx.keep)

            return (None,) * 4 + tuple(differentiable_grads(run, inputs, (grad_out, grad_h)))
        with torch.autocast(coef.device.type, enabled=False):
            dtype = coef.dtype
            T, B, G = coef.shape
            grad_out = grad_out.to(dtype)
            mf = None if mask is None else mask.to(dtype)  # (T, B, 1)
            dh = grad_h.to(dtype)  # (B, H)
            dh_tilde = torch.empty_like(decay)  # (T, B, H): dout_t + dh_t
            for t in range(T - 1, -1, -1):
                if mf is None:
                    g = torch.add(grad_out[t], dh, out=dh_tilde[t])
                else:  # the output of a step that does not run is a constant zero; dh passes (a = 1)
                    g = torch.addcmul(dh, grad_out[t], mf[t], out=dh_tilde[t])
                dh = g * decay[t]
            grad_gx = (coef.view(T, B, -1, dh.shape[-1]) * dh_tilde[:, :, None]).view(T, B, G)

        grads = (grad_gx, dh if ctx.needs_input_grad[5] else None)
        return (None, None, None, None, *[None if g is None else g.to(dt) for g, dt in zip(grads, ctx.dtypes)])
