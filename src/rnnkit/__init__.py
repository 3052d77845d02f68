"""rnnkit: every recurrent cell the textbooks teach, as drop-in PyTorch layers.

    >>> import rnnkit
    >>> rnnkit.cells()[:4]
    ['rnn_tanh', 'rnn_relu', 'lstm', 'peephole_lstm']
    >>> layer = rnnkit.Recurrent("layernorm_lstm", 64, 128, num_layers=2, bidirectional=True)
"""

__version__ = "0.1.0"

from .backends import NotSupported
from .cells import LSTMState, cells, make_cell
from .cells.conv import conv_cells
from .compat import GRU, LSTM, RNN
from .conv_recurrent import ConvRecurrent
from .recurrent import Recurrent
from .tasks import load

__all__ = [
    "ConvRecurrent",
    "GRU",
    "LSTM",
    "LSTMState",
    "NotSupported",
    "RNN",
    "Recurrent",
    "__version__",
    "cells",
    "conv_cells",
    "load",
    "make_cell",
]
