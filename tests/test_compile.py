"""torch.compile over rnnkit layers: the compiled module gives the eager outputs and gradients.

The fast tests compile with dynamo and the ``eager`` / ``aot_eager`` backends (tracing, graph
breaks and, for aot_eager, the functionalized forward and backward graphs, without generating
code); the inductor test, which generates and builds C++ on this CPU, is marked slow.

The fused backend (named, or auto's pick for 8 cells in training at this size) runs eagerly behind a
graph break under torch.compile (``rnnkit.backends.run``); traced, its C++ LSTM loops failed and
aot_eager gave cho_gru outputs 0.17 away from eager.
"""

from __future__ import annotations

import pytest
import torch

import rnnkit
from tests.helpers import assert_close, named_grads, state_tensors

CASES = [("lstm", "reference", "eager"), ("gru", "native", "eager"), ("lstm", "native", "aot_eager"),
         ("gru", "reference", "aot_eager")]


def _layer(cell: str, backend: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return rnnkit.Recurrent(cell, 4, 6, num_layers=2, backend=backend).double()


def _check_compiled_matches_eager(cell: str, backend: str, compiler: str, tol: float) -> str:
    """Compile a 2-layer float64 layer, compare outputs, state and every gradient; the backend that ran."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eager, compiled_layer = _layer(cell, backend), _layer(cell, backend)
    compiled = torch.compile(compiled_layer, backend=compiler)
    x = torch.randn(7, 3, 4, dtype=torch.double)
    outputs = []
    for model in (eager, compiled):
        x_ = x.clone().requires_grad_()
        out, state = model(x_)
        (out.sum() + sum(s.sum() for s in state_tensors(state))).backward()
        outputs.append((out, state_tensors(state), x_.grad, named_grads(eager if model is eager else compiled_layer)))
    (out_a, state_a, dx_a, grads_a), (out_b, state_b, dx_b, grads_b) = outputs
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs > 0, f"torch.compile captured no graph of the {cell} layer ({backend} backend): it ran eagerly"
    assert_close("out", out_a, out_b, tol)
    for i, (a, b) in enumerate(zip(state_a, state_b)):
        assert_close(f"state[{i}]", a, b, tol)
    assert_close("dx", dx_a, dx_b, tol)
    for name in grads_a:
        assert_close(f"d{name}", grads_a[name], grads_b[name], tol)
    assert compiled_layer.last_backend == eager.last_backend, (
        f"compiled {cell} ran {compiled_layer.last_backend}, eager ran {eager.last_backend}")
    return compiled_layer.last_backend


@pytest.mark.parametrize("cell,backend,compiler", CASES, ids=lambda v: str(v))
def test_compiled_layer_matches_eager(cell, backend, compiler):
    _check_compiled_matches_eager(cell, backend, compiler, 1e-12)


# the cells for which auto picks fused in _check_compiled_matches_eager's call (training, batch 3, CPU)
AUTO_FUSED = ["peephole_lstm", "layernorm_lstm", "cifg_lstm", "gru", "cho_gru", "mingru", "minlstm", "indrnn"]


@pytest.mark.parametrize("cell", rnnkit.cells())
def test_compiled_fused_backend_matches_eager(cell):
    assert _check_compiled_matches_eager(cell, "fused", "aot_eager", 1e-12) == "fused"


@pytest.mark.parametrize("cell", AUTO_FUSED)
def test_compiled_auto_keeps_the_fused_backend(cell):
    """Under torch.compile auto picks what it picks eagerly, and fused then runs (eagerly) and is correct."""
    assert _check_compiled_matches_eager(cell, "auto", "eager", 1e-12) == "fused"


@pytest.mark.slow
@pytest.mark.parametrize("cell,backend", [("lstm", "reference"), ("gru", "reference"), ("peephole_lstm", "auto")])
def test_inductor_compiled_layer_matches_eager(cell, backend):
    _check_compiled_matches_eager(cell, backend, "inductor", 1e-9)
