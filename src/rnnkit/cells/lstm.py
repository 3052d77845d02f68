"""The LSTM family: ``lstm`` (torch's), ``peephole_lstm``, ``layernorm_lstm``, ``cifg_lstm``.

All four pack their gates as torch does (i|f|g|o, CIFG f|g|o), keep the state as
``LSTMState(h, c)`` and take torch's projection ``proj_size``: with it, the output is
``h_t = W_hr (o_t * tanh(c_t))``, ``weight_hr`` of shape (R, H), and W_hh is (G*H, R).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Cell, LSTMState, recurrent_gemm, rnn_shapes


def _project(h: Tensor, weight_hr: Tensor | None) -> Tensor:
    """torch's LSTM projection h (B, H) -> (B, R); identity without proj_size."""
    return h if weight_hr is None else h @ weight_hr.t()


def lstm_step(
    gx: Tensor, state: LSTMState, weight_hh: Tensor, bias_hh: Tensor | None, weight_hr: Tensor | None
) -> tuple[Tensor, LSTMState]:
    r"""One step of torch's LSTM; gx (B, 4H) is ``W_ih x_t + b_ih``, gates i|f|g|o.

    .. math::
        i, f, g, o = \sigma, \sigma, \tanh, \sigma \text{ of } W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}
        c_t = f \odot c_{t-1} + i \odot g, \qquad h_t = o \odot \tanh(c_t)
    """
    gates = recurrent_gemm(gx, state.h, weight_hh, bias_hh)  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * state.c + torch.sigmoid(i) * torch.tanh(g)  # (B, H)
    h = _project(torch.sigmoid(o) * torch.tanh(c), weight_hr)  # (B, R)
    return h, LSTMState(h, c)


def peephole_lstm_step(
    gx: Tensor,
    state: LSTMState,
    weight_hh: Tensor,
    bias_hh: Tensor | None,
    weight_peephole: Tensor,
    weight_hr: Tensor | None,
) -> tuple[Tensor, LSTMState]:
    r"""One peephole LSTM step; weight_peephole (3, H) holds w_ci, w_cf, w_co.

    .. math::
        a = W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh} \quad (a_i | a_f | a_g | a_o)
        i = \sigma(a_i + w_{ci} \odot c_{t-1}), \quad f = \sigma(a_f + w_{cf} \odot c_{t-1}), \quad g = \tanh(a_g)
        c_t = f \odot c_{t-1} + i \odot g
        o = \sigma(a_o + w_{co} \odot c_t), \qquad h_t = o \odot \tanh(c_t)
    """
    gates = recurrent_gemm(gx, state.h, weight_hh, bias_hh)  # (B, 4H)
    a_i, a_f, a_g, a_o = gates.chunk(4, dim=-1)
    w_ci, w_cf, w_co = weight_peephole.unbind(0)  # (H,) each
    i = torch.sigmoid(a_i + w_ci * state.c)
    f = torch.sigmoid(a_f + w_cf * state.c)
    c = f * state.c + i * torch.tanh(a_g)  # (B, H)
    o = torch.sigmoid(a_o + w_co * c)
    h = _project(o * torch.tanh(c), weight_hr)  # (B, R)
    return h, LSTMState(h, c)


def layernorm_lstm_step(
    gx: Tensor,
    state: LSTMState,
    weight_hh: Tensor,
    bias_hh: Tensor | None,
    ln_hh_weight: Tensor,
    ln_hh_bias: Tensor,
    ln_c_weight: Tensor,
    ln_c_bias: Tensor,
    weight_hr: Tensor | None,
    eps: float,
) -> tuple[Tensor, LSTMState]:
    r"""One layer-norm LSTM step; gx (B, 4H) is already ``LN_ih(W_ih x_t) + b_ih``.

    .. math::
        i, f, g, o = \sigma, \sigma, \tanh, \sigma \text{ of }
                     \mathrm{LN}_{ih}(W_{ih} x_t) + \mathrm{LN}_{hh}(W_{hh} h_{t-1}) + b_{ih} + b_{hh}
        c_t = f \odot c_{t-1} + i \odot g, \qquad h_t = o \odot \tanh(\mathrm{LN}_c(c_t))
    """
    gh = F.layer_norm(state.h @ weight_hh.t(), ln_hh_weight.shape, ln_hh_weight, ln_hh_bias, eps)
    gates = gx + gh if bias_hh is None else gx + gh + bias_hh  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * state.c + torch.sigmoid(i) * torch.tanh(g)  # (B, H)
    c_norm = F.layer_norm(c, ln_c_weight.shape, ln_c_weight, ln_c_bias, eps)
    h = _project(torch.sigmoid(o) * torch.tanh(c_norm), weight_hr)  # (B, R)
    return h, LSTMState(h, c)


def cifg_lstm_step(
    gx: Tensor, state: LSTMState, weight_hh: Tensor, bias_hh: Tensor | None, weight_hr: Tensor | None
) -> tuple[Tensor, LSTMState]:
    r"""One coupled input-forget gate (CIFG) step; gx (B, 3H), gates f|g|o.

    .. math::
        f, g, o = \sigma, \tanh, \sigma \text{ of } W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}
        c_t = f \odot c_{t-1} + (1 - f) \odot g, \qquad h_t = o \odot \tanh(c_t)
    """
    gates = recurrent_gemm(gx, state.h, weight_hh, bias_hh)  # (B, 3H)
    f, g, o = gates.chunk(3, dim=-1)
    f = torch.sigmoid(f)
    c = f * state.c + (1 - f) * torch.tanh(g)  # (B, H)
    h = _project(torch.sigmoid(o) * torch.tanh(c), weight_hr)  # (B, R)
    return h, LSTMState(h, c)


class _LSTMFamily(Cell):
    supports_proj: ClassVar[bool] = True
    state_type: ClassVar[type] = LSTMState

    def parameter_shapes(self, input_size, hidden_size, proj_size, bias):
        shapes = rnn_shapes(self.gates, input_size, hidden_size, proj_size or hidden_size, bias)
        if proj_size:
            shapes["weight_hr"] = (proj_size, hidden_size)
        return shapes


class LSTMCell(_LSTMFamily):
    r"""LSTM, exactly torch.nn.LSTM (forget gate of Gers et al. 2000, no peepholes).

    .. math::
        i, f, g, o = \sigma, \sigma, \tanh, \sigma \text{ of } W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}
        c_t = f \odot c_{t-1} + i \odot g, \qquad h_t = W_{hr}\,(o \odot \tanh(c_t))

    Parameters: weight_ih (4H, I), weight_hh (4H, R), bias_ih (4H,), bias_hh (4H,), packed
    i|f|g|o; with proj_size > 0 also weight_hr (R, H). Init: all ~ U(-1/sqrt(H), 1/sqrt(H)).
    State: LSTMState(h (L*D, B, R), c (L*D, B, H)).

    Reference: S. Hochreiter, J. Schmidhuber, "Long short-term memory", Neural Computation 9, 1997;
    F. Gers, J. Schmidhuber, F. Cummins, "Learning to forget", Neural Computation 12, 2000.
    """

    name: ClassVar[str] = "lstm"
    gates: ClassVar[int] = 4

    def step(self, gx, state, w):
        return lstm_step(gx, state, w["weight_hh"], w.get("bias_hh"), w.get("weight_hr"))


class PeepholeLSTMCell(_LSTMFamily):
    r"""LSTM with peephole connections from the cell to its gates (Gers & Schmidhuber 2000).

    .. math::
        a = W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh} \quad (a_i | a_f | a_g | a_o)
        i = \sigma(a_i + w_{ci} \odot c_{t-1}), \quad f = \sigma(a_f + w_{cf} \odot c_{t-1}), \quad g = \tanh(a_g)
        c_t = f \odot c_{t-1} + i \odot g, \quad o = \sigma(a_o + w_{co} \odot c_t), \quad
        h_t = W_{hr}\,(o \odot \tanh(c_t))

    Parameters: torch's LSTM parameters (gates i|f|g|o) plus weight_peephole (3, H), rows
    w_ci, w_cf, w_co. Init: all ~ U(-1/sqrt(H), 1/sqrt(H)). State: LSTMState(h, c).

    Reference: F. Gers, J. Schmidhuber, "Recurrent nets that time and count", IJCNN 2000.
    """

    name: ClassVar[str] = "peephole_lstm"
    gates: ClassVar[int] = 4

    def parameter_shapes(self, input_size, hidden_size, proj_size, bias):
        shapes = super().parameter_shapes(input_size, hidden_size, proj_size, bias)
        shapes["weight_peephole"] = (3, hidden_size)
        return shapes

    def step(self, gx, state, w):
        return peephole_lstm_step(
            gx, state, w["weight_hh"], w.get("bias_hh"), w["weight_peephole"], w.get("weight_hr")
        )


class LayerNormLSTMCell(_LSTMFamily):
    r"""Layer-normalized LSTM (Ba, Kiros & Hinton 2016).

    .. math::
        i, f, g, o = \sigma, \sigma, \tanh, \sigma \text{ of }
                     \mathrm{LN}_{ih}(W_{ih} x_t) + \mathrm{LN}_{hh}(W_{hh} h_{t-1}) + b_{ih} + b_{hh}
        c_t = f \odot c_{t-1} + i \odot g, \qquad h_t = W_{hr}\,(o \odot \tanh(\mathrm{LN}_c(c_t)))

    Each LN normalizes over its whole vector (4H for the gates, H for the cell) with
    eps = 1e-5 (torch's default) and has its own gain and bias.

    Parameters: torch's LSTM parameters (gates i|f|g|o) plus ln_ih_weight, ln_ih_bias,
    ln_hh_weight, ln_hh_bias (4H,) and ln_c_weight, ln_c_bias (H,). Init: weights and
    b_ih, b_hh ~ U(-1/sqrt(H), 1/sqrt(H)); LN gains 1, LN biases 0. The LN parameters
    stay with ``bias=False`` (it drops b_ih and b_hh only).

    Reference: J. L. Ba, J. R. Kiros, G. E. Hinton, "Layer normalization", arXiv:1607.06450, 2016.
    """

    name: ClassVar[str] = "layernorm_lstm"
    gates: ClassVar[int] = 4
    eps: ClassVar[float] = 1e-5  # torch.nn.LayerNorm's default

    def parameter_shapes(self, input_size, hidden_size, proj_size, bias):
        shapes = super().parameter_shapes(input_size, hidden_size, proj_size, bias)
        for part, size in (("ih", 4 * hidden_size), ("hh", 4 * hidden_size), ("c", hidden_size)):
            shapes[f"ln_{part}_weight"] = (size,)
            shapes[f"ln_{part}_bias"] = (size,)
        return shapes

    def reset_parameters(self, weights, input_size, hidden_size):
        bound = 1.0 / math.sqrt(hidden_size)
        with torch.no_grad():
            for name, w in weights.items():
                if name.startswith("ln_"):
                    w.fill_(1.0 if name.endswith("_weight") else 0.0)
                else:
                    w.uniform_(-bound, bound)

    def input_projection(self, x, w):
        """LN_ih(W_ih x) + b_ih: ``normalize_input(x W_ih^T, w)``, (T, B, I) -> (T, B, 4H)."""
        return self.normalize_input(F.linear(x, w["weight_ih"]), w)

    @staticmethod
    def input_bias(w):
        """ln_ih_bias + b_ih (4H,): LN_ih's bias with b_ih in it."""
        return w["ln_ih_bias"] if "bias_ih" not in w else w["ln_ih_bias"] + w["bias_ih"]

    def normalize_input(self, raw, w):
        """LN_ih(raw) + b_ih for the raw input projection x W_ih^T (.., 4H), with both biases added inside the
        LayerNorm: one full (T, B, 4H) tensor less to allocate and fill. The fused backend's C++ loop does
        this per step instead (``backends/fused/lstm.py``)."""
        return F.layer_norm(raw, w["ln_ih_weight"].shape, w["ln_ih_weight"], self.input_bias(w), self.eps)

    def step(self, gx, state, w):
        return layernorm_lstm_step(
            gx, state, w["weight_hh"], w.get("bias_hh"), w["ln_hh_weight"], w["ln_hh_bias"],
            w["ln_c_weight"], w["ln_c_bias"], w.get("weight_hr"), self.eps,
        )


class CIFGLSTMCell(_LSTMFamily):
    r"""LSTM with coupled input and forget gates, i = 1 - f (CIFG, Greff et al. 2017).

    .. math::
        f, g, o = \sigma, \tanh, \sigma \text{ of } W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}
        c_t = f \odot c_{t-1} + (1 - f) \odot g, \qquad h_t = W_{hr}\,(o \odot \tanh(c_t))

    Parameters: weight_ih (3H, I), weight_hh (3H, R), bias_ih, bias_hh (3H,), packed f|g|o;
    with proj_size > 0 also weight_hr (R, H). Init: all ~ U(-1/sqrt(H), 1/sqrt(H)).

    Reference: K. Greff et al., "LSTM: A search space odyssey", IEEE TNNLS 28, 2017.
    """

    name: ClassVar[str] = "cifg_lstm"
    gates: ClassVar[int] = 3

    def step(self, gx, state, w):
        return cifg_lstm_step(gx, state, w["weight_hh"], w.get("bias_hh"), w.get("weight_hr"))
