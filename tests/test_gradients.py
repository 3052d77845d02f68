"""The gradient-flow probe: the stepwise run equals the layer's forward, dL/dh_t equals autograd
through torch.nn cells stepped by hand (stacked layers too), the spectral radius and the clipping
report, every registered cell, and the CLI (several cells, a trained checkpoint, the PNG)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit import gradients
from rnnkit.cli import main
from rnnkit.tasks.lab import LabConfig, LabModel
from rnnkit.tasks.lab_data import make_batch

TORCH_CELLS = {"rnn_tanh": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


def lab_model(cell: str, problem: str = "adding", hidden_size: int = 5, num_layers: int = 2) -> LabModel:
    torch.manual_seed(0)
    return LabModel(problem, LabConfig(cell=cell, hidden_size=hidden_size, num_layers=num_layers)).double()


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru", "peephole_lstm", "indrnn"])
@pytest.mark.parametrize("problem", ["adding", "order"])
def test_stepwise_run_equals_the_layer(cell, problem):
    model = lab_model(cell, problem)
    batch = make_batch(problem, 12, 4, seed=1)
    x = batch.x.double()
    out, state = model.rnn(x, lengths=batch.lengths)
    out2, state2, hidden = gradients.run_stepwise(model.rnn, x, batch.lengths)
    torch.testing.assert_close(out2, out)
    torch.testing.assert_close(state2.h if isinstance(state2, tuple) else state2,
                               state.h if isinstance(state, tuple) else state)
    # the model reads each sequence's own last output: the same as the state with lengths
    last = out2[batch.lengths - 1, torch.arange(4)] if batch.lengths is not None else out2[-1]
    torch.testing.assert_close(last, (state.h if isinstance(state, tuple) else state)[-1])
    torch.testing.assert_close(model(x, batch.lengths), model.read(out, batch.lengths))
    assert len(hidden) == 2 and len(hidden[0]) == x.shape[0] and hidden[1][3].shape == (4, 5)


@pytest.mark.parametrize("cell", list(TORCH_CELLS))
def test_probe_equals_autograd_through_torch_cells(cell):
    """dL/dh_t of each of 2 stacked layers: torch.nn cells stepped by hand with a zero perturbation e_t added
    to every h_t; dL/de_t is dL/dh_t."""
    model = lab_model(cell)
    batch = make_batch("adding", 9, 3, seed=2)
    report = gradients.probe(model, batch, clip=1.0)

    layers = []
    for k in range(2):
        torch_cell = TORCH_CELLS[cell](2 if k == 0 else 5, 5).double()
        torch_cell.load_state_dict({name.replace(f"_l{k}", ""): p for name, p in model.rnn.state_dict().items()
                                    if name.endswith(f"_l{k}")})
        layers.append(torch_cell)
    x = batch.x.double()
    eps = torch.zeros(2, 9, 3, 5, dtype=torch.double, requires_grad=True)  # (layer, t, N, H)
    h = [torch.zeros(3, 5, dtype=torch.double) for _ in range(2)]
    c = [torch.zeros(3, 5, dtype=torch.double) for _ in range(2)]
    for t in range(9):
        inp = x[t]
        for k, torch_cell in enumerate(layers):
            if cell == "lstm":
                h[k], c[k] = torch_cell(inp, (h[k], c[k]))
            else:
                h[k] = torch_cell(inp, h[k])
            h[k] = h[k] + eps[k, t]
            inp = h[k]
    prediction = model.head(h[1]).squeeze(-1)  # (N,)
    loss = ((prediction - batch.y.double()) ** 2).sum()
    (grad,) = torch.autograd.grad(loss, eps)
    expected = grad.norm(dim=-1).mean(-1)  # (layer, t): the mean over the batch of ||dL_b/dh_t||
    torch.testing.assert_close(torch.tensor(report["norms"], dtype=torch.double), expected, rtol=1e-9, atol=1e-12)
    assert report["loss"] == pytest.approx(float(loss.detach()) / 3)


def test_probe_tanh_rnn_matches_the_hand_derived_recursion():
    """One tanh layer: dL/dh_{t-1} = W_hh^T ((1 - h_t^2) * dL/dh_t)."""
    model = lab_model("rnn_tanh", num_layers=1)
    batch = make_batch("adding", 6, 2, seed=3)
    report = gradients.probe(model, batch)
    x = batch.x.double()
    out, _, _ = gradients.run_stepwise(model.rnn, x)
    w = model.rnn.weight_hh_l0.detach()
    h_last = out[-1].detach()
    g = 2 * (model.head(h_last).squeeze(-1) - batch.y.double())[:, None] * model.head.weight.detach()  # (N, H)
    expected = [None] * 6
    expected[5] = g
    for t in range(5, 0, -1):
        g = ((1 - out[t].detach() ** 2) * g) @ w
        expected[t - 1] = g
    torch.testing.assert_close(torch.tensor(report["norms"][0], dtype=torch.double),
                               torch.stack([e.norm(dim=-1).mean() for e in expected]))


def test_spectral_radius_and_clipping_report():
    model = lab_model("lstm", num_layers=1)
    report = gradients.probe(model, make_batch("adding", 8, 4, seed=0), clip=1e-3)
    radii = report["spectral_radius"][0]
    assert list(radii) == ["i", "f", "g", "o"]
    f = model.rnn.weight_hh_l0.detach()[5:10]
    assert radii["f"] == pytest.approx(float(torch.linalg.eigvals(f).abs().max()))
    clip = report["clip"]
    # the same norm as the Trainer clips: the gradient of the batch-mean last-step loss, every parameter
    model.zero_grad()
    batch = make_batch("adding", 8, 4, seed=0)
    ((model(batch.x.double()) - batch.y.double()) ** 2).mean().backward()
    total = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    assert clip["grad_norm"] == pytest.approx(float(total), rel=1e-9)
    assert clip["scale"] == pytest.approx(1e-3 / float(total)) and clip["clipped_norm"] == pytest.approx(1e-3)
    assert set(clip["per_layer"]) == {"rnn.l0", "head"}


@pytest.mark.parametrize("cell", rnnkit.cells())
def test_every_cell_is_probed(cell):
    torch.manual_seed(0)
    model = LabModel("copy", LabConfig(cell=cell, hidden_size=4, length=3))
    report = gradients.probe(model, make_batch("copy", 3, 2, seed=0))
    assert len(report["norms"][0]) == 23 and all(v == v for v in report["norms"][0])  # no NaN
    assert (report["spectral_radius"] is None) == (report["spectral_note"] is not None)
    assert next(model.parameters()).dtype == torch.float32  # the probe's float64 copy does not stay


def test_cli_several_cells_and_a_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["lab", "adding", "--cell", "gru", "--length", "6", "--hidden-size", "4", "--steps", "2",
                 "--test-size", "8", "--out", str(run), "--json"]) == 0
    capsys.readouterr()
    png = tmp_path / "g.png"
    assert main(["gradients", "--cell", "rnn_tanh", "lstm", "--cell", "mingru", "--length", "7", "--hidden-size", "4",
                 "--batch-size", "3", "--checkpoint", str(run), "--plot", str(png), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    labels = [p["label"] for p in result["probes"]]
    assert labels[0].startswith("gru (trained") and labels[1:] == ["rnn_tanh", "lstm", "mingru"]
    assert png.stat().st_size > 1000
    assert main(["gradients", "--cell", "indrnn", "--length", "5", "--hidden-size", "3", "--plot", ""]) == 0
    text = capsys.readouterr().out
    assert "||dL/dh_t||" in text and "max |u|" in text and "clipping at 1" in text
