"""The time loop ``rnnkit export`` writes and ``torch.jit.script`` compiles for rnnkit's own cells.

A ``Recurrent`` in eval mode as TorchScript with its loop intact: each layer and direction's input
projection and step are the cell's own ``cell.input_projection`` and ``cell.step``, traced at one example
shape (``EXAMPLE``; a step has no loop, so tracing keeps exactly the library's equations), and the
driver around them (``Direction``, ``ScriptedStack``: layers, directions, lengths) is written to be
``torch.jit.script``-ed, so its ``for t in range(T)`` stays a loop at any length. ``rnnkit.export``
writes it to ONNX / TorchScript files; ``rnnkit.script`` hands it to ``torch.jit.script``. It reads the
layer only through its public attributes, so it imports neither of them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .cells import LSTMState
from .driver import reverse_within, running_mask

EXAMPLE = (2, 5)  # (B, T) the projection and step are traced at


class Projection(nn.Module):
    """``cell.input_projection`` over its weights: (T, B, I) -> (T, B, G*H). Traced."""

    def __init__(self, cell, weights: dict[str, Tensor]) -> None:
        super().__init__()
        self.cell, self.names = cell, list(weights)
        for name, w in weights.items():
            self.register_parameter(name, w if isinstance(w, nn.Parameter) else nn.Parameter(w))

    def forward(self, x: Tensor) -> Tensor:
        return self.cell.input_projection(x, {name: getattr(self, name) for name in self.names})


class Step(Projection):
    """``cell.step`` with a uniform signature: (gx_t (B, G*H), h (B, R), c (B, H)) -> (h, c). Traced.

    Cells whose state is one tensor ignore c and hand it back, so the driver needs one code path.
    The step's output equals the new h for every cell (without zoneout, which is training-only).
    """

    def forward(self, gx: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        w = {name: getattr(self, name) for name in self.names}
        if self.cell.state_type is LSTMState:
            _, state = self.cell.step(gx, LSTMState(h, c), w)
            return state.h, state.c
        _, state = self.cell.step(gx, h, w)
        return state, c


def reverse(x: Tensor, lengths: Tensor, masked: bool) -> Tensor:
    """Each sequence of x (T, B, F) reversed within its own length (``driver.reverse_within``), or all of it."""
    return reverse_within(x, lengths) if masked else x.flip(0)


class Direction(nn.Module):
    """One layer and direction over time: the scripted loop around a traced projection and step.

    ``masked`` (with lengths) and ``reverse`` are compile-time constants, not Optional inputs: the
    legacy exporter leaves an untyped ONNX Optional behind for a ``lengths: Optional[Tensor]`` that is None.
    """

    __constants__ = ["reverse", "masked"]  # (not Final[...]: from __future__ annotations hide it from TorchScript)

    def __init__(self, projection: torch.jit.ScriptModule, step: torch.jit.ScriptModule, reverse: bool,
                 masked: bool) -> None:
        super().__init__()
        self.projection, self.step, self.reverse, self.masked = projection, step, reverse, masked

    def forward(self, x: Tensor, h: Tensor, c: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.reverse:
            x = reverse(x, lengths, self.masked)
        gx = self.projection(x)  # (T, B, G*H)
        steps = running_mask(lengths, gx.shape[0]) if self.masked else lengths  # (T, B); unread unless masked
        outputs: list[Tensor] = []
        for t in range(gx.shape[0]):
            h_new, c_new = self.step(gx[t], h, c)
            if self.masked:
                running = steps[t].unsqueeze(1)  # (B, 1): a finished sequence keeps its state
                h = torch.where(running, h_new, h)
                c = torch.where(running, c_new, c)
                outputs.append(torch.where(running, h_new, torch.zeros_like(h_new)))
            else:
                h, c = h_new, c_new
                outputs.append(h_new)
        out = torch.stack(outputs)  # (T, B, R)
        if self.reverse:
            out = reverse(out, lengths, self.masked)
        return out, h, c


class ScriptedStack(nn.Module):
    """Layers and directions, as ``driver.run_stack`` in eval mode. Scripted.

    forward(x (T, B, I), lengths (B,), h0 (L*D, B, R), c0 (L*D, B, H)) -> out (T, B, D*R),
    h (L*D, B, R), c (L*D, B, H) (c is h for cells whose state is one tensor). lengths is read only
    when ``masked``, h0 and c0 only when ``given_state`` (else the state starts at zeros).
    """

    __constants__ = ["num_states", "recurrent_size", "hidden_size", "given_state"]

    def __init__(self, layer, masked: bool, given_state: bool) -> None:
        super().__init__()
        gx_size = layer.cell.gates * layer.hidden_size
        out_size = layer.proj_size or layer.hidden_size
        B, T = EXAMPLE
        layers = []
        for k in range(layer.num_layers):
            in_size = layer.input_size if k == 0 else out_size * layer.num_directions
            directions = []
            for d in range(layer.num_directions):
                w = layer.weights(k, d)
                dtype = w["weight_ih"].dtype
                x = torch.randn(T, B, in_size, dtype=dtype)
                h, c = torch.randn(B, out_size, dtype=dtype), torch.randn(B, layer.hidden_size, dtype=dtype)
                with torch.no_grad():
                    # no check_trace: the exported file is checked against the layer as a whole
                    projection = torch.jit.trace(Projection(layer.cell, w), (x,), check_trace=False)
                    step = torch.jit.trace(Step(layer.cell, w), (torch.randn(B, gx_size, dtype=dtype), h, c),
                                           check_trace=False)
                directions.append(Direction(projection, step, d == 1, masked))
            layers.append(nn.ModuleList(directions))
        self.layers = nn.ModuleList(layers)
        self.num_states = layer.num_layers * layer.num_directions
        self.recurrent_size, self.hidden_size = out_size, layer.hidden_size
        self.given_state = given_state

    def forward(self, x: Tensor, lengths: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if not self.given_state:
            h0 = torch.zeros(self.num_states, x.shape[1], self.recurrent_size, dtype=x.dtype, device=x.device)
            c0 = torch.zeros(self.num_states, x.shape[1], self.hidden_size, dtype=x.dtype, device=x.device)
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        i = 0
        for directions in self.layers:
            outputs: list[Tensor] = []
            for direction in directions:
                out, h, c = direction(x, h0[i], c0[i], lengths)
                outputs.append(out)
                hs.append(h)
                cs.append(c)
                i += 1
            x = torch.cat(outputs, dim=2)  # (T, B, D*R)
        return x, torch.stack(hs), torch.stack(cs)
