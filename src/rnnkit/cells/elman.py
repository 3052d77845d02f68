"""Elman RNN (Elman 1990), exactly torch.nn.RNN: ``rnn_tanh`` and ``rnn_relu``."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .base import Cell, Weights, recurrent_gemm, rnn_shapes


def elman_step(
    gx: Tensor, h_prev: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, nonlinearity: str
) -> Tensor:
    r"""One Elman step: :math:`h_t = \mathrm{act}(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})`.

    gx (B, H) is this step's input projection ``W_ih x_t + b_ih``; h_prev (B, H).
    """
    a = recurrent_gemm(gx, h_prev, weight_hh, bias_hh)  # (B, H)
    return torch.tanh(a) if nonlinearity == "tanh" else torch.relu(a)


class ElmanCell(Cell):
    r"""Elman RNN cell, torch.nn.RNN's.

    .. math::
        h_t = \mathrm{act}(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}),
        \qquad \mathrm{act} = \tanh \text{ (rnn\_tanh) or } \max(0, \cdot) \text{ (rnn\_relu)}

    Parameters (per layer k and direction):
        weight_ih_l{k}: (H, I)     weight_hh_l{k}: (H, H)
        bias_ih_l{k}:   (H,)       bias_hh_l{k}:   (H,)
    Init: every parameter ~ U(-1/sqrt(H), 1/sqrt(H)), as torch.
    State: h (L*D, B, H). No projection (torch has none for RNN).

    Reference: J. L. Elman, "Finding structure in time", Cognitive Science 14, 1990.
    """

    gates: ClassVar[int] = 1

    def __init__(self, nonlinearity: str) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"rnn_{self.nonlinearity}"

    def parameter_shapes(self, input_size, hidden_size, proj_size, bias):
        return rnn_shapes(1, input_size, hidden_size, hidden_size, bias)

    def step(self, gx: Tensor, state: Tensor, w: Weights) -> tuple[Tensor, Tensor]:
        h = elman_step(gx, state, w["weight_hh"], w.get("bias_hh"), self.nonlinearity)
        return h, h

    def __repr__(self) -> str:
        return f"ElmanCell(nonlinearity={self.nonlinearity!r})"
