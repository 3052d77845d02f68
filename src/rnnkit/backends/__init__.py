"""How a layer runs its time loop: the backend table and the rule ``backend="auto"`` follows.

Every backend is a module with ``NAME``, ``supports(problem) -> reason | None`` and
``run(layer, x, lengths, state) -> (out, state)`` over a time-major padded input:

    x        (T, B, I)           lengths  (B,) int64 on x's device, or None (all T)
    state    (L*D, B, R) or LSTMState(h (L*D, B, R), c (L*D, B, H)), never None
    out      (T, B, D*R), zero past each sequence's end

A backend asked for by name that cannot run the problem raises ``NotSupported`` with its
reason; nothing falls back silently. ``auto`` takes the first backend of ``AUTO_ORDER``
that supports the problem; the order is fixed from benchmarks, nothing is timed at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import torch

from . import fused, native, reference, scan, triton


class NotSupported(RuntimeError):
    """A backend asked for by name cannot run this configuration; the message says why."""


@dataclass(frozen=True)
class Problem:
    """What a backend needs to know to say whether it can run a forward call."""

    cell: str  # registry name
    cell_options: tuple[tuple[str, object], ...]  # non-default cell options, sorted
    device: str  # "cpu", "cuda", ...
    dtype: torch.dtype
    batch: int
    steps: int
    training: bool  # autograd will record the call (grad enabled and something requires grad)
    regularizers: tuple[str, ...] = ()  # rnnkit.regularize's regularizers active in this call
    autocast: torch.dtype | None = None  # the autocast dtype on this device, None where autocast is off


BACKENDS: dict[str, ModuleType] = {"reference": reference, "native": native, "fused": fused, "scan": scan,
                                   "triton": triton}  # triton: only when named, never by auto

# auto's fixed table: the first backend here that supports the problem runs it. torch's own
# kernels (oneDNN / cuDNN) are the fastest for the cells they have; the reference loop runs
# everything. The fused and scan backends slot in here, where benchmarks/ shows them faster.
AUTO_ORDER: tuple[str, ...] = ("native", "fused", "reference")

# The log-space scan replaces T sequential steps by a few whole-sequence kernels. On CPU the
# loop is faster at every shape measured (benchmarks/scan.py: the scan 1.0x-7.6x slower at 2
# threads), so auto never picks it there. On CUDA a loop pays kernel launches per step; the
# scan should win beyond a few dozen steps (Feng et al. 2024 report 175x at T=512 on a T4).
# Measured on an H200 (benchmarks/scan.py --device cuda, docs/results.md): at T=100 the scan
# takes 0.36x the fused loop's time in training and 0.20x in inference; 0.06x at T=4096.
SCAN_MIN_STEPS_CUDA = 32


# torch's GRU trains slowly on CPU at small batch (its backward); the fused GRU trains faster
# there: ratio fused / nn.GRU 0.49 at (B,T,I,H) = (1,1000,64,256), 0.70 at (8,100,128,256),
# 0.79 at (16,100,128,256), but 1.15 at (32,100,128,256) and 1.07 at (64,128,256,512);
# in inference nn.GRU is faster at every batch (`rnnkit bench --cells gru --backend fused`).
FUSED_GRU_MAX_BATCH_CPU = 16


def auto_order(problem: Problem) -> tuple[str, ...]:
    """auto's preference for this problem; the first backend that supports it runs."""
    if problem.device == "cuda" and problem.steps >= SCAN_MIN_STEPS_CUDA:
        return ("scan", *AUTO_ORDER)  # scan supports only mingru and minlstm
    if (problem.cell == "gru" and problem.device == "cpu" and problem.training
            and problem.batch <= FUSED_GRU_MAX_BATCH_CPU):
        return ("fused", *AUTO_ORDER)
    return AUTO_ORDER


def backend_names() -> list[str]:
    return ["auto", *BACKENDS]


def select(requested: str, problem: Problem) -> ModuleType:
    """The backend module that runs ``problem``: the one named, or auto's choice."""
    if requested != "auto":
        backend = BACKENDS[requested]
        reason = backend.supports(problem)
        if reason is not None:
            raise NotSupported(f"backend {requested!r} cannot run this layer: {reason}")
        return backend
    for name in auto_order(problem):
        backend = BACKENDS[name]
        if backend.supports(problem) is None:
            return backend
    raise NotSupported(f"no backend supports {problem}")  # unreachable: reference runs everything


__all__ = ["AUTO_ORDER", "BACKENDS", "auto_order", "NotSupported", "Problem", "backend_names", "select"]
