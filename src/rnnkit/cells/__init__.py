"""The cell registry: every recurrent cell rnnkit knows, by name.

An architectural choice is a registry entry, not a boolean flag: ``cho_gru`` is a
different cell from ``gru``, not ``gru`` with ``reset_after=False``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from .base import Cell, LSTMState, State, map_state
from .elman import ElmanCell
from .gru import ChoGRUCell, GRUCell
from .indrnn import IndRNNCell
from .lstm import CIFGLSTMCell, LayerNormLSTMCell, LSTMCell, PeepholeLSTMCell
from .minimal import MinGRUCell, MinLSTMCell

_REGISTRY: dict[str, Callable[..., Cell]] = {
    "rnn_tanh": lambda: ElmanCell("tanh"),
    "rnn_relu": lambda: ElmanCell("relu"),
    "lstm": LSTMCell,
    "peephole_lstm": PeepholeLSTMCell,
    "layernorm_lstm": LayerNormLSTMCell,
    "cifg_lstm": CIFGLSTMCell,
    "gru": GRUCell,
    "cho_gru": ChoGRUCell,
    "mingru": MinGRUCell,
    "minlstm": MinLSTMCell,
    "indrnn": IndRNNCell,
}


def cells() -> list[str]:
    """Names of every registered cell, in the order of design section 3."""
    return list(_REGISTRY)


def make_cell(name: str, **options) -> Cell:
    """The cell registered as ``name``, built with its cell options (e.g. indrnn's ``nonlinearity``)."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"cell must be one of {', '.join(_REGISTRY)}; got {name!r}")
    factory = _REGISTRY[name]
    accepted = list(inspect.signature(factory).parameters)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "no cell options"
        raise TypeError(f"cell {name!r} got unknown option(s) {', '.join(unknown)}; it takes {takes}")
    return factory(**options)


__all__ = [
    "Cell",
    "LSTMState",
    "State",
    "cells",
    "make_cell",
    "map_state",
]
