"""The scan backend (log-space parallel scan for mingru / minlstm) against the reference loop.

- whole layers, scan == reference in float64 for output, final state and the gradients of the
  input, the initial state and every parameter, across layers, directions, lengths and initial
  states (zero, or random with negative entries: the scan must not take a log of h0);
- ``recurrence`` == ``driver.time_loop`` where -inf arithmetic could make NaNs: a length of 0,
  huge values in the padding, saturated gates, g's kink at exactly 0; and ``gradcheck``;
- a long sequence, T=2000: float64 to 1e-8; float32 to the tolerance the module's notes state;
- ``supports`` names the cells it runs and says why it cannot run the others.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import rnnkit
from rnnkit import backends, driver
from rnnkit.backends import Problem, scan
from rnnkit.cells import make_cell

from .helpers import assert_close

DTYPE = torch.float64
T, B, I, H = 5, 4, 3, 4
LENGTHS = [5, 2, 4, 1]  # unsorted, one full, one of length 1
CELLS = ["mingru", "minlstm"]
GATES = {"mingru": 2, "minlstm": 3}
TOL = 1e-10


def pair(cell: str, dtype=DTYPE, **kwargs):
    """A reference layer and a scan layer with the same weights."""
    torch.manual_seed(0)
    ref = rnnkit.Recurrent(cell, I, H, backend="reference", dtype=dtype, **kwargs)
    got = rnnkit.Recurrent(cell, I, H, backend="scan", dtype=dtype, **kwargs)
    got.load_state_dict(ref.state_dict())
    return ref, got


def outputs_and_grads(layer, x, h0, lengths, seed=1):
    """Output, final state, and the gradients of a random linear function of both."""
    x = x.detach().clone().requires_grad_()
    h0 = None if h0 is None else h0.detach().clone().requires_grad_()
    layer.zero_grad(set_to_none=True)
    out, hN = layer(x, h0, lengths)
    gen = torch.Generator().manual_seed(seed)
    w_out = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    w_h = torch.randn(hN.shape, generator=gen, dtype=hN.dtype)
    ((out * w_out).sum() + (hN * w_h).sum()).backward()
    grads = {"dx": x.grad, **({"dh0": h0.grad} if h0 is not None else {})}
    grads.update({f"d{name}": p.grad for name, p in layer.named_parameters()})
    return out, hN, grads


LAYER_CONFIGS = list(itertools.product(CELLS, [1, 2], [False, True], [None, LENGTHS], [False, True]))


def config_id(config) -> str:
    cell, layers, bidir, lengths, h0 = config
    return f"{cell}-L{layers}-{'bi' if bidir else 'uni'}-{'lengths' if lengths else 'full'}-{'h0' if h0 else 'zero'}"


@pytest.mark.parametrize("config", LAYER_CONFIGS, ids=[config_id(c) for c in LAYER_CONFIGS])
def test_layer_matches_reference(config):
    cell, layers, bidir, lengths, with_h0 = config
    ref, got = pair(cell, num_layers=layers, bidirectional=bidir)
    x = torch.randn(T, B, I, dtype=DTYPE)
    h0 = 2 * torch.randn(layers * (2 if bidir else 1), B, H, dtype=DTYPE) if with_h0 else None  # negatives too
    expected = outputs_and_grads(ref, x, h0, lengths)
    result = outputs_and_grads(got, x, h0, lengths)
    assert got.last_backend == "scan" and ref.last_backend == "reference"
    assert_close("out", expected[0], result[0], TOL)
    assert_close("h_n", expected[1], result[1], TOL)
    assert expected[2].keys() == result[2].keys()
    for name, grad in expected[2].items():
        assert_close(name, grad, result[2][name], TOL)


def test_batch_first_and_packed_match_reference():
    ref, got = pair("minlstm", batch_first=True, bidirectional=True)
    x = torch.randn(B, T, I, dtype=DTYPE)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=True, enforce_sorted=False)
    for inp in (x, packed):
        (out_r, h_r), (out_s, h_s) = ref(inp), got(inp)
        if isinstance(inp, torch.Tensor):
            assert_close("out", out_r, out_s, TOL)
        else:
            assert_close("out.data", out_r.data, out_s.data, TOL)
        assert_close("h_n", h_r, h_s, TOL)


# ---------------------------------------------------------------- the recurrence itself


def both(cell_name: str, gx, h0, lengths):
    """(out, state) of the reference loop and of the scan, and the grads of gx and h0 for each."""
    cell = make_cell(cell_name)
    gen = torch.Generator().manual_seed(2)
    w_out = torch.randn(gx.shape[:2] + (H,), generator=gen, dtype=gx.dtype)
    w_h = torch.randn(h0.shape, generator=gen, dtype=gx.dtype)
    results = []
    for fn in (driver.time_loop, scan.recurrence):
        g, h = gx.detach().clone().requires_grad_(), h0.detach().clone().requires_grad_()
        out, hN = fn(cell, g, h, {}, lengths)
        ((out * w_out).sum() + (hN * w_h).sum()).backward()
        results.append({"out": out, "h_n": hN, "dgx": g.grad, "dh0": h.grad})
    return results


def assert_same(expected: dict, got: dict, tol: float) -> None:
    for name in expected:
        assert torch.isfinite(got[name]).all(), f"{name}: not finite"
        assert_close(name, expected[name], got[name], tol)


@pytest.mark.parametrize("cell", CELLS)
def test_zero_length_and_huge_padding(cell):
    """A sequence of length 0 keeps h0; huge values past the ends change nothing and make no NaN.

    Compared with the loop on zero padding: the loop itself makes NaN gradients from such padding
    in minlstm (f = i = 0 in float gives f / (f + i) = 0/0), which the log-space form avoids.
    """
    lengths = torch.tensor([5, 0, 3, 1])
    gx = torch.randn(T, B, GATES[cell] * H, dtype=DTYPE)
    running = (torch.arange(T)[:, None] < lengths)[..., None]  # (T, B, 1)
    gx = torch.where(running, gx, 0.0)
    padding = 1e4 * torch.randn(T, B, GATES[cell] * H, dtype=DTYPE).sign()
    h0 = torch.randn(B, H, dtype=DTYPE)
    expected, _ = both(cell, gx, h0, lengths)
    _, got = both(cell, torch.where(running, gx, padding), h0, lengths)
    assert_same(expected, got, TOL)
    assert_close("h_n of the empty sequence", h0[1], got["h_n"][1], 0.0)
    assert_close("dgx past the ends", torch.zeros_like(gx), torch.where(running, 0.0, got["dgx"]), 0.0)


@pytest.mark.parametrize("cell", CELLS)
def test_saturated_gates(cell):
    """Gates near 0 and 1 (a* down to about -T*40): the log space must not lose the state."""
    gx = 40 * torch.randn(T, B, GATES[cell] * H, dtype=DTYPE).sign() + torch.randn(T, B, GATES[cell] * H, dtype=DTYPE)
    h0 = torch.randn(B, H, dtype=DTYPE)
    expected, got = both(cell, gx, h0, torch.tensor(LENGTHS))
    assert_same(expected, got, TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_kink_of_g_at_zero(cell):
    """At a = 0 the loop's g takes the a + 1/2 branch, derivative 1: so must log g's gradient."""
    gx = torch.randn(T, B, GATES[cell] * H, dtype=DTYPE)
    gx[..., -H:] = 0.0  # the candidate's pre-activation, exactly at g's kink
    h0 = torch.randn(B, H, dtype=DTYPE)
    expected, got = both(cell, gx, h0, None)
    assert_same(expected, got, TOL)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("lengths", [None, [3, 1, 0]], ids=["full", "lengths"])
def test_gradcheck(cell, lengths):
    module = make_cell(cell)
    gx = torch.randn(3, 3, GATES[cell] * 2, dtype=DTYPE, requires_grad=True)
    h0 = torch.randn(3, 2, dtype=DTYPE, requires_grad=True)
    lengths = None if lengths is None else torch.tensor(lengths)
    assert torch.autograd.gradcheck(lambda g, h: scan.recurrence(module, g, h, {}, lengths), (gx, h0))


# ---------------------------------------------------------------- long sequences


@pytest.mark.parametrize("cell", CELLS)
def test_long_sequence_float64(cell):
    ref, got = pair(cell)
    x = torch.randn(2000, 2, I, dtype=DTYPE)
    h0 = torch.randn(1, 2, H, dtype=DTYPE)
    lengths = [2000, 1234]
    expected = outputs_and_grads(ref, x, h0, lengths)
    result = outputs_and_grads(got, x, h0, lengths)
    assert_close("out", expected[0], result[0], 1e-8)
    assert_close("h_n", expected[1], result[1], 1e-8)
    for name, grad in expected[2].items():
        assert_close(name, grad, result[2][name], 1e-8)


# The float32 scan's error grows with |a*_t| = |sum of log a| (module notes): with this layer's
# default init a ~ 1/2, |a*| ~ 0.7 T ~ 1400 at T=2000, so about 1400 * 6e-8 ~ 1e-4 relative;
# measured 6e-5 to 1e-4 over 4 seeds per cell (the float32 loop: 1e-7). The tolerance, relative
# to max |h|, leaves a factor of ~5.
FLOAT32_LONG_TOL = 5e-4


@pytest.mark.parametrize("cell", CELLS)
def test_long_sequence_float32(cell):
    ref, _ = pair(cell)  # float64 ground truth
    got = rnnkit.Recurrent(cell, I, H, backend="scan", dtype=torch.float32)
    got.load_state_dict(ref.state_dict())  # the same weights, rounded to float32
    x = torch.randn(2000, 2, I, dtype=DTYPE)
    h0 = torch.randn(1, 2, H, dtype=DTYPE)
    with torch.no_grad():
        out_r, h_r = ref(x, h0)
        out_s, h_s = got(x.float(), h0.float())
    scale = float(out_r.abs().max())
    assert_close("out (float32 scan vs float64 loop)", out_r, out_s, FLOAT32_LONG_TOL * scale)
    assert_close("h_n (float32 scan vs float64 loop)", h_r, h_s, FLOAT32_LONG_TOL * scale)


def test_half_precision_projection_is_scanned_in_float32():
    """Under autocast the projection arrives in bf16; the scan upcasts and returns the state's dtype."""
    cell = make_cell("mingru")
    gx = torch.randn(50, 2, 2 * H).bfloat16()
    h0 = torch.randn(2, H)
    out, hN = scan.recurrence(cell, gx, h0, {}, None)
    ref_out, ref_h = driver.time_loop(cell, gx.float(), h0, {}, None)
    assert out.dtype == hN.dtype == torch.float32
    assert_close("out", ref_out, out, 1e-5)
    assert_close("h_n", ref_h, hN, 1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_a_layer_under_bf16_autocast_scans_a_bf16_projection_close_to_float32(cell, monkeypatch):
    """A 2-layer bidirectional scan layer under CPU bf16 autocast: a spy on ``scan.recurrence`` sees the input
    projection arrive in bf16 and the scan return float32; the output and the parameter gradients are within
    1e-2 and 2e-2 (relative to the largest entry) of the float32 run's. Measured (torch 2.13 CPU): 2.7e-3 and
    5.4e-3, the bf16 rounding (2**-9 = 2e-3) of the projection carried through two layers."""
    _, layer = pair(cell, dtype=torch.float32, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I, generator=torch.Generator().manual_seed(1))
    coef = torch.randn(T, B, 2 * H, generator=torch.Generator().manual_seed(2))  # a loss reaching every output
    lengths = torch.tensor(LENGTHS)
    recurrence, seen = scan.recurrence, []

    def spy(cell_, gx, state, weights, lengths_):
        out, final = recurrence(cell_, gx, state, weights, lengths_)
        seen.append((gx.dtype, out.dtype))
        return out, final

    monkeypatch.setattr(scan, "recurrence", spy)
    expected, _ = layer(x, lengths=lengths)
    (expected * coef).sum().backward()
    expected_grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    layer.zero_grad(set_to_none=True)
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = layer(x, lengths=lengths)
    (out.float() * coef).sum().backward()

    assert layer.last_backend == "scan"
    assert seen == [(torch.bfloat16, torch.float32)] * 4, f"(gx, out) dtypes per layer and direction: {seen}"
    assert not torch.equal(out.float(), expected), "bf16 output equals float32 bit for bit: autocast did not apply"

    def relative(expected, got):
        expected, got = expected.detach().double(), got.detach().double()
        return float((got - expected).abs().max() / expected.abs().max())

    assert relative(expected, out) <= 1e-2, f"output {relative(expected, out):.2e} (relative) from float32"
    for n, p in layer.named_parameters():
        assert p.grad.dtype == torch.float32, f"grad {n} is {p.grad.dtype}"
        assert relative(expected_grads[n], p.grad) <= 2e-2, f"grad {n}: {relative(expected_grads[n], p.grad):.2e}"


# ---------------------------------------------------------------- supports


def problem(cell: str) -> Problem:
    return Problem(cell, (), "cpu", torch.float32, 4, 10, False)


def test_supports_only_the_minimal_cells():
    for cell in CELLS:
        assert scan.supports(problem(cell)) is None
    for cell in set(rnnkit.cells()) - set(CELLS):
        reason = scan.supports(problem(cell))
        assert reason is not None and repr(cell) in reason and "mingru" in reason, reason


def test_asking_scan_for_another_cell_raises():
    layer = rnnkit.Recurrent("gru", I, H, backend="scan")
    with pytest.raises(backends.NotSupported, match="backend 'scan' cannot run this layer: .*'gru'"):
        layer(torch.randn(T, B, I))
