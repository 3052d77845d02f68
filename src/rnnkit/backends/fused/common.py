"""Pieces every fused kernel shares: the step mask, the in-loop regularizers' masks, BPTT loops.

Zoneout and lengths are one select: a step past a sequence's end keeps the whole state, a
zoned-out unit keeps its own, so ``keep = zoneout | ~running`` and s_t = where(keep, s_{t-1}, s~_t),
with the output zeroed where the step does not run. Its BPTT, with g = dout_t + ds_t (dout_t
zero where step t does not run): ds~_t = g * (1 - keep), and g * keep passes to s_{t-1} unchanged.

Double backward (``torch.autograd.grad(..., create_graph=True)``: gradient penalties, MAML,
Hessian-vector products). A hand-written backward writes into preallocated buffers with ``out=``
ops, which autograd cannot record, and deriving the second-order BPTT of every cell by hand would
double the code for a rare use. So each family's backward asks ``double_backward_needed()``
(grad mode is on inside a backward only under ``create_graph=True``) and then hands over to
``differentiable_grads``: it reruns the layer-direction's time loop on the reference path
(``driver.time_loop``, the cells' own steps) from the inputs the forward saved (gx, the initial
state, the weights, the step mask, the hidden-dropout and zoneout masks: the same masks, so the same
function) with autograd on, and returns autograd's gradients of that with ``create_graph=True``.
The first-order backward is untouched: the forward saves its inputs by reference (no copy; the C++
loops read them without writing), and the hand BPTT runs whenever grad mode is off. What it costs:
gx (T, B, G) now stays alive until the backward (memory the size of the gate buffer the kernels save
anyway; a forward cannot know whether a double backward will follow), and a double backward runs
the loop once more, as activation checkpointing does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ...cells import Cell, State, map_state
from ...driver import running_mask, time_loop
from ...regularize import StepNoise


def step_mask(lengths: Tensor | None, T: int, device: torch.device) -> Tensor | None:
    """(T, B, 1) bool: True where step t of sequence b is inside the sequence; None for all-full.

    ``driver.running_mask``, the reference loop's; lengths are already on ``device`` (gx's).
    """
    if lengths is None:
        return None
    return running_mask(lengths, T)[..., None]


def loop_masks(noise: StepNoise | None, mask: Tensor | None) -> tuple[Tensor | None, State | None]:
    """The in-loop regularizers' masks as the kernels use them: (hidden, keep).

    hidden  (B, R) hidden-dropout mask on h_{t-1} in the recurrent products, or None
    keep    bool masks of the state's structure, each (T, B, size): True where s_t = s_{t-1}, a
            zoned-out unit or any unit of a step that does not run; None without zoneout
    """
    if noise is None:
        return None, None
    keep = noise.zoneout
    if keep is not None and mask is not None:
        keep = map_state(lambda k: k | ~mask, keep)
    return noise.hidden, keep


def zoneout_grads(keep: Tensor, mask: Tensor | None, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(kept, free, dout) for BPTT through s_t = where(keep_t, s_{t-1}, s~_t), in grad_out's dtype.

    With g = dout_t + ds_t: ds~_t = g * free_t, and g * kept_t passes to s_{t-1}. ``dout`` is
    grad_out with zeros where a step does not run (its output is a constant zero there).
    """
    kept = keep.to(grad_out.dtype)  # (T, B, size)
    dout = grad_out if mask is None else torch.where(mask, grad_out, grad_out.new_zeros(()))
    return kept, 1 - kept, dout


def sum_rows(x: Tensor) -> Tensor:
    """Sum a (T, B, N) tensor over its first two dims: a bias gradient over all steps."""
    return x.reshape(-1, x.shape[-1]).sum(0)


def rows_gemm(a: Tensor, b: Tensor) -> Tensor:
    """sum_t a_t^T b_t for a (T, B, M) and b (T, B, N) as one (M, N) GEMM over all T*B rows."""
    return a.reshape(-1, a.shape[-1]).t() @ b.reshape(-1, b.shape[-1])


def h_prev_all(out: Tensor, h0: Tensor) -> Tensor:
    """h_{t-1} for every step t, (T, B, H): h_0, then the outputs.

    Exact wherever step t runs; where it does not, every gradient it multiplies is zero.
    """
    return torch.cat([h0[None], out[:-1]])


def activation_backward(out: Tensor, grad_out: Tensor, dh: Tensor, nonlinearity: str, mask: Tensor | None,
                        need_h0: bool, propagate) -> tuple[Tensor, Tensor]:
    """BPTT through h_t = act(a_t), the loop the Elman and IndRNN kernels share: (da, dh_0).

    ``propagate(da_t, dh_pass) -> dh_{t-1}`` is the part that differs (``da W_hh`` or ``da * u``),
    with ``dh_pass`` the gradient that skips a step that does not run (None without lengths).
    """
    dact = _activation_derivative(out, nonlinearity)  # zero-output steps get gradient zero anyway
    da = torch.empty_like(out)  # (T, B, H) = d gx
    for t in range(out.shape[0] - 1, -1, -1):
        if mask is None:
            torch.mul(grad_out[t] + dh, dact[t], out=da[t])
            dh_pass = None
        else:
            zero = dh.new_zeros(())
            torch.mul(torch.where(mask[t], grad_out[t] + dh, zero), dact[t], out=da[t])
            dh_pass = torch.where(mask[t], zero, dh)
        if t == 0 and not need_h0:
            break
        dh = propagate(da[t], dh_pass)  # (B, H)
    return da, dh


def zoneout_activation_backward(h_tilde: Tensor, zone: tuple[Tensor, Tensor, Tensor], dh: Tensor, nonlinearity: str,
                                need_h0: bool, propagate) -> tuple[Tensor, Tensor]:
    """``activation_backward`` through zoneout, s_t = where(keep_t, s_{t-1}, act(a_t)): (da, dh_0).

    ``h_tilde`` (T, B, H) holds act(a_t) before the select, ``zone`` is ``zoneout_grads(...)``, and
    ``propagate(da_t, dh_pass)`` gets the kept part g * kept_t as ``dh_pass`` at every step.
    """
    kept, free, dout = zone
    coef = _activation_derivative(h_tilde, nonlinearity).mul_(free)  # (T, B, H): da = g * coef
    da = torch.empty_like(h_tilde)  # (T, B, H) = d gx
    for t in range(h_tilde.shape[0] - 1, -1, -1):
        g = dout[t] + dh  # (B, H)
        torch.mul(g, coef[t], out=da[t])
        if t == 0 and not need_h0:
            break
        dh = propagate(da[t], g * kept[t])
    return da, dh


def _activation_derivative(h: Tensor, nonlinearity: str) -> Tensor:
    """act'(a) from h = act(a), (T, B, H): 1 - h^2 for tanh, [h > 0] for relu."""
    if nonlinearity == "tanh":
        return 1 - h * h
    return h.sign()  # [h > 0], as h >= 0; arithmetic beats a bool mask on CPU


def activation_forward(gxb: Tensor, h: Tensor, mask: Tensor | None, keep: Tensor | None, step) -> tuple[
        Tensor, Tensor, Tensor | None]:
    """The forward loop the Elman and IndRNN kernels share: (out, h_T, h~ or None).

    ``step(gx_t, h_{t-1}, out) -> act(a_t)`` (written into ``out`` where given) is the part that
    differs. With zoneout, ``keep`` (T, B, H) also holds the steps past each end and h~ (T, B, H),
    act(a_t) before the select, is kept for the backward.
    """
    out = torch.empty_like(gxb)  # (T, B, H)
    h_tilde = None if keep is None else torch.empty_like(gxb)
    for t, gx_t in enumerate(gxb.unbind(0)):
        if keep is not None:  # zoneout
            h = torch.where(keep[t], h, step(gx_t, h, h_tilde[t]))
            if mask is None:
                out[t] = h
            else:
                torch.where(mask[t], h, h.new_zeros(()), out=out[t])
        elif mask is None:
            h = step(gx_t, h, out[t])  # (B, H)
        else:
            h_new = step(gx_t, h, None)
            torch.where(mask[t], h_new, h_new.new_zeros(()), out=out[t])
            h = torch.where(mask[t], h_new, h)
    return out, h, h_tilde


def double_backward_needed() -> bool:
    """True inside a backward that autograd records, i.e. one run under ``create_graph=True``.

    The engine runs a backward with grad mode on exactly when ``create_graph`` is set; then the
    fused kernels' hand BPTT (``out=`` ops) cannot serve, and ``differentiable_grads`` does.
    """
    return torch.is_grad_enabled()


def reference_loop(cell: Cell, gx: Tensor, state: State, weights: dict[str, Tensor | None], mask: Tensor | None,
                   hidden: Tensor | None, keep: State | None) -> tuple[Tensor, State]:
    """The function a fused kernel computes, on the reference path: ``driver.time_loop``.

    Takes the kernels' own arguments: ``mask`` (T, B, 1) from ``step_mask`` (turned back into
    lengths), ``hidden`` and ``keep`` from ``loop_masks`` (keep already holds the steps past each
    end, which ``time_loop`` also keeps; it then zeroes their outputs). Everything is cast to gx's
    dtype, as the kernels do under autocast, so the outputs have the kernels' dtype.
    """
    dtype = gx.dtype
    state = map_state(lambda s: s.to(dtype), state)
    weights = {name: w.to(dtype) for name, w in weights.items() if w is not None}
    lengths = None if mask is None else mask[:, :, 0].sum(0)  # (B,) int64
    noise = None
    if hidden is not None or keep is not None:
        noise = StepNoise(None if hidden is None else hidden.to(dtype), keep)
    return time_loop(cell, gx, state, weights, lengths, noise)


def differentiable_grads(run: Callable[..., Sequence[Tensor]], inputs: Sequence[Tensor | None],
                         grad_outputs: Sequence[Tensor]) -> list[Tensor | None]:
    """The gradients of ``inputs``, recorded by autograd so that they can be differentiated again.

    Reruns ``outputs = run(*inputs)`` with autograd on and returns ``autograd.grad(outputs, inputs,
    grad_outputs, create_graph=True)``, None for an input that is None or needs no gradient. A
    fused backward calls this when ``double_backward_needed()``, with ``run`` its reference loop
    and ``inputs`` the tensors its forward received (saved by reference, so the rerun depends on
    them and second-order gradients reach everything upstream).
    """
    # one alias per input: were one tensor passed in two places, autograd.grad would give each
    # place the gradient of both uses, and the engine would add them twice
    aliases = [None if x is None else x.view_as(x) for x in inputs]
    wanted = [i for i, x in enumerate(inputs) if x is not None and x.requires_grad]
    grads: list[Tensor | None] = [None] * len(inputs)
    if not wanted:
        return grads
    device = next(x for x in inputs if x is not None).device.type
    with torch.enable_grad(), torch.autocast(device, enabled=False):
        outputs = run(*aliases)
    pairs = [(out, grad) for out, grad in zip(outputs, grad_outputs) if out.requires_grad and grad is not None]
    if not pairs:
        return grads
    found = torch.autograd.grad([out for out, _ in pairs], [aliases[i] for i in wanted],
                                [grad.to(out.dtype) for out, grad in pairs], create_graph=True, allow_unused=True)
    for i, grad in zip(wanted, found):
        grads[i] = grad
    return grads
