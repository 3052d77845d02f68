"""Bad arguments fail early, with messages for people (design section 3).

Every error names the argument, what was expected and what came, and is raised by
rnnkit's own validation before any computation: the forward-time tests run with the
backend dispatch replaced by a tripwire (``no_backend``), so an input that slips past
validation fails the test instead of surfacing later as a torch internal error
("mat1 and mat2 shapes cannot be multiplied", "size mismatch", ...).
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit import LSTMState, NotSupported, Recurrent
from rnnkit.backends.fused import extension

I, H = 3, 4  # every layer here maps 3 input features to 4 hidden units
T, B = 5, 2  # and reads 5 time steps of 2 sequences

TORCH_INTERNALS = ("mat1", "mat2", "size mismatch")


@pytest.fixture
def no_backend(monkeypatch):
    """Make any forward call past validation fail loudly: backend selection is its first computation."""

    def tripwire(requested, problem):
        raise AssertionError(f"validation let a bad argument through to the backend ({problem})")

    monkeypatch.setattr(rnnkit.backends, "select", tripwire)


def assert_ours(excinfo) -> None:
    """The error is rnnkit's message, not a torch internal one."""
    message = str(excinfo.value)
    for word in TORCH_INTERNALS:
        assert word not in message, f"torch internal error leaked through: {message}"


def x_(*shape, **kw):
    return torch.randn(shape, **kw)


# Layers under test, by readable id: the generic layer and the torch.nn drop-ins.
LAYERS = {
    "Recurrent-lstm": lambda **kw: Recurrent("lstm", I, H, **kw),
    "Recurrent-peephole_lstm": lambda **kw: Recurrent("peephole_lstm", I, H, **kw),
    "Recurrent-mingru": lambda **kw: Recurrent("mingru", I, H, **kw),
    "LSTM": lambda **kw: rnnkit.LSTM(I, H, **kw),
    "GRU": lambda **kw: rnnkit.GRU(I, H, **kw),
    "RNN": lambda **kw: rnnkit.RNN(I, H, **kw),
}
layer_ids = list(LAYERS)
layer_factories = list(LAYERS.values())


# ---------------------------------------------------------------- input rank and features


@pytest.mark.parametrize("make", layer_factories, ids=layer_ids)
@pytest.mark.parametrize(
    "shape,rank",
    [((T,), 1), ((T, B, I, 1), 4), ((), 0)],
    ids=["1-D", "4-D", "0-D"],
)
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
def test_wrong_input_rank(no_backend, make, shape, rank, batch_first):
    layer = make(batch_first=batch_first)
    layout = r"\(B, T, I\)" if batch_first else r"\(T, B, I\)"
    with pytest.raises(ValueError, match=rf"x must be 3-D {layout}.*got {rank}-D") as excinfo:
        layer(x_(*shape))
    assert f"of shape {tuple(shape)}" in str(excinfo.value), "the message shows the shape that came"
    assert_ours(excinfo)


@pytest.mark.parametrize("make", layer_factories, ids=layer_ids)
@pytest.mark.parametrize(
    "batch_first,shape",
    [(False, (T, B, 4)), (True, (B, T, 4)), (False, (T, 4))],
    ids=["time-major", "batch-first", "unbatched"],
)
def test_wrong_feature_size(no_backend, make, batch_first, shape):
    layer = make(batch_first=batch_first)
    with pytest.raises(ValueError, match=rf"x has 4 features, layer expects input_size={I}") as excinfo:
        layer(x_(*shape))
    assert_ours(excinfo)


def test_integer_input_is_a_type_error(no_backend):
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor, got dtype torch.int64"):
        rnnkit.LSTM(I, H)(torch.ones(T, B, I, dtype=torch.int64))


def test_input_that_is_not_a_tensor(no_backend):
    with pytest.raises(TypeError, match=r"x must be a Tensor or a PackedSequence, got list"):
        rnnkit.GRU(I, H)([[0.0] * I] * T)


def test_input_with_no_time_steps(no_backend):
    # torch itself fails deep inside with "Expected sequence length to be larger than 0"
    with pytest.raises(ValueError, match=r"0 time steps") as excinfo:
        rnnkit.LSTM(I, H)(x_(0, B, I))
    assert_ours(excinfo)


# ---------------------------------------------------------------- state shapes and types


def zeros(*shape, **kw):
    return torch.zeros(*shape, **kw)


# (layer, state, the message's key words); x is always (T=5, B=2, I=3).
STATE_SHAPE_CASES = {
    "GRU-layers": (
        lambda: rnnkit.GRU(I, H, num_layers=2),
        lambda: zeros(1, B, H),
        r"state has shape \(1, 2, 4\), expected \(num_layers\*num_directions, batch, hidden\) = \(2, 2, 4\)",
    ),
    "GRU-directions": (
        lambda: rnnkit.GRU(I, H, bidirectional=True),
        lambda: zeros(1, B, H),
        r"state has shape \(1, 2, 4\), expected .* = \(2, 2, 4\)",
    ),
    "GRU-batch": (
        lambda: rnnkit.GRU(I, H),
        lambda: zeros(1, 3, H),
        r"state has shape \(1, 3, 4\), expected .*batch.* = \(1, 2, 4\)",
    ),
    "GRU-hidden": (
        lambda: rnnkit.GRU(I, H),
        lambda: zeros(1, B, 5),
        r"state has shape \(1, 2, 5\), expected .*hidden\) = \(1, 2, 4\)",
    ),
    "GRU-2-D-for-batched-x": (
        lambda: rnnkit.GRU(I, H),
        lambda: zeros(1, H),
        r"state has shape \(1, 4\), expected .* = \(1, 2, 4\)",
    ),
    "RNN-hidden": (
        lambda: rnnkit.RNN(I, H, num_layers=2),
        lambda: zeros(2, B, 3),
        r"state has shape \(2, 2, 3\), expected .* = \(2, 2, 4\)",
    ),
    "mingru-layers": (
        lambda: Recurrent("mingru", I, H, num_layers=3),
        lambda: zeros(2, B, H),
        r"state has shape \(2, 2, 4\), expected .* = \(3, 2, 4\)",
    ),
    "LSTM-h-layers": (
        lambda: rnnkit.LSTM(I, H),
        lambda: (zeros(2, B, H), zeros(1, B, H)),
        r"state\.h has shape \(2, 2, 4\), expected .* = \(1, 2, 4\)",
    ),
    "LSTM-h-batch": (
        lambda: rnnkit.LSTM(I, H, bidirectional=True),
        lambda: LSTMState(zeros(2, 3, H), zeros(2, B, H)),
        r"state\.h has shape \(2, 3, 4\), expected .* = \(2, 2, 4\)",
    ),
    "LSTM-c-hidden": (
        lambda: rnnkit.LSTM(I, H),
        lambda: (zeros(1, B, H), zeros(1, B, 5)),
        r"state\.c has shape \(1, 2, 5\), expected .*hidden\) = \(1, 2, 4\)",
    ),
    "LSTM-c-directions": (
        lambda: rnnkit.LSTM(I, H, bidirectional=True),
        lambda: (zeros(2, B, H), zeros(1, B, H)),
        r"state\.c has shape \(1, 2, 4\), expected .* = \(2, 2, 4\)",
    ),
    "LSTM-proj-h-has-hidden-size": (
        lambda: rnnkit.LSTM(I, H, proj_size=2),
        lambda: (zeros(1, B, H), zeros(1, B, H)),
        r"state\.h has shape \(1, 2, 4\), expected .*proj\) = \(1, 2, 2\)",
    ),
    "LSTM-proj-c-has-proj-size": (
        lambda: rnnkit.LSTM(I, H, proj_size=2),
        lambda: (zeros(1, B, 2), zeros(1, B, 2)),
        r"state\.c has shape \(1, 2, 2\), expected .*hidden\) = \(1, 2, 4\)",
    ),
    "peephole_lstm-c-batch": (
        lambda: Recurrent("peephole_lstm", I, H, num_layers=2),
        lambda: (zeros(2, B, H), zeros(2, 1, H)),
        r"state\.c has shape \(2, 1, 4\), expected .* = \(2, 2, 4\)",
    ),
}


@pytest.mark.parametrize("make,state,message", STATE_SHAPE_CASES.values(), ids=STATE_SHAPE_CASES.keys())
def test_state_of_wrong_shape(no_backend, make, state, message):
    with pytest.raises(ValueError, match=message) as excinfo:
        make()(x_(T, B, I), state())
    assert_ours(excinfo)


def test_state_of_wrong_shape_in_step(no_backend):
    with pytest.raises(ValueError, match=r"state\.h has shape \(1, 2, 4\), expected .* = \(2, 2, 4\)"):
        rnnkit.LSTM(I, H, num_layers=2).step(x_(B, I), (zeros(1, B, H), zeros(2, B, H)))


def test_unbatched_input_with_batched_state(no_backend):
    # torch: "For unbatched 2-D input, hx should also be 2-D but got 3-D tensor". The message
    # must show the state the user passed, not the one rnnkit made by adding a batch axis.
    with pytest.raises(ValueError, match=r"unbatched") as excinfo:
        rnnkit.GRU(I, H)(x_(T, I), zeros(1, B, H))
    message = str(excinfo.value)
    assert "(1, 2, 4)" in message, f"the message should show the state's shape (1, 2, 4): {message}"
    assert "(1, 4)" in message, f"the message should show the expected shape (1, 4): {message}"
    assert "(1, 1, " not in message, f"the message shows an internal shape: {message}"


def test_gru_given_an_lstm_state(no_backend):
    with pytest.raises(TypeError, match=r"state must be a Tensor.*got tuple") as excinfo:
        rnnkit.GRU(I, H)(x_(T, B, I), (zeros(1, B, H), zeros(1, B, H)))
    assert_ours(excinfo)


@pytest.mark.parametrize(
    "state,came",
    [(zeros(1, B, H), "Tensor"), ((zeros(1, B, H),) * 3, "tuple")],
    ids=["single-tensor", "three-tensors"],
)
def test_lstm_given_a_single_tensor_state(no_backend, state, came):
    with pytest.raises(TypeError, match=rf"state must be an LSTMState or an \(h, c\) pair.*got {came}"):
        rnnkit.LSTM(I, H)(x_(T, B, I), state)


def test_lstm_state_part_that_is_not_a_tensor(no_backend):
    with pytest.raises(TypeError, match=r"state\.c must be a Tensor, got NoneType"):
        rnnkit.LSTM(I, H)(x_(T, B, I), (zeros(1, B, H), None))


# ---------------------------------------------------------------- dtypes and devices

f32, f64 = torch.float32, torch.float64

DTYPE_CASES = {
    "GRU-state-f64": (
        lambda: rnnkit.GRU(I, H),
        lambda: zeros(1, B, H, dtype=f64),
        r"state has dtype torch\.float64 but x has torch\.float32",
    ),
    "LSTM-h-f64": (
        lambda: rnnkit.LSTM(I, H),
        lambda: (zeros(1, B, H, dtype=f64), zeros(1, B, H)),
        r"state\.h has dtype torch\.float64 but x has torch\.float32",
    ),
    "LSTM-c-f64": (
        lambda: rnnkit.LSTM(I, H),
        lambda: (zeros(1, B, H), zeros(1, B, H, dtype=f64)),
        r"state\.c has dtype torch\.float64 but x has torch\.float32",
    ),
    "cifg_lstm-h-f64": (
        lambda: Recurrent("cifg_lstm", I, H),
        lambda: (zeros(1, B, H, dtype=f64), zeros(1, B, H, dtype=f64)),
        r"state\.h has dtype torch\.float64 but x has torch\.float32",
    ),
}


@pytest.mark.parametrize("make,state,message", DTYPE_CASES.values(), ids=DTYPE_CASES.keys())
def test_input_and_state_dtypes_differ(no_backend, make, state, message):
    with pytest.raises(TypeError, match=message) as excinfo:
        make()(x_(T, B, I), state())
    assert_ours(excinfo)


@pytest.mark.parametrize("make", layer_factories, ids=layer_ids)
@pytest.mark.parametrize("layer_dtype,x_dtype", [(f32, f64), (f64, f32)], ids=["x-f64", "x-f32"])
def test_input_and_parameter_dtypes_differ(no_backend, make, layer_dtype, x_dtype):
    layer = make(dtype=layer_dtype)
    expected = rf"x has dtype {x_dtype} but the layer's parameters are {layer_dtype}"
    with pytest.raises(TypeError, match=expected) as excinfo:
        layer(x_(T, B, I, dtype=x_dtype))
    assert_ours(excinfo)


def test_input_and_parameter_dtypes_differ_in_step(no_backend):
    with pytest.raises(TypeError, match=r"x_t has dtype torch\.float64 but the layer's parameters are"):
        rnnkit.GRU(I, H).step(x_(B, I, dtype=f64))


META_CASES = {
    "GRU-state": (lambda: rnnkit.GRU(I, H), lambda: zeros(1, B, H, device="meta"), r"state is on meta"),
    "LSTM-h": (
        lambda: rnnkit.LSTM(I, H),
        lambda: (zeros(1, B, H, device="meta"), zeros(1, B, H)),
        r"state\.h is on meta",
    ),
    "LSTM-c": (
        lambda: rnnkit.LSTM(I, H),
        lambda: (zeros(1, B, H), zeros(1, B, H, device="meta")),
        r"state\.c is on meta",
    ),
    "indrnn-state": (
        lambda: Recurrent("indrnn", I, H),
        lambda: zeros(1, B, H, device="meta"),
        r"state is on meta",
    ),
}


@pytest.mark.parametrize("make,state,message", META_CASES.values(), ids=META_CASES.keys())
def test_input_and_state_devices_differ(no_backend, make, state, message):
    # a meta tensor stands in for a second device; our check must fire before anything runs
    with pytest.raises(ValueError, match=message + r" but x is on cpu") as excinfo:
        make()(x_(T, B, I), state())
    assert_ours(excinfo)


def test_input_and_parameter_devices_differ(no_backend):
    with pytest.raises(ValueError, match=r"x is on meta but the layer's parameters are on cpu") as excinfo:
        rnnkit.LSTM(I, H)(x_(T, B, I, device="meta"))
    assert_ours(excinfo)


# ---------------------------------------------------------------- lengths

LENGTHS_CASES = {
    "zero": (torch.tensor([0, 3]), ValueError, r"every length must be >= 1, got \[0, 3\]"),
    "negative": (torch.tensor([5, -1]), ValueError, r"every length must be >= 1, got \[5, -1\]"),
    "longer-than-T": (
        torch.tensor([6, 3]),
        ValueError,
        r"lengths can be at most the 5 time steps of x, got \[6, 3\]",
    ),
    "list-longer-than-T": ([2, 7], ValueError, r"at most the 5 time steps.*\[2, 7\]"),
    "too-many": (torch.tensor([5, 3, 2]), ValueError, r"lengths has 3 entries but the batch has 2 sequences"),
    "too-few": ([5], ValueError, r"lengths has 1 entries but the batch has 2 sequences"),
    "2-D": (torch.tensor([[5, 3]]), ValueError, r"lengths must be 1-D .*got shape \(1, 2\)"),
    "float-tensor": (
        torch.tensor([5.0, 3.0]),
        TypeError,
        r"lengths must hold integers, got dtype torch\.float32",
    ),
    "bool-tensor": (
        torch.tensor([True, True]),
        TypeError,
        r"lengths must hold integers, got dtype torch\.bool",
    ),
    "float-list": (
        [5.0, 3.0],
        TypeError,
        r"lengths must be a 1-D integer tensor or a list of ints, got list",
    ),
    "int": (5, TypeError, r"lengths must be a 1-D integer tensor or a list of ints, got int"),
}


@pytest.mark.parametrize(
    "make", [LAYERS["LSTM"], LAYERS["Recurrent-peephole_lstm"]], ids=["LSTM", "peephole"]
)
@pytest.mark.parametrize("lengths,error,message", LENGTHS_CASES.values(), ids=LENGTHS_CASES.keys())
def test_bad_lengths(no_backend, make, lengths, error, message):
    with pytest.raises(error, match=message) as excinfo:
        make()(x_(T, B, I), lengths=lengths)
    assert_ours(excinfo)


def test_lengths_checked_against_batch_first_layout(no_backend):
    # batch-first x is (B=2, T=5, I): 5 is the time axis, so 6 is too long and 2 entries are right
    with pytest.raises(ValueError, match=r"at most the 5 time steps"):
        rnnkit.GRU(I, H, batch_first=True)(x_(B, T, I), lengths=[6, 3])


def test_lengths_with_a_packed_sequence(no_backend):
    packed = pack_padded_sequence(x_(T, B, I), torch.tensor([5, 3]), enforce_sorted=False)
    with pytest.raises(ValueError, match=r"lengths must be None when x is a PackedSequence"):
        rnnkit.LSTM(I, H)(packed, lengths=torch.tensor([5, 3]))


# ---------------------------------------------------------------- cells and cell options


@pytest.mark.parametrize("name", ["lstmm", "LSTM", "", None], ids=["typo", "upper-case", "empty", "None"])
def test_unknown_cell_lists_the_known_ones(name):
    with pytest.raises(ValueError, match=rf"cell must be one of .*got {re.escape(repr(name))}") as excinfo:
        Recurrent(name, I, H)
    message = str(excinfo.value)
    for known in rnnkit.cells():
        assert known in message, f"{known!r} missing from: {message}"


@pytest.mark.parametrize(
    "cell,options,message",
    [
        (
            "lstm",
            {"nonlinearity": "relu"},
            r"cell 'lstm' got unknown option\(s\) nonlinearity; it takes no cell",
        ),
        ("gru", {"reset_after": False}, r"cell 'gru' got unknown option\(s\) reset_after"),
        (
            "indrnn",
            {"nonlinarity": "tanh"},
            r"cell 'indrnn' got unknown option\(s\) nonlinarity.*nonlinearity",
        ),
    ],
    ids=["lstm-nonlinearity", "gru-reset_after", "indrnn-typo"],
)
def test_unknown_cell_option(cell, options, message):
    with pytest.raises(TypeError, match=message):
        Recurrent(cell, I, H, **options)


def test_bad_cell_option_value():
    with pytest.raises(ValueError, match=r"nonlinearity must be 'relu' or 'tanh', got 'sigmoid'"):
        Recurrent("indrnn", I, H, nonlinearity="sigmoid")


def test_rnn_bad_nonlinearity():
    with pytest.raises(ValueError, match=r"nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"):
        rnnkit.RNN(I, H, nonlinearity="sigmoid")


# ---------------------------------------------------------------- constructor arguments


@pytest.mark.parametrize("cell", ["gru", "cho_gru", "rnn_tanh", "rnn_relu", "mingru", "minlstm", "indrnn"])
def test_proj_size_on_a_cell_without_projection(cell):
    with pytest.raises(ValueError, match=rf"proj_size=2 but cell '{cell}' has no projection"):
        Recurrent(cell, I, H, proj_size=2)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: Recurrent("lstm", I, H, proj_size=p),
        lambda p: Recurrent("cifg_lstm", I, H, proj_size=p),
        lambda p: rnnkit.LSTM(I, H, proj_size=p),
    ],
    ids=["Recurrent-lstm", "Recurrent-cifg_lstm", "LSTM"],
)
@pytest.mark.parametrize("proj_size", [H, H + 1], ids=["equal", "larger"])
def test_proj_size_not_below_hidden_size(make, proj_size):
    with pytest.raises(
        ValueError, match=rf"proj_size must be smaller than hidden_size \({H}\), got {proj_size}"
    ):
        make(proj_size)


@pytest.mark.parametrize("proj_size", [-1, 1.5, "2", True], ids=["negative", "float", "str", "bool"])
def test_proj_size_not_a_non_negative_int(proj_size):
    with pytest.raises(
        (ValueError, TypeError), match=rf"proj_size must be an int >= 0, got {re.escape(repr(proj_size))}"
    ):
        rnnkit.LSTM(I, H, proj_size=proj_size)


@pytest.mark.parametrize(
    "make",
    [lambda **kw: Recurrent("gru", I, H, **kw), lambda **kw: rnnkit.LSTM(I, H, **kw)],
    ids=["Recurrent", "LSTM"],
)
@pytest.mark.parametrize(
    "dropout", [-0.1, 1.5, "0.5", float("nan"), None], ids=["-0.1", "1.5", "str", "nan", "None"]
)
def test_dropout_outside_unit_interval(make, dropout):
    with pytest.raises(
        (ValueError, TypeError),
        match=rf"dropout must be a number in \[0, 1\], got {re.escape(repr(dropout))}",
    ):
        make(num_layers=2, dropout=dropout)


@pytest.mark.parametrize(
    "make",
    [lambda **kw: Recurrent("gru", I, H, **kw), lambda **kw: rnnkit.LSTM(I, H, **kw)],
    ids=["Recurrent", "LSTM"],
)
def test_dropout_with_one_layer_warns(make):
    with pytest.warns(UserWarning, match=r"dropout=0\.5 .*num_layers=1"):
        make(num_layers=1, dropout=0.5)


@pytest.mark.parametrize(
    "num_layers,dropout",
    [(2, 0.5), (2, 1), (2, 0.0), (1, 0.0)],
    ids=["two-layers", "two-layers-dropout-1", "two-layers-no-dropout", "one-layer-no-dropout"],
)
def test_dropout_that_is_fine(num_layers, dropout):
    # 1 is allowed, as in torch; nothing warns where dropout does what it says
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer = rnnkit.GRU(I, H, num_layers=num_layers, dropout=dropout)
    assert layer.dropout == dropout


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: Recurrent("gru", I, H, **kw),
        lambda **kw: rnnkit.LSTM(I, H, **kw),
        lambda **kw: rnnkit.RNN(I, H, **kw),
    ],
    ids=["Recurrent", "LSTM", "RNN"],
)
def test_dropout_warning_points_at_the_callers_line(make):
    # a warning should point at the user's code, not at rnnkit's internals (compat.py)
    with pytest.warns(UserWarning, match="dropout") as record:
        make(dropout=0.5)
    assert record[0].filename == __file__, f"the warning points at {record[0].filename}:{record[0].lineno}"


@pytest.mark.parametrize("argument", ["input_size", "hidden_size", "num_layers"])
@pytest.mark.parametrize("value", [0, -1, 2.0, True], ids=["zero", "negative", "float", "bool"])
@pytest.mark.parametrize("api", ["Recurrent", "LSTM", "GRU", "RNN"])
def test_non_positive_sizes(api, argument, value):
    kw = {"input_size": I, "hidden_size": H, "num_layers": 1, argument: value}
    make = (lambda **k: Recurrent("lstm", **k)) if api == "Recurrent" else getattr(rnnkit, api)
    with pytest.raises(ValueError, match=rf"{argument} must be a positive int, got {re.escape(repr(value))}"):
        make(**kw)


# ---------------------------------------------------------------- step


@pytest.mark.parametrize(
    "make", [LAYERS["LSTM"], LAYERS["GRU"], LAYERS["Recurrent-mingru"]], ids=["LSTM", "GRU", "mingru"]
)
def test_step_on_a_bidirectional_layer(no_backend, make):
    with pytest.raises(ValueError, match=r"step\(\) needs a unidirectional layer.*bidirectional"):
        make(bidirectional=True).step(x_(B, I))


@pytest.mark.parametrize("shape", [(1, B, I), (I,)], ids=["3-D", "1-D"])
def test_step_with_wrong_rank(no_backend, shape):
    with pytest.raises(
        ValueError, match=rf"x_t must be 2-D \(B, I\), got {len(shape)}-D of shape {re.escape(str(shape))}"
    ):
        rnnkit.LSTM(I, H).step(x_(*shape))


def test_step_with_wrong_feature_size_names_x_t(no_backend):
    with pytest.raises(ValueError, match=rf"x_t has 4 features, layer expects input_size={I}") as excinfo:
        rnnkit.GRU(I, H).step(x_(B, 4))
    assert_ours(excinfo)


# ---------------------------------------------------------------- backends


@pytest.mark.parametrize(
    "make",
    [lambda: Recurrent("lstm", I, H, backend="fast"), lambda: rnnkit.GRU(I, H, backend="fast")],
    ids=["Recurrent", "GRU"],
)
def test_unknown_backend(make):
    with pytest.raises(ValueError, match=r"backend must be one of .*got 'fast'") as excinfo:
        make()
    for name in ("auto", "reference", "native"):
        assert name in str(excinfo.value)


@pytest.mark.parametrize("cell", ["peephole_lstm", "layernorm_lstm", "cho_gru", "mingru", "indrnn"])
def test_named_backend_that_cannot_run_says_why(cell):
    layer = Recurrent(cell, I, H, backend="native")
    with pytest.raises(NotSupported, match=rf"backend 'native' cannot run this layer: .*'{cell}'"):
        layer(x_(T, B, I))
    assert layer.last_backend is None, "nothing ran, so no backend is recorded"


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda: Recurrent("peephole_lstm", I, H), "fused"),
        (lambda: Recurrent("indrnn", I, H), "fused"),
        # training at batch <= 4 on CPU: rnnkit's C++ LSTM loop beats nn.LSTM, where it loads
        (lambda: Recurrent("lstm", I, H), "fused with C++ loops"),
        (lambda: rnnkit.LSTM(I, H), "fused with C++ loops"),
        (lambda: rnnkit.GRU(I, H), "fused"),  # training at batch <= 16 on CPU: fused beats nn.GRU
    ],
    ids=["peephole_lstm", "indrnn", "lstm", "LSTM", "GRU"],
)
def test_auto_records_its_choice(make, expected):
    if expected == "fused with C++ loops":
        expected = "native" if extension.load() is None else "fused"
    layer = make()
    out, _ = layer(x_(T, B, I))
    assert out.shape == (T, B, H)
    assert layer.last_backend == expected


def test_auto_runs_gru_natively_for_inference_and_large_batches():
    layer = rnnkit.GRU(I, H)
    with torch.no_grad():
        layer(x_(T, B, I))
    assert layer.last_backend == "native"
    layer(x_(T, 17, I))
    assert layer.last_backend == "native"
