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

from . import fused, native, reference


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


BACKENDS: dict[str, ModuleType] = {"reference": reference, "native": native, "fused": fused}

# auto's fixed table: the first backend here that supports the problem runs it. torch's own
# kernels (oneDNN / cuDNN) are the fastest for the cells they have; the reference loop runs
# everything. The fused and scan backends slot in here, where benchmarks/ shows them faster.
AUTO_ORDER: tuple[str, ...] = ("native", "fused", "reference")


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
    for name in AUTO_ORDER:
        backend = BACKENDS[name]
        if backend.supports(problem) is None:
            return backend
    raise NotSupported(f"no backend supports {problem}")  # unreachable: reference runs everything


__all__ = ["AUTO_ORDER", "BACKENDS", "NotSupported", "Problem", "backend_names", "select"]
