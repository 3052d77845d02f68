"""What every cell family declares: its parameters per layer and direction, and one pure step.

A cell owns no tensors. `rnnkit.Recurrent` creates the parameters a cell asks for under
torch's flat names (``weight_ih_l0``, ``weight_hh_l1_reverse``, ...), runs the input
projection for all time steps as one GEMM, and calls ``step`` once per time step.

Symbols used in every docstring of this package:

    T  time steps          B  batch size         I  input features
    H  hidden size         R  recurrent size: proj_size if > 0, else H
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class LSTMState(NamedTuple):
    """State of the LSTM family; a NamedTuple, so ``h, c = state`` works as with torch."""

    h: Tensor  # (..., B, R)
    c: Tensor  # (..., B, H)


State = Tensor | LSTMState
Weights = Mapping[str, Tensor]


class Cell:
    """A recurrent cell family: parameter shapes, init rule, input projection, one step.

    Subclasses set ``name``, ``gates`` (blocks packed in ``weight_ih``), and implement
    ``parameter_shapes`` and ``step``. ``supports_proj`` says whether ``proj_size`` means
    anything for the cell (the LSTM family's ``weight_hr``).
    """

    name: ClassVar[str]
    gates: ClassVar[int]
    supports_proj: ClassVar[bool] = False
    state_type: ClassVar[type] = Tensor
    # True where the cell has a square W_hh (H, H) per gate, whose spectral radius means something.
    square_recurrent: ClassVar[bool] = True

    def parameter_shapes(
        self, input_size: int, hidden_size: int, proj_size: int, bias: bool
    ) -> dict[str, tuple[int, ...]]:
        """Parameter names (without the ``_l{k}`` suffix) and shapes, in registration order."""
        raise NotImplementedError

    def reset_parameters(self, weights: Weights, input_size: int, hidden_size: int) -> None:
        """torch's rule for its RNNs: every parameter ~ U(-1/sqrt(H), 1/sqrt(H)), in order."""
        bound = 1.0 / math.sqrt(hidden_size)
        with torch.no_grad():
            for w in weights.values():
                w.uniform_(-bound, bound)

    def input_projection(self, x: Tensor, w: Weights) -> Tensor:
        """``W_ih x + b_ih`` for all time steps at once: (T, B, I) -> (T, B, gates*H)."""
        return F.linear(x, w["weight_ih"], w.get("bias_ih"))

    def step(self, gx: Tensor, state: State, w: Weights) -> tuple[Tensor, State]:
        """One time step: gx (B, gates*H) is this step's input projection.

        Returns the output h_t (B, R) and the new state.
        """
        raise NotImplementedError

    def step_dropped(self, gx: Tensor, state: State, w: Weights, h_mask: Tensor) -> tuple[Tensor, State]:
        """``step`` with h_{t-1} * h_mask (B, R) in every recurrent product (hidden dropout).

        The default masks the h that ``step`` reads, right for cells whose h_{t-1} enters only
        recurrent products; a cell that also reads h_{t-1} elsewhere (the GRU) overrides it.
        """
        if isinstance(state, LSTMState):
            return self.step(gx, LSTMState(state.h * h_mask, state.c), w)
        return self.step(gx, state * h_mask, w)

    def zero_state(self, leading: tuple[int, ...], hidden_size: int, proj_size: int, like: Tensor) -> State:
        """Zeros of the state's shape with the given leading dims, e.g. (L*D, B)."""
        h = like.new_zeros(*leading, proj_size or hidden_size)
        if self.state_type is LSTMState:
            return LSTMState(h, like.new_zeros(*leading, hidden_size))
        return h

    def state_sizes(self, hidden_size: int, proj_size: int) -> tuple[int, ...]:
        """The last dimension of each state tensor: (R,) or (R, H) for the LSTM family."""
        if self.state_type is LSTMState:
            return (proj_size or hidden_size, hidden_size)
        return (hidden_size,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def rnn_shapes(
    gates: int, input_size: int, hidden_size: int, recurrent_size: int, bias: bool
) -> dict[str, tuple[int, ...]]:
    """torch's four parameters of a gated cell, in torch's registration order."""
    shapes = {
        "weight_ih": (gates * hidden_size, input_size),
        "weight_hh": (gates * hidden_size, recurrent_size),
    }
    if bias:
        shapes["bias_ih"] = (gates * hidden_size,)
        shapes["bias_hh"] = (gates * hidden_size,)
    return shapes


def recurrent_gemm(gx: Tensor, h_prev: Tensor, weight_hh: Tensor, bias_hh: Tensor | None) -> Tensor:
    """``gx + W_hh h_prev + b_hh``, (B, G): the one GEMM every step pays."""
    if bias_hh is not None:
        gx = gx + bias_hh
    return torch.addmm(gx, h_prev, weight_hh.t())


def map_state(fn, *states: State) -> State:
    """Apply ``fn`` tensor-wise across states of the same structure (a Tensor or a NamedTuple)."""
    first = states[0]
    if isinstance(first, Tensor):
        return fn(*states)
    return type(first)(*(fn(*parts) for parts in zip(*states)))
