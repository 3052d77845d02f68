"""The triton backend against the reference backend, on the CPU through Triton's interpreter.

TRITON_INTERPRET=1 is set here, at import, before anything imports triton: the interpreter then
runs the Triton kernels on CPU tensors (the backend's ``supports`` accepts CPU tensors only with it on).
float64, within 1e-10: outputs, final states, and the gradients of the input, the initial state
and every parameter, for every cell x 1-2 layers x both directions x lengths x proj_size, at tiny
shapes (the interpreter runs each kernel launch in Python). One case per family runs in the fast
suite; the rest of the grid is marked slow. Plus: double backward against the reference's second
derivatives, no-grad inference, bf16 autocast, and the reasons ``supports`` gives. Under hidden
dropout and zoneout the same comparison runs with the masks both backends draw from one seed.
"""

from __future__ import annotations

import itertools
import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported, by this module or any other

import pytest  # noqa: E402
import torch  # noqa: E402

import rnnkit  # noqa: E402
from rnnkit.backends import AUTO_ORDER, NotSupported, Problem  # noqa: E402
from rnnkit.backends import triton as triton_backend  # noqa: E402
from rnnkit.cells import LSTMState  # noqa: E402
from tests.helpers import assert_close, state_tensors  # noqa: E402

pytest.importorskip("triton")
pytestmark = pytest.mark.triton

TOL = 1e-10
I, H, P, T, B = 2, 3, 2, 4, 2
LENGTHS = [2, 4]  # the longer sequence second: any order works
SEED = 9  # seeds the hidden-dropout and zoneout masks the driver draws


def cell_cases():
    """(id, cell, options, proj_size) for every cell the triton backend runs."""
    cases = []
    for cell in rnnkit.cells():
        if cell not in triton_backend.KERNELS:
            continue
        cases.append((cell, cell, {}, 0))
        if rnnkit.make_cell(cell).supports_proj:
            cases.append((f"{cell}-proj", cell, {}, P))
        if cell == "indrnn":
            cases += [("indrnn-tanh", cell, {"nonlinearity": "tanh"}, 0),
                      ("indrnn-max", cell, {"recurrent_max": 0.5}, 0)]
    return cases


CASES = cell_cases()
# one case per family in the fast suite, each with 2 layers, both directions and lengths where cheap
FAST = {("layernorm_lstm-proj", 2, True, True), ("peephole_lstm", 1, False, True), ("cifg_lstm-proj", 1, True, False),
        ("lstm", 1, False, True), ("rnn_relu", 2, True, True), ("indrnn-max", 2, True, True),
        ("gru", 2, True, True), ("cho_gru", 1, False, True), ("mingru", 1, True, True), ("minlstm", 2, False, True)}
GRID = list(itertools.product(CASES, [1, 2], [False, True], [False, True]))


def grid_params():
    for case, layers, bidir, lengths in GRID:
        marks = () if (case[0], layers, bidir, lengths) in FAST else (pytest.mark.slow,)
        name = f"{case[0]}-L{layers}-{'bi' if bidir else 'uni'}-{'len' if lengths else 'full'}"
        yield pytest.param(case, layers, bidir, lengths, id=name, marks=marks)


def make_layers(cell, options, proj_size, layers=1, bidir=False, dtype=torch.float64):
    torch.manual_seed(0)
    kwargs = dict(num_layers=layers, bidirectional=bidir, proj_size=proj_size, dtype=dtype)
    ref = rnnkit.Recurrent(cell, I, H, backend="reference", **kwargs, **options)
    with torch.no_grad():  # move every parameter off its init rule, so no term is trivially zero
        for p in ref.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ours = rnnkit.Recurrent(cell, I, H, backend="triton", **kwargs, **options)
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


def loss_of(out, final, coefs):
    return sum(((p * k).sum() for p, k in zip([out, *state_tensors(final)], coefs)))


@pytest.mark.parametrize("case,layers,bidir,lengths", list(grid_params()))
def test_triton_matches_reference(case, layers, bidir, lengths):
    _, cell, options, proj_size = case
    ref, ours = make_layers(cell, options, proj_size, layers, bidir)
    gen = torch.Generator().manual_seed(1)
    x_ref = torch.randn(T, B, I, dtype=torch.float64, generator=gen, requires_grad=True)
    x_ours = x_ref.detach().clone().requires_grad_()
    s_ref = random_state(ref, gen)
    s_ours = clone_state(s_ref)
    lens = torch.tensor(LENGTHS) if lengths else None

    out_ref, final_ref = ref(x_ref, s_ref, lengths=lens)
    out_ours, final_ours = ours(x_ours, s_ours, lengths=lens)
    assert ours.last_backend == "triton"
    assert_close("output", out_ref, out_ours, TOL)
    for i, (a, b) in enumerate(zip(state_tensors(final_ref), state_tensors(final_ours))):
        assert_close(f"final state[{i}]", a, b, TOL)

    weights = torch.Generator().manual_seed(2)
    coefs = [torch.randn(p.shape, dtype=p.dtype, generator=weights) for p in [out_ref, *state_tensors(final_ref)]]
    loss_of(out_ref, final_ref, coefs).backward()
    loss_of(out_ours, final_ours, coefs).backward()
    assert_close("grad input", x_ref.grad, x_ours.grad, TOL)
    for i, (a, b) in enumerate(zip(state_tensors(s_ref), state_tensors(s_ours))):
        assert_close(f"grad initial state[{i}]", a.grad, b.grad, TOL)
    ours_params = dict(ours.named_parameters())
    for name, p in ref.named_parameters():
        assert_close(f"grad {name}", p.grad, ours_params[name].grad, TOL)


FAMILY_CASES = [c for c in CASES if c[0] in ("peephole_lstm-proj", "rnn_tanh", "indrnn", "cho_gru", "minlstm")]


DOUBLE_CASES = [(c, {}) for c in FAMILY_CASES] + [(c, {"hidden_dropout": 0.4, "zoneout": 0.3}) for c in CASES
                                                  if c[0] in ("cifg_lstm-proj", "gru")]


@pytest.mark.parametrize("case,regs", DOUBLE_CASES, ids=[c[0] + ("-masks" if r else "") for c, r in DOUBLE_CASES])
def test_double_backward_matches_reference(case, regs):
    """Second derivatives (create_graph=True) equal the reference's within 1e-8, lengths and masks included."""
    _, cell, options, proj_size = case
    ref, ours = make_layers(cell, {**options, **regs}, proj_size, layers=2, bidir=True)
    lens = torch.tensor(LENGTHS)
    results = []
    for layer in (ref, ours):
        x = torch.randn(T, B, I, dtype=torch.float64, generator=torch.Generator().manual_seed(3), requires_grad=True)
        torch.manual_seed(SEED)  # the same hidden-dropout and zoneout masks in both
        out, _ = layer(x, lengths=lens)
        params = list(layer.parameters())
        grads = torch.autograd.grad((out * out).sum(), [x, *params], create_graph=True)
        penalty = sum((g * g).sum() for g in grads)  # a gradient penalty, as in WGAN-GP
        results.append(torch.autograd.grad(penalty, [x, *params]))
    assert ours.last_backend == "triton"
    names = ["x", *(n for n, _ in ref.named_parameters())]
    for name, a, b in zip(names, *results):
        assert_close(f"second-order grad {name}", a, b, 1e-8)


def test_inference_without_grad_matches_reference():
    """Under no_grad (nothing saved) the outputs and the final state are the reference's."""
    ref, ours = make_layers("lstm", {}, P, layers=2, bidir=True)
    x = torch.randn(T, B, I, dtype=torch.float64)
    with torch.no_grad():
        out_ref, final_ref = ref(x, lengths=LENGTHS)
        out_ours, final_ours = ours(x, lengths=LENGTHS)
    assert ours.last_backend == "triton"
    assert_close("output", out_ref, out_ours, TOL)
    for i, (a, b) in enumerate(zip(final_ref, final_ours)):
        assert_close(f"final state[{i}]", a, b, TOL)


@pytest.mark.parametrize("cell", ["layernorm_lstm", "gru"])
def test_bfloat16_autocast_close_to_float32(cell):
    """Under CPU bf16 autocast the kernels compute in float32: output within 5e-2 of float32, grads float32."""
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cell, I, H, num_layers=2, backend="triton")
    x = torch.randn(T, B, I)
    expected, _ = layer(x, lengths=LENGTHS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = layer(x, lengths=LENGTHS)
        out.float().sum().backward()
    assert out.dtype == torch.bfloat16  # autocast ran: the input GEMM chose bf16
    assert_close("bf16 output", expected, out.float(), 5e-2)
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in layer.parameters())


def problem(**changes):
    fields = dict(cell="lstm", cell_options=(), device="cpu", dtype=torch.float32, batch=B, steps=T, training=True)
    return Problem(**{**fields, **changes})


def test_supports_reasons(monkeypatch):
    """Refused with a reason: a CPU tensor without the interpreter; a CUDA tensor needs no interpreter."""
    assert triton_backend.supports(problem(regularizers=("hidden_dropout", "zoneout"))) is None
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "TRITON_INTERPRET=1" in triton_backend.supports(problem())
    with pytest.raises(NotSupported, match="TRITON_INTERPRET=1"):
        rnnkit.Recurrent("gru", I, H, backend="triton")(torch.randn(T, B, I))
    assert triton_backend.supports(problem(device="cuda")) is None


def test_auto_never_picks_triton():
    """Until scripts/gpu_triton.sh shows it faster on a GPU, triton runs only when named."""
    assert "triton" not in AUTO_ORDER
    layer = rnnkit.Recurrent("peephole_lstm", I, H)
    layer(torch.randn(T, B, I))
    assert layer.last_backend != "triton"


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


REG_FAST = {("peephole_lstm-proj", "both", 2, True, True), ("layernorm_lstm", "zoneout-pair", 1, False, True),
            ("cifg_lstm", "hidden", 1, False, False), ("gru", "both", 2, True, True),
            ("cho_gru", "hidden", 1, False, True), ("rnn_tanh", "both", 1, True, True),
            ("indrnn", "both", 1, False, True), ("minlstm", "zoneout", 2, True, True)}
def reg_params():
    for case in CASES:
        for regs in regularizer_cases(case[1]):
            for layers, bidir, lengths in itertools.product([1, 2], [False, True], [False, True]):
                fast = (case[0], regs[0], layers, bidir, lengths) in REG_FAST
                name = f"{case[0]}-{regs[0]}-L{layers}-{'bi' if bidir else 'uni'}-{'len' if lengths else 'full'}"
                marks = () if fast else (pytest.mark.slow,)
                yield pytest.param(case, regs, layers, bidir, lengths, id=name, marks=marks)


@pytest.mark.parametrize("case,regs,layers,bidir,lengths", list(reg_params()))
def test_triton_matches_reference_under_the_same_masks(case, regs, layers, bidir, lengths):
    _, cell, options, proj_size = case
    torch.manual_seed(0)
    kwargs = dict(num_layers=layers, bidirectional=bidir, proj_size=proj_size, dtype=torch.float64, **regs[1])
    ref = rnnkit.Recurrent(cell, I, H, backend="reference", **kwargs, **options)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ours = rnnkit.Recurrent(cell, I, H, backend="triton", **kwargs, **options)
    ours.load_state_dict(ref.state_dict())
    gen = torch.Generator().manual_seed(1)
    x_ref = torch.randn(T, B, I, dtype=torch.float64, generator=gen, requires_grad=True)
    x_ours = x_ref.detach().clone().requires_grad_()
    s_ref = random_state(ref, gen)
    s_ours = clone_state(s_ref)
    lens = torch.tensor(LENGTHS) if lengths else None

    torch.manual_seed(SEED)  # the driver draws the masks: the same seed gives both backends the same masks
    out_ref, final_ref = ref(x_ref, s_ref, lengths=lens)
    torch.manual_seed(SEED)
    out_ours, final_ours = ours(x_ours, s_ours, lengths=lens)
    assert ours.last_backend == "triton"
    with torch.no_grad():  # the masks changed the result, so the comparison below tests them
        plain, _ = ref.eval()(x_ref, s_ref, lengths=lens)
    assert not torch.allclose(plain, out_ref), "the regularizers changed nothing"
    assert_close("output", out_ref, out_ours, TOL)
    for i, (a, b) in enumerate(zip(state_tensors(final_ref), state_tensors(final_ours))):
        assert_close(f"final state[{i}]", a, b, TOL)
    weights = torch.Generator().manual_seed(2)
    coefs = [torch.randn(p.shape, dtype=p.dtype, generator=weights) for p in [out_ref, *state_tensors(final_ref)]]
    loss_of(out_ref, final_ref, coefs).backward()
    loss_of(out_ours, final_ours, coefs).backward()
    assert_close("grad input", x_ref.grad, x_ours.grad, TOL)
    for i, (a, b) in enumerate(zip(state_tensors(s_ref), state_tensors(s_ours))):
        assert_close(f"grad initial state[{i}]", a.grad, b.grad, TOL)
    ours_params = dict(ours.named_parameters())
    for name, p in ref.named_parameters():
        assert_close(f"grad {name}", p.grad, ours_params[name].grad, TOL)


WIDE_CASES = [c for c in CASES if c[0] in ("lstm-proj", "layernorm_lstm", "gru", "cho_gru", "rnn_relu", "indrnn",
                                           "mingru")]


@pytest.mark.parametrize("case", WIDE_CASES, ids=[c[0] for c in WIDE_CASES])
def test_rows_split_across_programs(case, monkeypatch):
    """H = 40 in blocks of 16 units: three programs per batch row, the last one partly masked, forward and backward
    (the layer norms keep a whole row in one program); under hidden dropout and zoneout, within 1e-10."""
    from rnnkit.backends.triton import common

    monkeypatch.setattr(common, "COLUMNS", 16)
    _, cell, options, proj_size = case
    regs = {"zoneout": 0.3} if cell in ("mingru", "minlstm") else {"hidden_dropout": 0.3, "zoneout": 0.3}
    wide = 40
    torch.manual_seed(0)
    kwargs = dict(num_layers=1, bidirectional=True, proj_size=proj_size, dtype=torch.float64, **options, **regs)
    ref = rnnkit.Recurrent(cell, I, wide, backend="reference", **kwargs)
    ours = rnnkit.Recurrent(cell, I, wide, backend="triton", **kwargs)
    ours.load_state_dict(ref.state_dict())
    results = []
    for layer in (ref, ours):
        x = torch.randn(T, B, I, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
        torch.manual_seed(SEED)
        out, final = layer(x, lengths=LENGTHS)
        (out.sin().sum() + sum(s.sin().sum() for s in state_tensors(final))).backward()
        results.append([out, *state_tensors(final), x.grad, *(p.grad for p in layer.parameters())])
    assert ours.last_backend == "triton"
    names = ["output", *(f"final state[{i}]" for i in range(len(state_tensors(final)))), "grad input",
             *(f"grad {n}" for n, _ in ref.named_parameters())]
    for name, a, b in zip(names, *results):
        assert_close(name, a, b, TOL)
