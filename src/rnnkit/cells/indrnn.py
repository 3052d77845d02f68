"""IndRNN (Li et al. 2018): each hidden unit recurs only on itself."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from .base import Cell


def indrnn_step(
    gx: Tensor, h_prev: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, nonlinearity: str
) -> Tensor:
    r"""One IndRNN step: :math:`h_t = \mathrm{act}(W_{ih} x_t + b_{ih} + u \odot h_{t-1} + b_{hh})`.

    gx (B, H) is this step's input projection; weight_hh is the vector u (H,).
    """
    a = gx + weight_hh * h_prev  # (B, H)
    if bias_hh is not None:
        a = a + bias_hh
    return torch.relu(a) if nonlinearity == "relu" else torch.tanh(a)


class IndRNNCell(Cell):
    r"""Independently recurrent network (IndRNN): a diagonal recurrent matrix.

    .. math::
        h_t = \mathrm{act}(W_{ih} x_t + b_{ih} + u \odot h_{t-1} + b_{hh}),
        \qquad \mathrm{act} = \max(0, \cdot) \text{ (default) or } \tanh

    Options: ``nonlinearity`` ("relu" or "tanh"); ``recurrent_max`` bounds |u| (the paper
    constrains |u| <= 2^(1/T) for relu so that a gradient neither explodes nor vanishes
    over T steps); with it, u is clamped to [-recurrent_max, recurrent_max] in every step.

    Parameters: weight_ih (H, I), weight_hh (H,) (the vector u), bias_ih (H,), bias_hh (H,).
    Init as Li et al.: u ~ U(0, 1), or U(0, recurrent_max) when a bound is given; W_ih ~
    U(-1/sqrt(H), 1/sqrt(H)) (torch's rule); biases 0. State: h (L*D, B, H).

    Reference: S. Li, W. Li, C. Cook, C. Zhu, Y. Gao, "Independently recurrent neural network
    (IndRNN): building a longer and deeper RNN", CVPR 2018.
    """

    name: ClassVar[str] = "indrnn"
    gates: ClassVar[int] = 1
    square_recurrent: ClassVar[bool] = False

    def __init__(self, nonlinearity: str = "relu", recurrent_max: float | None = None) -> None:
        if nonlinearity not in ("relu", "tanh"):
            raise ValueError(f"nonlinearity must be 'relu' or 'tanh', got {nonlinearity!r}")
        if recurrent_max is not None and not recurrent_max > 0:
            raise ValueError(f"recurrent_max must be a positive number or None, got {recurrent_max!r}")
        self.nonlinearity = nonlinearity
        self.recurrent_max = recurrent_max

    def parameter_shapes(self, input_size, hidden_size, proj_size, bias):
        shapes = {"weight_ih": (hidden_size, input_size), "weight_hh": (hidden_size,)}
        if bias:
            shapes["bias_ih"] = (hidden_size,)
            shapes["bias_hh"] = (hidden_size,)
        return shapes

    def reset_parameters(self, weights, input_size, hidden_size):
        bound = 1.0 / math.sqrt(hidden_size)
        with torch.no_grad():
            weights["weight_ih"].uniform_(-bound, bound)
            weights["weight_hh"].uniform_(0.0, self.recurrent_max or 1.0)
            for name in ("bias_ih", "bias_hh"):
                if name in weights:
                    weights[name].zero_()

    def step(self, gx, state, w):
        u = w["weight_hh"]
        if self.recurrent_max is not None:
            u = u.clamp(-self.recurrent_max, self.recurrent_max)
        h = indrnn_step(gx, state, u, w.get("bias_hh"), self.nonlinearity)
        return h, h

    def __repr__(self) -> str:
        return f"IndRNNCell(nonlinearity={self.nonlinearity!r}, recurrent_max={self.recurrent_max!r})"
