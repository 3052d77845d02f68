"""minGRU and minLSTM (Feng et al. 2024): gates that depend on x_t only, so time is a scan.

Here they run sequentially; the log-space parallel scan is the ``scan`` backend's job. The
candidate activation is g(a) = a + 0.5 for a >= 0 and sigma(a) otherwise: positive and
continuous, so that the log-space scan computes the same function as this loop.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Cell


def g(a: Tensor) -> Tensor:
    """The paper's positive candidate activation: a + 1/2 for a >= 0, sigma(a) below."""
    return torch.where(a >= 0, a + 0.5, torch.sigmoid(a))


def mingru_step(gx: Tensor, h_prev: Tensor) -> Tensor:
    r"""One minGRU step; gx (B, 2H) is ``W_ih x_t + b_ih``, packed z|h̃.

    .. math::
        z = \sigma(a_z), \quad \tilde h = g(a_h), \quad h_t = (1 - z) \odot h_{t-1} + z \odot \tilde h
    """
    a_z, a_h = gx.chunk(2, dim=-1)
    z = torch.sigmoid(a_z)
    return (1 - z) * h_prev + z * g(a_h)  # (B, H)


def minlstm_step(gx: Tensor, h_prev: Tensor) -> Tensor:
    r"""One minLSTM step; gx (B, 3H) is ``W_ih x_t + b_ih``, packed f|i|h̃.

    .. math::
        f = \sigma(a_f), \quad i = \sigma(a_i), \quad \tilde h = g(a_h)
        f' = f / (f + i), \quad i' = i / (f + i), \qquad h_t = f' \odot h_{t-1} + i' \odot \tilde h
    """
    a_f, a_i, a_h = gx.chunk(3, dim=-1)
    # f / (f + i) = sigmoid(log f - log i): no 0/0 when both gates underflow
    d = F.logsigmoid(a_f) - F.logsigmoid(a_i)
    return torch.sigmoid(d) * h_prev + torch.sigmoid(-d) * g(a_h)  # (B, H)


class _MinimalCell(Cell):
    square_recurrent: ClassVar[bool] = False

    def parameter_shapes(self, input_size, hidden_size, proj_size, bias):
        shapes = {"weight_ih": (self.gates * hidden_size, input_size)}
        if bias:
            shapes["bias_ih"] = (self.gates * hidden_size,)
        return shapes

    def reset_parameters(self, weights, input_size, hidden_size):
        # nn.Linear's rule, as the paper's reference code uses nn.Linear: U(-1/sqrt(I), 1/sqrt(I))
        bound = 1.0 / math.sqrt(input_size)
        with torch.no_grad():
            for w in weights.values():
                w.uniform_(-bound, bound)


class MinGRUCell(_MinimalCell):
    r"""minGRU: a GRU whose gates see only x_t (Feng et al. 2024).

    .. math::
        z = \sigma(W_z x_t + b_z), \quad \tilde h = g(W_h x_t + b_h), \quad
        h_t = (1 - z) \odot h_{t-1} + z \odot \tilde h,
        \qquad g(a) = a + \tfrac12 \ (a \ge 0), \ \sigma(a) \ (a < 0)

    Parameters: weight_ih (2H, I), bias_ih (2H,), packed z|h̃; no recurrent weights and so
    no bias_hh. Init: nn.Linear's, U(-1/sqrt(I), 1/sqrt(I)). State: h (L*D, B, H).

    Reference: L. Feng et al., "Were RNNs all we needed?", arXiv:2410.01201, 2024.
    """

    name: ClassVar[str] = "mingru"
    gates: ClassVar[int] = 2

    def step(self, gx, state, w):
        h = mingru_step(gx, state)
        return h, h


class MinLSTMCell(_MinimalCell):
    r"""minLSTM: an LSTM whose gates see only x_t, normalized to sum to one (Feng et al. 2024).

    .. math::
        f = \sigma(W_f x_t + b_f), \quad i = \sigma(W_i x_t + b_i), \quad \tilde h = g(W_h x_t + b_h)
        h_t = \frac{f}{f + i} \odot h_{t-1} + \frac{i}{f + i} \odot \tilde h

    Parameters: weight_ih (3H, I), bias_ih (3H,), packed f|i|h̃; no recurrent weights.
    Init: nn.Linear's, U(-1/sqrt(I), 1/sqrt(I)). State: h (L*D, B, H).

    Reference: L. Feng et al., "Were RNNs all we needed?", arXiv:2410.01201, 2024.
    """

    name: ClassVar[str] = "minlstm"
    gates: ClassVar[int] = 3

    def step(self, gx, state, w):
        h = minlstm_step(gx, state)
        return h, h
