"""The C++ time loops of the fused LSTM family (csrc/lstm.cpp) against its Python loops.

The same layer runs twice, once with the C++ loops and once with ``RNNKIT_NO_EXTENSION=1``:
outputs, final states and the gradients of the input, the initial state and every parameter
agree within 1e-10 in float64 and 1e-5 (relative to the largest value) in float32, for lstm,
peephole_lstm, cifg_lstm and layernorm_lstm with and without projection, lengths and bias, at
shapes that exercise vector tails, the row split and the hidden-unit split over threads (the
layer-norm kind keeps each row on one thread: its norms reduce over the row). test_fused.py
checks the same kernels (C++ when available) against the reference backend. Plus: status()
is a string, the environment variable really forces the Python loops, and an unavailable
extension warns once and falls back.
"""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch

import rnnkit
from rnnkit.backends.fused import extension
from rnnkit.backends.fused import lstm as fused_lstm
from rnnkit.cells import LSTMState
from tests.helpers import assert_close

CELLS = ["lstm", "peephole_lstm", "cifg_lstm", "layernorm_lstm"]
# (id, T, B, I, H, proj_size, lengths or None)
SHAPES = [
    ("small", 6, 4, 3, 7, 3, [5, 2, 6, 1]),  # H and P below one vector: tails only
    ("wide", 4, 3, 8, 1100, 0, [4, 1, 3]),  # few rows: hidden units split over threads, tail of 4
    ("rows", 3, 80, 5, 130, 40, [3, 1, 2, 3] * 20),  # many rows split over threads
]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
GRID = [(cell, shape, lengths, bias, dtype)
        for cell, shape, (lengths, bias), dtype in itertools.product(
            CELLS, SHAPES, [(False, True), (True, True), (True, False)], [torch.float64, torch.float32])
        if shape[0] == "small" or (lengths and bias)]


def grid_id(cell, shape, lengths, bias, dtype):
    return f"{cell}-{shape[0]}-{'len' if lengths else 'full'}-{'b' if bias else 'nob'}-{str(dtype)[6:]}"


needs_extension = pytest.mark.skipif(
    extension.disabled() or extension.load() is None, reason=f"C++ loops: {extension.status()}")


class _Spy:
    """Wraps torch.ops.rnnkit_fused and counts the calls of each op."""

    def __init__(self, ops):
        self.ops, self.calls = ops, []

    def __getattr__(self, name):
        op = getattr(self.ops, name)

        def call(*args):
            self.calls.append(name)
            return op(*args)

        return call


def run(layer, x, state, lengths, coefs):
    """Output, final state and every gradient of one forward + backward of a fixed random loss."""
    x = x.detach().clone().requires_grad_()
    state = LSTMState(*(s.detach().clone().requires_grad_() for s in state))
    for p in layer.parameters():
        p.grad = None
    out, final = layer(x, state, lengths=lengths)
    loss = sum((t * k).sum() for t, k in zip([out, *final], coefs))
    loss.backward()
    results = {"output": out, "final h": final.h, "final c": final.c, "grad input": x.grad,
               "grad h0": state.h.grad, "grad c0": state.c.grad}
    results.update({f"grad {n}": p.grad for n, p in layer.named_parameters()})
    return results


@needs_extension
@pytest.mark.parametrize("cell,shape,lengths,bias,dtype", GRID, ids=[grid_id(*g) for g in GRID])
def test_cpp_loops_match_python_loops(cell, shape, lengths, bias, dtype, monkeypatch):
    _, T, B, I, H, P, lens = shape
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cell, I, H, proj_size=P, bias=bias, backend="fused", dtype=dtype)
    with torch.no_grad():  # off the init rule, so no term is trivially small; gates O(1) at any H
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p) / max(1.0, p.shape[-1] / 8) ** 0.5)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, I, dtype=dtype, generator=gen)
    R = P or H
    state = LSTMState(torch.randn(1, B, R, dtype=dtype, generator=gen),
                      torch.randn(1, B, H, dtype=dtype, generator=gen))
    lengths = torch.tensor(lens) if lengths else None
    coefs = [torch.randn(T, B, R, dtype=dtype, generator=gen), torch.randn(1, B, R, dtype=dtype, generator=gen),
             torch.randn(1, B, H, dtype=dtype, generator=gen)]

    spy = _Spy(extension.load())
    monkeypatch.setattr(extension, "_ops", spy)
    got = run(layer, x, state, lengths, coefs)
    assert spy.calls == ["lstm_forward", "lstm_backward"], f"the C++ loops did not run: {spy.calls}"
    monkeypatch.setenv(extension.ENV_DISABLE, "1")
    expected = run(layer, x, state, lengths, coefs)
    assert spy.calls == ["lstm_forward", "lstm_backward"], "RNNKIT_NO_EXTENSION=1 still ran the C++ loops"

    assert got.keys() == expected.keys()
    for name in expected:
        # float32: the GEMMs round differently (oneDNN vs MKL), so 1e-5 relative to the largest value
        scale = 1.0 if dtype == torch.float64 else max(1.0, float(expected[name].detach().abs().max()))
        assert_close(name, expected[name], got[name], TOL[dtype] * scale)


@needs_extension
@pytest.mark.parametrize("cell", CELLS)
def test_cpp_inference_matches_training_forward(cell, monkeypatch):
    """Under no_grad the C++ forward keeps only two states and saves nothing: same output."""
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cell, 5, 33, proj_size=9, backend="fused", dtype=torch.float64)
    x = torch.randn(7, 6, 5, dtype=torch.float64)
    lengths = torch.tensor([7, 3, 1, 7, 5, 2])
    out_train, final_train = layer(x, lengths=lengths)
    with torch.no_grad():
        out_infer, final_infer = layer(x, lengths=lengths)
    monkeypatch.setenv(extension.ENV_DISABLE, "1")
    with torch.no_grad():
        out_py, final_py = layer(x, lengths=lengths)
    for name, a, b in [("output", out_py, out_infer), ("h", final_py.h, final_infer.h),
                       ("c", final_py.c, final_infer.c), ("training output", out_py, out_train)]:
        assert_close(name, a, b, 1e-10)


def test_status_is_a_string():
    assert isinstance(extension.status(), str) and extension.status()


def test_env_var_forces_python_loops(monkeypatch):
    class Forbidden:
        def __getattr__(self, name):
            raise AssertionError(f"C++ op {name} called although {extension.ENV_DISABLE}=1")

    monkeypatch.setenv(extension.ENV_DISABLE, "1")
    monkeypatch.setattr(extension, "_ops", Forbidden())
    monkeypatch.setattr(extension, "_reason", "")
    assert extension.load() is None
    assert extension.ENV_DISABLE in extension.status()
    layer = rnnkit.Recurrent("peephole_lstm", 3, 4, backend="fused")
    x = torch.randn(5, 2, 3, requires_grad=True)
    out, _ = layer(x, lengths=torch.tensor([5, 3]))
    out.sum().backward()
    assert x.grad is not None


def test_unavailable_extension_warns_once_and_falls_back(monkeypatch):
    monkeypatch.delenv(extension.ENV_DISABLE, raising=False)
    monkeypatch.setattr(extension, "_ops", None)
    monkeypatch.setattr(extension, "_reason", "build failed: simulated")
    monkeypatch.setattr(fused_lstm, "_warned_no_extension", False)
    assert extension.load() is None
    assert "simulated" in extension.status()
    layer = rnnkit.Recurrent("cifg_lstm", 3, 4, backend="fused")
    x = torch.randn(5, 2, 3)
    with pytest.warns(RuntimeWarning, match="simulated"):
        layer(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, _ = layer(x)  # the second call is silent
    assert torch.isfinite(out).all()


@needs_extension
@pytest.mark.parametrize("proj_size", [0, 30], ids=["noproj", "proj"])
def test_layernorm_gradient_sums_over_threads(proj_size, monkeypatch):
    """layernorm_lstm sums its LN parameters' gradients per thread: two threads, same gradients."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the suite runs with one; rows of 4H = 1200 split over two
    try:
        torch.manual_seed(0)
        layer = rnnkit.Recurrent("layernorm_lstm", 5, 300, proj_size=proj_size, backend="fused",
                                 dtype=torch.float64)
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(0.3 * torch.randn_like(p) / max(1.0, p.shape[-1] / 8) ** 0.5)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(4, 40, 5, dtype=torch.float64, generator=gen)
        R = proj_size or 300
        state = LSTMState(torch.randn(1, 40, R, dtype=torch.float64, generator=gen),
                          torch.randn(1, 40, 300, dtype=torch.float64, generator=gen))
        lengths = torch.randint(1, 5, (40,), generator=gen)
        coefs = [torch.randn(4, 40, R, dtype=torch.float64, generator=gen),
                 torch.randn(1, 40, R, dtype=torch.float64, generator=gen),
                 torch.randn(1, 40, 300, dtype=torch.float64, generator=gen)]
        spy = _Spy(extension.load())
        monkeypatch.setattr(extension, "_ops", spy)
        got = run(layer, x, state, lengths, coefs)
        assert spy.calls == ["lstm_forward", "lstm_backward"], f"the C++ loops did not run: {spy.calls}"
        monkeypatch.setenv(extension.ENV_DISABLE, "1")
        expected = run(layer, x, state, lengths, coefs)
    finally:
        torch.set_num_threads(threads)
    for name in expected:
        assert_close(name, expected[name], got[name], 1e-10)
