"""Regularizers (rnnkit.regularize): locked masks, zoneout, weight-drop, identity at evaluation."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.backends import NotSupported
from rnnkit.regularize import drop_weight, locked_dropout, locked_mask
from tests.helpers import assert_close

CELLS = rnnkit.cells()
RECURRENT_CELLS = [c for c in CELLS if c not in ("mingru", "minlstm")]
ALL_ON = {"input_dropout": 0.3, "hidden_dropout": 0.3, "output_dropout": 0.3, "zoneout": 0.3, "weight_drop": 0.3}


def regs_for(cell: str) -> dict:
    if cell in ("mingru", "minlstm"):
        return {"input_dropout": 0.3, "output_dropout": 0.3, "zoneout": 0.3}
    return ALL_ON


def layer(cell, regs, **kw):
    torch.manual_seed(0)
    return rnnkit.Recurrent(cell, 3, 5, dtype=torch.float64, **regs, **kw)


def test_locked_dropout_uses_one_mask_for_every_step():
    torch.manual_seed(1)
    y = locked_dropout(torch.ones(7, 4, 50, dtype=torch.float64), 0.4)
    assert torch.equal(y, y[:1].expand_as(y))  # the same at every t
    assert set(y.unique().tolist()) <= {0.0, 1 / 0.6}
    assert 0 < (y == 0).double().mean() < 1


def test_drop_weight_scales_the_kept_entries():
    w = torch.ones(6, 4)
    d = drop_weight(w, 0.5)
    assert set(d.unique().tolist()) <= {0.0, 2.0}
    assert drop_weight(w, 0.0) is w


@pytest.mark.parametrize("cell", CELLS)
def test_every_regularizer_is_the_identity_in_eval_mode(cell):
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    plain = layer(cell, {}, num_layers=2).eval()
    regularized = layer(cell, regs_for(cell), num_layers=2).eval()
    regularized.load_state_dict(plain.state_dict())
    assert_close("out", plain(x)[0], regularized(x)[0], 0)


@pytest.mark.parametrize("cell", CELLS)
def test_training_mode_changes_the_output(cell):
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    m = layer(cell, regs_for(cell))
    assert not torch.allclose(m(x)[0], m.eval()(x)[0])


@pytest.mark.parametrize("cell", CELLS)
def test_input_dropout_is_one_mask_on_the_input_for_all_steps(cell):
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    m = layer(cell, {"input_dropout": 0.5}, backend="reference")
    torch.manual_seed(5)
    out = m(x)[0]
    torch.manual_seed(5)
    mask = locked_mask(0.5, 2, 3, x)  # the driver's first draw
    assert_close("out", m.eval()(x * mask)[0], out, 1e-12)


def test_output_dropout_is_one_mask_on_the_output_for_all_steps():
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    m = layer("lstm", {"output_dropout": 0.5}, backend="reference")
    torch.manual_seed(5)
    out = m(x)[0]
    torch.manual_seed(5)
    mask = locked_mask(0.5, 2, 5, x)
    assert_close("out", m.eval()(x)[0] * mask, out, 1e-12)


@pytest.mark.parametrize("cell", RECURRENT_CELLS)
def test_weight_drop_equals_the_layer_with_a_dropped_weight_hh(cell):
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    m = layer(cell, {"weight_drop": 0.5}, backend="reference")
    torch.manual_seed(5)
    out = m(x)[0]
    torch.manual_seed(5)
    dropped = drop_weight(m.weight_hh_l0.detach(), 0.5)
    with torch.no_grad():
        m.weight_hh_l0.copy_(dropped)
    assert_close("out", m.eval()(x)[0], out, 1e-12)


def test_hidden_dropout_masks_h_in_the_lstm_recurrent_product():
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    m = layer("lstm", {"hidden_dropout": 0.5}, backend="reference")
    torch.manual_seed(5)
    out = m(x)[0]
    torch.manual_seed(5)
    mask = locked_mask(0.5, 2, 5, x)  # one mask for all steps
    cell = torch.nn.LSTMCell(3, 5, dtype=torch.float64)
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in m.state_dict().items()})
    h = c = torch.zeros(2, 5, dtype=torch.float64)
    for t in range(6):
        h, c = cell(x[t], (h * mask, c))
        assert_close(f"h[{t}]", h, out[t], 1e-12)


@pytest.mark.parametrize("cell", ["gru", "cho_gru"])
def test_gru_hidden_dropout_keeps_the_interpolation_undropped(cell):
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    m = layer(cell, {"hidden_dropout": 0.5}, backend="reference")
    torch.manual_seed(5)
    out = m(x)[0]
    torch.manual_seed(5)
    mask = locked_mask(0.5, 2, 5, x)
    W_ih, W_hh, b_ih, b_hh = m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0
    h = torch.zeros(2, 5, dtype=torch.float64)
    with torch.no_grad():
        for t in range(6):
            gx = x[t] @ W_ih.T + b_ih
            hd = h * mask
            Wr, Wz, Wn = W_hh.chunk(3)
            br, bz, bn = b_hh.chunk(3)
            xr, xz, xn = gx.chunk(3, -1)
            r = torch.sigmoid(xr + hd @ Wr.T + br)
            z = torch.sigmoid(xz + hd @ Wz.T + bz)
            if cell == "gru":
                n = torch.tanh(xn + r * (hd @ Wn.T + bn))
            else:
                n = torch.tanh(xn + (r * hd) @ Wn.T + bn)
            h = (1 - z) * n + z * h
            assert_close(f"h[{t}]", h, out[t], 1e-12)


def test_zoneout_keeps_units_of_the_previous_state():
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    m = layer("lstm", {"zoneout": (0.3, 0.6)}, backend="reference")
    torch.manual_seed(5)
    out = m(x)[0]
    torch.manual_seed(5)
    keep_h = torch.rand(6, 2, 5) < 0.3
    keep_c = torch.rand(6, 2, 5) < 0.6
    cell = torch.nn.LSTMCell(3, 5, dtype=torch.float64)
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in m.state_dict().items()})
    h = c = torch.zeros(2, 5, dtype=torch.float64)
    for t in range(6):
        h_new, c_new = cell(x[t], (h, c))
        h, c = torch.where(keep_h[t], h, h_new), torch.where(keep_c[t], c, c_new)
        assert_close(f"h[{t}]", h, out[t], 1e-12)


def test_zoneout_past_the_end_of_a_sequence_keeps_the_state_and_outputs_zero():
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4])
    m = layer("gru", {"zoneout": 0.4}, backend="reference")
    torch.manual_seed(5)
    out, h = m(x, lengths=lengths)
    assert out[2:, 1].abs().max() == 0 and out[4:, 2].abs().max() == 0
    assert_close("h of sequence 1", out[1, 1], h[0, 1], 0)
    assert_close("h of sequence 2", out[3, 2], h[0, 2], 0)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fused_equals_reference_under_the_same_masks(cell, bidirectional):
    regs = regs_for(cell)
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 5])
    results = []
    for backend in ("reference", "fused"):
        m = layer(cell, regs, num_layers=2, bidirectional=bidirectional, backend=backend)
        xb = x.clone().requires_grad_()
        torch.manual_seed(9)
        out, state = m(xb, lengths=lengths)
        loss = out.pow(2).sum() + sum(s.sum() for s in (state if isinstance(state, tuple) else (state,)))
        loss.backward()
        results.append((out, xb.grad, {n: p.grad for n, p in m.named_parameters()}))
    (out_r, dx_r, g_r), (out_f, dx_f, g_f) = results
    assert_close("out", out_r, out_f, 1e-10)
    assert_close("dx", dx_r, dx_f, 1e-10)
    for name in g_r:
        assert_close(f"d{name}", g_r[name], g_f[name], 1e-10)


@pytest.mark.parametrize("name", ["hidden_dropout", "weight_drop"])
@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_cells_without_a_recurrent_weight_refuse(cell, name):
    with pytest.raises(ValueError, match=f"{name}=0.2 needs a recurrent weight W_hh, but cell '{cell}' has none"):
        rnnkit.Recurrent(cell, 3, 5, **{name: 0.2})


@pytest.mark.parametrize("value", [-0.1, 1.0, "0.2", None, True])
def test_a_bad_probability_is_refused(value):
    with pytest.raises(ValueError, match="input_dropout must be a number in \\[0, 1\\)"):
        rnnkit.Recurrent("lstm", 3, 5, input_dropout=value)


def test_a_cell_state_zoneout_on_a_cell_without_one_is_refused():
    with pytest.raises(ValueError, match="cell 'gru' has no cell state c"):
        rnnkit.Recurrent("gru", 3, 5, zoneout=(0.1, 0.5))


def test_native_refuses_regularizers_by_name_and_auto_goes_around_it():
    m = rnnkit.Recurrent("lstm", 3, 5, input_dropout=0.2, backend="native")
    with pytest.raises(NotSupported, match="torch's kernels have no input_dropout"):
        m(torch.randn(4, 2, 3))
    m.eval()(torch.randn(4, 2, 3))  # in eval the regularizers are off and native runs
    auto = rnnkit.Recurrent("lstm", 3, 5, input_dropout=0.2)
    auto(torch.randn(4, 8, 3))  # batch 8: beyond auto's fused LSTM rows for training (backends.auto_order)
    assert auto.last_backend != "native"
    auto.eval()(torch.randn(4, 8, 3))
    assert auto.last_backend == "native"


def test_step_in_training_mode_with_regularizers_is_refused():
    m = rnnkit.Recurrent("lstm", 3, 5, zoneout=0.1)
    with pytest.raises(ValueError, match="step\\(\\) cannot apply zoneout in training mode"):
        m.step(torch.randn(2, 3))
    m.eval().step(torch.randn(2, 3))


def test_repr_names_the_active_regularizers():
    assert "weight_drop=0.5" in repr(rnnkit.Recurrent("lstm", 3, 5, weight_drop=0.5))
