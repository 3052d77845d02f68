r"""The scan backend: minGRU and minLSTM over the whole sequence at once, by a log-space scan.

Both cells are linear in the state, with coefficients from x_t alone,
``h_t = a_t * h_{t-1} + b_t``, so every h_t is a closed form of the inputs:

.. math::
    h_t = e^{a^*_t} h_0 + \sum_{s \le t} e^{a^*_t - a^*_s} b_s
        = e^{a^*_t} h_0 + \exp\big(a^*_t + \operatorname{logcumsumexp}_t(\log b_s - a^*_s)\big),
    \qquad a^*_t = \sum_{s \le t} \log a_s

one ``cumsum`` and one ``logcumsumexp`` over time instead of T steps (Heinsen 2023, as in the
appendix of Feng et al. 2024). Autograd does the backward: every operation is a torch op.

Implementation notes, where this differs from the papers' code:

- h_0 is not a term of the log-space sum (the papers prepend log h_0, which needs h_0 > 0).
  Its contribution ``e^{a*_t} h_0`` is added linearly, so any real initial state, zero or
  negative included, gives exactly the sequential loop's function.
- Variable lengths: past a sequence's end, ``a = 1`` and ``b = 0`` (log b a large negative
  finite number, never -inf, so neither values nor gradients meet ``inf - inf``), so the state
  stays at its last value; those outputs are then set to zero, as ``driver.time_loop`` does.
- Double backward: torch's own backward of ``logcumsumexp`` takes log|grad|, which is -inf where
  an incoming gradient is exactly zero (every output past a sequence's end, or all of ``out`` when
  a loss reads only the final state), and differentiating it again gives 0 * inf = NaN. The scan
  therefore calls ``logcumsumexp`` below: the same forward, the same first-order arithmetic (log
  space, split by the gradient's sign), and a backward whose own derivatives are written out.
- Half-precision projections (autocast) are scanned in float32: ``a*`` is a running sum over
  T steps, and its rounding error becomes the relative error of h. Even in float32 that error
  grows as ``eps * |a*_t|``: with a ~ 1/2, 6e-5 to 1e-4 of max |h| after 2000 steps, where the
  float32 loop keeps ~1e-7; in float64 the scan agrees with the loop to ~1e-12 there.

References: F. A. Heinsen, "Efficient parallelization of a ubiquitous sequential computation",
arXiv:2311.06281, 2023. L. Feng et al., "Were RNNs all we needed?", arXiv:2410.01201, 2024,
appendix (log-space minGRU and minLSTM).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cells import Cell, State
from ..driver import run_stack, running_mask

NAME = "scan"

# log b past a sequence's end: exp() of it is 0 in every float dtype, and it stays finite after
# subtracting a* (|a*| < 1e30) and in logcumsumexp's backward, so no inf - inf can make a NaN.
_LOG_ZERO = -1e30


def log_g(a: Tensor) -> Tensor:
    """log of the cells' candidate g(a) = a + 1/2 (a >= 0), sigma(a) (a < 0), without a log of <= 0.

    ``clamp_min`` rather than ``relu`` so that the gradient at a = 0 is g's right derivative, as
    ``torch.where(a >= 0, ...)`` gives it in the loop; the clamp also keeps the unselected branch
    finite, so ``torch.where`` passes no NaN gradient.
    """
    return torch.where(a >= 0, torch.log(a.clamp_min(0) + 0.5), -F.softplus(-a))


def mingru_log_coefficients(gx: Tensor) -> tuple[Tensor, Tensor]:
    r"""log a and log b of minGRU, from gx (T, B, 2H) packed z|h̃.

    a = 1 - \sigma(k_z), so log a = -softplus(k_z); b = \sigma(k_z) g(k_h), so
    log b = -softplus(-k_z) + log g(k_h).
    """
    k_z, k_h = gx.chunk(2, dim=-1)
    return -F.softplus(k_z), -F.softplus(-k_z) + log_g(k_h)  # (T, B, H) each


def minlstm_log_coefficients(gx: Tensor) -> tuple[Tensor, Tensor]:
    r"""log a and log b of minLSTM, from gx (T, B, 3H) packed f|i|h̃.

    With f = \sigma(k_f), i = \sigma(k_i): f' = f / (f + i) = 1 / (1 + i/f), and
    log(i/f) = log \sigma(k_i) - log \sigma(k_f) = softplus(-k_f) - softplus(-k_i) =: d, so
    log f' = -softplus(d) and, symmetrically, log i' = -softplus(-d); b = i' g(k_h).
    """
    k_f, k_i, k_h = gx.chunk(3, dim=-1)
    d = F.softplus(-k_f) - F.softplus(-k_i)  # log(i / f), (T, B, H)
    return -F.softplus(d), -F.softplus(-d) + log_g(k_h)


LOG_COEFFICIENTS = {"mingru": mingru_log_coefficients, "minlstm": minlstm_log_coefficients}


def supports(problem) -> str | None:
    if problem.cell not in LOG_COEFFICIENTS:
        return (
            f"the scan needs a recurrence linear in h with coefficients from x_t alone "
            f"(h_t = a_t * h_(t-1) + b_t); cell {problem.cell!r} is not one "
            f"(scan runs {', '.join(LOG_COEFFICIENTS)})"
        )
    if "zoneout" in problem.regularizers:
        return "the scan does not run zoneout (its per-step masks make a_t, b_t random)"
    return None


class _LogCumSumExp(torch.autograd.Function):
    """``torch.logcumsumexp`` over dim 0, whose backward can be differentiated again (module notes)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        result = torch.logcumsumexp(x, dim=0)
        ctx.save_for_backward(x, result)
        return result

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        x, result = ctx.saved_tensors
        # d x_t = sum_{s >= t} grad_s e^{x_t - r_s}, r = the result; r depends on x, autograd follows it
        return _ExpWeightedCumsum.apply(grad, -result, x, True)


class _ExpWeightedCumsum(torch.autograd.Function):
    r"""y_t = \sum_{s <= t} w_s e^{inner_s + outer_t} over dim 0 (s >= t with ``reverse``), in log space.

    logcumsumexp's backward is such a sum, and so are this sum's derivatives (with v the gradient
    of y: dw = the same sum of v with inner and outer swapped and the direction reversed,
    d inner = w dw, d outer = v y), so it is differentiable any number of times and never
    differentiates the log of a zero weight.
    """

    @staticmethod
    def forward(ctx, w: Tensor, inner: Tensor, outer: Tensor, reverse: bool) -> Tensor:
        y = exp_weighted_cumsum(w, inner, outer, reverse)
        ctx.reverse = reverse
        ctx.save_for_backward(w, inner, outer, y)
        return y

    @staticmethod
    def backward(ctx, v: Tensor):
        w, inner, outer, y = ctx.saved_tensors
        dw = _ExpWeightedCumsum.apply(v, outer, inner, not ctx.reverse)
        return dw, w * dw, v * y, None


def exp_weighted_cumsum(w: Tensor, inner: Tensor, outer: Tensor, reverse: bool) -> Tensor:
    """``_ExpWeightedCumsum``'s value: split by the sign of w, each part a logcumsumexp, as torch's backward does."""
    log_abs = w.abs().log()  # -inf where w = 0: that term is e^{-inf} = 0

    def cumulative(v: Tensor) -> Tensor:  # log sum over s <= t (s >= t with reverse) of e^{v_s}
        return torch.logcumsumexp(v.flip(0), dim=0).flip(0) if reverse else torch.logcumsumexp(v, dim=0)

    positive = cumulative(torch.where(w > 0, log_abs + inner, float("-inf")))
    negative = cumulative(torch.where(w < 0, log_abs + inner, float("-inf")))
    return (positive + outer).exp() - (negative + outer).exp()


def logcumsumexp(x: Tensor) -> Tensor:
    """``torch.logcumsumexp(x, dim=0)``, differentiable twice where gradients are zero (module notes)."""
    return _LogCumSumExp.apply(x)


def linear_scan(log_a: Tensor, log_b: Tensor, h0: Tensor) -> Tensor:
    """Every h_t of h_t = a_t h_(t-1) + b_t, from log a, log b (T, B, H) and any real h0 (B, H)."""
    a_star = torch.cumsum(log_a, dim=0)  # log prod_{s<=t} a_s, (T, B, H)
    log_h = a_star + logcumsumexp(log_b - a_star)  # log of the part from b, (T, B, H)
    return torch.exp(a_star) * h0 + torch.exp(log_h)


def recurrence(cell: Cell, gx: Tensor, state: Tensor, weights, lengths: Tensor | None) -> tuple[Tensor, State]:
    """``driver.time_loop``'s contract for mingru / minlstm: gx (T, B, G), state (B, H).

    Returns out (T, B, H), zero past each sequence's end, and the state after its last step.
    """
    out_dtype = torch.result_type(gx, state)
    if gx.dtype in (torch.float16, torch.bfloat16):  # autocast: see the module's notes
        gx = gx.float()
    log_a, log_b = LOG_COEFFICIENTS[cell.name](gx)  # (T, B, H) each
    if lengths is not None:
        T = gx.shape[0]
        running = running_mask(lengths, T)[..., None]  # (T, B, 1)
        log_a = torch.where(running, log_a, 0.0)  # a = 1: the state stays
        log_b = torch.where(running, log_b, _LOG_ZERO)  # b = 0
    h = linear_scan(log_a, log_b, state.to(log_a.dtype))  # (T, B, H)
    final = h[-1]  # past the end nothing changes, so the last row is each sequence's final state
    if lengths is not None:
        h = torch.where(running, h, 0.0)
    return h.to(out_dtype), final.to(out_dtype)


def run(layer, x: Tensor, lengths: Tensor | None, state: State) -> tuple[Tensor, State]:
    """Stacked, optionally bidirectional run over x (T, B, I): out (T, B, D*H) and final state."""
    return run_stack(layer, x, lengths, state, recurrence)
