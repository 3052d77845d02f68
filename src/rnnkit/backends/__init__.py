"""How a layer runs its time loop: the backend table and the rule ``backend="auto"`` follows.

Every backend is a module with ``NAME``, ``supports(problem) -> reason | None`` and
``run(layer, x, lengths, state) -> (out, state)`` over a time-major padded input:

    x        (T, B, I)           lengths  (B,) int64 on x's device, or None (all T)
    state    (L*D, B, R) or LSTMState(h (L*D, B, R), c (L*D, B, H)), never None
    out      (T, B, D*R), zero past each sequence's end

A backend asked for by name that cannot run the problem raises ``NotSupported`` with its
reason; nothing falls back silently. ``auto`` takes the first backend of ``AUTO_ORDER``
that supports the problem; the order is fixed from benchmarks, nothing is timed at run time.

Program transforms (``torch.compile``, ``torch.export``) see the same table, with two rules:

- ``torch.compile``: the backends whose loops are hand-written ``autograd.Function``s over C++ or
  Triton kernels (``OPAQUE``: fused, triton) run eagerly behind one graph break (``run``); the rest
  of the model compiles. Dynamo cannot trace them correctly: it failed on the C++ LSTM loops'
  private oneDNN ops and, through fused ``cho_gru``'s in-place ``out=`` writes, ``aot_eager``
  returned outputs 0.17 away from eager (torch 2.13, before this rule). Running them eagerly keeps
  auto's choice, so a compiled model is as fast as the eager one where these loops win, and nothing
  recompiles per sequence length. The alternative, compiling the reference loop, unrolls T steps per
  layer and direction (the slow inductor test of a 2-layer LSTM at T = 7 takes about two minutes on
  a shared 2-core machine) for no gain (design section 4: compiling the step gave 0.85x to 1.6x).
  ``torch.compile(fullgraph=True)`` cannot hold a graph break: name ``backend="reference"`` (or
  ``"native"``, ``"scan"``) there.
- ``torch.export`` (``Problem.exporting``): an exported program must hold the computation as a
  graph, so only the traceable backends run (``EXPORT_ORDER``: native, scan, reference; auto takes
  the first that supports the problem) and one named outside them raises ``NotSupported``.
  torch.export puts module attributes back after tracing, so ``last_backend`` does not show what
  ran; the exported graph does. With native and reference the program is specialized to the
  example's time length (the reference loop is unrolled; torch's RNN ops specialize it too), the
  batch may stay dynamic, and a dynamic time axis raises ``NotSupported`` naming ``rnnkit export``,
  which writes ONNX / TorchScript with the loop intact. The scan (mingru, minlstm) keeps the time
  axis dynamic.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import torch

from . import fused, native, reference, scan, triton
from .fused import extension as fused_extension


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
    exporting: bool = False  # under torch.export (torch.compiler.is_exporting()): only EXPORT_ORDER's backends run
    hidden_size: int | None = None  # H of the layer; None where the caller does not say (auto then ignores it)
    proj_size: int = 0  # R < H of a projected LSTM, 0 where there is none


BACKENDS: dict[str, ModuleType] = {"reference": reference, "native": native, "fused": fused, "scan": scan,
                                   "triton": triton}  # triton: only when named, never by auto

# auto's fixed table: the first backend here that supports the problem runs it. torch's own
# kernels (oneDNN / cuDNN) are the fastest for the cells they have; the reference loop runs
# everything. The fused and scan backends slot in here, where benchmarks/ shows them faster.
AUTO_ORDER: tuple[str, ...] = ("native", "fused", "reference")

# Backends torch.compile runs eagerly, behind a graph break (module notes); torch.export refuses them.
OPAQUE: frozenset[str] = frozenset({"fused", "triton"})

# auto's table under torch.export: the backends whose computation an exported program can hold.
# torch's kernels first, as in AUTO_ORDER; the scan before the loop, for its dynamic time axis.
EXPORT_ORDER: tuple[str, ...] = ("native", "scan", "reference")

# For a program with every sequence length: what rnnkit.export writes (its loop is TorchScript).
EXPORT_ALTERNATIVE = ("For a model that runs at any sequence length, and with lengths, use `rnnkit export` (in "
                      "Python rnnkit.export.export_layer(layer, path, format='onnx' or 'torchscript')), which keeps "
                      "the time loop.")

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

# rnnkit's C++ LSTM loop (fused) against torch's oneDNN LSTM on CPU, float32, ratio of times fused / nn.LSTM on a
# quiet 2-core AVX2 EPYC (benchmarks/fused_lstm.py --cells lstm, docs/results.md "auto's LSTM rows"):
# - inference (the tiled step): faster at every batch measured up to H = 512: 0.77 at (B,T,I,H) =
#   (1,1000,64,256), 0.87 at (4,250,64,256), 0.80 at (8,200,64,256), 0.94 at (16,100,128,256), 0.88 at
#   (32,100,128,256), 0.93 at (64,256,256,512); not at H = 1024 (1.05 at (16,512,128,1024));
# - training: faster only at the smallest batches (rnnkit's gemv): 0.70 at batch 1, 0.95 at 4, even at 8 (0.99 /
#   1.03), slower at 16 (1.16-1.22).
# Only the plain float32 LSTM (no projection, no autocast) and only where the C++ loops load: the fused backend's
# Python loops are far slower than torch's.
FUSED_LSTM_MAX_HIDDEN_INFERENCE_CPU = 512
FUSED_LSTM_MAX_BATCH_TRAINING_CPU = 4


def auto_order(problem: Problem) -> tuple[str, ...]:
    """auto's preference for this problem; the first backend that supports it runs."""
    if problem.device == "cuda" and problem.steps >= SCAN_MIN_STEPS_CUDA:
        return ("scan", *AUTO_ORDER)  # scan supports only mingru and minlstm
    if (problem.cell == "gru" and problem.device == "cpu" and problem.training
            and problem.batch <= FUSED_GRU_MAX_BATCH_CPU):
        return ("fused", *AUTO_ORDER)
    if problem.cell == "lstm" and _fused_lstm_wins(problem):
        return ("fused", *AUTO_ORDER)
    return AUTO_ORDER


def _fused_lstm_wins(problem: Problem) -> bool:
    """Where rnnkit's C++ LSTM loop is faster than torch's on CPU (the measurements above)."""
    if (problem.device != "cpu" or problem.dtype != torch.float32 or problem.autocast is not None
            or problem.proj_size or problem.cell_options or problem.regularizers):
        return False
    if problem.training:
        wins = problem.batch <= FUSED_LSTM_MAX_BATCH_TRAINING_CPU
    else:
        wins = problem.hidden_size is not None and problem.hidden_size <= FUSED_LSTM_MAX_HIDDEN_INFERENCE_CPU
    return wins and fused_extension.load() is not None


def backend_names() -> list[str]:
    return ["auto", *BACKENDS]


def select(requested: str, problem: Problem) -> ModuleType:
    """The backend module that runs ``problem``: the one named, or auto's choice."""
    if problem.exporting:
        return _select_for_export(requested, problem)
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


def _select_for_export(requested: str, problem: Problem) -> ModuleType:
    """Under torch.export: the named backend or auto's first of EXPORT_ORDER, if it can be exported."""
    reasons = {}
    for name in EXPORT_ORDER if requested == "auto" else (requested,):
        reason = _export_reason(name, problem)
        if reason is None:
            return BACKENDS[name]
        reasons[name] = reason
    why = "; ".join(f"{name}: {reason}" for name, reason in reasons.items())
    hint = "" if requested == "auto" else " Under torch.export backend='auto' picks an exportable backend."
    raise NotSupported(f"torch.export cannot export this {problem.cell} layer with backend={requested!r}: {why}."
                       f"{hint} {EXPORT_ALTERNATIVE}")


def _export_reason(name: str, problem: Problem) -> str | None:
    """Why backend ``name`` cannot run ``problem`` under torch.export, or None."""
    if name not in EXPORT_ORDER:
        return (f"its loops are autograd.Functions over {'C++' if name == 'fused' else name} kernels, which an "
                f"exported program cannot hold (exportable: {', '.join(EXPORT_ORDER)})")
    reason = BACKENDS[name].supports(problem)
    if reason is not None:
        return reason
    if name != "scan" and not isinstance(problem.steps, int):  # a SymInt: the export asked for a dynamic time axis
        return ("its program is fixed to the example's number of steps (its loop is unrolled, or torch's RNN op "
                "specializes it), so the time axis of x cannot be dynamic (export with a static time axis; the batch "
                "may stay dynamic)")
    return None


def run(backend: ModuleType, layer, x, lengths, state):
    """``backend.run(layer, x, lengths, state)``; under torch.compile an OPAQUE backend runs eagerly."""
    if backend.NAME in OPAQUE and torch.compiler.is_compiling():
        return _run_eagerly(backend, layer, x, lengths, state)
    return backend.run(layer, x, lengths, state)


# torch.compiler.disable, lazily: torch._disable_dynamo imports dynamo (seconds) on the first call, not
# when rnnkit is imported, and dynamo skips it, so a compiled model breaks its graph once here.
@torch._disable_dynamo
def _run_eagerly(backend: ModuleType, layer, x, lengths, state):
    return backend.run(layer, x, lengths, state)


__all__ = ["AUTO_ORDER", "BACKENDS", "EXPORT_ORDER", "OPAQUE", "auto_order", "NotSupported", "Problem", "backend_names",
           "run", "select"]
