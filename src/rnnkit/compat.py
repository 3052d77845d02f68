"""Drop-ins for torch.nn.RNN, torch.nn.LSTM and torch.nn.GRU on rnnkit's layer.

Same constructor and forward arguments, same return values and the same ``state_dict``
keys as their torch.nn namesakes, so weights move both ways; ``forward`` also takes
``lengths`` and picks its backend like ``rnnkit.Recurrent``.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from .recurrent import Recurrent


class RNN(Recurrent):
    r"""Elman RNN with torch.nn.RNN's arguments: ``nonlinearity`` "tanh" (default) or "relu".

    .. math:: h_t = \mathrm{act}(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, device=None, dtype=None, backend: str = "auto") -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(f"rnn_{nonlinearity}", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, 0, backend, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor | PackedSequence, hx: Tensor | None = None, lengths=None):
        return super().forward(input, hx, lengths)


class LSTM(Recurrent):
    r"""LSTM with torch.nn.LSTM's arguments, ``proj_size`` included; the state is ``LSTMState(h, c)``.

    .. math::
        i, f, g, o = \sigma, \sigma, \tanh, \sigma \text{ of } W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}
        c_t = f \odot c_{t-1} + i \odot g, \qquad h_t = W_{hr}\,(o \odot \tanh(c_t))
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, backend: str = "auto") -> None:
        super().__init__("lstm", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, backend, device, dtype)

    def forward(self, input: Tensor | PackedSequence, hx=None, lengths=None):
        return super().forward(input, hx, lengths)


class GRU(Recurrent):
    r"""GRU with torch.nn.GRU's arguments (reset gate after the recurrent product, as torch).

    .. math::
        r, z = \sigma(W_{i\cdot} x_t + b_{i\cdot} + W_{h\cdot} h_{t-1} + b_{h\cdot}), \quad
        n = \tanh(W_{in} x_t + b_{in} + r \odot (W_{hn} h_{t-1} + b_{hn})), \quad
        h_t = (1 - z) \odot n + z \odot h_{t-1}
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, backend: str = "auto") -> None:
        super().__init__("gru", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, backend, device, dtype)

    def forward(self, input: Tensor | PackedSequence, hx: Tensor | None = None, lengths=None):
        return super().forward(input, hx, lengths)
