"""The LSTM family under CPU bf16 autocast stays in its C++ loops, which run in float32.

Under ``torch.autocast("cpu", torch.bfloat16)`` the input projection comes in bf16; the fused backend
must not leave its C++ loops for the Python ones. This CPU class (no AVX-512 BF16 or AMX) has no bf16
GEMM worth using, so, unless ``RNNKIT_BF16_GEMM=1`` asks for emulated bf16 GEMMs (tests/test_cpp_bf16.py),
the loops run float32 (state, gates, both layer norms and their GEMMs), say so once per process, and return
float32 as the reference path does under autocast.

Tolerance, against the reference backend in plain float32 (no autocast), relative to the largest value
of each output and gradient: 1e-2, or 1.5x the reference backend's own error under autocast where that
is larger (the layer-norm cell: its input-path norm divides the bf16 input projection's error by a small
deviation; measured 3-13% for the reference under autocast, 1-10% for these loops). The bf16 input
projection is the only bf16 step here; the layer-norm cell with its norms run in bf16 (the bug this
replaces) had gradients 10-32% off and returned bf16.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import rnnkit
from rnnkit.backends.fused import extension
from rnnkit.backends.fused import lstm as fused_lstm
from tests.helpers import OpSpy, assert_close
from tests.test_fused_extension import needs_extension

BF16_TOL = 1e-2  # relative to the largest value: bf16 keeps 8 bits of mantissa in W_ih x


def outputs_and_grads(layer, x, autocast: bool) -> dict:
    x = x.detach().clone().requires_grad_()
    for p in layer.parameters():
        p.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out, (h, c) = layer(x)
    loss = (out.float() * torch.linspace(-1, 1, out.shape[-1])).sum() + h.float().sum() + c.float().sum()
    loss.backward()
    results = {"output": out, "h": h, "c": c, "grad input": x.grad}
    results.update({f"grad {n}": p.grad for n, p in layer.named_parameters()})
    return results


@needs_extension
@pytest.mark.skipif(extension.load() is not None and extension.cpu_bf16_instructions() is not None and
                    extension.bf16_gemm_status() == "", reason="this CPU runs the bf16 GEMMs (tests/test_cpp_bf16.py)")
@pytest.mark.parametrize("cell", list(extension.KINDS))
def test_autocast_runs_the_float32_cpp_loops(cell, monkeypatch):
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cell, 6, 24, backend="fused")
    reference = rnnkit.Recurrent(cell, 6, 24, backend="reference")
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(9, 4, 6)
    spy = OpSpy(extension.load())
    monkeypatch.setattr(extension, "_ops", spy)
    monkeypatch.setattr(fused_lstm, "_warned_autocast", set())
    monkeypatch.delenv(extension.ENV_BF16, raising=False)  # the CPU decides
    with pytest.warns(RuntimeWarning, match="under bf16 autocast: the C.. loops run in float32 .this CPU"):
        got = outputs_and_grads(layer, x, autocast=True)
    assert spy.calls == ["lstm_forward", "lstm_backward"], f"autocast left the C++ loops: {spy.calls}"
    assert fused_lstm.last_loop.endswith("float32"), f"the loops ran {fused_lstm.last_loop}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per process
        outputs_and_grads(layer, x, autocast=True)
    expected = outputs_and_grads(reference, x, autocast=False)
    reference_autocast = outputs_and_grads(reference, x, autocast=True)
    for name in ("output", "h", "c"):
        assert got[name].dtype == torch.float32, f"{name} is {got[name].dtype}, the reference's is float32"
    for name, e in expected.items():
        e = e.detach()
        scale = float(e.abs().max())
        reference_error = float((reference_autocast[name].detach().float() - e).abs().max()) / scale
        assert_close(name, e, got[name].float(), max(BF16_TOL, 1.5 * reference_error) * scale)
