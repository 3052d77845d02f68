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
from ..regularize import StepNoise, drop_weight, locked_dropout, step_noise

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
    cell: Cell, gx: Tensor, state: State, weights, lengths: Tensor | None, noise: StepNoise | None = None
) -> tuple[Tensor, State]:
    """Run ``cell.step`` over gx (T, B, G): outputs (T, B, R) and the state after each sequence's end.

    ``noise`` carries the in-loop regularizers' masks (``rnnkit.regularize``): hidden dropout
    on h_{t-1} in the recurrent products, and zoneout, where a unit keeps s_{t-1} instead of
    updating and the step outputs the zoned-out h.
    """
    running = None if lengths is None else torch.arange(gx.shape[0], device=gx.device)[:, None] < lengths  # (T, B)
    outputs = []
    for t, gx_t in enumerate(gx.unbind(0)):
        if noise is None or noise.hidden is None:
            h, new_state = cell.step(gx_t, state, weights)
        else:
            h, new_state = cell.step_dropped(gx_t, state, weights, noise.hidden)
        if noise is not None and noise.zoneout is not None:
            keep_t = map_state(lambda keep, t=t: keep[t], noise.zoneout)  # True: s_t = s_{t-1}
            new_state = map_state(lambda new, old, keep: torch.where(keep, old, new), new_state, state, keep_t)
            h = new_state if isinstance(new_state, Tensor) else new_state.h
        if running is not None:
            m = running[t][:, None]  # (B, 1)
            new_state = map_state(lambda new, old, m=m: torch.where(m, new, old), new_state, state)
            h = torch.where(m, h, torch.zeros_like(h))
        state = new_state
        outputs.append(h)
    return torch.stack(outputs), state


def run(layer, x: Tensor, lengths: Tensor | None, state: State) -> tuple[Tensor, State]:
    """Stacked, optionally bidirectional run over x (T, B, I): out (T, B, D*R) and final state."""
    return run_stack(layer, x, lengths, state, time_loop)


def run_stack(layer, x: Tensor, lengths: Tensor | None, state: State, recurrence) -> tuple[Tensor, State]:
    """Layers, directions and dropout around ``recurrence(cell, gx, state, weights, lengths)``.

    Every backend that runs the time loop itself (reference, fused, scan) shares this driver:
    per layer and direction one input projection for all steps, the reverse direction over
    each sequence reversed within its own length, dropout between layers in training, and
    the regularizers of ``rnnkit.regularize``, their masks sampled here in a fixed order
    (per layer: input mask; per direction: weight-drop mask, hidden mask, zoneout masks),
    so every backend driven from here draws the same masks from the same seed.
    """
    D = layer.num_directions
    reg = layer.regularizers if layer.training else None
    finals = []
    layer_input = x
    for k in range(layer.num_layers):
        if reg is not None:
            layer_input = locked_dropout(layer_input, reg.input_dropout)
        outputs = []
        for d in range(D):
            w = layer.weights(k, d)
            s0 = map_state(lambda s, i=k * D + d: s[i], state)
            noise = None
            if reg is not None:
                if reg.weight_drop:
                    w = {**w, "weight_hh": drop_weight(w["weight_hh"], reg.weight_drop)}
                noise = step_noise(reg, s0, x.shape[0])
            xin = layer_input if d == 0 else reverse_padded(layer_input, lengths)
            gx = layer.cell.input_projection(xin, w)
            if noise is None:
                out, s = recurrence(layer.cell, gx, s0, w, lengths)
            else:
                out, s = recurrence(layer.cell, gx, s0, w, lengths, noise)
            outputs.append(out if d == 0 else reverse_padded(out, lengths))
            finals.append(s)
        layer_input = outputs[0] if D == 1 else torch.cat(outputs, dim=-1)  # (T, B, D*R)
        if k < layer.num_layers - 1 and layer.dropout > 0 and layer.training:
            layer_input = F.dropout(layer_input, layer.dropout, training=True)
    if reg is not None:
        layer_input = locked_dropout(layer_input, reg.output_dropout)
    return layer_input, map_state(lambda *s: torch.stack(s), *finals)
