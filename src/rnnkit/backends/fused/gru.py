"""Fused BPTT for the GRU family: ``gru`` (reset-after, torch's) and ``cho_gru`` (reset-before).

One ``autograd.Function`` per cell runs the whole time loop of one layer and direction. Both
save the activated gates and the outputs (h_{t-1} is h_0 or out[t-1] wherever step t runs).
Backward first forms, for all steps at once, the coefficients that turn dh~_t into each
pre-activation gradient, so that the loop over steps does only a few operations and one GEMM.

With h_t = (1 - z) n + z h_{t-1} and dh~_t = dout_t + dh_t (zero where step t does not run):

    dn = dh~ (1 - z)       da_n = dn (1 - n^2)       da_z = dh~ (h_{t-1} - n) z (1 - z)
    gru:      gh = W_hh h_{t-1} + b_hh;  da_r = da_n gh_n r (1 - r)
              d gh = (da_r, da_z, da_n r);  dh_{t-1} = dh~ z + d gh W_hh
    cho_gru:  s = r h_{t-1};  ds = da_n W_hn;  da_r = ds h_{t-1} r (1 - r)
              dh_{t-1} = dh~ z + ds r + (da_r, da_z) W_h{r,z}
    d gx = (da_r, da_z, da_n); where step t does not run, dh_{t-1} = dh_t.

Hidden dropout: one mask m (B, H) for all steps on h_{t-1} in the recurrent products only, so
h_in = h_{t-1} * m replaces h_{t-1} in gh (gru) and in the r, z products and s = r h_in (cho_gru),
while da_z and dh~ z keep the undropped h_{t-1} of the interpolation:

    gru:      dh_{t-1} = dh~ z + (d gh W_hh) * m,              dW_hh = sum_t d gh_t^T h_in
    cho_gru:  da_r = ds h_in r (1 - r);  dh_{t-1} = dh~ z + (ds r + (da_r, da_z) W_h{r,z}) * m,
              dW_h{r,z} = sum_t (da_r, da_z)_t^T h_in

Zoneout, h_t = where(keep_t, h_{t-1}, h~_t), with keep_t also True past a sequence's end
(``common.loop_masks``): with g = dout_t + dh_t, dh~ = g (1 - keep_t) enters the step as above
and g keep_t passes to dh_{t-1} unchanged.

Double backward: forward also saves gx (by reference; h_0 and W_hh it saves anyway), and a backward
under ``create_graph=True`` differentiates the cell's reference loop instead (``common.differentiable_grads``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...regularize import StepNoise
from .common import (
    differentiable_grads,
    double_backward_needed,
    h_prev_all,
    loop_masks,
    reference_loop,
    rows_gemm,
    step_mask,
    sum_rows,
    zoneout_grads,
)


def recurrence(
    cell, gx: Tensor, state: Tensor, w, lengths: Tensor | None, noise: StepNoise | None = None
) -> tuple[Tensor, Tensor]:
    """The fused time loop of one GRU or Cho-GRU layer and direction (contract in fused/__init__.py)."""
    mask = step_mask(lengths, gx.shape[0], gx.device)
    hidden, keep = loop_masks(noise, mask)
    function = _ChoGRU if cell.name == "cho_gru" else _GRU
    return function.apply(cell, mask, hidden, keep, gx, state, w["weight_hh"], w.get("bias_hh"))


def _double_backward(ctx, grad_out: Tensor, grad_h: Tensor) -> tuple:
    """Both GRU Functions' backward under ``create_graph=True``: autograd through the reference loop."""
    *_, m, gx, h0, weight_hh, bias_hh = ctx.saved_tensors

    def run(gx, h0, weight_hh, bias_hh):
        weights = {"weight_hh": weight_hh, "bias_hh": bias_hh}
        return reference_loop(ctx.cell, gx, h0, weights, ctx.mask, m, ctx.keep)

    return (None,) * 4 + tuple(differentiable_grads(run, (gx, h0, weight_hh, bias_hh), (grad_out, grad_h)))


def _dtypes(*tensors: Tensor | None) -> tuple:
    return tuple(None if x is None else x.dtype for x in tensors)


def _cast_grads(ctx, grads) -> tuple:
    return tuple(None if g is None else g.to(dt) for g, dt in zip(grads, ctx.dtypes))


def _blend(mask: Tensor | None, keep: Tensor | None, t: int, n: Tensor, z: Tensor, h: Tensor, out: Tensor) -> Tensor:
    """h_t = (1 - z) n + z h_{t-1} = n + z (h_{t-1} - n) into out[t]; returns the new state.

    ``keep`` (zoneout, True also past each end): where True the state stays h_{t-1}, and out[t] is the state.
    """
    if keep is None and mask is None:
        return torch.addcmul(n, z, h - n, out=out[t])
    h_new = torch.addcmul(n, z, h - n)
    if keep is not None:
        h_new = torch.where(keep[t], h, h_new)
        if mask is None:
            out[t] = h_new
            return h_new
    torch.where(mask[t], h_new, h_new.new_zeros(()), out=out[t])
    return h_new if keep is not None else torch.where(mask[t], h_new, h)


def _masked_grad(
    mask: Tensor | None,
    zone: tuple[Tensor, Tensor, Tensor] | None,
    t: int,
    grad_out: Tensor,
    dh: Tensor,
    out: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """dh~_t = dout_t + dh_t where step t runs (zero elsewhere), and the part of dh_t that skips the step.

    With zoneout (``zone`` from ``common.zoneout_grads``), g = dout_t + dh_t splits by unit:
    g (1 - keep_t) into the step, g keep_t past it.
    """
    if zone is not None:
        kept, free, dout = zone
        g = dout[t] + dh
        return torch.mul(g, free[t], out=out), g * kept[t]
    if mask is None:
        return torch.add(grad_out[t], dh, out=out), None
    zero = dh.new_zeros(())
    return torch.where(mask[t], grad_out[t] + dh, zero, out=out), torch.where(mask[t], zero, dh)


class _GRU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, mask, hidden, keep, gx, h0, weight_hh, bias_hh):
        with torch.autocast(gx.device.type, enabled=False):
            dtype = gx.dtype  # under autocast the input GEMM already chose it
            T, B, G = gx.shape
            H = G // 3
            W = weight_hh.to(dtype)  # (3H, H)
            W_t = W.t()
            b = None if bias_hh is None else bias_hh.to(dtype)
            m = None if hidden is None else hidden.to(dtype)  # (B, H)
            h = h0.to(dtype)
            gates = gx.new_empty(T, B, G)  # r | z | gh_n, gh_n = W_hn h_{t-1} + b_hn
            ns = gx.new_empty(T, B, H)
            out = gx.new_empty(T, B, H)
            for t, gx_t in enumerate(gx.unbind(0)):
                gt = gates[t]  # (B, 3H)
                h_in = h if m is None else h * m  # the products read the dropped h, the blend h itself
                if b is None:
                    torch.mm(h_in, W_t, out=gt)
                else:
                    torch.addmm(b, h_in, W_t, out=gt)
                gt[:, : 2 * H].add_(gx_t[:, : 2 * H]).sigmoid_()  # r | z, in place over gh_r | gh_z
                r, z, gh_n = gt[:, :H], gt[:, H : 2 * H], gt[:, 2 * H :]
                n = torch.tanh(torch.addcmul(gx_t[:, 2 * H :], r, gh_n), out=ns[t])  # (B, H)
                h = _blend(mask, keep, t, n, z, h, out)

        ctx.cell, ctx.mask, ctx.keep = cell, mask, keep
        ctx.dtypes = _dtypes(gx, h0, weight_hh, bias_hh)
        # the inputs last, by reference, for a double backward
        ctx.save_for_backward(gates, ns, out, h0.to(dtype), W, m, gx, h0, weight_hh, bias_hh)
        # a view of out would tie the state to out
        return out, h.clone() if mask is None and keep is None else h

    @staticmethod
    def backward(ctx, grad_out, grad_h):
        if double_backward_needed():
            return _double_backward(ctx, grad_out, grad_h)
        gates, n, out, h0, W, m = ctx.saved_tensors[:6]
        mask = ctx.mask
        need_gx, need_h0, need_W, need_b = ctx.needs_input_grad[4:]
        with torch.autocast(out.device.type, enabled=False):
            dtype = out.dtype
            T, B, G = gates.shape
            H = G // 3
            r, z, gh_n = gates[..., :H], gates[..., H : 2 * H], gates[..., 2 * H :]
            h_prev = h_prev_all(out, h0)  # (T, B, H)
            # d gh_t = dh~_t * coef[t] for the three gates; da_n = dh~ * c_n
            c_n = (1 - z) * (1 - n * n)  # (T, B, H)
            coef = torch.stack([c_n * gh_n * r * (1 - r), (h_prev - n) * z * (1 - z), c_n * r], dim=2)  # (T, B, 3, H)
            grad_out = grad_out.to(dtype)
            zone = None if ctx.keep is None else zoneout_grads(ctx.keep, mask, grad_out)
            dh = grad_h.to(dtype)  # (B, H)
            dgh = torch.empty_like(gates)  # (T, B, 3H) = d(W_hh h_{t-1} + b_hh)
            dh_tilde = torch.empty_like(out)  # (T, B, H)
            for t in range(T - 1, -1, -1):
                g, dh_pass = _masked_grad(mask, zone, t, grad_out, dh, out=dh_tilde[t])
                torch.mul(coef[t], g[:, None], out=dgh[t].view(B, 3, H))
                if t == 0 and not need_h0:
                    break
                dh = g * z[t] if dh_pass is None else torch.addcmul(dh_pass, g, z[t])
                dh = torch.addmm(dh, dgh[t], W) if m is None else torch.addcmul(dh, dgh[t] @ W, m)

            grad_W = None
            if need_W:  # (3H, H)
                grad_W = rows_gemm(dgh, h_prev if m is None else h_prev * m)
            grad_b = sum_rows(dgh) if need_b else None
            grad_gx = None
            if need_gx:  # d gx = d gh except for n, where the reset gate scales d gh_n
                grad_gx = dgh.clone() if (need_W or need_b) else dgh
                torch.mul(dh_tilde, c_n, out=grad_gx[..., 2 * H :])

        return (None, None, None, None, *_cast_grads(ctx, (grad_gx, dh if need_h0 else None, grad_W, grad_b)))


class _ChoGRU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, mask, hidden, keep, gx, h0, weight_hh, bias_hh):
        with torch.autocast(gx.device.type, enabled=False):
            dtype = gx.dtype
            T, B, G = gx.shape
            H = G // 3
            W = weight_hh.to(dtype)  # (3H, H)
            W_rz_t, W_n_t = W[: 2 * H].t(), W[2 * H :].t()
            gxb = gx if bias_hh is None else gx + bias_hh.to(dtype)  # (T, B, 3H): both biases at once
            m = None if hidden is None else hidden.to(dtype)  # (B, H)
            h = h0.to(dtype)
            gates = gx.new_empty(T, B, G)  # r | z | n
            s_all = gx.new_empty(T, B, H)  # r * h_{t-1}, the input of the second GEMM
            out = gx.new_empty(T, B, H)
            for t, gx_t in enumerate(gxb.unbind(0)):
                gt = gates[t]
                h_in = h if m is None else h * m  # the products read the dropped h, the blend h itself
                rz = torch.addmm(gx_t[:, : 2 * H], h_in, W_rz_t, out=gt[:, : 2 * H]).sigmoid_()
                r, z = rz[:, :H], rz[:, H:]
                s = torch.mul(r, h_in, out=s_all[t])
                n = torch.addmm(gx_t[:, 2 * H :], s, W_n_t, out=gt[:, 2 * H :]).tanh_()
                h = _blend(mask, keep, t, n, z, h, out)

        ctx.cell, ctx.mask, ctx.keep = cell, mask, keep
        ctx.dtypes = _dtypes(gx, h0, weight_hh, bias_hh)
        ctx.save_for_backward(gates, s_all, out, h0.to(dtype), W, m, gx, h0, weight_hh, bias_hh)
        return out, h.clone() if mask is None and keep is None else h

    @staticmethod
    def backward(ctx, grad_out, grad_h):
        if double_backward_needed():
            return _double_backward(ctx, grad_out, grad_h)
        gates, s, out, h0, W, m = ctx.saved_tensors[:6]
        mask = ctx.mask
        need_gx, need_h0, need_W, need_b = ctx.needs_input_grad[4:]
        with torch.autocast(out.device.type, enabled=False):
            dtype = out.dtype
            T, B, G = gates.shape
            H = G // 3
            W_rz, W_n = W[: 2 * H], W[2 * H :]
            r, z, n = gates[..., :H], gates[..., H : 2 * H], gates[..., 2 * H :]
            h_prev = h_prev_all(out, h0)  # (T, B, H)
            h_in = h_prev if m is None else h_prev * m  # what the products read
            c_n = (1 - z) * (1 - n * n)  # da_n = dh~ c_n
            c_z = (h_prev - n) * z * (1 - z)  # da_z = dh~ c_z
            c_r = h_in * r * (1 - r)  # da_r = ds c_r
            grad_out = grad_out.to(dtype)
            zone = None if ctx.keep is None else zoneout_grads(ctx.keep, mask, grad_out)
            dh = grad_h.to(dtype)  # (B, H)
            da = torch.empty_like(gates)  # (T, B, 3H) = d gx = d(W_hh . + b_hh), per block
            for t in range(T - 1, -1, -1):
                g, dh_pass = _masked_grad(mask, zone, t, grad_out, dh)
                da_t = da[t]
                da_n = torch.mul(g, c_n[t], out=da_t[:, 2 * H :])
                ds = da_n @ W_n  # (B, H)
                torch.mul(ds, c_r[t], out=da_t[:, :H])
                torch.mul(g, c_z[t], out=da_t[:, H : 2 * H])
                if t == 0 and not need_h0:
                    break
                dh = g * z[t] if dh_pass is None else torch.addcmul(dh_pass, g, z[t])
                if m is None:
                    dh = torch.addmm(torch.addcmul(dh, ds, r[t]), da_t[:, : 2 * H], W_rz)
                else:  # the products' share of dh_{t-1} passes the mask
                    dh = torch.addcmul(dh, torch.addmm(ds * r[t], da_t[:, : 2 * H], W_rz), m)

            grad_W = None
            if need_W:
                grad_W = torch.cat([rows_gemm(da[..., : 2 * H], h_in), rows_gemm(da[..., 2 * H :], s)])  # (3H, H)
            grad_b = sum_rows(da) if need_b else None

        return (None, None, None, None,
                *_cast_grads(ctx, (da if need_gx else None, dh if need_h0 else None, grad_W, grad_b)))
