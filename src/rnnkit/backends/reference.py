"""The reference backend: the textbook time loop, with autograd doing BPTT.

It is the specification every other backend is tested against, so it stays short and
obvious: ``rnnkit.driver.run_stack`` (layers, directions, lengths, regularizers) around
``rnnkit.driver.time_loop``: per layer and direction one input projection for all steps, then
the cell's ``step`` once per time step.
"""

from __future__ import annotations

from torch import Tensor

from ..cells import State
from ..driver import run_stack, time_loop

NAME = "reference"


def supports(problem) -> str | None:
    return None  # every cell, device and dtype


def run(layer, x: Tensor, lengths: Tensor | None, state: State) -> tuple[Tensor, State]:
    """Stacked, optionally bidirectional run over x (T, B, I): out (T, B, D*R) and final state."""
    return run_stack(layer, x, lengths, state, time_loop)
