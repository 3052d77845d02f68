"""The tiled inference step of the C++ loops (csrc/tile.h) against a float64 reference.

float32 inference of lstm, peephole_lstm and cifg_lstm without projection runs the tiled step: per
block of hidden units the tile gx_t + b_hh + h_{t-1} W_hh^T accumulates in registers and the gates
are computed on it ('tiled', rnnkit's own micro-kernel, what forward_gemm picks), or the tile comes
from at::native::cpublas::brgemm ('brgemm', where it runs float32). Outputs and final state match
the same layer in float64 on the reference backend within 1e-5 relative to the largest value, at
shapes with a partial last block (H not a multiple of the vector width), rows that do not fill the
micro-kernel's row group, lengths, no bias, and two threads (blocks split over threads).
"""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.backends.fused import extension
from rnnkit.cells import LSTMState
from tests.helpers import OpSpy, assert_close
from tests.test_fused_extension import intra_op_threads, needs_extension

# (T, B, I, H, lengths or None, bias, threads)
CASES = [
    (5, 5, 3, 7, None, True, 1),  # H below one vector; B = 3 + 2 and 4 + 1 rows
    (4, 7, 4, 20, [4, 1, 3, 2, 4, 4, 1], True, 2),  # blocks 8, 8, 4 over two threads; lengths
    (3, 2, 5, 33, [3, 2], False, 1),  # no bias; one row group short
]


@needs_extension
@pytest.mark.parametrize("gemm", ["tiled", "brgemm"])
@pytest.mark.parametrize("cell", list(extension.TILED_KINDS))
@pytest.mark.parametrize("T,B,I,H,lengths,bias,threads", CASES, ids=["tails", "lengths-2thr", "nobias"])
def test_tiled_inference_matches_float64_reference(cell, T, B, I, H, lengths, bias, threads, gemm, monkeypatch):
    if gemm == "brgemm" and extension.brgemm_status():
        pytest.skip(extension.brgemm_status())
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cell, I, H, bias=bias, backend="fused")
    with torch.no_grad():  # off the init rule, so no term is trivially small
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    reference = rnnkit.Recurrent(cell, I, H, bias=bias, backend="reference", dtype=torch.float64)
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(T, B, I)
    state = LSTMState(torch.randn(1, B, H), torch.randn(1, B, H))
    lens = None if lengths is None else torch.tensor(lengths)

    spy = OpSpy(extension.load())
    monkeypatch.setattr(extension, "_ops", spy)
    picked = []
    real_forward_gemm = extension.forward_gemm

    def forward_gemm(*args):  # what forward_gemm picks, then the kernel this test runs
        picked.append(real_forward_gemm(*args))
        return gemm

    monkeypatch.setattr(extension, "forward_gemm", forward_gemm)
    with torch.no_grad(), intra_op_threads(threads):
        out, final = layer(x, state, lengths=lens)
        expected_out, expected = reference(x.double(), LSTMState(*(s.double() for s in state)), lengths=lens)
    assert spy.calls == ["lstm_forward"] and picked == ["tiled"], f"the tiled step did not run: {spy.calls} {picked}"
    for name, e, g in [("output", expected_out, out), ("h", expected.h, final.h), ("c", expected.c, final.c)]:
        assert g.dtype == torch.float32
        assert_close(name, e, g, 1e-5 * max(1.0, float(e.abs().max())))

