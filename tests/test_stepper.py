"""The inference stepper (``rnnkit.stepper``) behind ``Recurrent.step`` without gradients.

- for every cell (IndRNN with its bound on |u| too, the LSTM family with proj_size), 1 and 2
  layers, with and without bias: stepping T times under ``torch.no_grad`` equals one
  ``forward`` (reference backend) and equals the autograd step, from zeros and from a state;
- the arranged weights are rebuilt after an in-place parameter update, ``load_state_dict``,
  an optimizer step and a dtype change (``.float()`` / ``.double()``);
- dropout between layers draws the same masks as the autograd step; the caller's state is
  never written; y_t is not a view of the returned state; the state_dict, deepcopy and
  pickling do not carry the cache; inference mode, changing batch sizes and autocast work.

Everything is float64 unless a test says otherwise; sizes T=4, B=2, I=3, H=4.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch

import rnnkit
from rnnkit import LSTMState

from .helpers import assert_close, state_tensors

DTYPE = torch.float64
T, B, I, H = 4, 2, 3, 4
TOL = 1e-12

LSTM_FAMILY = ("lstm", "peephole_lstm", "layernorm_lstm", "cifg_lstm")
# (id, cell, cell options, proj_size): every registered cell, IndRNN's options, the LSTM family's projection
CASES = [(name, name, {}, 0) for name in rnnkit.cells()]
CASES += [("indrnn-tanh", "indrnn", {"nonlinearity": "tanh"}, 0),
          ("indrnn-max0.5", "indrnn", {"recurrent_max": 0.5}, 0)]
CASES += [(f"{cell}-proj2", cell, {}, 2) for cell in LSTM_FAMILY]
PARAMS = [pytest.param(*case[1:], id=case[0]) for case in CASES]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is faster and steadier on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_layer(cell, options=None, proj_size=0, num_layers=2, bias=True, seed=0, **kwargs):
    """A float64 reference-backend layer, its init perturbed so no parameter sits at a special
    value (LN gains 1, IndRNN biases 0) and every term of every equation matters."""
    torch.manual_seed(seed)
    layer = rnnkit.Recurrent(cell, I, H, num_layers=num_layers, proj_size=proj_size, bias=bias,
                             backend="reference", dtype=DTYPE, **(options or {}), **kwargs)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return layer


def random_state(layer, batch=B, seed=1, dtype=DTYPE):
    gen = torch.Generator().manual_seed(seed)
    sizes = layer.cell.state_sizes(layer.hidden_size, layer.proj_size)
    parts = [0.5 * torch.randn(layer.num_layers, batch, size, generator=gen, dtype=dtype) for size in sizes]
    return parts[0] if len(parts) == 1 else LSTMState(*parts)


def step_all(layer, x, state=None):
    """layer.step over x (T, B, I): the stacked outputs (T, B, R) and the final state."""
    ys = []
    for x_t in x.unbind(0):
        y, state = layer.step(x_t, state)
        ys.append(y)
    return torch.stack(ys), state


def assert_state_close(name, expected, got, tol=TOL):
    labels = ["h", "c"] if isinstance(expected, LSTMState) else ["h"]
    assert type(got) is type(expected), f"{name}: state is a {type(got).__name__}, expected {type(expected).__name__}"
    for label, e, g in zip(labels, state_tensors(expected), state_tensors(got)):
        assert_close(f"{name}.{label}", e, g, tol)


def assert_matches_forward(layer, x, state=None, tol=TOL, label=""):
    """layer.step T times under no_grad (the stepper) == layer(x), outputs and final state."""
    with torch.no_grad():
        expected_out, expected_state = layer(x, state)
        out, final = step_all(layer, x, state)
    assert layer._stepper is not None and layer._stepper._plans is not None, "the stepper did not run"
    assert_close(f"out{label}", expected_out, out, tol)
    assert_state_close(f"state{label}", expected_state, final, tol)


def random_input(seed=2, batch=B, dtype=DTYPE):
    return torch.randn(T, batch, I, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------------------------------------
# the stepper == forward == the autograd step
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell,options,proj_size", PARAMS)
def test_step_equals_forward(cell, options, proj_size, num_layers):
    layer = make_layer(cell, options, proj_size, num_layers)
    x = random_input()
    assert_matches_forward(layer, x, None, label=" (zero state)")
    assert_matches_forward(layer, x, random_state(layer), label=" (initial state)")


@pytest.mark.parametrize("cell,options,proj_size", PARAMS)
def test_step_equals_forward_without_bias(cell, options, proj_size):
    layer = make_layer(cell, options, proj_size, bias=False)
    assert_matches_forward(layer, random_input(), random_state(layer))


@pytest.mark.parametrize("cell,options,proj_size", PARAMS)
def test_stepper_equals_autograd_step(cell, options, proj_size):
    layer = make_layer(cell, options, proj_size)
    x, state = random_input(), random_state(layer)
    expected_out, expected_state = step_all(layer, x, state)  # grad on, parameters require grad
    assert expected_out.grad_fn is not None, "the reference run did not take the autograd step"
    assert layer._stepper is None, "the autograd step ran the stepper"
    with torch.no_grad():
        out, final = step_all(layer, x, state)
    assert_close("out", expected_out, out, TOL)
    assert_state_close("state", expected_state, final)


def test_stepper_runs_with_grad_enabled_when_nothing_requires_grad():
    layer = make_layer("lstm").requires_grad_(False)
    x = random_input()
    out, _ = step_all(layer, x)
    assert layer._stepper is not None and out.grad_fn is None
    assert_matches_forward(layer, x)


def test_dropout_between_layers_draws_the_autograd_steps_masks():
    layer = make_layer("lstm", dropout=0.5).train()
    x, state = random_input(), random_state(layer)
    torch.manual_seed(7)
    expected_out, expected_state = step_all(layer, x, state)
    assert layer._stepper is None
    torch.manual_seed(7)
    with torch.no_grad():
        out, final = step_all(layer, x, state)
    assert layer._stepper is not None
    assert_close("out", expected_out, out, TOL)
    assert_state_close("state", expected_state, final)
    with torch.no_grad():
        eval_out, _ = step_all(layer.eval(), x, state)
    assert (eval_out - out).abs().max() > 1e-3, "dropout had no effect in training mode"


# ---------------------------------------------------------------------------------------------
# the cache of arranged weights
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell,options,proj_size", PARAMS)
def test_cache_follows_in_place_parameter_updates(cell, options, proj_size):
    layer = make_layer(cell, options, proj_size)
    x, state = random_input(), random_state(layer)
    assert_matches_forward(layer, x, state, label=" (before)")
    name = "weight_hh_l1" if hasattr(layer, "weight_hh_l1") else "weight_ih_l1"
    for changed in (name, "weight_ih_l0"):
        with torch.no_grad():
            getattr(layer, changed).add_(0.1)
        assert_matches_forward(layer, x, state, label=f" (after {changed}.add_)")


def test_cache_follows_load_state_dict():
    layer, other = make_layer("lstm", seed=0), make_layer("lstm", seed=1)
    x, state = random_input(), random_state(layer)
    with torch.no_grad():
        before, _ = step_all(layer, x, state)
        expected, _ = step_all(other, x, state)
    layer.load_state_dict(other.state_dict())
    with torch.no_grad():
        out, _ = step_all(layer, x, state)
    assert (before - expected).abs().max() > 1e-3, "the two layers compute the same function"
    assert_close("out after load_state_dict", expected, out, TOL)


def test_cache_follows_an_optimizer_step():
    layer = make_layer("peephole_lstm")
    x, state = random_input(), random_state(layer)
    assert_matches_forward(layer, x, state, label=" (before)")
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    out, _ = layer(x)
    out.square().sum().backward()
    optimizer.step()
    assert_matches_forward(layer, x, state, label=" (after SGD step)")


@pytest.mark.parametrize("cell", ["lstm", "gru", "layernorm_lstm"])
def test_cache_follows_dtype_changes(cell):
    layer = make_layer(cell)
    x, state = random_input(), random_state(layer)
    assert_matches_forward(layer, x, state, label=" (float64)")
    layer.float()
    assert_matches_forward(layer, x.float(), LSTMState(*(s.float() for s in state)) if isinstance(state, LSTMState)
                           else state.float(), tol=1e-5, label=" (after .float())")
    layer.double()
    assert_matches_forward(layer, x, state, label=" (after .double())")


# ---------------------------------------------------------------------------------------------
# no surprises for the caller
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "mingru"])
def test_callers_state_is_not_written_and_output_is_its_own_tensor(cell):
    layer = make_layer(cell)
    state = random_state(layer)
    saved = [s.clone() for s in state_tensors(state)]
    with torch.no_grad():
        y, new = layer.step(random_input()[0], state)
        for name, before, now in zip(("h", "c"), saved, state_tensors(state)):
            assert torch.equal(before, now), f"step wrote into the caller's state.{name}"
        h_last = state_tensors(new)[0][-1].clone()
        y.fill_(123.0)
    assert torch.equal(state_tensors(new)[0][-1], h_last), "y_t is a view of the returned state"


def test_state_dict_copy_and_pickle_do_not_carry_the_cache():
    layer = make_layer("lstm")
    keys = list(layer.state_dict())
    x = random_input()
    with torch.no_grad():
        expected, _ = step_all(layer, x)
    assert list(layer.state_dict()) == keys, "stepping changed the state_dict's keys"
    clone = copy.deepcopy(layer)
    assert clone._stepper._plans is None, "deepcopy copied the arranged weights"
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for name, other in (("deepcopy", clone), ("pickled", loaded)):
        with torch.no_grad():
            got, _ = step_all(other, x)
        assert_close(f"out of the {name} layer", expected, got, TOL)


def test_inference_mode_and_changing_batch_sizes():
    layer = make_layer("cho_gru")
    with torch.inference_mode():  # its scratch buffers cannot be written outside inference mode
        assert_matches_forward(layer, random_input(), label=" (inference_mode)")
    assert_matches_forward(layer, random_input(), random_state(layer), label=" (no_grad after inference_mode)")
    assert_matches_forward(layer, random_input(batch=3), label=" (B=3)")
    assert_matches_forward(layer, random_input(batch=1), label=" (B=1)")


@pytest.mark.parametrize("cell,options,proj_size", PARAMS)
def test_autocast_takes_the_autograd_step(cell, options, proj_size, monkeypatch):
    """Under bf16 autocast ``step`` leaves the (float32-only) stepper for the autograd step: the cell's step
    receives the input projection in bf16 (a spy on ``cell.step``), and T steps stay within 3e-2 (relative to
    the largest output) of float32 stepping. Measured (torch 2.13 CPU, T=4, 2 layers): at most 1.2e-2
    (layernorm_lstm, cifg_lstm-proj2); bf16 keeps 8 significant bits, 2e-3 relative rounding per op."""
    layer = make_layer(cell, options, proj_size).float()
    x = random_input(dtype=torch.float32)
    with torch.no_grad():
        expected, _ = step_all(layer, x)
    step, seen = layer.cell.step, []

    def spy(gx, state, weights):
        seen.append(gx.dtype)
        return step(gx, state, weights)

    monkeypatch.setattr(layer.cell, "step", spy)
    layer._stepper = None
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = step_all(layer, x)
    assert layer._stepper is None, "the stepper ran under autocast"
    assert seen == [torch.bfloat16] * (T * layer.num_layers), f"the cell's step saw gx of dtypes {seen}"
    assert got.shape == expected.shape
    assert not torch.equal(got.float(), expected), "bf16 steps equal float32 bit for bit: autocast did not apply"
    error = float((got.float() - expected).abs().max() / expected.abs().max())
    assert error <= 3e-2, f"bf16 steps {error:.2e} (relative) from float32"


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "layernorm_lstm", "gru", "cho_gru"])
def test_saturated_gates(cell):
    """Large weights drive every gate into saturation, where tanh is computed as
    2 sigmoid(2x) - 1 from a sigmoid of 0 or 1: still -1 and 1, no inf or nan."""
    layer = make_layer(cell)
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(200.0)
    x, state = 10 * random_input(), random_state(layer)
    with torch.no_grad():
        gx = layer.cell.input_projection(x, layer.weights(0, 0))  # (T, B, G*H), the gates' input side
    assert gx.abs().median() > 50, "the gates are not driven into saturation"
    assert_matches_forward(layer, x, state)
