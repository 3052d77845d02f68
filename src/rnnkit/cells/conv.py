"""Convolutional recurrent cells: ``convlstm``, ``peephole_convlstm``, ``convgru`` and ``cho_convgru``.

Shi et al. 2015 replace the LSTM's matrix products by convolutions, so the state keeps the
input's spatial layout: x_t (B, C, *S), h_t and c_t (B, Hc, *S), with S = (L,), (H, W) or
(D, H, W) for 1-D, 2-D and 3-D cells. Every convolution is "same"-padded with stride 1 (odd
kernel sizes only), so the frame size never changes. The cells follow the rest of rnnkit:
torch's gate order (i|f|g|o, r|z|n), torch's two biases, ``LSTMState(h, c)``, a pure ``step``.

The layer (``rnnkit.ConvRecurrent``) runs ``input_projection`` (``W_x * x_t + b_ih``) for
every time step as one convolution over (T*B, C, *S) and only the hidden-to-hidden
convolution per step.

Symbols: T time steps, B batch, C input channels, Hc hidden channels, S the spatial size,
k the kernel size (per spatial dimension), G the number of gate blocks (4 for the LSTMs, 3
for the GRUs). ``*`` in the equations is torch's convolution (a cross-correlation, as
``F.conv2d``), zero-padded to the same size, ``\\odot`` the elementwise product.

Peepholes. Shi et al.'s peepholes are Hadamard products with full per-position weights
W_ci of shape (Hc, *S), which would tie a layer to one frame size. ``peephole_convlstm``
uses one peephole weight per channel instead, ``weight_peephole`` (3, Hc) broadcast over
the positions (the form of rnnkit's ``peephole_lstm``, Gers & Schmidhuber 2000): a layer
then runs on frames of any size, and a frame of size 1x1 gives exactly ``peephole_lstm``.

Reference: X. Shi, Z. Chen, H. Wang, D.-Y. Yeung, W.-K. Wong, W.-C. Woo, "Convolutional
LSTM network: a machine learning approach for precipitation nowcasting", NeurIPS 2015;
N. Ballas, L. Yao, C. Pal, A. Courville, "Delving deeper into convolutional networks for
learning video representations", ICLR 2016 (the ConvGRU: ``cho_convgru`` is theirs, ``convgru``
the reset-after form of torch's ``gru``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import LSTMState, State, Weights

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def conv_same(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``weight * x + bias``, stride 1, zero "same" padding: (N, C_in, *S) -> (N, C_out, *S).

    The convolution's dimension is the weight's: (C_out, C_in, *k) with odd k.
    """
    dims = weight.dim() - 2
    return _CONV[dims](x, weight, bias, padding=tuple(k // 2 for k in weight.shape[2:]))


def _spatial(weight: Tensor, x: Tensor) -> Tensor:
    """A per-channel vector (Hc,) shaped (Hc, 1, ..., 1) to broadcast over x (B, Hc, *S)."""
    return weight.view(weight.shape[0], *([1] * (x.dim() - 2)))


def convlstm_step(gx: Tensor, state: LSTMState, weight_hh: Tensor, bias_hh: Tensor | None) -> tuple[Tensor, LSTMState]:
    r"""One ConvLSTM step (Shi et al. 2015 without peepholes); gx (B, 4Hc, *S) is ``W_x * x_t + b_ih``.

    .. math::
        i, f, g, o = \sigma, \sigma, \tanh, \sigma \text{ of } W_x * x_t + b_{ih} + W_h * h_{t-1} + b_{hh}
        c_t = f \odot c_{t-1} + i \odot g, \qquad h_t = o \odot \tanh(c_t)
    """
    gates = gx + conv_same(state.h, weight_hh, bias_hh)  # (B, 4Hc, *S)
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * state.c + torch.sigmoid(i) * torch.tanh(g)  # (B, Hc, *S)
    h = torch.sigmoid(o) * torch.tanh(c)  # (B, Hc, *S)
    return h, LSTMState(h, c)


def peephole_convlstm_step(
    gx: Tensor, state: LSTMState, weight_hh: Tensor, bias_hh: Tensor | None, weight_peephole: Tensor
) -> tuple[Tensor, LSTMState]:
    r"""One ConvLSTM step with per-channel peepholes; weight_peephole (3, Hc) holds w_ci, w_cf, w_co.

    .. math::
        a = W_x * x_t + b_{ih} + W_h * h_{t-1} + b_{hh} \quad (a_i | a_f | a_g | a_o)
        i = \sigma(a_i + w_{ci} \odot c_{t-1}), \quad f = \sigma(a_f + w_{cf} \odot c_{t-1}), \quad g = \tanh(a_g)
        c_t = f \odot c_{t-1} + i \odot g
        o = \sigma(a_o + w_{co} \odot c_t), \qquad h_t = o \odot \tanh(c_t)

    where each w (Hc,) multiplies its channel at every position.
    """
    gates = gx + conv_same(state.h, weight_hh, bias_hh)  # (B, 4Hc, *S)
    a_i, a_f, a_g, a_o = gates.chunk(4, dim=1)
    w_ci, w_cf, w_co = (_spatial(w, state.c) for w in weight_peephole.unbind(0))  # (Hc, 1, ..) each
    i = torch.sigmoid(a_i + w_ci * state.c)
    f = torch.sigmoid(a_f + w_cf * state.c)
    c = f * state.c + i * torch.tanh(a_g)  # (B, Hc, *S)
    o = torch.sigmoid(a_o + w_co * c)
    h = o * torch.tanh(c)  # (B, Hc, *S)
    return h, LSTMState(h, c)


def convgru_step(gx: Tensor, h_prev: Tensor, weight_hh: Tensor, bias_hh: Tensor | None) -> Tensor:
    r"""One ConvGRU step, reset gate after the recurrent convolution as torch's GRU; gates r|z|n.

    gx (B, 3Hc, *S) is ``W_x * x_t + b_ih``.

    .. math::
        r = \sigma(W_{xr} * x_t + b_{ir} + W_{hr} * h_{t-1} + b_{hr}), \quad
        z = \sigma(W_{xz} * x_t + b_{iz} + W_{hz} * h_{t-1} + b_{hz})
        n = \tanh(W_{xn} * x_t + b_{in} + r \odot (W_{hn} * h_{t-1} + b_{hn})), \quad
        h_t = (1 - z) \odot n + z \odot h_{t-1}
    """
    gh = conv_same(h_prev, weight_hh, bias_hh)  # (B, 3Hc, *S): one convolution for all three gates
    x_r, x_z, x_n = gx.chunk(3, dim=1)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h_prev  # (B, Hc, *S)


def cho_convgru_step(gx: Tensor, h_prev: Tensor, weight_hh: Tensor, bias_hh: Tensor | None) -> Tensor:
    r"""One ConvGRU step of Ballas et al. 2016 (reset gate before the recurrent convolution); gates r|z|n.

    gx (B, 3Hc, *S) is ``W_x * x_t + b_ih``.

    .. math::
        r = \sigma(W_{xr} * x_t + b_{ir} + W_{hr} * h_{t-1} + b_{hr}), \quad
        z = \sigma(W_{xz} * x_t + b_{iz} + W_{hz} * h_{t-1} + b_{hz})
        n = \tanh(W_{xn} * x_t + b_{in} + W_{hn} * (r \odot h_{t-1}) + b_{hn}), \quad
        h_t = (1 - z) \odot n + z \odot h_{t-1}
    """
    Hc = h_prev.shape[1]
    b_rz, b_n = (None, None) if bias_hh is None else (bias_hh[: 2 * Hc], bias_hh[2 * Hc :])
    x_rz, x_n = gx[:, : 2 * Hc], gx[:, 2 * Hc :]
    r, z = torch.sigmoid(x_rz + conv_same(h_prev, weight_hh[: 2 * Hc], b_rz)).chunk(2, dim=1)  # (B, Hc, *S) each
    n = torch.tanh(x_n + conv_same(r * h_prev, weight_hh[2 * Hc :], b_n))  # (B, Hc, *S)
    return (1 - z) * n + z * h_prev  # (B, Hc, *S)


class ConvCell:
    """A convolutional recurrent cell family: parameter shapes, init, input projection, one step.

    Like ``rnnkit.cells.Cell`` with convolutions for matrix products: the layer owns the
    parameters under torch's names (``weight_ih_l0`` (G*Hc, C, *k), ``weight_hh_l0``
    (G*Hc, Hc, *k), ``bias_ih_l0``, ``bias_hh_l0`` (G*Hc,)) and calls ``step`` per time step.
    """

    name: ClassVar[str]
    gates: ClassVar[int]
    state_type: ClassVar[type] = Tensor

    def parameter_shapes(
        self, in_channels: int, hidden_channels: int, kernel_size: tuple[int, ...], bias: bool
    ) -> dict[str, tuple[int, ...]]:
        """Parameter names (without the ``_l{k}`` suffix) and shapes, in registration order."""
        G = self.gates
        shapes = {
            "weight_ih": (G * hidden_channels, in_channels, *kernel_size),
            "weight_hh": (G * hidden_channels, hidden_channels, *kernel_size),
        }
        if bias:
            shapes["bias_ih"] = (G * hidden_channels,)
            shapes["bias_hh"] = (G * hidden_channels,)
        return shapes

    def reset_parameters(self, weights: Weights, hidden_channels: int, kernel_size: tuple[int, ...]) -> None:
        """Every parameter ~ U(-1/sqrt(Hc k^d), 1/sqrt(Hc k^d)): torch's RNN rule 1/sqrt(H) with the
        recurrent convolution's fan-in (Hc times the kernel's positions) in place of H."""
        bound = 1.0 / math.sqrt(hidden_channels * math.prod(kernel_size))
        with torch.no_grad():
            for w in weights.values():
                w.uniform_(-bound, bound)

    def input_projection(self, x: Tensor, w: Weights) -> Tensor:
        """``W_x * x_t + b_ih`` for all steps in one convolution: (T, B, C, *S) -> (T, B, G*Hc, *S)."""
        T, B = x.shape[:2]
        gx = conv_same(x.reshape(T * B, *x.shape[2:]), w["weight_ih"], w.get("bias_ih"))  # (T*B, G*Hc, *S)
        return gx.view(T, B, *gx.shape[1:])

    def step(self, gx: Tensor, state: State, w: Weights) -> tuple[Tensor, State]:
        """One time step: gx (B, G*Hc, *S) is this step's input projection; returns h_t and the state."""
        raise NotImplementedError

    def zero_state(self, leading: tuple[int, ...], hidden_channels: int, spatial: tuple[int, ...],
                   like: Tensor) -> State:
        """Zeros of the state's shape (*leading, Hc, *S), e.g. leading = (L*D, B)."""
        h = like.new_zeros(*leading, hidden_channels, *spatial)
        if self.state_type is LSTMState:
            return LSTMState(h, like.new_zeros(*leading, hidden_channels, *spatial))
        return h

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ConvLSTMCell(ConvCell):
    r"""Convolutional LSTM (Shi et al. 2015), without peepholes (see ``peephole_convlstm``).

    .. math::
        i, f, g, o = \sigma, \sigma, \tanh, \sigma \text{ of } W_x * x_t + b_{ih} + W_h * h_{t-1} + b_{hh}
        c_t = f \odot c_{t-1} + i \odot g, \qquad h_t = o \odot \tanh(c_t)

    Parameters: weight_ih (4Hc, C, *k), weight_hh (4Hc, Hc, *k), bias_ih, bias_hh (4Hc,),
    packed i|f|g|o. Init: all ~ U(-1/sqrt(Hc k^d), 1/sqrt(Hc k^d)).
    State: LSTMState(h, c), each (L*D, B, Hc, *S).

    Reference: X. Shi et al., "Convolutional LSTM network", NeurIPS 2015.
    """

    name: ClassVar[str] = "convlstm"
    gates: ClassVar[int] = 4
    state_type: ClassVar[type] = LSTMState

    def step(self, gx, state, w):
        return convlstm_step(gx, state, w["weight_hh"], w.get("bias_hh"))


class PeepholeConvLSTMCell(ConvLSTMCell):
    r"""Convolutional LSTM with peepholes (Shi et al. 2015), one peephole weight per channel.

    .. math::
        a = W_x * x_t + b_{ih} + W_h * h_{t-1} + b_{hh} \quad (a_i | a_f | a_g | a_o)
        i = \sigma(a_i + w_{ci} \odot c_{t-1}), \quad f = \sigma(a_f + w_{cf} \odot c_{t-1}), \quad g = \tanh(a_g)
        c_t = f \odot c_{t-1} + i \odot g, \quad o = \sigma(a_o + w_{co} \odot c_t), \quad h_t = o \odot \tanh(c_t)

    Parameters: ``convlstm``'s plus weight_peephole (3, Hc), rows w_ci, w_cf, w_co, each
    channel's weight shared by all positions (Shi et al. have one per position, (Hc, *S),
    which fixes the frame size; see the module docstring). Init as ``convlstm``.

    Reference: X. Shi et al., "Convolutional LSTM network", NeurIPS 2015, eq. (3).
    """

    name: ClassVar[str] = "peephole_convlstm"

    def parameter_shapes(self, in_channels, hidden_channels, kernel_size, bias):
        shapes = super().parameter_shapes(in_channels, hidden_channels, kernel_size, bias)
        shapes["weight_peephole"] = (3, hidden_channels)
        return shapes

    def step(self, gx, state, w):
        return peephole_convlstm_step(gx, state, w["weight_hh"], w.get("bias_hh"), w["weight_peephole"])


class ConvGRUCell(ConvCell):
    r"""Convolutional GRU (Ballas et al. 2016), reset gate after the recurrent convolution as torch's GRU.

    .. math::
        r = \sigma(W_{xr} * x_t + b_{ir} + W_{hr} * h_{t-1} + b_{hr}), \quad
        z = \sigma(W_{xz} * x_t + b_{iz} + W_{hz} * h_{t-1} + b_{hz})
        n = \tanh(W_{xn} * x_t + b_{in} + r \odot (W_{hn} * h_{t-1} + b_{hn})), \quad
        h_t = (1 - z) \odot n + z \odot h_{t-1}

    Ballas et al. apply r before the convolution, W_{hn} * (r \odot h_{t-1}); the reset-after
    form here (torch's and cuDNN's ``gru``) needs one recurrent convolution per step instead of two;
    ``cho_convgru`` is Ballas et al.'s.

    Parameters: weight_ih (3Hc, C, *k), weight_hh (3Hc, Hc, *k), bias_ih, bias_hh (3Hc,),
    packed r|z|n. Init: all ~ U(-1/sqrt(Hc k^d), 1/sqrt(Hc k^d)). State: h (L*D, B, Hc, *S).

    Reference: N. Ballas et al., "Delving deeper into convolutional networks for learning video
    representations", ICLR 2016.
    """

    name: ClassVar[str] = "convgru"
    gates: ClassVar[int] = 3

    def step(self, gx, state, w):
        h = convgru_step(gx, state, w["weight_hh"], w.get("bias_hh"))
        return h, h


class ChoConvGRUCell(ConvGRUCell):
    r"""Convolutional GRU exactly as Ballas et al. 2016: the reset gate scales h_{t-1} before the convolution.

    .. math::
        r = \sigma(W_{xr} * x_t + b_{ir} + W_{hr} * h_{t-1} + b_{hr}), \quad
        z = \sigma(W_{xz} * x_t + b_{iz} + W_{hz} * h_{t-1} + b_{hz})
        n = \tanh(W_{xn} * x_t + b_{in} + W_{hn} * (r \odot h_{t-1}) + b_{hn}), \quad
        h_t = (1 - z) \odot n + z \odot h_{t-1}

    Parameters: the names and shapes of ``convgru`` (packed r|z|n), a different function (as
    ``cho_gru`` beside ``gru``). Each step costs two recurrent convolutions, (2Hc, Hc) then (Hc, Hc),
    since n needs r first. Init as ``convgru``.

    Reference: N. Ballas et al., "Delving deeper into convolutional networks for learning video
    representations", ICLR 2016, eq. (3) (the GRU of Cho et al., EMNLP 2014, with convolutions).
    """

    name: ClassVar[str] = "cho_convgru"

    def step(self, gx, state, w):
        h = cho_convgru_step(gx, state, w["weight_hh"], w.get("bias_hh"))
        return h, h


# A registry of its own: these cells read (T, B, C, *S), not the (T, B, I) of ``rnnkit.cells()``.
_CONV_REGISTRY: dict[str, Callable[[], ConvCell]] = {
    "convlstm": ConvLSTMCell,
    "peephole_convlstm": PeepholeConvLSTMCell,
    "convgru": ConvGRUCell,
    "cho_convgru": ChoConvGRUCell,
}


def conv_cells() -> list[str]:
    """Names of the convolutional recurrent cells, for ``rnnkit.ConvRecurrent``."""
    return list(_CONV_REGISTRY)


def make_conv_cell(name: str) -> ConvCell:
    """The convolutional cell registered as ``name``."""
    if not isinstance(name, str) or name not in _CONV_REGISTRY:
        raise ValueError(f"cell must be one of {', '.join(_CONV_REGISTRY)}; got {name!r}")
    return _CONV_REGISTRY[name]()
