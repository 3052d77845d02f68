"""Corners of the fused Elman, GRU, minimal and IndRNN kernels (the grid is in test_fused.py).

Only some gradients requested (no initial-state or weight gradients, inference), and the
minimal cells' candidate activation at its kink a = 0.
"""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.backends.fused import elman, gru, indrnn, minimal
from rnnkit.cells import make_cell
from rnnkit.driver import time_loop

from .helpers import assert_close

OUR_KERNELS = {
    "rnn_tanh": elman.recurrence,
    "rnn_relu": elman.recurrence,
    "gru": gru.recurrence,
    "cho_gru": gru.recurrence,
    "mingru": minimal.recurrence,
    "minlstm": minimal.recurrence,
    "indrnn": indrnn.recurrence,
}

# (cell, options): indrnn also with tanh and a bound that some weights exceed (clamp active)
CELLS = [(name, {}) for name in OUR_KERNELS] + [("indrnn", {"nonlinearity": "tanh", "recurrent_max": 0.5})]
CELL_IDS = [name + ("-tanh-max" if opts else "") for name, opts in CELLS]


def _pair(cell, options, dtype=torch.float64, **kwargs):
    """The same layer twice, reference and fused, with the same parameters."""
    torch.manual_seed(0)
    ref = rnnkit.Recurrent(cell, 3, 4, backend="reference", dtype=dtype, **options, **kwargs)
    if options.get("recurrent_max") is not None:  # put u outside, on and inside the bound
        with torch.no_grad():
            for name, p in ref.named_parameters():
                if name.startswith("weight_hh"):
                    p.copy_(torch.tensor([-0.9, 0.2, 0.5, 0.7]))
    got = rnnkit.Recurrent(cell, 3, 4, backend="fused", dtype=dtype, **options, **kwargs)
    got.load_state_dict(ref.state_dict())
    return ref, got


def _run(layer, x, h0, lengths, out_weight, state_weight):
    """Outputs, final state and the gradients of input, initial state and every parameter."""
    out, h = layer(x, h0, lengths=lengths)
    loss = (out * out_weight).sum() + (h * state_weight).sum()
    names = [n for n, _ in layer.named_parameters()]
    grads = torch.autograd.grad(loss, [x, h0, *layer.parameters()])
    return {
        "out": out,
        "state": h,
        "dx": grads[0],
        "dh0": grads[1],
        **{f"d{name}": g for name, g in zip(names, grads[2:])},
    }


@pytest.mark.parametrize("cell,options", CELLS, ids=CELL_IDS)
def test_fused_without_state_or_weight_grads(cell, options):
    """Zero initial state, frozen recurrent weights, and inference under no_grad."""
    ref, got = _pair(cell, options, num_layers=2)
    for layer in (ref, got):
        for name, p in layer.named_parameters():
            p.requires_grad_(not name.startswith(("weight_hh", "bias_hh")))
    x = torch.randn(5, 4, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 5, 1, 4])
    grads = []
    for layer in (ref, got):
        out, h = layer(x, lengths=lengths)
        grads.append(torch.autograd.grad(out.sum() + h.sum(), [x, layer.weight_ih_l0]))
    assert_close("dx", grads[0][0], grads[1][0], 1e-10)
    assert_close("dweight_ih_l0", grads[0][1], grads[1][1], 1e-10)
    with torch.no_grad():
        assert_close("out (no_grad)", ref(x, lengths=lengths)[0], got(x, lengths=lengths)[0], 1e-10)


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_minimal_candidate_at_its_kink(cell):
    """g(a) switches branch at a = 0; tiny negatives, where sigma(a) rounds to 1/2, take sigma's slope."""
    c = make_cell(cell)
    gx = torch.randn(4, 2, c.gates * 3, dtype=torch.float64)
    gx[..., -3:] = torch.tensor([0.0, -0.0, -1e-30, 1e-30, -1.0, 2.0, 0.0, -1e-300]).view(4, 2, 1)
    gx.requires_grad_()
    h0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    outs = [fn(c, gx, h0, {}, None) for fn in (time_loop, OUR_KERNELS[cell])]
    grads = [torch.autograd.grad(out.sum() + h.sum(), [gx, h0]) for out, h in outs]
    assert_close("out", outs[0][0], outs[1][0], 1e-12)
    assert_close("dgx", grads[0][0], grads[1][0], 1e-12)
    assert_close("dh0", grads[0][1], grads[1][1], 1e-12)
