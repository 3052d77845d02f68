"""The reference backend: the textbook time loop, with autograd doing BPTT.

It is the specification every other backend is tested against, so it stays short and
obvious: per layer and direction, one input projection for all steps, then the cell's
``step`` once per time step. Variable lengths are handled by masking (a finished
sequence keeps its state and outputs zeros) and the reverse direction runs over each
sequence reversed within its own length, so it starts at that sequence's last element.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cells import Cell, State, map_state

NAME = "reference"


def supports(problem) -> str | None:
    return None  # every cell, device and dtype


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of a time-major (T, B, ...) tensor within its own length.

    Positions past a sequence's end stay where they are; the map is its own inverse.
    """
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T, device=x.device)[:, None]  # (T, 1)
    index = torch.where(t < lengths, lengths - 1 - t, t)  # (T, B)
    index = index.view(T, -1, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)


def time_loop(
    cell: Cell, gx: Tensor, state: State, weights, lengths: Tensor | None
) -> tuple[Tensor, State]:
    """Run ``cell.step`` over gx (T, B, G): outputs (T, B, R) and the state after each sequence's end."""
    outputs = []
    if lengths is None:
        for gx_t in gx.unbind(0):
            h, state = cell.step(gx_t, state, weights)
            outputs.append(h)
        return torch.stack(outputs), state
    running = torch.arange(gx.shape[0], device=gx.device)[:, None] < lengths  # (T, B)
    for gx_t, m in zip(gx.unbind(0), running.unbind(0)):
        m = m[:, None]  # (B, 1)
        h, new_state = cell.step(gx_t, state, weights)
        state = map_state(lambda new, old, m=m: torch.where(m, new, old), new_state, state)
        outputs.append(torch.where(m, h, torch.zeros_like(h)))
    return torch.stack(outputs), state


def run(layer, x: Tensor, lengths: Tensor | None, state: State) -> tuple[Tensor, State]:
    """Stacked, optionally bidirectional run over x (T, B, I): out (T, B, D*R) and final state."""
    return run_stack(layer, x, lengths, state, time_loop)


def run_stack(layer, x: Tensor, lengths: Tensor | None, state: State, recurrence) -> tuple[Tensor, State]:
    """Layers, directions and dropout around ``recurrence(cell, gx, state, weights, lengths)``.

    Every backend that runs the time loop itself (reference, fused, scan) shares this driver:
    per layer and direction one input projection for all steps, the reverse direction over
    each sequence reversed within its own length, dropout between layers in training.
    """
    D = layer.num_directions
    finals = []
    layer_input = x
    for k in range(layer.num_layers):
        outputs = []
        for d in range(D):
            w = layer.weights(k, d)
            s0 = map_state(lambda s, i=k * D + d: s[i], state)
            xin = layer_input if d == 0 else reverse_padded(layer_input, lengths)
            out, s = recurrence(layer.cell, layer.cell.input_projection(xin, w), s0, w, lengths)
            outputs.append(out if d == 0 else reverse_padded(out, lengths))
            finals.append(s)
        layer_input = outputs[0] if D == 1 else torch.cat(outputs, dim=-1)  # (T, B, D*R)
        if k < layer.num_layers - 1 and layer.dropout > 0 and layer.training:
            layer_input = F.dropout(layer_input, layer.dropout, training=True)
    return layer_input, map_state(lambda *s: torch.stack(s), *finals)
