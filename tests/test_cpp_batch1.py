"""Batch 1 in the C++ loops: rnnkit's own gemv for the per-step products (csrc/gemm.h), and ``layer.step`` of
lstm, peephole_lstm and cifg_lstm as one C++ call per token (``lstm_step``, on csrc/tile.h's tiled step).

- Training (forward + backward) with gemm='gemv', what the loops run for batches up to
  ``extension.GEMV_MAX_BATCH``, for every kind, matches the float64 reference backend: within 1e-10 in float64,
  within 1e-5 relative to the largest value in float32 (layernorm_lstm 1e-4), outputs, final state and every
  gradient. Shapes: B = 1, 2 and 5 (the kernel's row groups of 3 and its tails of 2 and 1), H = 7 (fewer columns
  than one slab of 4 vectors) and 130 (slabs split over 2 threads, the last one partial), with a projection
  (W_hr's products as gemvs too, forward and backward), lengths, no bias.
- ``layer.step`` without gradients steps every layer in one ``lstm_step`` call and matches the float64
  reference forward over the same steps within 1e-5 relative; it re-arranges after an in-place parameter change;
  with dropout between layers (train mode) it steps layer by layer and equals the torch-op stepper with the same
  seed; float64 and projection keep the torch ops; the op names a bad argument.
"""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.backends.fused import extension
from rnnkit.cells import LSTMState
from tests.helpers import OpSpy, assert_close
from tests.test_fused_extension import intra_op_threads, needs_extension, run

CELLS = ["lstm", "peephole_lstm", "cifg_lstm", "layernorm_lstm"]
# (id, T, B, I, H, proj_size, lengths or None, bias, threads)
SHAPES = [
    ("b1", 5, 1, 3, 7, 0, None, True, 1),
    ("b2-proj-len", 4, 2, 4, 7, 3, [4, 2], True, 1),
    ("b5-len-nobias", 4, 5, 3, 9, 0, [4, 1, 3, 2, 4], False, 1),
    ("b1-wide-2thr", 3, 1, 5, 130, 0, None, True, 2),
    ("b1-wide-proj-2thr", 3, 1, 5, 130, 40, None, True, 2),
]


class GemmSpy(OpSpy):
    """OpSpy that also records the ``gemm`` argument of lstm_forward and lstm_backward."""

    def __init__(self, ops):
        super().__init__(ops)
        self.gemms = []

    def __getattr__(self, name):
        op = getattr(self.ops, name)

        def call(*args):
            self.calls.append(name)
            if name == "lstm_forward":
                self.gemms.append(args[10])
            elif name == "lstm_backward":
                self.gemms.append(args[11])
            return op(*args)

        return call


def perturbed(cell, I, H, P, bias, dtype, seed=0, **kwargs):
    """A layer with its init perturbed, so no term is trivially small."""
    torch.manual_seed(seed)
    layer = rnnkit.Recurrent(cell, I, H, proj_size=P, bias=bias, dtype=dtype, **kwargs)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p) / max(1.0, p.shape[-1] / 8) ** 0.5)
    return layer


@needs_extension
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T,B,I,H,P,lens,bias,threads", [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
def test_gemv_training_matches_float64_reference(cell, T, B, I, H, P, lens, bias, threads, dtype, monkeypatch):
    monkeypatch.setattr(extension, "GEMV_MAX_BATCH", max(extension.GEMV_MAX_BATCH, B))
    layer = perturbed(cell, I, H, P, bias, dtype, backend="fused")
    reference = rnnkit.Recurrent(cell, I, H, proj_size=P, bias=bias, backend="reference", dtype=torch.float64)
    reference.load_state_dict(layer.state_dict())
    gen = torch.Generator().manual_seed(1)
    R = P or H
    x = torch.randn(T, B, I, dtype=torch.float64, generator=gen)
    state = LSTMState(torch.randn(1, B, R, dtype=torch.float64, generator=gen),
                      torch.randn(1, B, H, dtype=torch.float64, generator=gen))
    coefs = [torch.randn(T, B, R, dtype=torch.float64, generator=gen),
             torch.randn(1, B, R, dtype=torch.float64, generator=gen),
             torch.randn(1, B, H, dtype=torch.float64, generator=gen)]
    lengths = None if lens is None else torch.tensor(lens)

    spy = GemmSpy(extension.load())
    monkeypatch.setattr(extension, "_ops", spy)
    with intra_op_threads(threads):
        got = run(layer, x.to(dtype), LSTMState(*(s.to(dtype) for s in state)), lengths, [c.to(dtype) for c in coefs])
    assert spy.calls == ["lstm_forward", "lstm_backward"], f"the C++ loops did not run: {spy.calls}"
    assert spy.gemms == ["gemv", "gemv"], f"batch {B} ran {spy.gemms}, not the gemv"
    expected = run(reference, x, state, lengths, coefs)

    tol = 1e-10 if dtype == torch.float64 else 1e-4 if cell == "layernorm_lstm" else 1e-5
    for name in expected:
        scale = 1.0 if dtype == torch.float64 else max(1.0, float(expected[name].detach().abs().max()))
        assert_close(name, expected[name], got[name].double(), tol * scale)


@needs_extension
def test_batch_one_picks_the_gemv_and_larger_batches_do_not():
    """The choice the loops get: 'gemv' up to GEMV_MAX_BATCH rows, the packed GEMM (or addmm) above; float32
    inference of the tiled kinds (layernorm_lstm's two-pass step too) keeps the tiled step."""
    big = extension.GEMV_MAX_BATCH + 1
    library = "packed" if extension.packed_gemm() else "addmm"
    assert extension.forward_gemm("lstm", True, torch.float32, None, 1) == "gemv"
    assert extension.forward_gemm("layernorm_lstm", True, torch.float32, None, 1) == "gemv"
    assert extension.forward_gemm("layernorm_lstm", False, torch.float32, None, 1) == "tiled"  # the two-pass step
    assert extension.forward_gemm("lstm", True, torch.float32, None, big) == library
    assert extension.forward_gemm("lstm", False, torch.float32, None, 1) == "tiled"
    assert extension.backward_gemm(1) == "gemv"
    assert extension.backward_gemm(big) == library


# layer.step: (I, H, num_layers, B, bias, threads)
STEP_CASES = [(3, 7, 2, 1, True, 1), (4, 20, 1, 3, False, 1), (5, 130, 2, 1, True, 2)]


@needs_extension
@pytest.mark.parametrize("cell", list(extension.TILED_KINDS))
@pytest.mark.parametrize("I,H,L,B,bias,threads", STEP_CASES, ids=["2layers", "1layer-b3-nobias", "wide-2thr"])
def test_cpp_step_matches_float64_reference(cell, I, H, L, B, bias, threads, monkeypatch):
    layer = perturbed(cell, I, H, 0, bias, torch.float32, num_layers=L).eval()
    reference = rnnkit.Recurrent(cell, I, H, num_layers=L, bias=bias, backend="reference", dtype=torch.float64)
    spy = OpSpy(extension.load())
    monkeypatch.setattr(extension, "_ops", spy)
    gen = torch.Generator().manual_seed(1)
    T = 4
    x = torch.randn(2 * T, B, I, generator=gen)
    state = LSTMState(torch.randn(L, B, H, generator=gen), torch.randn(L, B, H, generator=gen))

    def check(steps, start):
        reference.load_state_dict(layer.state_dict())
        with torch.no_grad(), intra_op_threads(threads):
            expected, final = reference(steps.double(), LSTMState(*(s.double() for s in start)))
            got, s = [], start
            for x_t in steps:
                y, s = layer.step(x_t, s)
                got.append(y)
        for name, e, g in [("outputs", expected, torch.stack(got)), ("h", final.h, s.h), ("c", final.c, s.c)]:
            assert_close(name, e, g.double(), 1e-5 * max(1.0, float(e.abs().max())))
        return s

    after = check(x[:T], state)
    assert spy.calls == ["lstm_step_pack"] * L + ["lstm_step"] * T, f"not one C++ call per token: {spy.calls}"
    with torch.no_grad():  # an in-place update (an optimizer step) must re-arrange the slabs
        for p in layer.parameters():
            p.mul_(0.9)
    check(x[T:], after)
    assert spy.calls.count("lstm_step_pack") == 2 * L


@needs_extension
def test_cpp_step_with_dropout_between_layers_equals_the_torch_op_step(monkeypatch):
    """Train mode under no_grad: dropout between layers, so each layer steps alone (lstm_step with L = 1), and the
    masks are drawn as on the torch-op path."""
    layer = perturbed("peephole_lstm", 3, 9, 0, True, torch.float32, num_layers=3, dropout=0.5).train()
    twin = perturbed("peephole_lstm", 3, 9, 0, True, torch.float32, num_layers=3, dropout=0.5).train()
    twin.load_state_dict(layer.state_dict())
    x = torch.randn(5, 2, 3)
    spy = OpSpy(extension.load())
    monkeypatch.setattr(extension, "_ops", spy)

    def steps(module):
        torch.manual_seed(7)
        s, ys = None, []
        with torch.no_grad():
            for x_t in x:
                y, s = module.step(x_t, s)
                ys.append(y)
        return torch.stack(ys), s

    got, got_state = steps(layer)
    assert spy.calls == ["lstm_step_pack"] * 3 + ["lstm_step"] * 3 * 5, spy.calls
    monkeypatch.setenv(extension.ENV_DISABLE, "1")
    expected, expected_state = steps(twin)
    assert_close("outputs", expected, got, 1e-5)
    assert_close("h", expected_state.h, got_state.h, 1e-5)
    assert_close("c", expected_state.c, got_state.c, 1e-5)
    monkeypatch.delenv(extension.ENV_DISABLE)
    plain, _ = steps(layer.eval())
    assert (plain - got).abs().max() > 1e-3, "dropout changed nothing: the test does not test it"


@needs_extension
@pytest.mark.parametrize("dtype,proj", [(torch.float64, 0), (torch.float32, 2)], ids=["float64", "projection"])
def test_step_keeps_torch_ops_where_the_cpp_step_does_not_run(dtype, proj, monkeypatch):
    layer = perturbed("lstm", 3, 5, proj, True, dtype, num_layers=2).eval()
    spy = OpSpy(extension.load())
    monkeypatch.setattr(extension, "_ops", spy)
    with torch.no_grad():
        layer.step(torch.randn(1, 3, dtype=dtype))
    assert spy.calls == [], f"the C++ step ran for {dtype}, proj_size={proj}: {spy.calls}"


@needs_extension
def test_cpp_step_names_a_bad_argument():
    ops = extension.load()
    w_ih, w_hh, b = torch.randn(28, 3), torch.randn(28, 7), torch.randn(28)
    w, bias = ops.lstm_step_pack(0, w_ih, b, w_hh, b)
    x, h, c = torch.randn(1, 3), torch.randn(2, 1, 7), torch.randn(2, 1, 7)
    with pytest.raises(RuntimeError, match=r"w and bias must hold L = 2 layers"):
        ops.lstm_step(0, x, h, c, [w], [bias], [])
    with pytest.raises(RuntimeError, match=r"weight_peephole must hold 1 tensors"):
        ops.lstm_step(1, x, h[:1], c[:1], [w], [bias], [])
    with pytest.raises(RuntimeError, match=r"w\[0\] must be \(blocks, I \+ H, gates, NB\)"):
        ops.lstm_step(0, torch.randn(1, 4), h[:1], c[:1], [w], [bias], [])
    with pytest.raises(RuntimeError, match=r"weight_hh must be \(G, H\) = \(28, 7\), got \(24, 7\)"):
        ops.lstm_step_pack(0, w_ih, None, w_hh[:24], None)
    with pytest.raises(RuntimeError, match=r"runs float32 lstm \(0\), peephole \(1\) and cifg \(2\)"):
        ops.lstm_step_pack(3, w_ih, None, w_hh, None)
