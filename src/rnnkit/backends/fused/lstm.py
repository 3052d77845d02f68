"""Fused BPTT for the LSTM family: ``lstm``, ``peephole_lstm``, ``layernorm_lstm``, ``cifg_lstm``.

One ``autograd.Function`` runs the whole time loop of one layer and direction. Forward saves
the activated gates, tanh of the (normalized) cell, every h_{t-1} and c_{t-1}, and for the
layer-norm cell the normalized values and inverse deviations. Backward walks the steps from
last to first with the derivatives below, one GEMM per step for dh_{t-1}, and then forms every
weight gradient as one GEMM or one reduction over all T*B rows.

Derivatives, with m = o * tanh(c~) the pre-projection output (c~ = c_t, or LN_c(c_t)):

    dm = dh_t W_hr (or dh_t)          do = dm * tanh(c~)          dc~ = dm * o
    dc_t += dc~ * (1 - tanh^2(c~))    (through LN_c's backward for the layer-norm cell)
    lstm:     di = dc_t g, df = dc_t c_{t-1}, dg = dc_t i, dc_{t-1} = dc_t f
    peephole: dc_t += da_o w_co first; dc_{t-1} = dc_t f + da_i w_ci + da_f w_cf
    cifg:     df = dc_t (c_{t-1} - g), dg = dc_t (1 - f), dc_{t-1} = dc_t f
    da = dgate * sigma' (i, f, o) or * tanh' (g);   dh_{t-1} = da W_hh  (layer norm: LN_hh backward first)

Hidden dropout: one mask h_mask (B, R) for all steps on h_{t-1} where it enters W_hh (the
peepholes read c, which is not dropped):

    dh_{t-1} = (da W_hh) * h_mask,   dW_hh = sum_t da_t^T (h_{t-1} * h_mask)

Zoneout, h_t = where(kh_t, h_{t-1}, h~_t) and c_t = where(kc_t, c_{t-1}, c~_t) with the step's
h~_t, c~_t as above and each keep also True past a sequence's end (``common.loop_masks``); the
gradients at the step's top split by unit, with dh_t including dout_t (zero where the step does
not run):

    dh~_t = dh_t (1 - kh_t),   dc~_t = dc_t (1 - kc_t) (+ the output's share, as above)
    dh_{t-1} = da W_hh (* h_mask) + dh_t kh_t,   dc_{t-1} = dc~_t f (...) + dc_t kc_t
    peephole: dw_co = sum_t da_o c~_t, so c~ is saved when it differs from c_t

A call with hidden dropout or zoneout runs the Python loops; the C++ loops run the plain cell, for all
four kinds (layernorm_lstm saves and returns the same tensors as its Python loop).

Float32 inference of lstm, peephole_lstm and cifg_lstm without projection (nothing needing a gradient):
the layer hands this backend x itself (``tiled_projection`` returns a ``TiledInput``), and the C++ tiled
step forms x_t W_ih^T + b_ih inside each step's tile (``lstm_forward_tiled``, csrc/tile.h) instead of
reading a (T, B, G) gx precomputed for all steps.

Under CPU bf16 autocast gx comes in bf16 and the C++ loops run float32 (state, gates, layer norms, outputs, as the
reference path does under autocast); ``extension.autocast_gemm`` says whether their per-step GEMMs (h W_hh^T,
h W_hr^T, and the backward's da W_hh, dh W_hr) take bf16 operands with float32 accumulation ('bf16', or
'bf16-emulated' where ``RNNKIT_BF16_GEMM=1`` forces it on a CPU without bf16 instructions) or stay float32, said
once per process. The weight gradients stay float32 GEMMs over all T*B rows: one large GEMM each, already efficient
in float32, and float32 keeps them free of bf16's output rounding.

layernorm_lstm's float32 inference without projection runs its two-pass tiled step (gemm 'tiled': per step
h_{t-1} W_hh^T on the tiles of csrc/tile.h, then a row pass with both norms and the gates, csrc/layer_norm.h).

layernorm_lstm's input path: the layer hands this backend the raw x W_ih^T (``input_projection``).
Where the C++ loop runs, it normalizes each step's rows itself (LN_ih, then + b_ih) and its backward
returns d(x W_ih^T) = LN_ih's backward of the gate gradients, d ln_ih_weight = sum_t da * x_hat_ih and
d(ln_ih_bias + b_ih) = sum_t da; otherwise ``recurrence`` applies ``cell.normalize_input`` (autograd)
before the Python loop.

Double backward: forward also saves its inputs (by reference), and a backward under
``create_graph=True`` differentiates the cell's reference loop instead (``common.differentiable_grads``),
whichever loop, C++ or Python, ran the forward.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import Tensor

from ...cells import LSTMState
from ...regularize import StepNoise
from . import extension
from .common import (
    differentiable_grads,
    double_backward_needed,
    loop_masks,
    reference_loop,
    rows_gemm,
    step_mask,
    sum_rows,
    zoneout_grads,
)


def input_projection(cell, x: Tensor, w) -> Tensor:
    """layernorm_lstm's gx for ``recurrence``: the raw x W_ih^T (T, B, 4H), normalized in the loop."""
    return torch.nn.functional.linear(x, w["weight_ih"])


class TiledInput(NamedTuple):
    """What ``tiled_projection`` hands ``recurrence`` in place of gx: x, whose projection the C++ tiled step
    forms inside its tile (x_t W_ih^T + b_ih per step, with the layer's ``weight_ih`` and ``bias_ih``)."""

    x: Tensor  # (T, B, I)


def tiled_input(cell, x: Tensor, w) -> bool:
    """Whether this layer and direction runs the tiled step from x: float32 CPU inference of lstm, peephole or
    cifg without projection, outside autocast, nothing needing a gradient, and the C++ loops loaded."""
    if cell.name not in extension.TILED_KINDS or w.get("weight_hr") is not None:
        return False
    tensors = [x, *(t for t in w.values() if isinstance(t, Tensor))]
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return False
    if torch.is_autocast_enabled("cpu") or (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
        return False
    return _cpp_loops(cell.name, x) is not None


def tiled_projection(cell, x: Tensor, w) -> Tensor | TiledInput:
    """lstm / peephole_lstm / cifg_lstm's gx for ``recurrence``: ``TiledInput(x)`` where ``tiled_input`` says
    the tiled step runs (the projection then happens inside it), else ``cell.input_projection``."""
    return TiledInput(x) if tiled_input(cell, x, w) else cell.input_projection(x, w)


def recurrence(cell, gx: Tensor | TiledInput, state: LSTMState, w, lengths: Tensor | None,
               noise: StepNoise | None = None) -> tuple[Tensor, LSTMState]:
    """The fused time loop of one LSTM-family layer and direction (contract in fused/__init__.py); gx may be a
    ``TiledInput`` (``tiled_projection``)."""
    steps = gx.x if isinstance(gx, TiledInput) else gx  # (T, B, ...)
    mask = step_mask(lengths, steps.shape[0], steps.device)
    hidden, keep = loop_masks(noise, mask)
    if isinstance(gx, TiledInput):
        if hidden is None and keep is None:
            return _tiled_loop(cell, gx.x, state, w, mask)
        gx = cell.input_projection(gx.x, w)  # hidden dropout or zoneout (train mode under no_grad): Python loops
    eps = getattr(cell, "eps", 0.0)
    ops = _cpp_loops(cell.name, gx) if hidden is None and keep is None else None
    ln_ih_weight = ln_ih_bias = None
    if cell.name == "layernorm_lstm":  # gx is the raw x W_ih^T (input_projection)
        if ops is None:
            gx = cell.normalize_input(gx, w)
        else:
            ln_ih_weight, ln_ih_bias = w["ln_ih_weight"], cell.input_bias(w)
    out, h, c = _LSTMLoop.apply(
        cell, eps, mask, hidden, keep, torch.is_grad_enabled(), ops, gx, state.h, state.c, w["weight_hh"],
        w.get("bias_hh"), w.get("weight_hr"), w.get("weight_peephole"), w.get("ln_hh_weight"), w.get("ln_hh_bias"),
        w.get("ln_c_weight"), w.get("ln_c_bias"), ln_ih_weight, ln_ih_bias,
    )
    return out, LSTMState(h, c)


def _tiled_loop(cell, x: Tensor, state: LSTMState, w, mask: Tensor | None) -> tuple[Tensor, LSTMState]:
    """The C++ tiled step from x (``lstm_forward_tiled``): out (T, B, H) and the final state."""
    global last_loop
    gemm = extension.tiled_gemm()
    out, h, c = extension.load().lstm_forward_tiled(
        extension.KINDS[cell.name], x, state.h, state.c, w["weight_ih"], w.get("bias_ih"), w["weight_hh"],
        w.get("bias_hh"), w.get("weight_peephole"), None if mask is None else mask[..., 0], gemm)
    last_loop = f"C++ {extension.loaded_variant()} {gemm}"
    return out, LSTMState(h, c)


def _layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """LayerNorm over the last dim: (y, x_hat, rstd), with what its backward needs."""
    mean = x.mean(-1, keepdim=True)
    rstd = torch.rsqrt(x.var(-1, unbiased=False, keepdim=True) + eps)  # (B, 1)
    x_hat = (x - mean) * rstd
    return torch.addcmul(bias, x_hat, weight), x_hat, rstd


def _layer_norm_backward(dy_weighted: Tensor, x_hat: Tensor, rstd: Tensor) -> Tensor:
    """dx of LayerNorm given dy * weight: rstd * (g - mean(g) - x_hat * mean(g * x_hat))."""
    g = dy_weighted
    return rstd * (g - g.mean(-1, keepdim=True) - x_hat * (g * x_hat).mean(-1, keepdim=True))


# the weights _LSTMLoop takes after gx, h0, c0, in its argument order, under the cells' names
_WEIGHTS = ("weight_hh", "bias_hh", "weight_hr", "weight_peephole", "ln_hh_weight", "ln_hh_bias", "ln_c_weight",
            "ln_c_bias", "ln_ih_weight", "ln_ih_bias")


def _reference(cell, mask, hidden, keep, gx, h0, c0, *weights) -> tuple[Tensor, Tensor, Tensor]:
    """_LSTMLoop's function on the reference path: (out, h, c), for the double backward.

    With ln_ih_weight, gx is layernorm_lstm's raw x W_ih^T and ln_ih_bias holds b_ih: LN_ih comes first.
    """
    w = dict(zip(_WEIGHTS, weights))
    if w["ln_ih_weight"] is not None:
        gx = torch.nn.functional.layer_norm(gx, w["ln_ih_weight"].shape, w["ln_ih_weight"], w["ln_ih_bias"], cell.eps)
    out, state = reference_loop(cell, gx, LSTMState(h0, c0), w, mask, hidden, keep)
    return out, state.h, state.c


def _cast(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype)


_warned_autocast: set[str] = set()  # the autocast notes (``extension.autocast_gemm``) already said
# what the LSTM family's last call ran, in words ("C++ avx2 tiled", "C++ avx512 bf16", "Python"); `rnnkit bench`
# prints it
last_loop = ""


def _cpp_loops(kind: str, gx: Tensor):
    """The C++ time loops for this call (``torch.ops.rnnkit_fused``), or None: the Python loops run."""
    if kind not in extension.KINDS or gx.device.type != "cpu" or gx.dtype not in (torch.float32, torch.float64,
                                                                                  torch.bfloat16):
        return None
    return extension.load_or_warn("rnnkit fused LSTM", "using the slower Python loops", stacklevel=3)


def _loop_dtype(gx: Tensor) -> tuple[torch.dtype, str | None]:
    """(the dtype the C++ loops run in, their bf16 GEMM or None): gx's dtype and None, or for a bf16 gx (CPU
    autocast) float32 and ``extension.autocast_gemm()``'s choice, whose note is said once per process.

    float32 then holds the state, the gates and the layer norms, and the outputs are float32, as on the
    reference path under autocast; with 'bf16' (or 'bf16-emulated') the per-step products take bf16 operands and
    accumulate in float32; the gradients go back in the inputs' dtypes.
    """
    if gx.dtype != torch.bfloat16:
        return gx.dtype, None
    gemm, note = extension.autocast_gemm()
    if note and note not in _warned_autocast:
        _warned_autocast.add(note)
        warnings.warn(f"rnnkit fused LSTM under bf16 autocast: {note}", RuntimeWarning, stacklevel=4)
    return torch.float32, gemm


class _LSTMLoop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, eps, mask, hidden, keep, grad_enabled, ops, gx, h0, c0, weight_hh, bias_hh, weight_hr,
                weight_peephole, ln_hh_weight, ln_hh_bias, ln_c_weight, ln_c_bias, ln_ih_weight, ln_ih_bias):
        """``ops``: the C++ loops (``_cpp_loops``) or None; ln_ih_weight and ln_ih_bias (+ b_ih): only with ops,
        for layernorm_lstm, whose gx is then the raw x W_ih^T."""
        kind = cell.name
        # saved last, by reference, for a double backward (``common.differentiable_grads``)
        inputs = [gx, h0, c0, weight_hh, bias_hh, weight_hr, weight_peephole, ln_hh_weight, ln_hh_bias, ln_c_weight,
                  ln_c_bias, ln_ih_weight, ln_ih_bias]
        ctx.cell = cell
        ctx.dtypes = [None if x is None else x.dtype for x in inputs]
        global last_loop
        ctx.cpp = ops is not None
        ctx.bf16 = None  # the C++ loops' bf16 GEMM under autocast ('bf16', 'bf16-emulated'), for the backward
        last_loop = "Python"
        if ops is not None:  # the same loop in C++, saving the same tensors
            ctx.kind, ctx.eps, ctx.mask, ctx.keep = kind, eps, mask, None
            ctx.has_bias = bias_hh is not None
            dtype, ctx.bf16 = _loop_dtype(gx)
            W, W_hr, peep = weight_hh.to(dtype), _cast(weight_hr, dtype), _cast(weight_peephole, dtype)
            # needs_input_grad ignores grad mode: under no_grad (grad_enabled False) nothing is saved
            training = grad_enabled and any(ctx.needs_input_grad)
            ln = [] if kind != "layernorm_lstm" else [x.to(dtype) for x in (ln_hh_weight, ln_hh_bias, ln_c_weight,
                                                                            ln_c_bias, ln_ih_weight, ln_ih_bias)]
            gemm = ctx.bf16 or extension.forward_gemm(kind, training, dtype, W_hr, gx.shape[1])
            out, h, c, acts, tcs, hs, cs, ms, xhat_hh, rstd_hh, mean_c, rstd_c, mean_ih, rstd_ih = ops.lstm_forward(
                extension.KINDS[kind], gx.to(dtype), h0, c0, W, _cast(bias_hh, dtype), W_hr, peep,
                None if mask is None else mask[..., 0], training, gemm, ln, eps)
            float32 = dtype != gx.dtype and ctx.bf16 is None  # under autocast, without bf16 GEMMs
            last_loop = f"C++ {extension.loaded_variant()} {gemm}" + (" float32" if float32 else "")
            if training:  # layer norm: x_hat_hh, rstd_hh, mean_c, rstd_c, the hh and c gains, LN_ih's statistics
                # and gain (the backward reads gx from the inputs)
                ln_saved = [xhat_hh, rstd_hh, mean_c, rstd_c, ln[0], ln[2], mean_ih, rstd_ih, ln[4]] if ln else []
                ctx.save_for_backward(W, acts, tcs, hs, cs, W_hr, ms if W_hr is not None else None, peep,
                                      None, None, *ln_saved, *inputs)
            return out, h, c

        with torch.autocast(gx.device.type, enabled=False):
            dtype = gx.dtype  # under autocast the input GEMM already chose it
            T, B, G = gx.shape
            H, R = c0.shape[-1], h0.shape[-1]
            W = weight_hh.to(dtype)  # (G, R)
            W_t = W.t()
            W_hr = _cast(weight_hr, dtype)  # (R, H) or None
            peep = _cast(weight_peephole, dtype)  # (3, H) or None
            ln = kind == "layernorm_lstm"
            ln_hh = (_cast(ln_hh_weight, dtype), _cast(ln_hh_bias, dtype)) if ln else None
            ln_c = (_cast(ln_c_weight, dtype), _cast(ln_c_bias, dtype)) if ln else None
            gxb = gx if bias_hh is None else gx + bias_hh.to(dtype)  # (T, B, G): both biases at once
            h_mask = _cast(hidden, dtype)  # (B, R) or None
            keep_h, keep_c = (None, None) if keep is None else keep

            hs = gx.new_empty(T + 1, B, R)  # hs[t] = h_{t-1}
            cs = gx.new_empty(T + 1, B, H)  # cs[t] = c_{t-1}
            hs[0], cs[0] = h0, c0
            acts = gx.new_empty(T, B, G)  # activated gates
            tcs = gx.new_empty(T, B, H)  # tanh(c_t) or tanh(LN_c(c_t))
            ms = gx.new_empty(T, B, H) if W_hr is not None else None  # o * tanh(.) before projection
            # c~_t before zoneout's select, read by the peephole w_co's gradient
            c_tilde = gx.new_empty(T, B, H) if keep is not None and peep is not None else None
            out = gx.new_empty(T, B, R)
            if ln:
                xhat_hh, rstd_hh = gx.new_empty(T, B, G), gx.new_empty(T, B, 1)
                xhat_c, rstd_c = gx.new_empty(T, B, H), gx.new_empty(T, B, 1)

            for t in range(T):
                h, c = hs[t], cs[t]
                h_in = h if h_mask is None else h * h_mask
                if ln:
                    gh, xhat_hh[t], rstd_hh[t] = _layer_norm(h_in @ W_t, *ln_hh, eps)
                    pre = gxb[t] + gh
                else:
                    pre = torch.addmm(gxb[t], h_in, W_t)  # (B, G)
                a = acts[t]
                if kind == "cifg_lstm":
                    f, g, o = a.chunk(3, dim=-1)
                    p_f, p_g, p_o = pre.chunk(3, dim=-1)
                    torch.sigmoid(p_f, out=f)
                    torch.tanh(p_g, out=g)
                    c_new = f * c + (1 - f) * g
                    torch.sigmoid(p_o, out=o)
                else:
                    i, f, g, o = a.chunk(4, dim=-1)
                    p_i, p_f, p_g, p_o = pre.chunk(4, dim=-1)
                    if peep is not None:
                        torch.sigmoid(torch.addcmul(p_i, peep[0], c), out=i)
                        torch.sigmoid(torch.addcmul(p_f, peep[1], c), out=f)
                    else:
                        torch.sigmoid(p_i, out=i)
                        torch.sigmoid(p_f, out=f)
                    torch.tanh(p_g, out=g)
                    c_new = torch.addcmul(f * c, i, g)
                    if peep is not None:
                        torch.sigmoid(torch.addcmul(p_o, peep[2], c_new), out=o)
                    else:
                        torch.sigmoid(p_o, out=o)
                if ln:
                    c_norm, xhat_c[t], rstd_c[t] = _layer_norm(c_new, *ln_c, eps)
                    torch.tanh(c_norm, out=tcs[t])
                else:
                    torch.tanh(c_new, out=tcs[t])
                m = o * tcs[t]  # (B, H)
                if W_hr is not None:
                    ms[t] = m
                    h_new = m @ W_hr.t()  # (B, R)
                else:
                    h_new = m
                if keep is not None:  # zoneout; keep also holds the steps past each end
                    if c_tilde is not None:
                        c_tilde[t] = c_new
                    torch.where(keep_h[t], h, h_new, out=hs[t + 1])
                    torch.where(keep_c[t], c, c_new, out=cs[t + 1])
                    if mask is None:
                        out[t] = hs[t + 1]
                    else:
                        torch.where(mask[t], hs[t + 1], torch.zeros_like(h_new), out=out[t])
                elif mask is None:
                    hs[t + 1], cs[t + 1], out[t] = h_new, c_new, h_new
                else:
                    mt = mask[t]
                    torch.where(mt, h_new, h, out=hs[t + 1])
                    torch.where(mt, c_new, c, out=cs[t + 1])
                    torch.where(mt, h_new, torch.zeros_like(h_new), out=out[t])

        ctx.kind, ctx.eps, ctx.mask, ctx.keep = kind, eps, mask, keep
        ctx.has_bias = bias_hh is not None
        saved = [W, acts, tcs, hs, cs, W_hr, ms, peep, h_mask, c_tilde]
        if ln:
            saved += [xhat_hh, rstd_hh, xhat_c, rstd_c, ln_hh[0], ln_c[0]]
        ctx.save_for_backward(*saved, *inputs)
        return out, hs[T].clone(), cs[T].clone()

    @staticmethod
    def backward(ctx, grad_out, grad_h, grad_c):
        kind, mask = ctx.kind, ctx.mask
        ln = kind == "layernorm_lstm"
        saved = ctx.saved_tensors
        saved, inputs = saved[:-len(_WEIGHTS) - 3], saved[-len(_WEIGHTS) - 3:]
        if double_backward_needed():
            def run(*args):
                return _reference(ctx.cell, mask, saved[8], ctx.keep, *args)

            return (None,) * 7 + tuple(differentiable_grads(run, inputs, (grad_out, grad_h, grad_c)))
        W, acts, tcs, hs, cs, W_hr, ms, peep = saved[:8]
        h_mask, c_tilde = saved[8:10]  # None on the C++ path
        if ln:
            xhat_hh, rstd_hh, xhat_c, rstd_c, g_hh, g_c = saved[10:16]
        with torch.autocast(acts.device.type, enabled=False):
            dtype = acts.dtype
            T, B, G = acts.shape
            grad_out = grad_out.to(dtype)
            dh, dc = grad_h.to(dtype), grad_c.to(dtype)
            ops = extension.load() if ctx.cpp else None
            if ops is not None:
                # xhat_c holds mean_c here: the C++ backward recomputes LN_c's x_hat from c_t
                # and gx, LN_ih's statistics and gain: dpre_all is then d(x W_ih^T)
                ln_saved = [xhat_hh, rstd_hh, xhat_c, rstd_c, g_hh, g_c, inputs[0].to(dtype), *saved[16:]] if ln else []
                dpre_all, dh, dc, dhnew, draw, *ln_grads = ops.lstm_backward(
                    extension.KINDS[kind], grad_out, dh, dc, W, acts, tcs, cs, W_hr, peep,
                    None if mask is None else mask[..., 0], ctx.bf16 or extension.backward_gemm(B), ln_saved)
                # layer norm: d(h W_hh^T), and the LN parameters' gradients, summed in the loop;
                # peephole: d weight_peephole, summed in the loop, in the first of those slots
                draw_all, grad_ln = (draw, ln_grads) if ln else (dpre_all, None)
                summed_peep = ln_grads[0] if peep is not None else None
                dhnew_all = dhnew if W_hr is not None else None
            else:
                grad_ln = summed_peep = None
                dpre_all = torch.empty_like(acts)  # d(pre-activation gates) = d gx
                draw_all = torch.empty_like(acts) if ln else dpre_all  # d(h W_hh^T)
                dhnew_all = torch.empty_like(grad_out) if W_hr is not None else None
                dcn_all = torch.empty_like(tcs) if ln else None
                if ctx.keep is not None:
                    kept_h, free_h, dout = zoneout_grads(ctx.keep.h, mask, grad_out)
                    kept_c = ctx.keep.c.to(dtype)  # (T, B, H)
                    free_c = 1 - kept_c
                for t in range(T - 1, -1, -1):
                    c_prev = cs[t]
                    if ctx.keep is not None:  # zoneout: kept units pass their gradient to s_{t-1}
                        g = dh + dout[t]
                        dh_new, dh_pass = g * free_h[t], g * kept_h[t]
                        dc_new, dc_pass = dc * free_c[t], dc * kept_c[t]
                    elif mask is None:
                        dh_new, dc_new = dh + grad_out[t], dc
                    else:
                        mt = mask[t]
                        zero = torch.zeros_like(dh)
                        dh_new = torch.where(mt, dh + grad_out[t], zero)
                        dc_new = torch.where(mt, dc, torch.zeros_like(dc))
                        dh_pass = torch.where(mt, zero, dh)
                        dc_pass = torch.where(mt, torch.zeros_like(dc), dc)
                    if W_hr is not None:
                        dhnew_all[t] = dh_new
                        dm = dh_new @ W_hr  # (B, H)
                    else:
                        dm = dh_new
                    tc = tcs[t]
                    dpre = dpre_all[t]
                    if kind == "cifg_lstm":
                        f, g, o = acts[t].chunk(3, dim=-1)
                        da_f, da_g, da_o = dpre.chunk(3, dim=-1)
                    else:
                        i, f, g, o = acts[t].chunk(4, dim=-1)
                        da_i, da_f, da_g, da_o = dpre.chunk(4, dim=-1)
                    torch.mul(dm * tc, o * (1 - o), out=da_o)
                    dtc = dm * o * (1 - tc * tc)  # d(LN_c(c_t)) or d c_t through the output tanh
                    if ln:
                        dcn_all[t] = dtc
                        dc_new = dc_new + _layer_norm_backward(dtc * g_c, xhat_c[t], rstd_c[t])
                    else:
                        dc_new = dc_new + dtc
                    if peep is not None:
                        dc_new = torch.addcmul(dc_new, da_o, peep[2])
                    if kind == "cifg_lstm":
                        torch.mul(dc_new * (c_prev - g), f * (1 - f), out=da_f)
                        torch.mul(dc_new * (1 - f), 1 - g * g, out=da_g)
                        dc_prev = dc_new * f
                    else:
                        torch.mul(dc_new * g, i * (1 - i), out=da_i)
                        torch.mul(dc_new * c_prev, f * (1 - f), out=da_f)
                        torch.mul(dc_new * i, 1 - g * g, out=da_g)
                        dc_prev = dc_new * f
                        if peep is not None:
                            dc_prev = torch.addcmul(torch.addcmul(dc_prev, da_i, peep[0]), da_f, peep[1])
                    if ln:
                        draw_all[t] = _layer_norm_backward(dpre * g_hh, xhat_hh[t], rstd_hh[t])
                    dh = draw_all[t] @ W  # (B, R)
                    if h_mask is not None:
                        dh.mul_(h_mask)
                    dc = dc_prev
                    if mask is not None or ctx.keep is not None:
                        dh, dc = dh + dh_pass, dc + dc_pass

            h_prev_all = hs[:T] if h_mask is None else hs[:T] * h_mask  # (T, B, R), as the products read it
            grad_W = rows_gemm(draw_all, h_prev_all)  # (G, R)
            # d b_hh is d ln_hh_bias: both sum the gate gradients
            grad_b = None if not ctx.has_bias else sum_rows(dpre_all) if grad_ln is None else grad_ln[1]
            grad_W_hr = rows_gemm(dhnew_all, ms) if W_hr is not None else None  # (R, H)
            grad_peep = summed_peep
            if peep is not None and grad_peep is None:
                H = tcs.shape[-1]
                c_prev_all, c_all = cs[:T], (cs[1:] if c_tilde is None else c_tilde)
                da_i, da_f, da_o = dpre_all[..., :H], dpre_all[..., H:2 * H], dpre_all[..., 3 * H:]
                grad_peep = torch.stack([sum_rows(da_i * c_prev_all), sum_rows(da_f * c_prev_all),
                                         sum_rows(da_o * c_all)])  # (3, H)
            if not ln:
                grad_ln = [None] * 6
            elif grad_ln is None:  # the Python loop: gx came normalized, no ln_ih inputs
                grad_ln = [sum_rows(dpre_all * xhat_hh), sum_rows(dpre_all) if grad_b is None else grad_b,
                           sum_rows(dcn_all * xhat_c), sum_rows(dcn_all), None, None]

        grads = [dpre_all, dh, dc, grad_W, grad_b, grad_W_hr, grad_peep, *grad_ln]
        grads = [None if g is None else g.to(dt) for g, dt in zip(grads, ctx.dtypes)]
        return (None,) * 7 + tuple(grads)
