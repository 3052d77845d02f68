"""The fused backend against the reference backend, for every cell it runs.

float64, within 1e-10: outputs, final states, and the gradients of the input, the initial
state and every parameter, over layers x directions x lengths x bias (x proj_size for the
LSTM family). Plus gradcheck of each kernel on tiny shapes and bfloat16 autocast against float32.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import rnnkit
from rnnkit.backends import fused
from rnnkit.cells import LSTMState
from tests.helpers import assert_close, state_tensors

TOL = 1e-10
I, H, P, T, B = 3, 4, 2, 6, 4
LENGTHS = [5, 2, 6, 1]


def cell_cases():
    """(id, cell, options, proj_size) for every cell the fused backend runs."""
    cases = []
    for cell in rnnkit.cells():
        if cell not in fused.KERNELS:
            continue
        cases.append((cell, cell, {}, 0))
        if rnnkit.make_cell(cell).supports_proj:
            cases.append((f"{cell}-proj", cell, {}, P))
        if cell == "indrnn":
            cases += [("indrnn-tanh", cell, {"nonlinearity": "tanh"}, 0),
                      ("indrnn-max", cell, {"recurrent_max": 0.5}, 0)]
    return cases


CASES = cell_cases()
GRID = list(itertools.product(CASES, [1, 2], [False, True], [None, LENGTHS], [True, False]))


def grid_id(case, layers, bidir, lengths, bias):
    return f"{case[0]}-L{layers}-{'bi' if bidir else 'uni'}-{'len' if lengths else 'full'}-{'b' if bias else 'nob'}"


def make_layers(cell, options, proj_size, layers, bidir, bias):
    torch.manual_seed(0)
    kwargs = dict(num_layers=layers, bidirectional=bidir, bias=bias, proj_size=proj_size, dtype=torch.float64)
    ref = rnnkit.Recurrent(cell, I, H, backend="reference", **kwargs, **options)
    with torch.no_grad():  # move every parameter off its init rule, so no term is trivially zero
        for p in ref.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ours = rnnkit.Recurrent(cell, I, H, backend="fused", **kwargs, **options)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def random_state(layer, gen):
    D = layer.num_directions
    shape = (layer.num_layers * D, B)
    sizes = layer.cell.state_sizes(layer.hidden_size, layer.proj_size)
    parts = [torch.randn(*shape, n, dtype=torch.float64, generator=gen).requires_grad_() for n in sizes]
    return LSTMState(*parts) if len(parts) == 2 else parts[0]


def clone_state(state):
    if isinstance(state, LSTMState):
        return LSTMState(*(s.detach().clone().requires_grad_() for s in state))
    return state.detach().clone().requires_grad_()


@pytest.mark.parametrize("case,layers,bidir,lengths,bias", GRID, ids=[grid_id(*g) for g in GRID])
def test_fused_matches_reference(case, layers, bidir, lengths, bias):
    _, cell, options, proj_size = case
    ref, ours = make_layers(cell, options, proj_size, layers, bidir, bias)
    gen = torch.Generator().manual_seed(1)
    x_ref = torch.randn(T, B, I, dtype=torch.float64, generator=gen, requires_grad=True)
    x_ours = x_ref.detach().clone().requires_grad_()
    s_ref = random_state(ref, gen)
    s_ours = clone_state(s_ref)
    lens = None if lengths is None else torch.tensor(lengths)

    out_ref, final_ref = ref(x_ref, s_ref, lengths=lens)
    out_ours, final_ours = ours(x_ours, s_ours, lengths=lens)
    assert ours.last_backend == "fused"
    assert_close("output", out_ref, out_ours, TOL)
    for i, (a, b) in enumerate(zip(state_tensors(final_ref), state_tensors(final_ours))):
        assert_close(f"final state[{i}]", a, b, TOL)

    weights = torch.Generator().manual_seed(2)
    loss_parts = [out_ref, *state_tensors(final_ref)]
    coefs = [torch.randn(p.shape, dtype=p.dtype, generator=weights) for p in loss_parts]
    sum(((p * k).sum() for p, k in zip(loss_parts, coefs))).backward()
    sum(((p * k).sum() for p, k in zip([out_ours, *state_tensors(final_ours)], coefs))).backward()
    assert_close("grad input", x_ref.grad, x_ours.grad, TOL)
    for i, (a, b) in enumerate(zip(state_tensors(s_ref), state_tensors(s_ours))):
        assert_close(f"grad initial state[{i}]", a.grad, b.grad, TOL)
    ours_params = dict(ours.named_parameters())
    for name, p in ref.named_parameters():
        assert_close(f"grad {name}", p.grad, ours_params[name].grad, TOL)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("lengths", [None, [3, 1]], ids=["full", "lengths"])
def test_kernel_gradcheck(case, lengths):
    _, cell, options, proj_size = case
    layer = rnnkit.Recurrent(cell, 3, 2, proj_size=min(proj_size, 1), dtype=torch.float64, **options)
    w = {k: v.detach().clone().requires_grad_() for k, v in layer.weights(0, 0).items()}
    names = [k for k in w if k not in ("weight_ih", "bias_ih")]
    gx = torch.randn(3, 2, layer.cell.gates * 2, dtype=torch.float64, requires_grad=True)
    state = layer.cell.zero_state((2,), 2, min(proj_size, 1), gx)
    state = LSTMState(*(torch.randn_like(s).requires_grad_() for s in state)) if isinstance(state, LSTMState) \
        else torch.randn_like(state).requires_grad_()
    lens = None if lengths is None else torch.tensor(lengths)
    kernel = fused.KERNELS[cell]

    def f(gx, *args):
        n = len(state_tensors(state))
        s = LSTMState(*args[:n]) if n == 2 else args[0]
        out, final = kernel(layer.cell, gx, s, dict(zip(names, args[n:])), lens)
        return (out, *state_tensors(final))

    assert torch.autograd.gradcheck(f, (gx, *state_tensors(state), *(w[k] for k in names)))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bfloat16_autocast_close_to_float32(case):
    """Under CPU bf16 autocast the fused output is within 5e-2 of float32 and grads stay float32."""
    _, cell, options, proj_size = case
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cell, I, H, num_layers=2, proj_size=proj_size, backend="fused", **options)
    x = torch.randn(T, B, I)
    expected, _ = layer(x, lengths=LENGTHS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = layer(x, lengths=LENGTHS)
        out.float().sum().backward()
    assert_close("bf16 output", expected, out.float(), 5e-2)
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in layer.parameters())
