r"""Recurrent regularizers: variational (locked) dropout, zoneout and weight-drop.

Each is a probability on ``rnnkit.Recurrent`` and acts only in training mode (``layer.train()``);
in evaluation mode every one is the identity, so an evaluated layer is the plain cell.

``input_dropout`` (Gal & Ghahramani 2016)
    One dropout mask per sequence, shared by all time steps, on the input of every layer
    (x for layer 0, the previous layer's output above it): x_t -> x_t * m / (1 - p).
``hidden_dropout`` (Gal & Ghahramani 2016)
    One mask per sequence and direction on h_{t-1} where it enters a recurrent product:
    W_hh (h_{t-1} * m / (1 - p)) for every gate. The GRU's interpolation z * h_{t-1} reads the
    undropped state, as Keras' ``recurrent_dropout`` does, so no memory is erased. Cells without
    a recurrent product (``mingru``, ``minlstm``) refuse it.
``output_dropout`` (Gal & Ghahramani 2016)
    One mask per sequence on the last layer's output, shared by all time steps.
``zoneout`` (Krueger et al. 2017)
    At each step each unit keeps its previous value with probability p instead of updating:
    s_t = d_t * s_{t-1} + (1 - d_t) * s~_t with d_t ~ Bernoulli(p), a fresh mask per step.
    A pair ``(p_h, p_c)`` sets the LSTM family's h and c apart (the paper's best character
    model zones out c with 0.5 and h with 0.05); a single number applies to every state part.
    The output of a step is its zoned-out h. In evaluation the cell runs unchanged (the
    paper instead mixes in the expectation p * s_{t-1} + (1 - p) * s~_t at test time).
``weight_drop`` (Merity et al. 2018, DropConnect of Wan et al. 2013)
    One dropout mask on the entries of W_hh per forward call, shared by the batch and all
    steps: W_hh -> W_hh * M / (1 - p). Cells without W_hh (``mingru``, ``minlstm``) refuse it.

Masks are sampled in a fixed order by the driver every loop-running backend shares
(``rnnkit.driver.run_stack``), so the same seed gives the same masks in every backend.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
from torch import Tensor

from .cells import Cell, LSTMState, State


class StepNoise(NamedTuple):
    """The in-loop regularizers' masks for one layer and direction, handed to a recurrence.

    hidden:  (B, R) dropout mask on h_{t-1} in the recurrent products, values 0 or 1/(1-p); or None
    zoneout: bool masks of the state's structure, each (T, B, size): True keeps s_{t-1}; or None
    """

    hidden: Tensor | None
    zoneout: State | None


@dataclass(frozen=True)
class Regularizers:
    """The probabilities of a layer's regularizers; 0 turns one off. See the module docstring."""

    input_dropout: float = 0.0
    hidden_dropout: float = 0.0
    output_dropout: float = 0.0
    zoneout: tuple[float, float] = (0.0, 0.0)  # (h, c); c is ignored by cells without one
    weight_drop: float = 0.0

    @classmethod
    def build(cls, cell: Cell, input_dropout=0.0, hidden_dropout=0.0, output_dropout=0.0, zoneout=0.0,
              weight_drop=0.0) -> Regularizers:
        """Validated probabilities for ``cell``: each in [0, 1); clear errors for cells that cannot take one."""
        for name, p in (("input_dropout", input_dropout), ("hidden_dropout", hidden_dropout),
                        ("output_dropout", output_dropout), ("weight_drop", weight_drop)):
            _check_probability(name, p)
        if isinstance(zoneout, (tuple, list)):
            if len(zoneout) != 2:
                raise ValueError(f"zoneout must be a number or a pair (h, c), got {zoneout!r}")
            _check_probability("zoneout[0] (h)", zoneout[0])
            _check_probability("zoneout[1] (c)", zoneout[1])
            if zoneout[1] and cell.state_type is not LSTMState:
                raise ValueError(f"zoneout={tuple(zoneout)!r} sets a cell-state probability, but cell "
                                 f"{cell.name!r} has no cell state c; give one number")
            zoneout = (float(zoneout[0]), float(zoneout[1]))
        else:
            _check_probability("zoneout", zoneout)
            zoneout = (float(zoneout), float(zoneout) if cell.state_type is LSTMState else 0.0)
        if not has_recurrent_weight(cell):
            for name, p in (("hidden_dropout", hidden_dropout), ("weight_drop", weight_drop)):
                if p:
                    raise ValueError(
                        f"{name}={p} needs a recurrent weight W_hh, but cell {cell.name!r} has none "
                        "(its gates read only x_t); use input_dropout, output_dropout or zoneout")
        return cls(float(input_dropout), float(hidden_dropout), float(output_dropout), zoneout, float(weight_drop))

    def active(self) -> tuple[str, ...]:
        """Names of the regularizers with a non-zero probability."""
        return tuple(f.name for f in fields(self) if any(_as_pair(getattr(self, f.name))))

    def any_in_loop(self) -> bool:
        """Whether one acts inside the time loop (hidden dropout, zoneout)."""
        return bool(self.hidden_dropout or any(self.zoneout))


def has_recurrent_weight(cell: Cell) -> bool:
    return "weight_hh" in cell.parameter_shapes(1, 1, 0, True)


def locked_mask(p: float, batch: int, features: int, like: Tensor) -> Tensor:
    """(B, F) mask with entries 0 (probability p) or 1 / (1 - p), to be shared by all time steps."""
    return torch.empty(batch, features, dtype=like.dtype, device=like.device).bernoulli_(1 - p).div_(1 - p)


def locked_dropout(x: Tensor, p: float) -> Tensor:
    """x (T, B, F) times one (B, F) mask for all T steps."""
    if p == 0:
        return x
    return x * locked_mask(p, x.shape[1], x.shape[2], x)


def drop_weight(weight: Tensor, p: float) -> Tensor:
    """DropConnect: ``weight`` times one mask of its own shape, 0 or 1 / (1 - p)."""
    if p == 0:
        return weight
    mask = torch.empty_like(weight).bernoulli_(1 - p).div_(1 - p)
    return weight * mask


def step_noise(reg: Regularizers, state: State, steps: int) -> StepNoise | None:
    """The in-loop masks for one layer and direction whose initial state is ``state`` (B, ...)."""
    if not reg.any_in_loop():
        return None
    h = state if isinstance(state, Tensor) else state.h  # (B, R)
    hidden = locked_mask(reg.hidden_dropout, h.shape[0], h.shape[1], h) if reg.hidden_dropout else None
    zoneout = None
    if any(reg.zoneout):
        def keep(s: Tensor, p: float) -> Tensor:  # (T, B, size) bool, True with probability p
            return torch.rand(steps, *s.shape, device=s.device) < p
        if isinstance(state, Tensor):
            zoneout = keep(state, reg.zoneout[0])
        else:
            zoneout = LSTMState(keep(state.h, reg.zoneout[0]), keep(state.c, reg.zoneout[1]))
    return StepNoise(hidden, zoneout)


def _as_pair(value) -> tuple[float, ...]:
    return value if isinstance(value, tuple) else (value,)


def _check_probability(name: str, p) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {p!r}")
