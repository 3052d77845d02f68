"""The GRU family: ``gru`` (reset-after, torch's and cuDNN's) and ``cho_gru`` (reset-before)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .base import Cell, recurrent_gemm, rnn_shapes


def gru_step(gx: Tensor, h_prev: Tensor, weight_hh: Tensor, bias_hh: Tensor | None,
             h_mask: Tensor | None = None) -> Tensor:
    r"""One step of torch's GRU; gx (B, 3H) is ``W_ih x_t + b_ih``, gates r|z|n.

    .. math::
        r = \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}), \quad
        z = \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz})
        n = \tanh(W_{in} x_t + b_{in} + r \odot (W_{hn} h_{t-1} + b_{hn})), \quad
        h_t = (1 - z) \odot n + z \odot h_{t-1}

    ``h_mask`` (B, H), hidden dropout: the products read h_{t-1} * h_mask, the interpolation h_{t-1}.
    """
    h_in = h_prev if h_mask is None else h_prev * h_mask
    gh = h_in @ weight_hh.t()  # (B, 3H)
    if bias_hh is not None:
        gh = gh + bias_hh
    x_r, x_z, x_n = gx.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h_prev  # (B, H)


def cho_gru_step(gx: Tensor, h_prev: Tensor, weight_hh: Tensor, bias_hh: Tensor | None,
                 h_mask: Tensor | None = None) -> Tensor:
    r"""One step of Cho et al.'s GRU (reset before the recurrent product); gates r|z|n.

    .. math::
        r = \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}), \quad
        z = \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz})
        n = \tanh(W_{in} x_t + b_{in} + W_{hn} (r \odot h_{t-1}) + b_{hn}), \quad
        h_t = (1 - z) \odot n + z \odot h_{t-1}

    ``h_mask`` (B, H), hidden dropout: the products read h_{t-1} * h_mask, the interpolation h_{t-1}.
    """
    H = h_prev.shape[-1]
    h_in = h_prev if h_mask is None else h_prev * h_mask
    w_rz, w_n = weight_hh[: 2 * H], weight_hh[2 * H :]  # (2H, H), (H, H)
    b_rz, b_n = (None, None) if bias_hh is None else (bias_hh[: 2 * H], bias_hh[2 * H :])
    x_rz, x_n = gx[:, : 2 * H], gx[:, 2 * H :]
    r, z = torch.sigmoid(recurrent_gemm(x_rz, h_in, w_rz, b_rz)).chunk(2, dim=-1)
    n = torch.tanh(recurrent_gemm(x_n, r * h_in, w_n, b_n))  # (B, H)
    return (1 - z) * n + z * h_prev  # (B, H)


class GRUCell(Cell):
    r"""GRU with the reset gate applied after the recurrent product, exactly torch.nn.GRU.

    .. math::
        r = \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}), \quad
        z = \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz})
        n = \tanh(W_{in} x_t + b_{in} + r \odot (W_{hn} h_{t-1} + b_{hn})), \quad
        h_t = (1 - z) \odot n + z \odot h_{t-1}

    Parameters: weight_ih (3H, I), weight_hh (3H, H), bias_ih, bias_hh (3H,), packed r|z|n.
    Init: all ~ U(-1/sqrt(H), 1/sqrt(H)). State: h (L*D, B, H). No projection.

    Reference: K. Cho et al., arXiv:1406.1078v1, 2014 (the first version, whose reset-after form
    cuDNN and torch implement; the EMNLP 2014 version applies r before the product: ``cho_gru``).
    """

    name: ClassVar[str] = "gru"
    gates: ClassVar[int] = 3

    def parameter_shapes(self, input_size, hidden_size, proj_size, bias):
        return rnn_shapes(3, input_size, hidden_size, hidden_size, bias)

    def step(self, gx, state, w):
        h = gru_step(gx, state, w["weight_hh"], w.get("bias_hh"))
        return h, h

    def step_dropped(self, gx, state, w, h_mask):
        h = gru_step(gx, state, w["weight_hh"], w.get("bias_hh"), h_mask)
        return h, h


class ChoGRUCell(GRUCell):
    r"""GRU of Cho et al. 2014: the reset gate scales h_{t-1} before the recurrent product.

    .. math::
        r = \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}), \quad
        z = \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz})
        n = \tanh(W_{in} x_t + b_{in} + W_{hn} (r \odot h_{t-1}) + b_{hn}), \quad
        h_t = (1 - z) \odot n + z \odot h_{t-1}

    Parameters: the same names and shapes as ``gru`` (packed r|z|n), so weights move between
    the two, but they compute different functions. Init: all ~ U(-1/sqrt(H), 1/sqrt(H)).
    Each step costs two recurrent GEMMs, (2H, H) then (H, H), since n needs r first.

    Reference: K. Cho et al., "Learning phrase representations using RNN encoder-decoder for
    statistical machine translation", EMNLP 2014.
    """

    name: ClassVar[str] = "cho_gru"

    def step(self, gx, state, w):
        h = cho_gru_step(gx, state, w["weight_hh"], w.get("bias_hh"))
        return h, h

    def step_dropped(self, gx, state, w, h_mask):
        h = cho_gru_step(gx, state, w["weight_hh"], w.get("bias_hh"), h_mask)
        return h, h
