"""``Recurrent``: the one layer. Any registered cell, stacked, in one or both directions.

The layer owns the parameters under torch's flat names, validates every argument up
front, normalizes the input (batch_first, PackedSequence, unbatched) to a time-major
padded tensor with optional lengths, and hands the time loop to a backend.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import backends
from .backends import EXPORT_ALTERNATIVE, NotSupported, Problem
from .cells import Cell, LSTMState, State, make_cell, map_state
from .driver import step_layers
from .regularize import Regularizers
from .stepper import Stepper

# torch's names for the cells cuDNN runs (torch.backends.cudnn.rnn.get_cudnn_mode), for flatten_parameters
_CUDNN_MODES = {"rnn_tanh": "RNN_TANH", "rnn_relu": "RNN_RELU", "lstm": "LSTM", "gru": "GRU"}

class Recurrent(nn.Module):
    r"""A stacked, optionally bidirectional recurrent layer over any registered cell.

    Args:
        cell: a name from ``rnnkit.cells()`` (``"lstm"``, ``"peephole_lstm"``, ``"gru"``, ...).
        input_size: features of the input, I.
        hidden_size: features of the hidden state, H.
        num_layers: stacked layers, L; layer k > 0 reads the outputs of layer k - 1.
        bias: whether the cell has ``bias_ih`` and ``bias_hh``.
        batch_first: input and output are (B, T, *) instead of (T, B, *); the state never is.
        dropout: dropout probability on the outputs of every layer but the last, in [0, 1].
        bidirectional: run a second stack of directions over the reversed sequences, D = 2.
        proj_size: the LSTM family's output projection, R = proj_size (0: none, R = H).
        backend: ``"auto"``, ``"reference"``, ``"native"``, ``"fused"`` or ``"scan"`` (see ``rnnkit.backends``).
        device, dtype: where and how the parameters are created, as in torch.nn.
        input_dropout, hidden_dropout, output_dropout (keyword-only): variational (locked) dropout, one mask per
            sequence for all its steps, on every layer's input, on h_{t-1} in the recurrent
            products, on the last layer's output (Gal & Ghahramani 2016); in [0, 1).
        zoneout: probability that a unit keeps its previous state at a step (Krueger et al.
            2017); a pair ``(p_h, p_c)`` sets the LSTM family's h and c apart.
        weight_drop: DropConnect on W_hh, one mask per forward call (Merity et al. 2018).
            The five regularizers act in training mode only; see ``rnnkit.regularize``.
        **cell_options: options of the cell, e.g. ``nonlinearity="tanh"`` for ``indrnn``.

    Shapes (``forward(x, state=None, lengths=None) -> (out, state)``):
        x: (T, B, I), (B, T, I) with batch_first, (T, I) unbatched, or a PackedSequence.
        state: (L*D, B, R), or ``LSTMState(h (L*D, B, R), c (L*D, B, H))`` for the LSTM
            family (a plain ``(h, c)`` tuple is accepted); None means zeros.
        lengths: (B,) valid steps per sequence, any order, any device; None means all T.
        out: (T, B, D*R) (or batch-first, or packed like x); zero past each sequence's end.
        state: the state of every layer and direction after each sequence's last element.

    Parameters are named as in torch.nn: ``weight_ih_l{k}``, ``weight_hh_l{k}``,
    ``bias_ih_l{k}``, ``bias_hh_l{k}``, with ``_reverse`` for the second direction, and the
    cell's extras (``weight_peephole_l{k}``, ``ln_ih_weight_l{k}``, ...) in the same pattern.

    Example::

        >>> layer = rnnkit.Recurrent("peephole_lstm", 8, 16, num_layers=2, bidirectional=True)
        >>> out, state = layer(torch.randn(5, 3, 8), lengths=torch.tensor([5, 2, 4]))
        >>> out.shape, state.h.shape
        (torch.Size([5, 3, 32]), torch.Size([4, 3, 16]))
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        backend: str = "auto",
        device=None,
        dtype=None,
        *,
        input_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
        output_dropout: float = 0.0,
        zoneout: float | tuple[float, float] = 0.0,
        weight_drop: float = 0.0,
        **cell_options,
    ) -> None:
        super().__init__()
        self.cell: Cell = make_cell(cell, **cell_options)
        self.cell_options = dict(sorted(cell_options.items()))
        self.regularizers = Regularizers.build(self.cell, input_dropout, hidden_dropout, output_dropout, zoneout,
                                               weight_drop)
        _check_positive_int("input_size", input_size)
        _check_positive_int("hidden_size", hidden_size)
        _check_positive_int("num_layers", num_layers)
        if isinstance(proj_size, bool) or not isinstance(proj_size, int) or proj_size < 0:
            raise ValueError(f"proj_size must be an int >= 0, got {proj_size!r}")
        if proj_size and not self.cell.supports_proj:
            raise ValueError(
                f"proj_size={proj_size} but cell {cell!r} has no projection; "
                "only the LSTM family (lstm, peephole_lstm, layernorm_lstm, cifg_lstm) takes proj_size"
            )
        if proj_size >= hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size ({hidden_size}), got {proj_size}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                f"dropout={dropout} has no effect with num_layers=1: it applies between layers",
                stacklevel=2 if type(self) is Recurrent else 3,  # point at the user's line
            )
        if backend not in backends.backend_names():
            raise ValueError(f"backend must be one of {', '.join(backends.backend_names())}; got {backend!r}")

        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.proj_size = proj_size
        self.backend = backend
        self.last_backend: str | None = None  # the backend that ran the last forward call
        self._stepper: Stepper | None = None  # step()'s inference path, made on the first such step

        factory = {"device": device, "dtype": dtype}
        out_size = proj_size or hidden_size
        # _names[k][d] maps the cell's parameter names to this module's attribute names.
        self._names = register_layer_parameters(
            self, [self.cell.parameter_shapes(input_size if k == 0 else out_size * self.num_directions, hidden_size,
                                              proj_size, bias) for k in range(num_layers)],
            self.num_directions, factory)
        self.reset_parameters()
        self.flatten_parameters()

    def reset_parameters(self) -> None:
        """Each cell's init rule (torch's U(-1/sqrt(H), 1/sqrt(H)) for torch's cells), in registration order."""
        out_size = self.proj_size or self.hidden_size
        for k in range(self.num_layers):
            layer_input = self.input_size if k == 0 else out_size * self.num_directions
            for d in range(self.num_directions):
                self.cell.reset_parameters(self.weights(k, d), layer_input, self.hidden_size)

    def weights(self, layer: int, direction: int) -> dict[str, Tensor]:
        """The parameters of one layer and direction under the cell's names (``weight_hh``, ...)."""
        return {name: getattr(self, full) for name, full in self._names[layer][direction].items()}

    def flatten_parameters(self) -> None:
        """On CUDA, for torch's cells, put every weight into one cuDNN buffer, as torch.nn does.

        cuDNN otherwise copies the weights into such a buffer on every call (and warns). The
        parameters stay separate ``nn.Parameter``s, now views into that buffer. Called after
        construction and after ``.to()`` / ``.cuda()``; a no-op on the CPU, for the other cells,
        for mixed dtypes, and where parameters alias.
        """
        mode = _CUDNN_MODES.get(self.cell.name)
        weights = [w for k in range(self.num_layers) for d in range(self.num_directions)
                   for w in self.weights(k, d).values()]
        if mode is None or self.cell_options or not weights:
            return
        first = weights[0]
        if not all(w.is_cuda and w.dtype == first.dtype and torch.backends.cudnn.is_acceptable(w) for w in weights):
            return
        if len({w.data_ptr() for w in weights}) != len(weights):
            return
        import torch.backends.cudnn.rnn as cudnn_rnn

        per_direction = (4 if self.bias else 2) + (1 if self.proj_size else 0)
        with torch.cuda.device_of(first), torch.no_grad():
            if torch._use_cudnn_rnn_flatten_weight():
                torch._cudnn_rnn_flatten_weight(
                    weights, per_direction, self.input_size, cudnn_rnn.get_cudnn_mode(mode), self.hidden_size,
                    self.proj_size, self.num_layers, self.batch_first, self.bidirectional)

    def __prepare_scriptable__(self) -> nn.Module:
        """What ``torch.jit.script`` compiles in this layer's place, on its own parameters (``rnnkit.script``).

        torch.nn's RNN / LSTM / GRU for torch's cells; for the others the loop ``rnnkit export`` writes,
        ``forward(input, hx=None, lengths=None)``. A layer neither can compute (regularizers, dropout
        between layers in that loop) raises ``NotSupported`` naming the alternatives.
        """
        from .script import scriptable  # script imports export, which imports this module

        return scriptable(self)

    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)
        self.flatten_parameters()  # .to("cuda") made new, separate tensors
        return result

    # ------------------------------------------------------------------ forward

    def forward(
        self, x: Tensor | PackedSequence, state: State | Sequence[Tensor] | None = None,
        lengths: Tensor | Sequence[int] | None = None,
    ) -> tuple[Tensor | PackedSequence, State]:
        packed = x if isinstance(x, PackedSequence) else None
        if (packed is not None or lengths is not None) and torch.compiler.is_exporting():
            what = "a PackedSequence" if packed is not None else "lengths"
            raise NotSupported(f"torch.export cannot export a call with {what}: checking the lengths and masking "
                               f"by them reads their values, which export cannot trace. {EXPORT_ALTERNATIVE}")
        unbatched = False
        if packed is not None:
            if lengths is not None:
                raise ValueError("lengths must be None when x is a PackedSequence: it carries its own lengths")
            x, lengths = pad_packed_sequence(packed)  # (T, B, I), original batch order
        else:
            if not isinstance(x, Tensor):
                raise TypeError(f"x must be a Tensor or a PackedSequence, got {type(x).__name__}")
            if x.dim() == 2:  # unbatched (T, I), as torch.nn accepts
                unbatched = True
                x = x.unsqueeze(1)
                if state is not None:
                    state = map_state(lambda s: s.unsqueeze(1), self._check_unbatched_state(state))
            elif x.dim() != 3:
                layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
                raise ValueError(f"x must be 3-D {layout} or 2-D (T, I) unbatched, got {x.dim()}-D of shape "
                                 f"{tuple(x.shape)}")
            elif self.batch_first:
                x = x.transpose(0, 1)
        T, B, features = x.shape
        if T == 0:
            raise ValueError(f"x has 0 time steps, shape {tuple(x.shape)}; expected at least 1")
        if B == 0:  # the fused kernels divide the batch between threads: an empty one must not reach them
            raise ValueError(f"x has a batch of 0 sequences, shape {tuple(x.shape)}; expected at least 1")
        self._check_input(x, features)
        lengths = check_lengths(lengths, T, B, x.device)
        state = self._check_state(state, B, x)

        training = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        regularizers = self.regularizers.active() if self.training else ()
        device = x.device.type
        autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        problem = Problem(self.cell.name, tuple(self.cell_options.items()), device, x.dtype, B, T, training,
                          regularizers, autocast, torch.compiler.is_exporting(), self.hidden_size, self.proj_size)
        backend = backends.select(self.backend, problem)
        out, state = backends.run(backend, self, x, lengths, state)  # (T, B, D*R)
        self.last_backend = backend.NAME

        if packed is not None:
            return _repack(out, packed), state
        if unbatched:
            return out.squeeze(1), map_state(lambda s: s.squeeze(1), state)
        return (out.transpose(0, 1) if self.batch_first else out), state

    def step(self, x_t: Tensor, state: State | Sequence[Tensor] | None = None) -> tuple[Tensor, State]:
        """One time step through every layer: x_t (B, I) -> y_t (B, R) and the new state.

        The state has ``forward``'s shapes, (L, B, R) or LSTMState; None means zeros.
        Stepping T times equals one ``forward`` over the T steps (dropout aside in training).

        Where no gradient is needed (``torch.no_grad``, ``inference_mode``, or nothing
        requires grad) and autocast is off, the step runs on weights arranged once with raw
        ops (``rnnkit.stepper``): the same numbers up to rounding, at a fraction of the
        autograd step's cost per token. Otherwise it runs the cell's autograd step.
        """
        if self.bidirectional:
            raise ValueError("step() needs a unidirectional layer: the reverse direction of a "
                             "bidirectional layer starts at the end of the sequence, which a step has not seen")
        if self.training and self.regularizers.active():
            raise ValueError(f"step() cannot apply {', '.join(self.regularizers.active())} in training mode: their "
                             "masks are shared by a whole sequence, which one step does not see; call "
                             "layer.eval() to step without them, or run forward() over the sequence")
        if not isinstance(x_t, Tensor) or x_t.dim() != 2:
            got = f"{x_t.dim()}-D of shape {tuple(x_t.shape)}" if isinstance(x_t, Tensor) else type(x_t).__name__
            raise ValueError(f"x_t must be 2-D (B, I), got {got}")
        if x_t.shape[0] == 0:
            raise ValueError(f"x_t has a batch of 0 sequences, shape {tuple(x_t.shape)}; expected at least 1")
        self._check_input(x_t, x_t.shape[1], name="x_t")
        state = self._check_state(state, x_t.shape[0], x_t)
        if not torch.is_autocast_enabled(x_t.device.type) and not self._step_needs_grad(x_t, state):
            if self._stepper is None:
                self._stepper = Stepper()
            return self._stepper.step(self, x_t, state, self.dropout if self.training else 0.0)
        return step_layers(self, x_t, state)

    def _step_needs_grad(self, x_t: Tensor, state: State) -> bool:
        """Whether step() must record autograd history: grad mode on and anything requiring grad."""
        if not torch.is_grad_enabled():
            return False
        parts = (state,) if isinstance(state, Tensor) else state
        return (x_t.requires_grad or any(s.requires_grad for s in parts)
                or any(p.requires_grad for p in self.parameters()))

    # ------------------------------------------------------------------ validation

    def _check_input(self, x: Tensor, features: int, name: str = "x") -> None:
        if features != self.input_size:
            raise ValueError(f"{name} has {features} features, layer expects input_size={self.input_size}")
        check_matches_parameters(x, self.weight_ih_l0, name)

    def _check_unbatched_state(self, state) -> State:
        """With unbatched x (T, I), the state is unbatched too: (L*D, R) or LSTMState of such."""
        state = _as_state(state, self.cell.state_type)
        parts = [("state", state)] if isinstance(state, Tensor) else list(zip(("state.h", "state.c"), state))
        for (name, part), size in zip(parts, self.cell.state_sizes(self.hidden_size, self.proj_size)):
            if not isinstance(part, Tensor) or part.dim() != 2:
                got = f"shape {tuple(part.shape)}" if isinstance(part, Tensor) else type(part).__name__
                expected = (self.num_layers * self.num_directions, size)
                raise ValueError(f"x is unbatched (2-D), so {name} must be 2-D (num_layers*num_directions, "
                                 f"{'hidden' if size == self.hidden_size else 'proj'}) = {expected}, got {got}")
        return state

    def _check_state(self, state, B: int, x: Tensor) -> State:
        """The initial state with its shapes checked against (L*D, B, ...); zeros for None."""
        leading = (self.num_layers * self.num_directions, B)
        if state is None:
            return self.cell.zero_state(leading, self.hidden_size, self.proj_size, x)
        state = _as_state(state, self.cell.state_type)
        parts = [state] if isinstance(state, Tensor) else list(state)
        names = ["state"] if isinstance(state, Tensor) else [f"state.{f}" for f in LSTMState._fields]
        for name, part, size in zip(names, parts, self.cell.state_sizes(self.hidden_size, self.proj_size)):
            if not isinstance(part, Tensor):
                raise TypeError(f"{name} must be a Tensor, got {type(part).__name__}")
            expected = (*leading, size)
            if tuple(part.shape) != expected:
                raise ValueError(
                    f"{name} has shape {tuple(part.shape)}, expected (num_layers*num_directions, batch, "
                    f"{'hidden' if size == self.hidden_size else 'proj'}) = {expected}"
                )
            if part.device != x.device:
                raise ValueError(f"{name} is on {part.device} but x is on {x.device}")
            if part.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
                # under autocast a state carried from the previous call is in the autocast dtype
                raise TypeError(f"{name} has dtype {part.dtype} but x has {x.dtype}")
        return state

    def extra_repr(self) -> str:
        s = f"{self.cell.name!r}, {self.input_size}, {self.hidden_size}"
        defaults = {"num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0,
                    "bidirectional": False, "proj_size": 0, "backend": "auto"}
        for name, default in defaults.items():
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)!r}"
        for name in self.regularizers.active():
            s += f", {name}={getattr(self.regularizers, name)!r}"
        for name, value in self.cell_options.items():
            s += f", {name}={value!r}"
        return s


def _as_state(state, state_type: type) -> State:
    """A user's state as the cell's type: a Tensor, or LSTMState from an (h, c) pair."""
    if state_type is Tensor:
        if not isinstance(state, Tensor):
            raise TypeError(f"state must be a Tensor for this cell, got {type(state).__name__}")
        return state
    if isinstance(state, LSTMState):
        return state
    if isinstance(state, (tuple, list)) and len(state) == 2:
        return LSTMState(*state)
    raise TypeError(f"state must be an LSTMState or an (h, c) pair for this cell, got {type(state).__name__}")


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _repack(out: Tensor, like: PackedSequence) -> PackedSequence:
    """Pack a padded (T, B, *) output exactly as the input ``like`` was packed."""
    # each sequence's length in sorted order: the number of steps whose batch size exceeds its rank
    sorted_lengths = (like.batch_sizes[None, :] > torch.arange(out.shape[1])[:, None]).sum(1)
    if like.sorted_indices is not None:
        out = out.index_select(1, like.sorted_indices)
    data = pack_padded_sequence(out, sorted_lengths, enforce_sorted=True).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


def check_lengths(lengths, T: int, B: int, device: torch.device, item: str = "sequence") -> Tensor | None:
    """lengths as int64 on x's device, or None where every ``item`` of the batch has all T steps (also
    ``ConvRecurrent``'s, whose items are clips)."""
    if lengths is None:
        return None
    if isinstance(lengths, Tensor):
        if lengths.dim() != 1:
            raise ValueError(f"lengths must be 1-D with one entry per {item}, got shape {tuple(lengths.shape)}")
        if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise TypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
    elif isinstance(lengths, Sequence) and all(isinstance(n, int) and not isinstance(n, bool) for n in lengths):
        lengths = torch.tensor(list(lengths), dtype=torch.int64)
    else:
        raise TypeError(f"lengths must be a 1-D integer tensor or a list of ints, got {type(lengths).__name__}")
    if lengths.numel() != B:
        raise ValueError(f"lengths has {lengths.numel()} entries but the batch has {B} {item}s")
    host = lengths.cpu()
    if B and int(host.min()) < 1:
        raise ValueError(f"every length must be >= 1, got {host.tolist()}")
    if B and int(host.max()) > T:
        raise ValueError(f"lengths can be at most the {T} time steps of x, got {host.tolist()}")
    if B and int(host.min()) == T:
        return None  # every item is full: no masking to do
    return lengths.to(device=device, dtype=torch.int64)


def register_layer_parameters(module: nn.Module, shapes: list[dict[str, tuple]], num_directions: int,
                              factory: dict) -> list[list[dict[str, str]]]:
    """Register each layer's cell parameters (``shapes[k]``: name -> shape) once per direction, under torch's
    names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...), uninitialized; also ``ConvRecurrent``'s.

    Returns ``names[k][d]``: the cell's parameter names -> the module's attribute names.
    """
    names = []
    for k, layer_shapes in enumerate(shapes):
        per_direction = []
        for d in range(num_directions):
            suffix = f"_l{k}" + ("_reverse" if d == 1 else "")
            for name, shape in layer_shapes.items():
                module.register_parameter(name + suffix, nn.Parameter(torch.empty(shape, **factory)))
            per_direction.append({name: name + suffix for name in layer_shapes})
        names.append(per_direction)
    return names


def check_matches_parameters(x: Tensor, weight: Tensor, name: str = "x") -> None:
    """``x`` is floating point, on ``weight``'s device and of its dtype (unless autocast is on); also
    ``ConvRecurrent``'s."""
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.device != weight.device:
        raise ValueError(f"{name} is on {x.device} but the layer's parameters are on {weight.device}")
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"{name} has dtype {x.dtype} but the layer's parameters are {weight.dtype}; "
                        f"convert one of them (e.g. layer.to({x.dtype}))")
