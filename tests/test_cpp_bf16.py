"""bf16 GEMMs inside the C++ LSTM loops (issue 30, item 2), forced on with ``RNNKIT_BF16_GEMM=1``.

Under CPU bf16 autocast the loops run float32 (state, gates, layer norms, outputs); with bf16 GEMMs their
per-step products h_{t-1} W_hh^T (h W_hr^T with a projection) and, in the backward, da W_hh take bf16 operands
and accumulate in float32 (csrc/gemm.h). On this AVX2 CPU (no bf16 instructions) the forced path is
'bf16-emulated': the same bf16 rounding of both operands, float32 products, which are exact for two bf16
values, so it computes what the brgemm route computes up to the order of the float32 sums.

What is checked:

- forward, each step against the cell's float64 step with W_hh and h_{t-1} rounded to bf16 as the loops round
  them: the same function, so within float32 round-off (``ROUNDED_TOL``); this fails if either operand is not
  rounded, or rounded otherwise (truncation), or the float32 GEMM ran instead;
- forward and backward against the float32 C++ loops under the same autocast (the same bf16 gx): within
  ``BF16_TOL`` (derived below), and farther than float32 round-off (``RAN_TOL``): the bf16 GEMMs did run;
- the ``gemm`` the ops were given ('bf16-emulated' here, 'bf16' on a CPU with bf16 instructions), and the
  ``loops`` string `rnnkit bench` prints;
- float64 and float32 without autocast ignore the variable; ``RNNKIT_BF16_GEMM=0`` runs float32 and says so
  once; a bad value raises.

BF16_TOL, relative to the largest value of each output or gradient: rounding to bf16 (8 significant bits,
round to nearest) changes each operand by at most u = 2^-9 of itself, so each product w_k h_k by at most 2u =
2^-8, and a GEMM output by 2^-8 * sum_k |w_k h_k|, which for these random weights is a few times |sum_k w_k h_k|
(about sqrt(K) for random signs); the pointwise math (sigmoid', tanh' <= 1) and the backward's own rounded GEMM
add as much again. So 2^-5 (8 units of 2^-8) for lstm, peephole and CIFG; measured at most 0.75%. The layer-norm
cell divides each step's h W_hh^T by its row's deviation and its input projection's by another, which amplifies
the same rounding (its own reference under bf16 autocast is 3-13% off float32, tests/test_cpp_autocast.py):
2^-3 for it, measured at most 2.5% at these shapes (10% at (T, B, H) = (20, 12, 40), not tested).
"""

from __future__ import annotations

import warnings

import pytest
import torch

import rnnkit
from rnnkit.backends.fused import extension
from rnnkit.backends.fused import lstm as fused_lstm
from rnnkit.backends.fused.common import step_mask
from rnnkit.cells import LSTMState
from tests.helpers import OpSpy, assert_close
from tests.test_fused_extension import needs_extension

BF16_TOL = {"lstm": 2**-5, "peephole_lstm": 2**-5, "cifg_lstm": 2**-5, "layernorm_lstm": 2**-3}
RAN_TOL = 1e-5  # float32 round-off, relative: the float32 loops and bf16 GEMMs differ by more than this
ROUNDED_TOL = {"lstm": 1e-5, "peephole_lstm": 1e-5, "cifg_lstm": 1e-5, "layernorm_lstm": 1e-4}  # one step, f32 vs f64
# (T, B, I, H, lengths): batch 1; lengths with a row of one step; a batch above GEMV_MAX_BATCH (the float32
# loops then run the packed GEMM)
SHAPES = [(9, 1, 6, 24, None), (13, 5, 6, 24, [13, 4, 9, 1, 13]), (7, 10, 5, 16, None)]
SHAPE_IDS = ["batch1", "lengths", "batch10"]
FORCED_GEMM = "bf16" if extension.load() is not None and extension.cpu_bf16_instructions() and \
    extension.bf16_gemm_status() == "" else "bf16-emulated"


def bf16(t: torch.Tensor) -> torch.Tensor:
    """t's values rounded to bf16 (round to nearest even), in t's dtype."""
    return t.to(torch.bfloat16).to(t.dtype)


def perturbed_layer(cell: str, I: int, H: int, proj_size: int = 0) -> rnnkit.Recurrent:
    """A fused layer with its initial weights moved (the peepholes and LN gains away from 0 and 1)."""
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cell, I, H, backend="fused", proj_size=proj_size)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return layer


def outputs_and_grads(layer, x, lengths, monkeypatch, forced: str) -> tuple[dict, OpSpy]:
    """Outputs and gradients of one autocast call with ``RNNKIT_BF16_GEMM=forced``, and the spy on its ops."""
    monkeypatch.setenv(extension.ENV_BF16, forced)
    spy = OpSpy(extension.load())
    monkeypatch.setattr(extension, "_ops", spy)
    x = x.detach().clone().requires_grad_()
    for p in layer.parameters():
        p.grad = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the once-per-process notes; tested below
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, (h, c) = layer(x, lengths=lengths)
    loss = (out.float() * torch.linspace(-1, 1, out.shape[-1])).sum() + h.float().sum() + c.float().sum()
    loss.backward()
    results = {"output": out, "h": h, "c": c, "grad input": x.grad}
    results.update({f"grad {n}": p.grad for n, p in layer.named_parameters()})
    monkeypatch.setattr(extension, "_ops", spy.ops)
    return results, spy


def gemms(spy: OpSpy) -> list[str]:
    """The ``gemm`` argument of each lstm_forward / lstm_backward call."""
    position = {"lstm_forward": 10, "lstm_backward": 11}
    return [args[position[name]] for name, args in zip(spy.calls, spy.arguments) if name in position]


def relative(expected: torch.Tensor, got: torch.Tensor) -> float:
    """max |got - expected| over max |expected|."""
    e = expected.detach().double()
    return float((got.detach().double() - e).abs().max()) / float(e.abs().max())


@needs_extension
@pytest.mark.parametrize("T,B,I,H,lengths", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("cell", list(extension.KINDS))
def test_bf16_gemms_match_float32_loops(cell, T, B, I, H, lengths, monkeypatch):
    layer = perturbed_layer(cell, I, H)
    x = torch.randn(T, B, I)
    lens = None if lengths is None else torch.tensor(lengths)
    got, spy = outputs_and_grads(layer, x, lens, monkeypatch, "1")
    expected, spy32 = outputs_and_grads(layer, x, lens, monkeypatch, "0")
    assert gemms(spy) == [FORCED_GEMM, FORCED_GEMM], f"forced on, the loops ran {gemms(spy)}"
    assert not any(g.startswith("bf16") for g in gemms(spy32)), f"forced off, the loops ran {gemms(spy32)}"
    for name in ("output", "h", "c"):
        assert got[name].dtype == torch.float32, f"{name} is {got[name].dtype}"
    for name, e in expected.items():
        assert_close(name, e, got[name], BF16_TOL[cell] * float(e.detach().abs().max()))
    changed = max(relative(expected[name], got[name]) for name in ("output", "h", "c"))
    assert changed > RAN_TOL, f"bf16 GEMMs forced on, yet the outputs equal float32's within {changed:.1e}"


@needs_extension
@pytest.mark.parametrize("cell", list(extension.KINDS))
def test_bf16_gemms_in_inference(cell, monkeypatch):
    """Under no_grad the float32 loops would run the tiled step; forced on, the loop from gx with bf16 GEMMs."""
    layer = perturbed_layer(cell, 6, 24)
    x = torch.randn(9, 5, 6)
    outs, ran = {}, {}
    for forced in ("1", "0"):
        monkeypatch.setenv(extension.ENV_BF16, forced)
        spy = OpSpy(extension.load())
        monkeypatch.setattr(extension, "_ops", spy)
        with torch.no_grad(), warnings.catch_warnings(), torch.autocast("cpu", dtype=torch.bfloat16):
            warnings.simplefilter("ignore")
            outs[forced] = layer(x)[0]
        monkeypatch.setattr(extension, "_ops", spy.ops)
        ran[forced] = gemms(spy)
    assert ran == {"1": [FORCED_GEMM], "0": ["tiled"]}, f"the loops ran {ran}"
    assert_close("output", outs["0"], outs["1"], BF16_TOL[cell] * float(outs["0"].abs().max()))
    assert relative(outs["0"], outs["1"]) > RAN_TOL


@needs_extension
def test_bf16_gemms_with_projection(monkeypatch):
    """h_t = m_t W_hr^T is a per-step product too: bf16 operands, the backward's dm = dh W_hr as well."""
    layer = perturbed_layer("lstm", 5, 16, proj_size=6)
    x = torch.randn(8, 10, 5)
    got, spy = outputs_and_grads(layer, x, None, monkeypatch, "1")
    expected, _ = outputs_and_grads(layer, x, None, monkeypatch, "0")
    assert gemms(spy) == [FORCED_GEMM, FORCED_GEMM]
    for name, e in expected.items():
        assert_close(name, e, got[name], BF16_TOL["lstm"] * float(e.detach().abs().max()))


@needs_extension
@pytest.mark.parametrize("T,B,I,H,lengths", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("cell", list(extension.KINDS))
def test_bf16_steps_are_the_cell_on_rounded_operands(cell, T, B, I, H, lengths, monkeypatch):
    """Each step the loop saved (h_t, c_t) is the cell's float64 step from its saved (h_{t-1}, c_{t-1}) with W_hh
    and h_{t-1} rounded to bf16. Step by step, from the loop's own states: over a whole sequence an h value
    within float32 round-off of a bf16 rounding boundary may round the other way in the float64 reference."""
    layer = perturbed_layer(cell, I, H)
    w = layer.weights(0, 0)
    x = torch.randn(T, B, I)
    h0, c0 = torch.randn(B, H), torch.randn(B, H)
    lens = None if lengths is None else torch.tensor(lengths)
    monkeypatch.setenv(extension.ENV_BF16, "1")
    spy = OpSpy(extension.load())
    monkeypatch.setattr(extension, "_ops", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the weights need gradients: the loop saves its states
            if cell == "layernorm_lstm":
                gx = fused_lstm.input_projection(layer.cell, x, w)  # (T, B, G) bf16, the raw x W_ih^T
            else:
                gx = layer.cell.input_projection(x, w)
            fused_lstm.recurrence(layer.cell, gx, LSTMState(h0, c0), w, lens)
    assert fused_lstm.last_loop.endswith(FORCED_GEMM), fused_lstm.last_loop
    (forward,) = [r for name, r in zip(spy.calls, spy.results) if name == "lstm_forward"]
    hs, cs = forward[5], forward[6]  # (T + 1, B, H): h_{t-1} and c_{t-1} of each step, then the last
    with torch.no_grad():
        w64 = {name: t.detach().double() for name, t in w.items()}
        w64["weight_hh"] = bf16(w["weight_hh"].detach()).double()
        gx64 = gx.double() if cell != "layernorm_lstm" else layer.cell.normalize_input(gx.double(), w64)
        mask = torch.ones(T, B, dtype=torch.bool) if lens is None else step_mask(lens, T, x.device)[..., 0]
        for t in range(T):
            _, new = layer.cell.step(gx64[t], LSTMState(bf16(hs[t].double()), cs[t].double()), w64)
            run = mask[t]  # the rows still running at step t
            assert_close(f"h_{t}", new.h[run], hs[t + 1][run], ROUNDED_TOL[cell] * float(new.h.abs().max()))
            assert_close(f"c_{t}", new.c[run], cs[t + 1][run], ROUNDED_TOL[cell] * float(new.c.abs().max()))


@needs_extension
def test_float32_and_float64_ignore_the_variable(monkeypatch):
    """Without autocast the loops run their own dtype's GEMMs, whatever RNNKIT_BF16_GEMM says."""
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        layer = rnnkit.Recurrent("peephole_lstm", 4, 12, backend="fused", dtype=dtype)
        x = torch.randn(6, 10, 4, dtype=dtype, requires_grad=True)
        monkeypatch.setenv(extension.ENV_BF16, "1")
        spy = OpSpy(extension.load())
        monkeypatch.setattr(extension, "_ops", spy)
        out, _ = layer(x)
        out.sum().backward()
        monkeypatch.setattr(extension, "_ops", spy.ops)
        assert not any(g.startswith("bf16") for g in gemms(spy)), f"{dtype}: the loops ran {gemms(spy)}"


_HAS_BF16 = extension.load() is not None and extension.cpu_bf16_instructions() is not None
_EMULATES = pytest.mark.skipif(_HAS_BF16, reason="the CPU has bf16 instructions: forced on, the bf16 GEMMs run "
                                                 "without emulation")


@needs_extension
@pytest.mark.parametrize("setting,cell,warning,loop", [
    ("0", "lstm", "the C.. loops run in float32 .RNNKIT_BF16_GEMM=0", "float32"),
    pytest.param("1", "cifg_lstm", "RNNKIT_BF16_GEMM=1 but this CPU has no bf16 instructions.*emulate",
                 "bf16-emulated", marks=_EMULATES),
], ids=["forced-off-float32", "forced-on-emulated"])
def test_forced_setting_runs_its_loops_and_says_so_once(monkeypatch, setting, cell, warning, loop):
    """RNNKIT_BF16_GEMM=0 runs float32 GEMMs; =1 on a CPU without bf16 instructions emulates them: each warns once
    per process, naming the setting, and the loops that ran say which."""
    monkeypatch.setenv(extension.ENV_BF16, setting)
    monkeypatch.setattr(fused_lstm, "_warned_autocast", set())
    layer = perturbed_layer(cell, 4, 12)
    x = torch.randn(5, 3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.warns(RuntimeWarning, match=warning):
            layer(x)
        assert fused_lstm.last_loop.endswith(loop), fused_lstm.last_loop
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once per process
            layer(x)


@needs_extension
def test_bad_value_raises(monkeypatch):
    monkeypatch.setenv(extension.ENV_BF16, "yes")
    layer = perturbed_layer("lstm", 4, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(ValueError, match="RNNKIT_BF16_GEMM='yes'"):
        layer(torch.randn(5, 3, 4))


@needs_extension
def test_ops_refuse_bf16_gemms_outside_float32():
    ops = extension.load()
    T, B, H = 3, 2, 4
    gx, h, c, w = torch.randn(T, B, 4 * H).double(), torch.zeros(B, H).double(), torch.zeros(B, H).double(), \
        torch.randn(4 * H, H).double()
    with pytest.raises(RuntimeError, match="gemm='bf16-emulated' runs float32 loops"):
        ops.lstm_forward(0, gx, h, c, w, None, None, None, None, False, "bf16-emulated", [], 0.0)


@needs_extension
@pytest.mark.skipif(extension.load() is not None and extension.bf16_gemm_status() == "",
                    reason="the bf16 route runs here")
def test_bf16_route_says_why_it_does_not_run():
    assert "brgemm (bf16)" in extension.bf16_gemm_status()
