"""Double backward (``torch.autograd.grad(..., create_graph=True)``) through every cell on every backend.

Gradient penalties, MAML and Hessian-vector products differentiate a gradient. The fused kernels'
hand BPTT cannot be recorded by autograd, so under ``create_graph=True`` their backward
differentiates the reference loop instead (``backends/fused/common.py``); the scan backend and
torch's own kernels (native) are plain autograd. Checked here, at tiny shapes (I=2, H=3, T=4, B=2),
2 layers, both directions, lengths and an initial state that needs a gradient:

- ``gradgradcheck`` for every cell on fused, native (its cells) and scan (its cells), float64;
- the second-order gradients (of the sum of squared first-order gradients, with respect to the
  input, the initial state and every parameter) and the first-order ones equal the reference
  backend's within 1e-8 in float64, and the C++ loops ran the LSTM family's forward where they load;
- the same in float32 runs and matches float64 loosely;
- hidden dropout and zoneout: the same seed draws the same masks, so fused equals reference;
- ``backend="auto"`` in training mode, the issue's report, runs for every cell in both dtypes.

Every test asserts ``layer.last_backend``, so none can pass because another backend ran.
"""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.backends.fused import extension
from rnnkit.cells import LSTMState
from tests.helpers import OpSpy, assert_close

I, H, T, B = 2, 3, 4, 2
LENGTHS = [4, 2]
NATIVE_CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
SCAN_CELLS = ["mingru", "minlstm"]
LSTM_FAMILY = ["lstm", "peephole_lstm", "layernorm_lstm", "cifg_lstm"]
CASES = ([(cell, "fused") for cell in rnnkit.cells()] + [(cell, "native") for cell in NATIVE_CELLS]
         + [(cell, "scan") for cell in SCAN_CELLS])


def case_id(case) -> str:
    return f"{case[0]}-{case[1]}"


def cpp_loops_load() -> bool:
    return not extension.disabled() and extension.load() is not None


def make_layer(cell: str, backend: str, dtype=torch.float64, **options) -> rnnkit.Recurrent:
    """The test layer, with the same weights for every backend and dtype (drawn in float64, then cast).

    ``options``: Recurrent's keyword arguments (regularizers, proj_size, bias) and cell options.
    """
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cell, I, H, num_layers=2, bidirectional=True, backend=backend, dtype=torch.float64,
                             **options)
    with torch.no_grad():  # IndRNN starts with zero biases; random ones reach every branch
        for p in layer.parameters():
            p.uniform_(-0.8, 0.8)
    return layer.to(dtype)


def make_inputs(layer: rnnkit.Recurrent, dtype=torch.float64) -> list[torch.Tensor]:
    """x (T, B, I) and the initial state's tensors (4, B, H), all needing a gradient."""
    generator = torch.Generator().manual_seed(1)
    shapes = [(T, B, I), (4, B, layer.proj_size or H)] + ([(4, B, H)] if layer.cell.state_type is LSTMState else [])
    # drawn in float64 and cast, so that both dtypes see the same numbers
    return [torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype).requires_grad_()
            for shape in shapes]


def forward(layer, x, *state, seed: int | None = None):
    """The layer's output and final state as a flat tuple; ``seed`` fixes the regularizers' masks."""
    if seed is not None:
        torch.manual_seed(seed)
    state = LSTMState(*state) if len(state) == 2 else state[0]
    out, final = layer(x, state, lengths=torch.tensor(LENGTHS))
    return (out, *([final] if isinstance(final, torch.Tensor) else final))


def first_and_second(layer, inputs, seed: int | None = None):
    """First-order gradients (create_graph=True) of a fixed random loss, and the gradients of their squares' sum.

    Both with respect to the inputs and every parameter, in that order; a gradient that does not
    reach a tensor is zeros.
    """
    outputs = forward(layer, *inputs, seed=seed)
    generator = torch.Generator().manual_seed(2)
    loss = sum((o * torch.randn(o.shape, generator=generator, dtype=torch.float64).to(o.dtype)).sum()
               for o in outputs)
    wrt = [*inputs, *layer.parameters()]
    first = torch.autograd.grad(loss, wrt, create_graph=True, allow_unused=True)
    first = [torch.zeros_like(w) if g is None else g for g, w in zip(first, wrt)]
    penalty = sum((g * g).sum() for g in first)
    second = torch.autograd.grad(penalty, wrt, allow_unused=True)
    second = [torch.zeros_like(w) if g is None else g for g, w in zip(second, wrt)]
    return first, second


def names(layer) -> list[str]:
    state = ["h0", "c0"] if layer.cell.state_type is LSTMState else ["h0"]
    return ["x", *state, *(name for name, _ in layer.named_parameters())]


def gradgradcheck(layer, seed: int | None = None) -> bool:
    """``torch.autograd.gradgradcheck`` of the layer as a function of x, the initial state and its parameters.

    The parameters travel as one flat vector: fast mode then perturbs 3-4 tensors, not 20.
    """
    inputs = make_inputs(layer)
    named = list(layer.named_parameters())
    flat = torch.cat([p.detach().reshape(-1) for _, p in named]).requires_grad_()
    n = len(inputs)

    def function(*args):
        if seed is not None:  # every call draws the same regularizer masks
            torch.manual_seed(seed)
        state = LSTMState(*args[1:n]) if n == 3 else args[1]
        chunks = args[n].split([p.numel() for _, p in named])
        values = {name: chunk.view_as(p) for (name, p), chunk in zip(named, chunks)}
        out, final = torch.func.functional_call(layer, values, (args[0], state), {"lengths": torch.tensor(LENGTHS)})
        return (out, *([final] if isinstance(final, torch.Tensor) else final))

    return torch.autograd.gradgradcheck(function, (*inputs, flat), fast_mode=True)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gradgradcheck(case):
    """Second-order gradients agree with finite differences of the first-order ones (float64)."""
    cell, backend = case
    layer = make_layer(cell, backend)
    assert gradgradcheck(layer)
    assert layer.last_backend == backend


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_second_order_matches_reference(case, monkeypatch):
    """First- and second-order gradients equal the reference backend's within 1e-8 (float64)."""
    cell, backend = case
    spy = None
    if backend == "fused" and cell in LSTM_FAMILY and cpp_loops_load():
        spy = OpSpy(extension.load())
        monkeypatch.setattr(extension, "_ops", spy)
    layer = make_layer(cell, backend)
    first, second = first_and_second(layer, make_inputs(layer))
    assert layer.last_backend == backend
    if spy is not None:
        # the 4 layer-directions' forwards in C++; the create_graph backward differentiates the reference
        # loop (no C++ call); then the second-order pass reaches layer 0's outputs through layer 1's
        # input, and runs layer 0's own (first-order, C++) backward for each direction
        expected_calls = ["lstm_forward"] * 4 + ["lstm_backward"] * 2
        assert spy.calls == expected_calls, f"expected the C++ calls {expected_calls}, got {spy.calls}"

    ref = make_layer(cell, "reference")
    first_ref, second_ref = first_and_second(ref, make_inputs(ref))
    assert ref.last_backend == "reference"
    for name, expected, got in zip(names(layer), first_ref, first):
        assert_close(f"first-order grad {name}", expected, got, 1e-8)
    for name, expected, got in zip(names(layer), second_ref, second):
        assert_close(f"second-order grad {name}", expected, got, 1e-8)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float32_matches_float64(case):
    """In float32 the double backward runs on the same backend and agrees with float64 to float32 rounding."""
    cell, backend = case
    layer64 = make_layer(cell, backend)
    first64, second64 = first_and_second(layer64, make_inputs(layer64))
    layer32 = make_layer(cell, backend, dtype=torch.float32)
    first32, second32 = first_and_second(layer32, make_inputs(layer32, torch.float32))
    assert layer32.last_backend == backend
    assert second32[0].dtype == torch.float32
    for kind, expected_all, got_all in (("first", first64, first32), ("second", second64, second32)):
        for name, expected, got in zip(names(layer64), expected_all, got_all):
            scale = max(1.0, float(expected.detach().abs().max()))
            assert_close(f"{kind}-order grad {name}", expected, got, 1e-4 * scale)


# options that change a kernel's path: the projection (C++ and Python loops), no bias, IndRNN's
# clamp of u and its tanh
VARIANTS = [
    ("lstm", "fused", {"proj_size": 2}),
    ("peephole_lstm", "fused", {"proj_size": 2}),
    ("layernorm_lstm", "fused", {"proj_size": 2}),
    ("cifg_lstm", "fused", {"proj_size": 2, "bias": False}),
    ("lstm", "native", {"proj_size": 2}),
    ("gru", "fused", {"bias": False}),
    ("cho_gru", "fused", {"bias": False}),
    ("rnn_relu", "fused", {"bias": False}),
    ("indrnn", "fused", {"nonlinearity": "tanh", "recurrent_max": 0.5}),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v[0]}-{v[1]}-{'-'.join(map(str, v[2].items()))}")
def test_variants_match_reference(variant):
    """Second-order gradients equal the reference backend's with a projection, without bias, with IndRNN's options."""
    cell, backend, options = variant
    layer = make_layer(cell, backend, **options)
    first, second = first_and_second(layer, make_inputs(layer))
    assert layer.last_backend == backend
    ref = make_layer(cell, "reference", **options)
    first_ref, second_ref = first_and_second(ref, make_inputs(ref))
    for name, expected, got in zip(names(layer), first_ref, first):
        assert_close(f"first-order grad {name}", expected, got, 1e-8)
    for name, expected, got in zip(names(layer), second_ref, second):
        assert_close(f"second-order grad {name}", expected, got, 1e-8)


@pytest.mark.parametrize("cell", rnnkit.cells())
def test_regularized_matches_reference(cell):
    """Hidden dropout and zoneout: the same seed gives the same masks, so fused equals reference.

    A double backward that ignored the forward's masks (recomputing the plain cell) differs here.
    """
    # zoneout on every state part; hidden dropout where the cell has a recurrent product
    regularizers = {"zoneout": (0.3, 0.4) if cell in LSTM_FAMILY else 0.3}
    if cell not in ("mingru", "minlstm"):  # they have no recurrent product to drop
        regularizers.update(hidden_dropout=0.4, weight_drop=0.3)
    layer = make_layer(cell, "fused", **regularizers)
    first, second = first_and_second(layer, make_inputs(layer), seed=5)
    assert layer.last_backend == "fused"
    ref = make_layer(cell, "reference", **regularizers)
    first_ref, second_ref = first_and_second(ref, make_inputs(ref), seed=5)
    plain = make_layer(cell, "reference")
    _, second_plain = first_and_second(plain, make_inputs(plain))
    # the masks matter: without them the second-order gradients differ
    assert max(float((a - b).abs().max()) for a, b in zip(second_ref, second_plain)) > 1e-3
    for name, expected, got in zip(names(layer), first_ref, first):
        assert_close(f"first-order grad {name}", expected, got, 1e-8)
    for name, expected, got in zip(names(layer), second_ref, second):
        assert_close(f"second-order grad {name}", expected, got, 1e-8)


@pytest.mark.parametrize("cell", ["lstm", "gru", "mingru"])
def test_regularized_gradgradcheck(cell):
    """gradgradcheck of the fused backend with hidden dropout and zoneout, the masks fixed by a seed."""
    regularizers = {"zoneout": 0.3}
    if cell != "mingru":
        regularizers["hidden_dropout"] = 0.4
    layer = make_layer(cell, "fused", **regularizers)
    assert gradgradcheck(layer, seed=5)
    assert layer.last_backend == "fused"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("cell", rnnkit.cells())
def test_auto_training_double_backward_runs(cell, dtype):
    """The issue's report: create_graph=True through backend="auto" in training mode raised for 8 cells."""
    layer = make_layer(cell, "auto", dtype=dtype)
    first, second = first_and_second(layer, make_inputs(layer, dtype))
    assert layer.last_backend in ("native", "fused")  # auto's table: torch's kernels or the fused loops
    assert all(torch.isfinite(g).all() for g in second)
    assert any(float(g.abs().max()) > 0 for g in second)
