r"""Gradient-flow diagnostics: ``rnnkit gradients --cell NAME [--cell NAME ...] --length T``.

For a loss L at the last step of a lab problem (``rnnkit.tasks.lab``; adding by default),
the probe measures how much of the gradient reaches each earlier step:

- ``norms[k][t]``: the mean over the batch of :math:`\lVert \partial L_b / \partial h^{(k)}_t \rVert`,
  the gradient of example b's loss with respect to layer k's hidden state at step t (the
  total derivative: through the recurrence and through the layers above). For a tanh RNN,
  :math:`\partial L / \partial h_{t-1} = W_{hh}^\top \mathrm{diag}(1 - h_t^2)\, \partial L / \partial h_t`,
  so the norm falls about geometrically with the distance to the loss when the spectral radius
  of :math:`W_{hh}` is below 1 (Bengio et al. 1994; Pascanu et al. 2013), and the LSTM's
  additive cell state keeps it (Hochreiter & Schmidhuber 1997).
- the spectral radius :math:`\rho = \max |\lambda(W)|` of every square (H, H) block of W_hh
  per layer (per gate for gated cells); cells without a square W_hh (IndRNN's vector u,
  minGRU / minLSTM without recurrent weights) say why instead.
- the effect of clipping by global norm at ``clip``: the parameters' gradient norm before and
  after. Clipping multiplies every gradient by the same factor min(1, clip / norm), so it caps
  an exploding gradient but leaves the ratio between steps, the vanishing, unchanged.

How dL/dh_t is obtained: the layer is run on the reference loop (``rnnkit.driver``, the cell's own
``step`` per step), keeping every layer's state h_t at every step as a node of the graph;
``torch.autograd.grad`` then gives their gradients. The loss is the same number as the layer's
fast forward gives (tests/test_gradients.py checks both). The probe runs in float64 by default,
so that a gradient that vanishes below float32's range (1e-38) still shows on the plot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .cells import LSTMState
from .driver import run_stack, time_loop
from .recurrent import Recurrent
from .tasks import lab_data
from .tasks.lab import LabConfig, LabModel
from .tasks.lab_data import PROBLEMS, LabBatch
from .train.trainer import parameter_layer

# The gate blocks packed in W_hh (torch's order), for naming each block's spectral radius.
GATE_NAMES = {"lstm": "ifgo", "peephole_lstm": "ifgo", "layernorm_lstm": "ifgo", "cifg_lstm": "fgo",
              "gru": "rzn", "cho_gru": "rzn"}
NO_SQUARE_W_HH = {
    "indrnn": "IndRNN has no W_hh matrix: its recurrence is the elementwise u * h_{t-1}, so max |u| plays the "
              "spectral radius's part",
    "mingru": "minGRU has no recurrent weights: its gates see x_t only",
    "minlstm": "minLSTM has no recurrent weights: its gates see x_t only",
}


def run_stepwise(rnn: Recurrent, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, object, list[list[Tensor]]]:
    """``rnn(x, lengths=lengths)`` on the reference loop (``rnnkit.driver``), keeping each layer's h at each step.

    x (S, N, I) time-major -> out (S, N, R), final state as ``forward``'s, and ``hidden[k][t]``,
    the (N, R) tensor that is layer k's h_t in the graph (its gradient is dL/dh_t). Past a
    sequence's length its state is carried and its output is zero, as in the reference backend.
    """
    if rnn.bidirectional:
        raise ValueError("the gradient probe runs unidirectional layers only, got a bidirectional one")
    if rnn.batch_first:
        raise ValueError("the gradient probe takes a time-major layer (batch_first=False)")
    S, N, _ = x.shape
    if lengths is not None:
        lengths = lengths.to(x.device)
    initial = rnn.cell.zero_state((rnn.num_layers, N), rnn.hidden_size, rnn.proj_size, x)
    states: list[list] = []  # states[k][t]: layer k's state after step t

    def keeping_states(cell, gx, state, weights, lengths, noise=None):
        states.append([])
        return time_loop(cell, gx, state, weights, lengths, noise, states=states[-1])

    out, final = run_stack(rnn, x, lengths, initial, keeping_states)
    hidden = [[s.h if isinstance(s, LSTMState) else s for s in layer] for layer in states]  # (N, R) each
    return out, final, hidden


def last_step_loss(model: LabModel, prediction: Tensor, batch: LabBatch) -> Tensor:
    """The loss at the last step, summed over the batch (so row b of dL/dh_t is example b's own gradient).

    adding: (y_hat - y)^2; order: cross-entropy of the class; copy: cross-entropy of the last
    recalled symbol (presented 10 + T steps before it).
    """
    if model.problem == "adding":
        return ((prediction - batch.y.to(prediction.dtype)) ** 2).sum()
    if model.problem == "copy":
        return F.cross_entropy(prediction[-1], batch.y[-1], reduction="sum")
    return F.cross_entropy(prediction, batch.y, reduction="sum")


def spectral_radius(rnn: Recurrent) -> tuple[list[dict[str, float]] | None, str | None]:
    """Per layer, the spectral radius of each square (H, H) block of W_hh; or None and the reason."""
    name = rnn.cell.name
    if not rnn.cell.square_recurrent:
        return None, NO_SQUARE_W_HH.get(name, f"{name} has no square W_hh")
    if rnn.proj_size:
        return None, f"with proj_size={rnn.proj_size} W_hh is (G*H, R) = not square"
    gates = GATE_NAMES.get(name, "")
    radii = []
    for k in range(rnn.num_layers):
        w_hh = rnn.weights(k, 0)["weight_hh"].detach().double()  # (G*H, H)
        blocks = w_hh.chunk(rnn.cell.gates, dim=0)  # G of (H, H)
        labels = list(gates) if len(gates) == len(blocks) else ["W_hh"] if len(blocks) == 1 else \
            [f"block{i}" for i in range(len(blocks))]
        radii.append({label: float(torch.linalg.eigvals(block).abs().max()) for label, block in zip(labels, blocks)})
    return radii, None


def probe(model: LabModel, batch: LabBatch, clip: float = 1.0, dtype: torch.dtype = torch.float64) -> dict:
    """The diagnostics of the module notes for ``model`` on ``batch``, as a JSON-ready dict.

    Keys: cell, problem, steps (S), layers, loss (the batch mean at the last step), norms
    (layers x S), spectral_radius (per layer, per gate block) or None with spectral_note, and
    clip: {clip, grad_norm, clipped_norm, scale, per_layer}.
    """
    if clip < 0:
        raise ValueError(f"clip must be >= 0 (0: no clipping), got {clip!r}")
    original = next(model.parameters()).dtype
    model = model.to(dtype)
    was_training = model.training
    model.eval()  # no dropout; gradients still flow
    try:
        x = batch.x.to(dtype)
        with torch.enable_grad():
            out, _, hidden = run_stepwise(model.rnn, x)  # all S steps, as LabModel.forward runs them
            loss = last_step_loss(model, model.read(out, batch.lengths), batch)
            n = x.shape[1]
            named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
            flat = [h for layer in hidden for h in layer]
            grads = torch.autograd.grad(loss, flat + [p for _, p in named], allow_unused=True)
        S = x.shape[0]
        norms = []
        for k in range(len(hidden)):
            per_step = grads[k * S : (k + 1) * S]
            norms.append([0.0 if g is None else float(g.norm(dim=-1).mean()) for g in per_step])
        # the Trainer clips the gradient of the batch-mean loss: divide the summed loss's by N
        param_grads = {name: (g / n if g is not None else None) for (name, _), g in zip(named, grads[len(flat) :])}
        layer_sq: dict[str, float] = {}
        for name, g in param_grads.items():
            if g is not None:
                key = parameter_layer(name)
                layer_sq[key] = layer_sq.get(key, 0.0) + float(g.pow(2).sum())
        total = sum(layer_sq.values()) ** 0.5
        scale = 1.0 if clip == 0 or total <= clip else clip / total
        radii, note = spectral_radius(model.rnn)
        if model.rnn.cell.name == "indrnn":
            u_max = [float(model.rnn.weights(k, 0)["weight_hh"].detach().abs().max())
                     for k in range(model.rnn.num_layers)]
            note += "; max |u| per layer: " + ", ".join(f"{u:.3f}" for u in u_max)
        return {"cell": model.rnn.cell.name, "problem": model.problem, "steps": S, "layers": len(hidden),
                "loss": float(loss.detach()) / n, "norms": norms, "spectral_radius": radii, "spectral_note": note,
                "clip": {"clip": clip, "grad_norm": total, "clipped_norm": total * scale, "scale": scale,
                         "per_layer": {k: v**0.5 for k, v in layer_sq.items()}}}
    finally:
        model.to(original)
        model.train(was_training)


def untrained(cell: str, problem: str, length: int, hidden_size: int, num_layers: int, forget_bias: float | None,
              seed: int) -> LabModel:
    """A freshly initialized lab model (the lab's init: forget-gate bias for the LSTM family), seeded."""
    torch.manual_seed(seed)
    return LabModel(problem, LabConfig(length=length, cell=cell, hidden_size=hidden_size, num_layers=num_layers,
                                       forget_bias=forget_bias))


def describe(report: dict, label: str) -> str:
    """A few lines for people: the norms at five steps, their first/last ratio, rho, clipping."""
    S = report["steps"]
    shown = sorted({0, S // 4, S // 2, (3 * S) // 4, S - 1})
    lines = [f"{label}: {report['problem']}, {S} steps, {report['layers']} layer(s), mean loss at the last step "
             f"{report['loss']:.4f}"]
    for k, norms in enumerate(report["norms"]):
        points = ", ".join(f"t={t}: {norms[t]:.2e}" for t in shown)
        ratio = norms[0] / norms[-1] if norms[-1] > 0 else float("nan")
        lines.append(f"  layer {k}: ||dL/dh_t|| {points}; first/last {ratio:.2e}")
    if report["spectral_radius"] is None:
        lines.append(f"  spectral radius: none ({report['spectral_note']})")
    else:
        for k, radii in enumerate(report["spectral_radius"]):
            lines.append(f"  layer {k} spectral radius of W_hh: " + ", ".join(f"{g} {r:.3f}" for g, r in radii.items()))
    c = report["clip"]
    if c["clip"] > 0:
        lines.append(f"  clipping at {c['clip']:g}: parameter gradient norm {c['grad_norm']:.3e} -> "
                     f"{c['clipped_norm']:.3e} (every gradient x{c['scale']:.3g}; the ratio between steps is "
                     "unchanged)")
    return "\n".join(lines)


def plot(reports: list[tuple[str, dict]], path: str | Path, title: str) -> Path:
    """||dL/dh_t|| against t on a log scale, one line per (label, layer)."""
    from .plots import plt, save  # matplotlib with the file-only backend

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, report in reports:
        for k, norms in enumerate(report["norms"]):
            name = label if report["layers"] == 1 else f"{label}, layer {k}"
            values = [v if v > 0 else float("nan") for v in norms]  # a log axis cannot show 0
            ax.semilogy(range(len(values)), values, label=name, lw=1.5, ls="-" if k == report["layers"] - 1 else "--")
    ax.set_xlabel("time step t (the loss is at the last step)")
    ax.set_ylabel("mean ||dL/dh_t||")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save(fig, path, dpi=80)


def run(cells: list[str], problem: str, length: int, hidden_size: int, num_layers: int, batch_size: int,
        forget_bias: float | None, seed: int, clip: float, checkpoint: str | None = None) -> list[tuple[str, dict]]:
    """The probe for a trained lab checkpoint (if given) and for each untrained cell, on the same batch."""
    lab_data.check_problem(problem)
    for name, value in (("batch_size", batch_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
        if value is None and name == "hidden_size":  # the lab's default for the problem, resolved below
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    reports = []
    if checkpoint is not None:
        from .tasks.lab import TrainedLab

        trained = TrainedLab.load(checkpoint)
        problem = trained.problem
        batch = lab_data.make_batch(problem, length, batch_size, seed)
        reports.append((f"{trained.config.cell} (trained)", {**probe(trained.model, batch, clip),
                                                              "checkpoint": str(trained.path)}))
    batch = lab_data.make_batch(problem, length, batch_size, seed)
    for cell in cells:
        model = untrained(cell, problem, length, hidden_size, num_layers, forget_bias, seed)
        reports.append((cell, probe(model, batch, clip)))
    return reports


@dataclass
class GradientsArgs:
    """The flags of ``rnnkit gradients`` (one per field; the CLI builds them like a task verb's)."""

    cell: list | None = field(default=None, metadata={"help": "cells to probe, untrained (several: --cell rnn_tanh "
                                                              "lstm gru); default lstm unless --checkpoint is given",
                                                      "several": True})
    checkpoint: str | None = field(default=None, metadata={"help": "also probe this trained lab run (or checkpoint)"})
    problem: str = field(default="adding", metadata={"help": "whose loss at the last step (a checkpoint's own "
                                                             "problem overrides it)", "choices": PROBLEMS})
    length: int = field(default=100, metadata={"help": "T of the problem"})
    hidden_size: int | None = field(default=None, metadata={"help": "H of untrained cells (default: the lab's)"})
    num_layers: int = field(default=1, metadata={"help": "stacked layers of untrained cells"})
    forget_bias: float | None = field(default=None, metadata={"help": "the LSTM family's forget-gate bias at init "
                                                                      "(default: the lab's for the problem)"})
    batch_size: int = field(default=64, metadata={"help": "examples the norms are averaged over"})
    clip: float = field(default=1.0, metadata={"help": "the global-norm clip whose effect is reported"})
    seed: int = field(default=0, metadata={"help": "seed of the weights and the batch"})
    plot: str = field(default="gradients.png", metadata={"help": "where to write the PNG ('' for none)"})


def command(args) -> int:
    """``rnnkit gradients``: the probe for each --cell (and --checkpoint), one plot; ``args`` has GradientsArgs'
    fields and ``json``. Prints a description per probe, or one JSON object; returns the exit status 0."""
    cells = args.cell if args.cell is not None else ([] if args.checkpoint else ["lstm"])
    reports = run(cells, args.problem, args.length, args.hidden_size, args.num_layers, args.batch_size,
                  args.forget_bias, args.seed, args.clip, args.checkpoint)
    if args.plot:
        plot(reports, args.plot, f"gradient norms, loss at the last step of {reports[0][1]['problem']} "
                                 f"(T={args.length})")
    if args.json:
        print(json.dumps({"length": args.length, "plot": args.plot or None,
                          "probes": [{"label": label, **report} for label, report in reports]}))
        return 0
    for label, report in reports:
        print(describe(report, label))
    if args.plot:
        print(f"plot: {args.plot}")
    return 0
