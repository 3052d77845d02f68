"""rnnkit: every recurrent cell the textbooks teach, as drop-in PyTorch layers.

    >>> import rnnkit
    >>> rnnkit.cells()[:4]
    ['rnn_tanh', 'rnn_relu', 'lstm', 'peephole_lstm']
    >>> layer = rnnkit.Recurrent("layernorm_lstm", 64, 128, num_layers=2, bidirectional=True)
"""

from ._version import __version__
from .backends import NotSupported
from .cells import LSTMState, cells, make_cell
from .cells.conv import conv_cells
from .compat import GRU, LSTM, RNN
from .conv_recurrent import ConvRecurrent
from .recurrent import Recurrent


def load(directory, device: str = "cpu"):
    """The trained task model in ``directory`` (a checkpoint or run directory); see ``rnnkit.tasks.load``.

    Imported when called, so ``import rnnkit`` imports no task, nor the trainer.
    """
    from .tasks import load as load_task

    return load_task(directory, device)


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
