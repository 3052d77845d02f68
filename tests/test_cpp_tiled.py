"""The tiled inference step of the C++ loops (csrc/tile.h) against a float64 reference.

float32 inference of lstm, peephole_lstm and cifg_lstm without projection runs the tiled step: per
block of hidden units the tile b_ih + b_hh + x_t W_ih^T + h_{t-1} W_hh^T accumulates in registers and
the gates are computed on it ('tiled', rnnkit's own micro-kernel, what the layer runs), or the tile
comes from at::native::cpublas::brgemm ('brgemm', where it runs float32). The layer hands the loop x
('x': ``lstm_forward_tiled``, the projection inside the tile); the same step also runs from a
precomputed gx ('gx': ``lstm_forward`` with gemm='tiled', what autocast runs). Outputs and final state match
the same layer in float64 on the reference backend within 1e-5 relative to the largest value, at
shapes with a partial last block (H not a multiple of the vector width), rows that do not fill the
micro-kernel's row group (split into smaller groups: 5 = 3 + 2, 7 = 3 + 2 + 2 or 4 + 3, a single row),
lengths, no bias, and two threads (blocks split over threads).
"""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.backends.fused import extension
from rnnkit.backends.fused import lstm as fused_lstm
from rnnkit.cells import LSTMState
from tests.helpers import OpSpy, assert_close
from tests.test_fused_extension import intra_op_threads, needs_extension

# (T, B, I, H, lengths or None, bias, threads)
CASES = [
    (5, 5, 3, 7, None, True, 1),  # H below one vector; B = 3 + 2 and 4 + 1 rows
    (4, 7, 4, 20, [4, 1, 3, 2, 4, 4, 1], True, 2),  # blocks 8, 8, 4 over two threads; lengths
    (3, 2, 5, 33, [3, 2], False, 1),  # no bias; one row group short
    (3, 1, 4, 9, None, True, 1),  # one row (batch-1 inference)
]


def perturbed_pair(cell, I, H, bias):
    """A fused float32 layer seeded with 0 and moved off its init rule (so no term is trivially small), and the
    float64 reference layer with the same weights."""
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cell, I, H, bias=bias, backend="fused")
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    reference = rnnkit.Recurrent(cell, I, H, bias=bias, backend="reference", dtype=torch.float64)
    reference.load_state_dict(layer.state_dict())
    return layer, reference


def spy_on_forward(monkeypatch, run=None):
    """The C++ ops called (an ``OpSpy``) and what ``extension.forward_gemm`` picked, per call; the kernel that
    runs is ``run`` where given, else the one picked."""
    spy = OpSpy(extension.load())
    monkeypatch.setattr(extension, "_ops", spy)
    picked = []
    real_forward_gemm = extension.forward_gemm

    def forward_gemm(*args):
        picked.append(real_forward_gemm(*args))
        return picked[-1] if run is None else run

    monkeypatch.setattr(extension, "forward_gemm", forward_gemm)
    return spy, picked


@needs_extension
@pytest.mark.parametrize("source", ["x", "gx"])
@pytest.mark.parametrize("gemm", ["tiled", "brgemm"])
@pytest.mark.parametrize("cell", list(extension.TILED_KINDS))
@pytest.mark.parametrize("T,B,I,H,lengths,bias,threads", CASES, ids=["tails", "lengths-2thr", "nobias", "one-row"])
def test_tiled_inference_matches_float64_reference(cell, T, B, I, H, lengths, bias, threads, gemm, source,
                                                   monkeypatch):
    if gemm == "brgemm" and extension.brgemm_status():
        pytest.skip(extension.brgemm_status())
    layer, reference = perturbed_pair(cell, I, H, bias)
    x = torch.randn(T, B, I)
    state = LSTMState(torch.randn(1, B, H), torch.randn(1, B, H))
    lens = None if lengths is None else torch.tensor(lengths)

    spy, picked = spy_on_forward(monkeypatch, run=gemm)
    monkeypatch.setattr(extension, "tiled_gemm", lambda: gemm)
    if source == "gx":  # the layer projects x itself and the loop reads gx
        monkeypatch.setattr(fused_lstm, "tiled_input", lambda *args: False)
    with torch.no_grad(), intra_op_threads(threads):
        out, final = layer(x, state, lengths=lens)
        expected_out, expected = reference(x.double(), LSTMState(*(s.double() for s in state)), lengths=lens)
    if source == "x":
        assert spy.calls == ["lstm_forward_tiled"], f"the tiled step from x did not run: {spy.calls}"
    else:
        assert spy.calls == ["lstm_forward"] and picked == ["tiled"], (spy.calls, picked)
    for name, e, g in [("output", expected_out, out), ("h", expected.h, final.h), ("c", expected.c, final.c)]:
        assert g.dtype == torch.float32
        assert_close(name, e, g, 1e-5 * max(1.0, float(e.abs().max())))



@needs_extension
def test_tiled_from_x_checks_its_inputs():
    """lstm_forward_tiled reads x (T, B, I) against weight_ih (G, I): a size that does not fit, float64 or the
    layer-norm kind is an error naming the argument and what came, not a read past a buffer's end."""
    ops = extension.load()
    T, B, I, H = 2, 3, 4, 5
    x, h0, c0 = torch.zeros(T, B, I), torch.zeros(B, H), torch.zeros(B, H)
    w_ih0, w_hh0 = torch.zeros(4 * H, I), torch.zeros(4 * H, H)

    def forward(kind=0, x=x, w_ih=w_ih0, b_ih=None, w_hh=w_hh0, peep=None):
        return ops.lstm_forward_tiled(kind, x, h0, c0, w_ih, b_ih, w_hh, None, peep, None, "tiled")

    assert forward()[0].shape == (T, B, H)  # the sizes that fit run
    with pytest.raises(RuntimeError, match=r"weight_ih must be \(G, I\) = \(20, 4\), got \(20, 3\)"):
        forward(w_ih=torch.zeros(4 * H, I - 1))
    with pytest.raises(RuntimeError, match=r"weight_ih must be \(G, I\) = \(15, 4\), got \(20, 4\)"):
        forward(kind=2)  # cifg has three gates
    with pytest.raises(RuntimeError, match=r"bias_ih must be \(G,\) = \(20,\), got \(15,\)"):
        forward(b_ih=torch.zeros(3 * H))
    with pytest.raises(RuntimeError, match=r"weight_hh must be \(G, H\) = \(20, 5\), got \(20, 4\)"):
        forward(w_hh=torch.zeros(4 * H, H - 1))
    with pytest.raises(RuntimeError, match=r"peephole_lstm needs weight_peephole"):
        forward(kind=1)
    with pytest.raises(RuntimeError, match=r"float32 only, got Double"):
        forward(x=x.double())
    with pytest.raises(RuntimeError, match=r"kind 3 \(layer norm\)"):
        forward(kind=3)


@needs_extension
@pytest.mark.parametrize("T,B,I,H,lengths,bias,threads", CASES, ids=["tails", "lengths-2thr", "nobias", "one-row"])
def test_layernorm_tiled_inference_matches_float64_reference(T, B, I, H, lengths, bias, threads, monkeypatch):
    """layernorm_lstm's float32 inference runs the two-pass step (gemm 'tiled': h_{t-1} W_hh^T on the tiles of
    tile.h, then layer_norm.h's row pass with both norms' statistics, the combined biases and LN_c): output and
    final state within 1e-4 relative of the float64 reference backend, with x off zero mean (LN_ih's mean
    matters) and every LN gain and bias off its init. Catches a raw tile stored at the wrong columns (partial
    last block, row groups of 2 and 1), a bias left out of beta (b_ih, b_hh or an LN bias), LN_c's mean summed
    over a partial vector's padding, and a finished row that does not keep its state."""
    layer, reference = perturbed_pair("layernorm_lstm", I, H, bias)  # LN gains off 1, LN biases off 0 too
    x = 3 * torch.randn(T, B, I) + 1
    state = LSTMState(torch.randn(1, B, H), torch.randn(1, B, H))
    lens = None if lengths is None else torch.tensor(lengths)

    spy, picked = spy_on_forward(monkeypatch)
    with torch.no_grad(), intra_op_threads(threads):
        out, final = layer(x, state, lengths=lens)
        expected_out, expected = reference(x.double(), LSTMState(*(s.double() for s in state)), lengths=lens)
    assert spy.calls == ["lstm_forward"] and picked == ["tiled"], (spy.calls, picked)
    assert fused_lstm.last_loop == f"C++ {extension.loaded_variant()} tiled"
    for name, e, g in [("output", expected_out, out), ("h", expected.h, final.h), ("c", expected.c, final.c)]:
        assert g.dtype == torch.float32
        assert_close(name, e, g, 1e-4 * max(1.0, float(e.abs().max())))


@needs_extension
def test_layernorm_tiled_runs_float32_inference_only():
    """gemm='tiled' for the layer-norm kind is its float32 inference without projection: asked for training,
    float64 or with weight_hr, the op says what it runs and what came, instead of saving nothing."""
    ops = extension.load()
    T, B, H = 2, 3, 5
    G = 4 * H
    ln = [torch.ones(G), torch.zeros(G), torch.ones(H), torch.zeros(H), torch.ones(G), torch.zeros(G)]

    def forward(training=False, dtype=torch.float32, w_hr=None, gemm="tiled"):
        def f(*shape):
            return torch.zeros(*shape, dtype=dtype)
        return ops.lstm_forward(3, f(T, B, G), f(B, H if w_hr is None else 2), f(B, H), f(G, H if w_hr is None else 2),
                                None, w_hr, None, None, training, gemm, [t.to(dtype) for t in ln], 1e-5)

    assert forward()[0].shape == (T, B, H)
    for kwargs, came in [({"training": True}, "training=1"), ({"dtype": torch.float64}, "Double"),
                         ({"w_hr": torch.zeros(2, H)}, "weight_hr")]:
        with pytest.raises(RuntimeError, match=rf"layernorm_lstm's float32 inference without weight_hr; got .*{came}"):
            forward(**kwargs)
    with pytest.raises(RuntimeError, match=r"gemm='tiled' runs float32 inference of lstm, peephole and cifg"):
        forward(gemm="brgemm")
