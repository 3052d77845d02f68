"""What ``torch.jit.script`` compiles in place of a ``Recurrent`` (``Recurrent.__prepare_scriptable__``).

TorchScript cannot compile ``Recurrent`` itself: it picks its backend per call in Python code and its
cells are Python objects. So script compiles an equivalent module, built on the layer's own Parameter
objects (the scripted module and the layer share their weights: training one trains the other):

- torch's cells (``rnn_tanh``, ``rnn_relu``, ``lstm``, ``gru``; ``rnnkit.RNN``, ``LSTM``, ``GRU``) without
  rnnkit's regularizers: torch.nn's ``RNN`` / ``LSTM`` / ``GRU``, which compute exactly their function,
  so the scripted layer is torch's scripted module: dropout between layers, ``PackedSequence`` input, the
  LSTM state a plain ``(h, c)`` tuple, torch's kernels whatever ``backend`` says. As with torch.nn's own
  modules (torch 2.13), its ``forward`` is overloaded (tensor or packed input), so it is called from
  scripted code, e.g. inside a model; at top level the two are ``forward__0`` and ``forward__1``.
- every other cell: ``ScriptedLoop``, the loop ``rnnkit export`` writes (``rnnkit.scripted_loop.ScriptedStack``:
  each step is the cell's own ``step``, traced, and the loop over time, layers and directions is
  TorchScript), called ``forward(input, hx=None, lengths=None) -> (output, h_n)`` or
  ``(output, (h_n, c_n))``, any batch size and length, ``lengths`` masked as ``Recurrent`` masks them.
  It has no dropout and no regularizers, so a layer with either (in any mode: the scripted module can
  be trained later) is refused, as is a layer off the CPU (the steps are traced on CPU examples).

A refusal is ``NotSupported`` naming the reason and the alternatives (``rnnkit export``, torch.compile).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from .backends import NotSupported
from .cells import LSTMState
from .scripted_loop import ScriptedStack

# torch.nn's module for each cell it has
TORCH_CELLS = {"rnn_tanh": nn.RNN, "rnn_relu": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def scriptable(layer) -> nn.Module:
    """The module ``torch.jit.script`` compiles in place of ``layer`` (module notes), or ``NotSupported``."""
    if layer.cell.name in TORCH_CELLS and not layer.cell_options and not layer.regularizers.active():
        return torch_equivalent(layer)
    reason = None
    if layer.regularizers.active():
        reason = f"TorchScript's loop has no {', '.join(layer.regularizers.active())}"
    elif layer.dropout > 0 and layer.num_layers > 1:
        reason = f"TorchScript's loop has no dropout between layers (dropout={layer.dropout})"
    elif layer.weight_ih_l0.device.type != "cpu":
        reason = f"its steps are traced on the CPU; the layer is on {layer.weight_ih_l0.device} (script it on the CPU)"
    if reason is not None:
        raise NotSupported(f"torch.jit.script cannot compile rnnkit.Recurrent({layer.cell.name!r}): {reason}. Use "
                           "torch.compile, or for a TorchScript file of the layer in eval mode `rnnkit export` (in "
                           "Python rnnkit.export.export_layer(layer, path, format='torchscript'))")
    return ScriptedLSTMFamily(layer) if layer.cell.state_type is LSTMState else ScriptedLoop(layer)


def torch_equivalent(layer) -> nn.Module:
    """torch.nn's RNN / LSTM / GRU computing ``layer``'s function, on ``layer``'s own Parameter objects."""
    common = {"num_layers": layer.num_layers, "bias": layer.bias, "batch_first": layer.batch_first,
              "dropout": layer.dropout, "bidirectional": layer.bidirectional, "device": "meta",
              "dtype": layer.weight_ih_l0.dtype}  # meta: torch's own parameters are replaced at once, never allocated
    name = layer.cell.name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dropout with one layer: the layer itself warned when it was built
        if name == "lstm":
            module = nn.LSTM(layer.input_size, layer.hidden_size, proj_size=layer.proj_size, **common)
        elif name == "gru":
            module = nn.GRU(layer.input_size, layer.hidden_size, **common)
        else:
            module = nn.RNN(layer.input_size, layer.hidden_size, nonlinearity=name.removeprefix("rnn_"), **common)
    for weight in module._flat_weights_names:  # RNNBase.__setattr__ keeps _flat_weights in step
        setattr(module, weight, getattr(layer, weight))
    module.flatten_parameters()  # on CUDA, as torch.nn keeps its weights; a no-op on the CPU
    return module.train(layer.training)


class ScriptedLoop(nn.Module):
    """A layer whose state is one tensor, as TorchScript runs it: ``forward(input, hx=None, lengths=None)``.

    input (T, B, I) or batch-first (B, T, I); hx (L*D, B, R) or None (zeros); lengths (B,) or None (all T);
    returns output (T, B, D*R) (or batch-first), zero past each sequence's end, and h_n (L*D, B, R).
    """

    __constants__ = ["batch_first", "num_states", "recurrent_size", "hidden_size"]

    def __init__(self, layer) -> None:
        super().__init__()
        self.stack = ScriptedStack(layer, masked=True, given_state=True)  # lengths of all T steps mask nothing
        self.batch_first = layer.batch_first
        self.num_states = layer.num_layers * layer.num_directions
        self.recurrent_size, self.hidden_size = layer.proj_size or layer.hidden_size, layer.hidden_size
        self.train(layer.training)

    def run(self, input: Tensor, h0: Tensor | None, c0: Tensor | None,
            lengths: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        if input.dim() != 3:
            raise ValueError("input must be 3-D (T, B, I), or (B, T, I) with batch_first, got " + str(input.dim())
                             + "-D")
        x = input.transpose(0, 1) if self.batch_first else input  # (T, B, I)
        T, B = x.shape[0], x.shape[1]
        if lengths is None:
            lengths = torch.full([B], T, dtype=torch.int64, device=x.device)
        else:
            lengths = lengths.to(device=x.device, dtype=torch.int64)
        if h0 is None:
            h0 = torch.zeros(self.num_states, B, self.recurrent_size, dtype=x.dtype, device=x.device)
        if c0 is None:
            c0 = torch.zeros(self.num_states, B, self.hidden_size, dtype=x.dtype, device=x.device)
        out, h, c = self.stack(x, lengths, h0, c0)
        return (out.transpose(0, 1) if self.batch_first else out), h, c

    def forward(self, input: Tensor, hx: Tensor | None = None,
                lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out, h, _ = self.run(input, hx, None, lengths)
        return out, h


class ScriptedLSTMFamily(ScriptedLoop):
    """``ScriptedLoop`` for the LSTM family: hx and the returned state are ``(h (L*D, B, R), c (L*D, B, H))``."""

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None,
                lengths: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h0: Tensor | None = None
        c0: Tensor | None = None
        if hx is not None:
            h0, c0 = hx[0], hx[1]
        out, h, c = self.run(input, h0, c0, lengths)
        return out, (h, c)
