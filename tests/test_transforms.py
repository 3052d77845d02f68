"""Program transforms over models with rnnkit layers: torch.export, torch.jit.script, torch.func.functional_call.

One test per transform and cell family (every cell of the family inside), each comparing the transformed
model with the eager layer in float64, or asserting the clear error that names ``rnnkit export``
(the rules are in ``rnnkit.backends``'s module notes and ``Recurrent.__prepare_scriptable__``).
torch.compile is in tests/test_compile.py.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.export import Dim

import rnnkit
from rnnkit.backends import NotSupported
from tests.helpers import assert_close, named_grads, state_tensors

FAMILIES = {
    "elman": ["rnn_tanh", "rnn_relu"],
    "lstm": ["lstm", "peephole_lstm", "layernorm_lstm", "cifg_lstm"],
    "gru": ["gru", "cho_gru"],
    "minimal": ["mingru", "minlstm"],
    "indrnn": ["indrnn"],
}
TOL = 1e-10  # float64

# which backend auto runs under torch.export, as the exported graph shows it (torch.export puts the
# module's attributes back after tracing, so last_backend keeps its value from before the export)
EXPORTED_BY = {"rnn_tanh": "native", "rnn_relu": "native", "lstm": "native", "gru": "native", "mingru": "scan",
               "minlstm": "scan"}  # the others: reference


def test_families_cover_every_cell():
    assert sorted(c for cells in FAMILIES.values() for c in cells) == sorted(rnnkit.cells())


def _layer(cell: str, **kwargs) -> rnnkit.Recurrent:
    torch.manual_seed(0)
    return rnnkit.Recurrent(cell, 3, 4, num_layers=2, bidirectional=True, **kwargs).double()


def _assert_same(name: str, expected, got) -> None:
    """(out, state) pairs equal within TOL, naming what differs."""
    assert_close(f"{name}: out", expected[0], got[0], TOL)
    for i, (a, b) in enumerate(zip(state_tensors(expected[1]), state_tensors(got[1]))):
        assert_close(f"{name}: state[{i}]", a, b, TOL)


def _backend_in_graph(program: torch.export.ExportedProgram) -> str:
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    if targets & {f"aten.{op}.input" for op in ("lstm", "gru", "rnn_tanh", "rnn_relu")}:
        return "native"
    if "aten.logcumsumexp.default" in targets:
        return "scan"
    assert "aten.unbind.int" in targets, f"neither torch's kernels, the scan nor the per-step loop in {targets}"
    return "reference"


# ---------------------------------------------------------------------- torch.export


@pytest.mark.parametrize("family", FAMILIES)
def test_export(family):
    """auto exports every cell in eval mode (before: the LSTM family failed on the C++ loops' oneDNN ops),
    the batch dynamic; the time axis is the example's (the loop is unrolled), except where the scan runs."""
    for cell in FAMILIES[family]:
        layer = _layer(cell).eval()
        x = torch.randn(3, 2, 3, dtype=torch.double)  # (T, B, I)
        x_batch, x_time = torch.randn(3, 4, 3, dtype=torch.double), torch.randn(6, 2, 3, dtype=torch.double)
        scan = EXPORTED_BY.get(cell) == "scan"
        dims = {1: Dim("batch"), 0: Dim("time")} if scan else {1: Dim("batch")}
        program = torch.export.export(layer, (x,), dynamic_shapes=(dims,))
        assert _backend_in_graph(program) == EXPORTED_BY.get(cell, "reference"), cell
        _assert_same(f"{cell} exported, another batch", layer(x_batch), program.module()(x_batch))
        if scan:
            _assert_same(f"{cell} exported, another length", layer(x_time), program.module()(x_time))
            continue
        with pytest.raises(Exception, match=r"x\.size\(\)\[0\] == 3"):  # torch's input guard, not a wrong result
            program.module()(x_time)
        with pytest.raises(NotSupported, match=r"time axis of x cannot be dynamic.*`rnnkit export`"):
            torch.export.export(layer, (x,), dynamic_shapes=({0: Dim("time")},))


@pytest.mark.parametrize("cell", ["peephole_lstm", "gru"])
def test_export_refuses_the_fused_backend_by_name_naming_the_alternative(cell):
    layer = _layer(cell, backend="fused").eval()
    with pytest.raises(NotSupported, match=r"backend='fused'.*backend='auto'.*`rnnkit export`"):
        torch.export.export(layer, (torch.randn(5, 2, 3, dtype=torch.double),))


def test_export_refuses_lengths_naming_the_alternative():
    layer = _layer("lstm").eval()
    x = torch.randn(5, 2, 3, dtype=torch.double)
    with pytest.raises(NotSupported, match=r"with lengths.*`rnnkit export`"):
        torch.export.export(layer, (x,), {"lengths": torch.tensor([5, 3])})


def test_export_does_not_change_what_eager_runs():
    """The export rule reads torch.compiler.is_exporting(): afterwards auto picks fused again."""
    layer = _layer("peephole_lstm").eval()
    x = torch.randn(5, 2, 3, dtype=torch.double)
    torch.export.export(layer, (x,))
    layer(x)
    assert layer.last_backend == "fused"


# ---------------------------------------------------------------------- torch.jit.script


class _Model(nn.Module):
    """A model with a recurrent layer inside, as torch.jit.script users write them (state discarded)."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn, self.head = rnn, nn.Linear(rnn.hidden_size if not rnn.proj_size else rnn.proj_size, 1).double()
        self.directions = 2 if rnn.bidirectional else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[..., : out.shape[-1] // self.directions])


def _scripted(model: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates torch.jit
        return torch.jit.script(model)


def _check_scripted_matches_eager(rnn: nn.Module, x: torch.Tensor) -> None:
    """The scripted model gives the eager outputs and the same gradients, on the same parameter objects."""
    rnn.train()
    model = _Model(rnn)
    twin = copy.deepcopy(model)
    scripted = _scripted(model)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_eager, out_scripted = twin(x1), scripted(x2)
    assert_close("out", out_eager, out_scripted, TOL)
    out_eager.square().sum().backward()
    out_scripted.square().sum().backward()
    assert_close("dx", x1.grad, x2.grad, TOL)
    grads = named_grads(twin.rnn)
    for name, got in named_grads(rnn).items():  # the scripted model trained the layer's own parameters
        assert_close(f"d{name}", grads[name], got, TOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_jit_script(family):
    """Every cell scripts on the layer's own parameters, inside a model, with the eager outputs and gradients:
    torch's cells as torch.nn's module, the others as rnnkit export's loop (rnnkit.script)."""
    torch.manual_seed(0)
    x = torch.randn(6, 2, 3, dtype=torch.double)
    layers = {
        "elman": [rnnkit.RNN(3, 4, 2, nonlinearity="relu", bidirectional=True), rnnkit.RNN(3, 4),
                  rnnkit.Recurrent("rnn_tanh", 3, 4, batch_first=True)],
        "lstm": [rnnkit.LSTM(3, 5, 2, proj_size=2, bidirectional=True), rnnkit.Recurrent("lstm", 3, 4),
                 rnnkit.Recurrent("peephole_lstm", 3, 5, 2, proj_size=2, bidirectional=True),
                 rnnkit.Recurrent("layernorm_lstm", 3, 4, batch_first=True), rnnkit.Recurrent("cifg_lstm", 3, 4)],
        "gru": [rnnkit.GRU(3, 4, 2, bidirectional=True), rnnkit.GRU(3, 4, batch_first=True),
                rnnkit.Recurrent("cho_gru", 3, 4, 2, bidirectional=True)],
        "minimal": [rnnkit.Recurrent("mingru", 3, 4, 2, bidirectional=True), rnnkit.Recurrent("minlstm", 3, 4)],
        "indrnn": [rnnkit.Recurrent("indrnn", 3, 4, 2, bidirectional=True),
                   rnnkit.Recurrent("indrnn", 3, 4, nonlinearity="tanh")],
    }[family]
    assert {layer.cell.name for layer in layers} == set(FAMILIES[family])
    for rnn in layers:
        _check_scripted_matches_eager(rnn.double(), x.transpose(0, 1) if rnn.batch_first else x)


@pytest.mark.parametrize("cell", ["peephole_lstm", "mingru"])
def test_jit_scripted_loop_takes_lengths_and_a_state(cell):
    """The scripted loop called directly: another batch and length, lengths, an initial state."""
    layer = _layer(cell).eval()
    scripted = _scripted(layer)
    x = torch.randn(7, 3, 3, dtype=torch.double)
    lengths = torch.tensor([7, 2, 5])
    state = layer(torch.randn(2, 3, 3, dtype=torch.double))[1]
    hx = tuple(state) if isinstance(state, tuple) else state
    _assert_same(f"scripted {cell}", layer(x, state, lengths), scripted(x, hx, lengths))


def test_jit_script_refuses_what_its_loop_lacks():
    """Regularizers and dropout between layers: a clear error, not a scripted module that silently drops them."""
    with pytest.raises(NotSupported, match=r"no zoneout.*`rnnkit export`"):
        _scripted(_Model(rnnkit.Recurrent("lstm", 3, 4, zoneout=0.1)))
    with pytest.raises(NotSupported, match=r"no dropout between layers.*`rnnkit export`"):
        _scripted(_Model(rnnkit.Recurrent("peephole_lstm", 3, 4, 2, dropout=0.2)))


# ---------------------------------------------------------------------- torch.func.functional_call


@pytest.mark.parametrize("family", FAMILIES)
def test_functional_call_uses_the_given_parameters(family):
    """functional_call with other parameters == a copy of the layer holding them, outputs and gradients;
    the layer's own parameters stay as they were (catches a backend reading weights it cached earlier)."""
    for cell in FAMILIES[family]:
        layer = _layer(cell)
        x = torch.randn(5, 2, 3, dtype=torch.double)
        layer(x)  # a call on the layer's own weights first, so a stale cache would show
        before = {name: p.detach().clone() for name, p in layer.named_parameters()}
        params = {name: (p.detach() + 0.1 * torch.randn_like(p)).requires_grad_() for name, p in
                  layer.named_parameters()}
        twin = copy.deepcopy(layer)
        with torch.no_grad():
            for name, p in twin.named_parameters():
                p.copy_(params[name])
        got = torch.func.functional_call(layer, params, (x,))
        ran = layer.last_backend
        expected = twin(x)
        assert ran == twin.last_backend, f"{cell}: functional_call ran {ran}, the layer {twin.last_backend}"
        _assert_same(f"{cell} functional_call", expected, got)
        loss = lambda result: result[0].square().sum() + sum(s.sum() for s in state_tensors(result[1]))  # noqa: E731
        loss(got).backward()
        loss(expected).backward()
        for name, p in twin.named_parameters():
            assert_close(f"{cell}: d{name}", p.grad, params[name].grad, TOL)
        for name, p in layer.named_parameters():
            assert_close(f"{cell}: {name} unchanged", before[name], p, 0.0)
