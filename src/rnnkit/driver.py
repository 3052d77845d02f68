"""The one time-loop driver: layers, directions, lengths and masks, around a cell's ``step``.

Every place that runs a recurrent layer over time shares this module, so a change to
lengths, reversal, zoneout or dropout between layers is made once:

- ``run_stack``: layers and directions around a ``recurrence`` (the time loop of one layer
  and direction). The reference backend passes ``time_loop``; the fused, triton and scan
  backends pass their kernels; ``ConvRecurrent`` passes ``time_loop`` over its conv cells.
- ``time_loop``: the textbook loop, ``cell.step`` once per step, with the lengths mask and
  the in-loop regularizers (hidden dropout, zoneout). It is the specification every fast
  kernel is tested against. The gradient diagnostics run it too, keeping every step's state.
- ``step_layers``: one step through every layer (``Recurrent.step``, ``ConvRecurrent.step``).
- ``running_mask``, ``reverse_within``: the step masks and the reversal within lengths, written
  so that TorchScript compiles them: ``rnnkit.export``'s scripted loop calls the same functions.
- ``dropout_between``: dropout on the outputs of every layer but the last (also the stepper's).

Variable lengths are handled by masking: a finished sequence keeps its state and outputs
zeros, and the reverse direction runs over each sequence reversed within its own length, so it
starts at that sequence's last element.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .cells import State, map_state
from .regularize import StepNoise, drop_weight, locked_dropout, step_noise


def running_mask(lengths: Tensor, T: int) -> Tensor:
    """(T, B) bool, True where step t of sequence b runs (t < lengths[b]). TorchScript-compilable."""
    return torch.arange(T, device=lengths.device).unsqueeze(1) < lengths.unsqueeze(0)


def reverse_within(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence of a time-major (T, B, ...) tensor within its own length. TorchScript-compilable.

    Positions past a sequence's end stay where they are; the map is its own inverse.
    """
    T, B = x.shape[0], x.shape[1]
    flat = x.reshape(T, B, -1)  # (T, B, F): one gather for any trailing shape
    t = torch.arange(T, device=x.device).unsqueeze(1)  # (T, 1)
    index = torch.where(t < lengths.unsqueeze(0), lengths.unsqueeze(0) - 1 - t, t)  # (T, B)
    return flat.gather(0, index.unsqueeze(2).expand_as(flat)).reshape(x.shape)


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """``reverse_within``, or the plain flip over time where every sequence has all T steps (lengths None)."""
    return x.flip(0) if lengths is None else reverse_within(x, lengths)


def dropout_between(y: Tensor, k: int, num_layers: int, p: float, training: bool) -> Tensor:
    """Dropout with probability p on layer k's output y when another layer reads it, in training only."""
    if k < num_layers - 1 and p > 0 and training:
        return F.dropout(y, p, training=True)
    return y


def _state_h(state: State) -> Tensor:
    return state if isinstance(state, Tensor) else state.h


def time_loop(cell, gx: Tensor, state: State, weights, lengths: Tensor | None, noise: StepNoise | None = None,
              states: list[State] | None = None) -> tuple[Tensor, State]:
    """Run ``cell.step`` over gx (T, B, G, *S): outputs (T, B, R, *S) and the state after each sequence's end.

    ``noise`` carries the in-loop regularizers' masks (``rnnkit.regularize``): hidden dropout
    on h_{t-1} in the recurrent products, and zoneout, where a unit keeps s_{t-1} instead of
    updating. A step outputs its state's h (every cell's step returns it as its output), after
    zoneout, and zero past a sequence's end. ``states``, where given, receives the state after
    every step: each is a node of the graph, so autograd can give dL/ds_t (``rnnkit.gradients``).
    """
    running = None if lengths is None else running_mask(lengths, gx.shape[0])  # (T, B)
    outputs = []
    for t, gx_t in enumerate(gx.unbind(0)):
        if noise is None or noise.hidden is None:
            _, new_state = cell.step(gx_t, state, weights)
        else:
            _, new_state = cell.step_dropped(gx_t, state, weights, noise.hidden)
        if noise is not None and noise.zoneout is not None:
            keep_t = map_state(lambda keep, t=t: keep[t], noise.zoneout)  # True: s_t = s_{t-1}
            new_state = map_state(lambda new, old, keep: torch.where(keep, old, new), new_state, state, keep_t)
        h = _state_h(new_state)
        if running is not None:
            m = running[t].view(-1, *([1] * (h.dim() - 1)))  # (B, 1, ..., 1)
            new_state = map_state(lambda new, old, m=m: torch.where(m, new, old), new_state, state)
            h = torch.where(m, _state_h(new_state), torch.zeros_like(h))
        state = new_state
        if states is not None:
            states.append(state)
        outputs.append(h)
    return torch.stack(outputs), state


def run_stack(layer, x: Tensor, lengths: Tensor | None, state: State, recurrence,
              project=None) -> tuple[Tensor, State]:
    """Layers, directions and dropout around ``recurrence(cell, gx, state, weights, lengths[, noise])``.

    ``project(cell, x, weights) -> gx`` forms gx, ``cell.input_projection`` when None (a backend
    that does part or all of the projection inside its loop passes its own, and its ``recurrence``
    reads what it returns: the fused LSTM family).

    ``layer`` is a ``Recurrent`` or a ``ConvRecurrent``: it gives ``cell``, ``num_layers``,
    ``num_directions``, ``dropout``, ``regularizers``, ``training`` and ``weights(k, d)``; x is
    (T, B, I, *S) and the directions' outputs are concatenated along dim 2, (T, B, D*R, *S).
    Per layer and direction: one input projection for all steps, the reverse direction over each
    sequence reversed within its own length, dropout between layers in training, and the
    regularizers of ``rnnkit.regularize``, their masks sampled here in a fixed order (per layer:
    input mask; per direction: weight-drop mask, hidden mask, zoneout masks), so every backend
    driven from here draws the same masks from the same seed.
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
            # (T, B, G*H, *S): all steps at once
            gx = layer.cell.input_projection(xin, w) if project is None else project(layer.cell, xin, w)
            if noise is None:
                out, s = recurrence(layer.cell, gx, s0, w, lengths)
            else:
                out, s = recurrence(layer.cell, gx, s0, w, lengths, noise)
            outputs.append(out if d == 0 else reverse_padded(out, lengths))
            finals.append(s)
        layer_input = outputs[0] if D == 1 else torch.cat(outputs, dim=2)  # (T, B, D*R, *S)
        layer_input = dropout_between(layer_input, k, layer.num_layers, layer.dropout, layer.training)
    if reg is not None:
        layer_input = locked_dropout(layer_input, reg.output_dropout)
    return layer_input, map_state(lambda *s: torch.stack(s), *finals)


def step_layers(layer, x_t: Tensor, state: State) -> tuple[Tensor, State]:
    """One step of a unidirectional layer through every layer, with autograd: x_t (B, I, *S) -> y_t and the state.

    ``state`` has ``forward``'s shapes, (L, B, R, *S) or LSTMState of such; the new state too.
    """
    finals = []
    y = x_t
    for k in range(layer.num_layers):
        w = layer.weights(k, 0)
        gx = layer.cell.input_projection(y.unsqueeze(0), w).squeeze(0)  # (B, G*H, *S)
        y, s = layer.cell.step(gx, map_state(lambda s, k=k: s[k], state), w)
        finals.append(s)
        y = dropout_between(y, k, layer.num_layers, layer.dropout, layer.training)
    return y, map_state(lambda *s: torch.stack(s), *finals)
