"""rnnkit.RNN / LSTM / GRU against their torch.nn namesakes, in float64, on both backends.

Outputs, final states and the gradients of the input, the initial state and every
parameter must agree within 1e-10, for 1-3 layers, both directions, batch_first,
proj_size, an initial state, PackedSequence input and unsorted lengths.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from tests.helpers import assert_close, state_tensors

TOL = 1e-10
I, H, P, T, B = 5, 7, 3, 6, 4
LENGTHS = [4, 6, 1, 3]  # unsorted, one full, one of length 1

# (name, torch class, rnnkit class, constructor kwargs)
KINDS = {
    "rnn_tanh": (nn.RNN, rnnkit.RNN, {}),
    "rnn_relu": (nn.RNN, rnnkit.RNN, {"nonlinearity": "relu"}),
    "lstm": (nn.LSTM, rnnkit.LSTM, {}),
    "lstm_proj": (nn.LSTM, rnnkit.LSTM, {"proj_size": P}),
    "gru": (nn.GRU, rnnkit.GRU, {}),
}
INPUTS = ["padded", "state", "packed", "lengths"]
CONFIGS = list(itertools.product(KINDS, ["native", "reference"], [1, 2, 3], [False, True], [False, True], INPUTS))


def config_id(kind, backend, layers, bidir, batch_first, inputs):
    return f"{kind}-{backend}-L{layers}-{'bi' if bidir else 'uni'}-{'bf' if batch_first else 'tf'}-{inputs}"


def make_pair(kind, backend, layers, bidir, batch_first):
    torch_cls, ours_cls, kwargs = KINDS[kind]
    ref = torch_cls(I, H, layers, bidirectional=bidir, batch_first=batch_first, **kwargs).double()
    ours = ours_cls(I, H, layers, bidirectional=bidir, batch_first=batch_first, backend=backend, **kwargs)
    ours = ours.double()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def initial_state(kind, layers, bidir, gen):
    """A random initial state with requires_grad, as torch's hx: tensor or (h, c)."""
    D = 2 if bidir else 1
    R = P if kind == "lstm_proj" else H
    h = torch.randn(layers * D, B, R, dtype=torch.float64, generator=gen).requires_grad_()
    if kind.startswith("lstm"):
        return (h, torch.randn(layers * D, B, H, dtype=torch.float64, generator=gen).requires_grad_())
    return h


def weighted_loss(out, state, gen):
    """A loss that weighs every output and state entry differently, so every gradient is tested."""
    parts = [out, *state_tensors(state)]
    return sum((p * torch.randn(p.shape, dtype=p.dtype, generator=gen)).sum() for p in parts)


def run(module, x, hx, inputs, batch_first, lengths_arg=None):
    if inputs == "packed":
        packed = pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=batch_first, enforce_sorted=False)
        out, state = module(packed, hx)
        return out.data, state
    if inputs == "lengths" and lengths_arg is not None:
        return module(x, hx, lengths=lengths_arg)
    if inputs == "lengths":  # torch.nn's way: pack, run, pad back to T steps
        packed = pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=batch_first, enforce_sorted=False)
        out, state = module(packed, hx)
        out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
        return out, state
    return module(x, hx)


@pytest.mark.parametrize("kind,backend,layers,bidir,batch_first,inputs", CONFIGS,
                         ids=[config_id(*c) for c in CONFIGS])
def test_matches_torch(kind, backend, layers, bidir, batch_first, inputs):
    torch.manual_seed(0)
    ref, ours = make_pair(kind, backend, layers, bidir, batch_first)
    shape = (B, T, I) if batch_first else (T, B, I)
    x_ref = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    x_ours = x_ref.detach().clone().requires_grad_()
    hx_ref = initial_state(kind, layers, bidir, torch.Generator().manual_seed(1)) if inputs != "padded" else None
    hx_ours = (None if hx_ref is None
               else type(hx_ref)(t.detach().clone().requires_grad_() for t in hx_ref) if isinstance(hx_ref, tuple)
               else hx_ref.detach().clone().requires_grad_())

    out_ref, state_ref = run(ref, x_ref, hx_ref, inputs, batch_first)
    # our lengths on purpose as a tensor of another dtype, in the user's (unsorted) order
    out_ours, state_ours = run(ours, x_ours, hx_ours, inputs, batch_first,
                               lengths_arg=torch.tensor(LENGTHS, dtype=torch.int32))
    assert ours.last_backend == backend
    assert_close("output", out_ref, out_ours, TOL)
    for i, (a, b) in enumerate(zip(state_tensors(state_ref), state_tensors(state_ours))):
        assert_close(f"final state[{i}]", a, b, TOL)
    if kind.startswith("lstm"):
        assert isinstance(state_ours, rnnkit.LSTMState)

    weighted_loss(out_ref, state_ref, torch.Generator().manual_seed(2)).backward()
    weighted_loss(out_ours, state_ours, torch.Generator().manual_seed(2)).backward()
    assert_close("grad input", x_ref.grad, x_ours.grad, TOL)
    if hx_ref is not None:
        for i, (a, b) in enumerate(zip(state_tensors(hx_ref), state_tensors(hx_ours))):
            assert_close(f"grad initial state[{i}]", a.grad, b.grad, TOL)
    ours_params = dict(ours.named_parameters())
    for name, p in ref.named_parameters():
        assert_close(f"grad {name}", p.grad, ours_params[name].grad, TOL)


@pytest.mark.parametrize("kind", list(KINDS))
def test_state_dict_round_trips_both_ways(kind):
    torch_cls, ours_cls, kwargs = KINDS[kind]
    ref = torch_cls(I, H, 2, bidirectional=True, **kwargs).double()
    ours = ours_cls(I, H, 2, bidirectional=True, **kwargs).double()
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())  # strict: same keys, same shapes
    back = torch_cls(I, H, 2, bidirectional=True, **kwargs).double()
    back.load_state_dict(ours.state_dict())
    x = torch.randn(T, B, I, dtype=torch.float64)
    assert_close("output torch -> rnnkit", ref(x)[0], ours(x)[0], TOL)
    assert_close("output rnnkit -> torch", ref(x)[0], back(x)[0], TOL)


@pytest.mark.parametrize("kind", list(KINDS))
def test_same_seed_gives_torch_init(kind):
    """Parameters are created and initialized in torch's order, so one seed gives the same weights."""
    torch_cls, ours_cls, kwargs = KINDS[kind]
    torch.manual_seed(3)
    ref = torch_cls(I, H, 2, bidirectional=True, **kwargs)
    torch.manual_seed(3)
    ours = ours_cls(I, H, 2, bidirectional=True, **kwargs)
    for (name, a), (_, b) in zip(ref.named_parameters(), ours.named_parameters()):
        assert torch.equal(a, b), name


def test_unbatched_input_matches_torch():
    torch.manual_seed(0)
    ref, ours = make_pair("lstm", "reference", 2, True, False)
    x = torch.randn(T, I, dtype=torch.float64)
    out_ref, (h_ref, c_ref) = ref(x)
    out_ours, state = ours(x)
    assert_close("output", out_ref, out_ours, TOL)
    assert_close("h", h_ref, state.h, TOL)
    assert_close("c", c_ref, state.c, TOL)


def test_lengths_on_any_device_and_as_list():
    torch.manual_seed(0)
    ref, ours = make_pair("gru", "reference", 1, True, False)
    x = torch.randn(T, B, I, dtype=torch.float64)
    out_list, h_list = ours(x, lengths=LENGTHS)
    out_tensor, h_tensor = ours(x, lengths=torch.tensor(LENGTHS))
    assert_close("output list vs tensor", out_tensor, out_list, 0.0)
    assert_close("state list vs tensor", h_tensor, h_list, 0.0)


def test_dropout_between_layers_is_active_in_training_only():
    torch.manual_seed(0)
    layer = rnnkit.LSTM(I, H, 2, dropout=0.5, backend="reference").double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    layer.eval()
    first, second = layer(x)[0], layer(x)[0]
    assert torch.equal(first, second)
    layer.train()
    assert not torch.equal(layer(x)[0], first)
