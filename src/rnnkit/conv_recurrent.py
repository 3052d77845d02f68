"""``ConvRecurrent``: convolutional recurrent cells (ConvLSTM, ConvGRU) stacked, in one or both directions.

The counterpart of ``rnnkit.Recurrent`` for inputs with a spatial layout, (T, B, C, *S) with
S = (L,), (H, W) or (D, H, W). The layer owns the parameters under torch's names, validates
every argument up front, and runs the reference loop of ``rnnkit.driver`` (the only
backend for these cells), as ``Recurrent``'s reference backend does: per layer and direction
one input convolution over all T*B frames, then the cell's hidden-to-hidden convolution and
gates per step. Variable lengths
are handled as in ``Recurrent``: a finished clip keeps its state and outputs zeros, and the
reverse direction starts at each clip's own last frame.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .cells.base import LSTMState, State
from .cells.conv import ConvCell, make_conv_cell
from .driver import run_stack, step_layers, time_loop
from .recurrent import check_lengths, check_matches_parameters, register_layer_parameters
from .regularize import Regularizers

_SPATIAL = {1: "L", 2: "H, W", 3: "D, H, W"}


class ConvRecurrent(nn.Module):
    r"""A stacked, optionally bidirectional layer of convolutional recurrent cells.

    Args:
        cell: a name from ``rnnkit.conv_cells()``: ``"convlstm"``, ``"peephole_convlstm"``, ``"convgru"``,
            ``"cho_convgru"``.
        in_channels: channels of the input frames, C.
        hidden_channels: channels of the state, Hc (one size for every layer).
        kernel_size: odd int, or a tuple of ``dims`` odd ints, of both convolutions (input-to-state
            and state-to-state), k; stride 1 and zero "same" padding keep the frame size S.
        num_layers: stacked layers, L; layer l > 0 reads the (D*Hc)-channel outputs of layer l - 1.
        bidirectional: run a second stack of directions over the reversed clips, D = 2.
        batch_first: input and output are (B, T, ...) instead of (T, B, ...); the state never is.
        dims: spatial dimensions of a frame: 1 (L), 2 (H, W) or 3 (D, H, W).
        bias (keyword-only): whether the cell has ``bias_ih`` and ``bias_hh``.
        dropout (keyword-only): dropout probability on the outputs of every layer but the last.
        device, dtype (keyword-only): where and how the parameters are created, as in torch.nn.

    Shapes (``forward(x, state=None, lengths=None) -> (out, state)``), for dims=2:
        x: (T, B, C, H, W), or (B, T, C, H, W) with batch_first.
        state: ``LSTMState(h, c)`` (a plain ``(h, c)`` tuple is accepted) for the ConvLSTMs, a tensor h
            for the ConvGRUs; each (L*D, B, Hc, H, W). None means zeros.
        lengths: (B,) valid steps per clip, any order, any device; None means all T.
        out: (T, B, D*Hc, H, W) (or batch-first); zero past each clip's end.
        state: the state of every layer and direction after each clip's last frame.

    Parameters, per layer l and direction (``_reverse`` for the second): ``weight_ih_l{l}``
    (G*Hc, C_l, *k), ``weight_hh_l{l}`` (G*Hc, Hc, *k), ``bias_ih_l{l}``, ``bias_hh_l{l}``
    (G*Hc,), and ``weight_peephole_l{l}`` (3, Hc) for ``peephole_convlstm``; G = 4 (i|f|g|o) or
    3 (r|z|n); C_0 = C, C_l = D*Hc.

    Example::

        >>> layer = rnnkit.ConvRecurrent("convlstm", in_channels=3, hidden_channels=8, kernel_size=3)
        >>> out, (h, c) = layer(torch.randn(5, 2, 3, 8, 8), lengths=torch.tensor([5, 3]))
        >>> out.shape, h.shape
        (torch.Size([5, 2, 8, 8, 8]), torch.Size([1, 2, 8, 8, 8]))
    """

    def __init__(
        self,
        cell: str,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int | Sequence[int],
        num_layers: int = 1,
        bidirectional: bool = False,
        batch_first: bool = False,
        dims: int = 2,
        *,
        bias: bool = True,
        dropout: float = 0.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.cell: ConvCell = make_conv_cell(cell)
        if isinstance(dims, bool) or not isinstance(dims, int) or dims not in _SPATIAL:
            raise ValueError(f"dims must be 1, 2 or 3 (spatial dimensions of a frame), got {dims!r}")
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("hidden_channels", hidden_channels)
        _check_positive_int("num_layers", num_layers)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout={dropout} has no effect with num_layers=1: it applies between layers",
                          stacklevel=2)
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.kernel_size = _check_kernel_size(kernel_size, dims)
        self.num_layers = num_layers
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.batch_first = batch_first
        self.dims = dims
        self.bias = bias
        self.dropout = float(dropout)
        # as Recurrent's, for code that logs it; these cells have one backend, the reference loop
        self.last_backend: str | None = None
        self.regularizers = Regularizers()  # none: the driver reads them; these cells take dropout between layers

        factory = {"device": device, "dtype": dtype}
        # _names[l][d] maps the cell's parameter names to this module's attribute names.
        self._names = register_layer_parameters(
            self, [self.cell.parameter_shapes(in_channels if k == 0 else hidden_channels * self.num_directions,
                                              hidden_channels, self.kernel_size, bias) for k in range(num_layers)],
            self.num_directions, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The cell's init rule, U(-1/sqrt(Hc k^d), 1/sqrt(Hc k^d)), in registration order."""
        for k in range(self.num_layers):
            for d in range(self.num_directions):
                self.cell.reset_parameters(self.weights(k, d), self.hidden_channels, self.kernel_size)

    def weights(self, layer: int, direction: int) -> dict[str, Tensor]:
        """The parameters of one layer and direction under the cell's names (``weight_hh``, ...)."""
        return {name: getattr(self, full) for name, full in self._names[layer][direction].items()}

    # ------------------------------------------------------------------ forward

    def forward(
        self, x: Tensor, state: State | Sequence[Tensor] | None = None, lengths: Tensor | Sequence[int] | None = None
    ) -> tuple[Tensor, State]:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a Tensor, got {type(x).__name__}")
        if x.dim() != 3 + self.dims:
            layout = f"({'B, T' if self.batch_first else 'T, B'}, C, {_SPATIAL[self.dims]})"
            raise ValueError(f"x must be {3 + self.dims}-D {layout} for dims={self.dims}, got {x.dim()}-D of shape "
                             f"{tuple(x.shape)}")
        if self.batch_first:
            x = x.transpose(0, 1)
        T, B = x.shape[:2]
        if T == 0:
            raise ValueError(f"x has 0 time steps, shape {tuple(x.shape)}; expected at least 1")
        if B == 0:  # as Recurrent: an empty batch is a caller's mistake, not an empty answer
            raise ValueError(f"x has a batch of 0 clips, shape {tuple(x.shape)}; expected at least 1")
        self._check_input(x, x.shape[2])
        lengths = check_lengths(lengths, T, B, x.device, item="clip")
        spatial = tuple(x.shape[3:])
        state = self._check_state(state, B, spatial, x)

        out, state = run_stack(self, x, lengths, state, time_loop)  # (T, B, D*Hc, *S)
        self.last_backend = "reference"
        return (out.transpose(0, 1) if self.batch_first else out), state

    def step(self, x_t: Tensor, state: State | Sequence[Tensor] | None = None) -> tuple[Tensor, State]:
        """One time step through every layer: x_t (B, C, *S) -> y_t (B, Hc, *S) and the new state.

        The state has ``forward``'s shapes, (L, B, Hc, *S) or LSTMState of such; None means zeros.
        Stepping T times equals one ``forward`` over the T steps (dropout aside in training).
        """
        if self.bidirectional:
            raise ValueError("step() needs a unidirectional layer: the reverse direction of a "
                             "bidirectional layer starts at the end of the clip, which a step has not seen")
        if not isinstance(x_t, Tensor) or x_t.dim() != 2 + self.dims:
            got = f"{x_t.dim()}-D of shape {tuple(x_t.shape)}" if isinstance(x_t, Tensor) else type(x_t).__name__
            raise ValueError(f"x_t must be {2 + self.dims}-D (B, C, {_SPATIAL[self.dims]}) for dims={self.dims}, "
                             f"got {got}")
        if x_t.shape[0] == 0:
            raise ValueError(f"x_t has a batch of 0 clips, shape {tuple(x_t.shape)}; expected at least 1")
        self._check_input(x_t, x_t.shape[1], name="x_t")
        state = self._check_state(state, x_t.shape[0], tuple(x_t.shape[2:]), x_t)
        return step_layers(self, x_t, state)

    # ------------------------------------------------------------------ validation

    def _check_input(self, x: Tensor, channels: int, name: str = "x") -> None:
        if channels != self.in_channels:
            raise ValueError(f"{name} has {channels} channels (shape {tuple(x.shape)}), layer expects "
                             f"in_channels={self.in_channels}")
        check_matches_parameters(x, self.weight_ih_l0, name)
        small = [s for s in x.shape[-self.dims:] if s < 1]
        if small:
            raise ValueError(f"{name} has an empty frame, shape {tuple(x.shape)}")

    def _check_state(self, state, B: int, spatial: tuple[int, ...], x: Tensor) -> State:
        """The initial state with its shapes checked against (L*D, B, Hc, *S); zeros for None."""
        leading = (self.num_layers * self.num_directions, B)
        if state is None:
            return self.cell.zero_state(leading, self.hidden_channels, spatial, x)
        if self.cell.state_type is LSTMState:
            if isinstance(state, (tuple, list)) and not isinstance(state, LSTMState) and len(state) == 2:
                state = LSTMState(*state)
            if not isinstance(state, LSTMState):
                raise TypeError(f"state must be an LSTMState or an (h, c) pair for cell {self.cell.name!r}, "
                                f"got {type(state).__name__}")
            parts = list(zip(("state.h", "state.c"), state))
        else:
            if not isinstance(state, Tensor):
                raise TypeError(f"state must be a Tensor h for cell {self.cell.name!r}, got {type(state).__name__}")
            parts = [("state", state)]
        expected = (*leading, self.hidden_channels, *spatial)
        for name, part in parts:
            if not isinstance(part, Tensor):
                raise TypeError(f"{name} must be a Tensor, got {type(part).__name__}")
            if tuple(part.shape) != expected:
                raise ValueError(f"{name} has shape {tuple(part.shape)}, expected (num_layers*num_directions, "
                                 f"batch, hidden_channels, {_SPATIAL[self.dims]}) = {expected}")
            if part.device != x.device:
                raise ValueError(f"{name} is on {part.device} but x is on {x.device}")
            if part.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
                raise TypeError(f"{name} has dtype {part.dtype} but x has {x.dtype}")
        return state

    def extra_repr(self) -> str:
        k = self.kernel_size[0] if len(set(self.kernel_size)) == 1 else self.kernel_size
        s = f"{self.cell.name!r}, {self.in_channels}, {self.hidden_channels}, kernel_size={k}"
        defaults = {"num_layers": 1, "bidirectional": False, "batch_first": False, "dims": 2, "bias": True,
                    "dropout": 0.0}
        for name, default in defaults.items():
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)!r}"
        return s


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_kernel_size(kernel_size, dims: int) -> tuple[int, ...]:
    """kernel_size as a tuple of ``dims`` odd positive ints."""
    sizes = (kernel_size,) * dims if isinstance(kernel_size, int) and not isinstance(kernel_size, bool) else kernel_size
    if (not isinstance(sizes, Sequence) or len(sizes) != dims
            or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in sizes)):
        raise ValueError(f"kernel_size must be a positive int or a tuple of {dims} positive ints (dims={dims}), "
                         f"got {kernel_size!r}")
    if any(k % 2 == 0 for k in sizes):
        raise ValueError(f"kernel_size must be odd in every dimension, got {kernel_size!r}: 'same' padding of k // 2 "
                         "on both sides keeps the frame size only for odd k")
    return tuple(sizes)
