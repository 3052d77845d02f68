"""The fused kernels under hidden dropout and zoneout, against the reference loop under the same masks.

Masks are drawn by the shared driver (``rnnkit.driver.run_stack``) inside forward, so seeding before
each call gives both backends the same masks. float64, within 1e-10: outputs, final states, and
the gradients of the input, the initial state and every parameter, over every fused cell x
{hidden dropout, zoneout, both} x layers x directions x lengths. Plus gradcheck of the fused
layer with fixed masks.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import rnnkit
from rnnkit.backends import fused
from rnnkit.cells import LSTMState
from rnnkit.regularize import StepNoise
from tests.helpers import assert_close, state_tensors

TOL = 1e-10
I, H, P, T, B = 3, 4, 2, 5, 3
LENGTHS = [5, 2, 4]
SEED = 9


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


def regularizer_cases(cell: str) -> list[tuple[str, dict]]:
    """(id, regularizers) for a cell: hidden dropout, zoneout (a pair for the LSTM family), both."""
    is_lstm = rnnkit.make_cell(cell).state_type is LSTMState
    if cell in ("mingru", "minlstm"):  # no W_hh: zoneout only
        return [("zoneout", {"zoneout": 0.4})]
    cases = [("hidden", {"hidden_dropout": 0.4}), ("zoneout", {"zoneout": 0.4})]
    if is_lstm:
        cases.append(("zoneout-pair", {"zoneout": (0.3, 0.6)}))
    cases.append(("both", {"hidden_dropout": 0.4, "zoneout": (0.3, 0.6) if is_lstm else 0.4}))
    return cases


GRID = [(case, regs, layers, bidir, lengths)
        for case in cell_cases() for regs in regularizer_cases(case[1])
        for layers, bidir, lengths in itertools.product([1, 2], [False, True], [None, LENGTHS])]


def grid_id(case, regs, layers, bidir, lengths):
    return f"{case[0]}-{regs[0]}-L{layers}-{'bi' if bidir else 'uni'}-{'len' if lengths else 'full'}"


def make_layers(cell, options, proj_size, regs, layers, bidir):
    torch.manual_seed(0)
    kwargs = dict(num_layers=layers, bidirectional=bidir, proj_size=proj_size, dtype=torch.float64)
    ref = rnnkit.Recurrent(cell, I, H, backend="reference", **kwargs, **options, **regs)
    with torch.no_grad():  # move every parameter off its init rule, so no term is trivially zero
        for p in ref.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ours = rnnkit.Recurrent(cell, I, H, backend="fused", **kwargs, **options, **regs)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def random_state(layer, gen):
    shape = (layer.num_layers * layer.num_directions, B)
    sizes = layer.cell.state_sizes(layer.hidden_size, layer.proj_size)
    parts = [torch.randn(*shape, n, dtype=torch.float64, generator=gen).requires_grad_() for n in sizes]
    return LSTMState(*parts) if len(parts) == 2 else parts[0]


def clone_state(state):
    if isinstance(state, LSTMState):
        return LSTMState(*(s.detach().clone().requires_grad_() for s in state))
    return state.detach().clone().requires_grad_()


@pytest.mark.parametrize("case,regs,layers,bidir,lengths", GRID, ids=[grid_id(*g) for g in GRID])
def test_fused_matches_reference_under_the_same_masks(case, regs, layers, bidir, lengths):
    _, cell, options, proj_size = case
    ref, ours = make_layers(cell, options, proj_size, regs[1], layers, bidir)
    gen = torch.Generator().manual_seed(1)
    x_ref = torch.randn(T, B, I, dtype=torch.float64, generator=gen, requires_grad=True)
    x_ours = x_ref.detach().clone().requires_grad_()
    s_ref = random_state(ref, gen)
    s_ours = clone_state(s_ref)
    lens = None if lengths is None else torch.tensor(lengths)

    torch.manual_seed(SEED)
    out_ref, final_ref = ref(x_ref, s_ref, lengths=lens)
    torch.manual_seed(SEED)
    out_ours, final_ours = ours(x_ours, s_ours, lengths=lens)
    assert ours.last_backend == "fused"
    with torch.no_grad():  # the masks changed the result, so the comparison below tests them
        plain, _ = ref.eval()(x_ref, s_ref, lengths=lens)
    assert not torch.allclose(plain, out_ref), "the regularizers changed nothing"
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


GRADCHECK = [
    ("lstm-proj-both-len", "lstm", {}, 1, {"hidden_dropout": 0.4, "zoneout": (0.3, 0.5)}, 1, False, [3, 1]),
    ("peephole-zoneout-pair", "peephole_lstm", {}, 0, {"zoneout": (0.3, 0.5)}, 1, False, None),
    ("layernorm-hidden", "layernorm_lstm", {}, 0, {"hidden_dropout": 0.4}, 1, False, [3, 2]),
    ("gru-both-L2", "gru", {}, 0, {"hidden_dropout": 0.4, "zoneout": 0.4}, 2, False, [3, 1]),
    ("cho_gru-both", "cho_gru", {}, 0, {"hidden_dropout": 0.4, "zoneout": 0.4}, 1, False, None),
    ("rnn_tanh-both-len", "rnn_tanh", {}, 0, {"hidden_dropout": 0.4, "zoneout": 0.4}, 1, True, [3, 2]),
    ("indrnn-tanh-both", "indrnn", {"nonlinearity": "tanh"}, 0, {"hidden_dropout": 0.4, "zoneout": 0.4}, 1, False,
     [3, 1]),
    ("minlstm-zoneout-len", "minlstm", {}, 0, {"zoneout": 0.4}, 1, True, [3, 1]),
]


@pytest.mark.parametrize("cell,options,proj_size,regs,layers,bidir,lengths", [g[1:] for g in GRADCHECK],
                         ids=[g[0] for g in GRADCHECK])
def test_fused_layer_gradcheck_with_fixed_masks(cell, options, proj_size, regs, layers, bidir, lengths):
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cell, 2, 2, num_layers=layers, bidirectional=bidir, proj_size=proj_size,
                             dtype=torch.float64, backend="fused", **options, **regs)
    names = [name for name, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    state = random_state(layer, torch.Generator().manual_seed(1))
    state = [s[:, :2].detach().clone().requires_grad_() for s in state_tensors(state)]  # batch 2
    lens = None if lengths is None else torch.tensor(lengths)

    def f(x, *args):
        n = len(state)
        s = LSTMState(*args[:n]) if n == 2 else args[0]
        torch.manual_seed(5)  # the same masks at every call
        out, final = torch.func.functional_call(layer, dict(zip(names, args[n:])), (x, s), {"lengths": lens})
        assert layer.last_backend == "fused"
        return (out, *state_tensors(final))

    assert torch.autograd.gradcheck(f, (x, *state, *params), fast_mode=True)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_kernel_with_all_zero_keep_and_unit_mask_equals_the_plain_kernel(cell):
    """noise that changes nothing (mask of ones, no unit zoned out) gives the no-noise result exactly."""
    layer = rnnkit.Recurrent(cell, 3, 4, dtype=torch.float64)
    w = layer.weights(0, 0)
    gx = layer.cell.input_projection(torch.randn(T, B, 3, dtype=torch.float64), w)
    state = layer.cell.zero_state((B,), 4, 0, gx)
    keep = torch.zeros(T, B, 4, dtype=torch.bool)
    noise = StepNoise(torch.ones(B, 4, dtype=torch.float64),
                      LSTMState(keep, keep) if isinstance(state, LSTMState) else keep)
    lens = torch.tensor(LENGTHS)
    out, final = fused.KERNELS[cell](layer.cell, gx, state, w, lens)
    out_noise, final_noise = fused.KERNELS[cell](layer.cell, gx, state, w, lens, noise)
    assert_close("output", out, out_noise, 1e-14)
    for i, (a, b) in enumerate(zip(state_tensors(final), state_tensors(final_noise))):
        assert_close(f"final state[{i}]", a, b, 1e-14)


def test_supports_hidden_dropout_and_zoneout():
    problem = rnnkit.backends.Problem("lstm", (), "cpu", torch.float64, 3, 6, True, ("hidden_dropout", "zoneout"))
    assert fused.supports(problem) is None
    auto = rnnkit.Recurrent("gru", 3, 5, hidden_dropout=0.2, zoneout=0.1)
    auto(torch.randn(4, 2, 3))
    assert auto.last_backend == "fused"  # no longer the reference loop
