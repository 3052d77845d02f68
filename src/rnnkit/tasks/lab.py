"""The long-range dependency lab: ``rnnkit lab adding | copy | order --cell NAME --length T``.

Three synthetic problems (``rnnkit.tasks.lab_data``) that a model solves only by carrying
information across T steps, each scored beside the baseline of a model that cannot:

- ``adding`` (Le et al. 2015): MSE of the sum of the two marked values; baseline: always
  predicting 1, MSE 1/6 = 0.167;
- ``copy`` (Arjovsky et al. 2016): cross-entropy per step over the T + 20 steps, and accuracy on
  the 10 recalled symbols; baseline: the memoryless 10 ln 8 / (T + 20), accuracy 1/8;
- ``order`` (Hochreiter & Schmidhuber 1997, 6a): accuracy of the class at the last step;
  baseline: chance, 1/4.

Model: ``rnnkit.Recurrent`` (any cell, stacked) -> a linear head: adding reads the top
layer's last state (one number), order the top layer's state after each sequence's own last
step (4 logits), copy every step's output (10 logits per step).

Initialization: the cell's own rule, except for the bias of the gate that keeps the state, which
starts at ``forget_bias`` (the ``bias_ih`` block of that gate is set, the ``bias_hh`` block, where
the cell has one, to 0): the LSTM family's forget gate f (c_t = f c_{t-1} + ...), the GRU's update
gate z (h_t = (1 - z) n + z h_{t-1}), minGRU's z with the sign flipped (there h_t = (1 - z) h_{t-1}
+ z h~), and minLSTM's f with its i at -forget_bias, which makes its kept share f / (f + i) equal
sigma(forget_bias) (``KEEP_GATE``). By default 1.0 for adding and copy
(Jozefowicz et al. 2015: sigma(1) = 0.73, the gate starts mostly keeping) and 3.0 for temporal
order (sigma(3) = 0.95): order's two marked symbols sit 40 to 100 steps before the loss with
nothing closer to learn from first, and 0.73^50 = 2e-7 leaves no gradient to start from, while
0.95^50 = 0.09 does. With torch's U(-1/sqrt(H), 1/sqrt(H)) an nn.LSTM stayed at the adding
baseline (0.164 after 3,000 steps) in the reference runs quoted in docs/results.md. The Elman RNN
and IndRNN have no such gate and keep their own init.

``init="chrono"`` (Tallec & Ollivier 2018, "Can recurrent neural networks warp time?") replaces the
one constant by a bias per unit, b_j = log u_j with u_j ~ U[1, S - 1] and S the problem's longest
sequence (``lab_data.longest``): unit j then keeps its state for about u_j steps at init, so the
units' memory spans cover 1 to S steps; the LSTMs' input gate starts at -b_j, as in the paper. With
one constant bias of 1.0 the LSTM stays at the adding baseline at T = 200 and 400 (docs/results.md).

Training: the Trainer's AdamW with weight decay 0 by default (``LAB_TRAIN_DEFAULTS``); every
batch is freshly generated from a generator seeded by (seed, batch index), so a run is
deterministic and resumable. Two fixed held-out sets of ``test_size`` examples each, the same for
every run and seed, are never trained on: the dev set (``HELD_OUT_SEEDS["dev"]``) is what the
Trainer's evaluations score, so it picks the ``best/`` checkpoint and decides ``--stop-when``; the
test set (``HELD_OUT_SEEDS["test"]``) is scored once, at the end, on ``best/``, so the reported
test number was not selected on test.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor, nn

from ..data.batching import GeneratedStream
from ..recurrent import Recurrent
from ..train import checkpoint
from ..train.distributed import split_batch
from ..train.trainer import TrainConfig
from . import lab_data
from .base import Trained, begin, finished, fit, write_report
from .fields import BatchFields, TaskConfig, check_choice, check_ints, with_defaults
from .lab_data import COPY_RECALL, COPY_SYMBOLS, ORDER_CLASSES, PROBLEMS, LabBatch
from .registry import TaskSpec, Verb

NAME = "lab"
TEST_SEED = 2**62 + 7  # the fixed test set's generator; training batches use seeds far below it
DEV_SEED = 2**62 + 11  # the fixed dev set's, which picks best/ and decides --stop-when (its own: not test's)
HELD_OUT_SEEDS = {"dev": DEV_SEED, "test": TEST_SEED}
STREAM_SEED_STRIDE = 1_000_003  # batch i of seed s is drawn with seed s * stride + i
EVAL_BATCH = 500  # test examples per forward call (memory at T = 400)
# The primary metric of each problem (the Trainer keeps the best checkpoint by it) and its direction.
METRICS = {"adding": ("mse", False), "copy": ("cross_entropy", False), "order": ("accuracy", True)}
OUTPUTS = {"adding": 1, "copy": COPY_SYMBOLS, "order": ORDER_CLASSES}
# The bias blocks that set how much of the state a cell keeps, per cell: {block in the packed gates: the sign
# of forget_bias there}. f of the LSTM family, z of the GRUs (h_t = (1 - z) n + z h_{t-1}), minGRU's z
# negated (h_t = (1 - z) h_{t-1} + z h~), and minLSTM's f with its i at the opposite bias: its kept share
# f / (f + i) = sigma(log sigma(b) - log sigma(-b)) = sigma(b), as an LSTM's forget gate with bias b.
KEEP_GATE = {"lstm": {1: 1.0}, "peephole_lstm": {1: 1.0}, "layernorm_lstm": {1: 1.0}, "cifg_lstm": {0: 1.0},
             "gru": {1: 1.0}, "cho_gru": {1: 1.0}, "mingru": {0: -1.0}, "minlstm": {0: 1.0, 1: -1.0}}
# Chrono init also starts the LSTMs' input gate i (block 0) at the negated bias (CIFG's i is 1 - f already).
CHRONO_INPUT_GATE = {"lstm": {0: -1.0}, "peephole_lstm": {0: -1.0}, "layernorm_lstm": {0: -1.0}}
INITS = ("constant", "chrono")
# The forget-gate bias by problem when --forget-bias is not given (see the module notes).
FORGET_BIAS = {"adding": 1.0, "copy": 1.0, "order": 3.0}
# A constant learning rate after a short warmup (min_lr_ratio 1.0 turns the cosine decay off): the
# loss of these problems sits on a plateau for the first ~1,500 steps and then falls fast, and a
# decay that has already lowered the rate by then would slow that escape. lr 3e-3 with H = 64 took
# the LSTM on adding T = 100 from 0.16 to 0.0017 between steps 1,500 and 2,000 (docs/results.md).
LAB_TRAIN_DEFAULTS = {"steps": 3000, "lr": 3e-3, "weight_decay": 0.0, "warmup_steps": 100, "min_lr_ratio": 1.0,
                      "clip": 1.0, "eval_every": 250, "checkpoint_every": 500, "log_every": 50}
# Where a problem departs from those and from LabConfig's sizes (docs/results.md, "lab"): temporal order gets the
# 2,000 steps of its target; copy memory needs a larger state and a faster rate, which took the GRU to >= 99%
# recall in 3,750-5,000 steps where H 64 and lr 3e-3 left it at 0.27-0.36.
PROBLEM_TRAIN_DEFAULTS = {"adding": {}, "copy": {"lr": 1e-2, "steps": 5000}, "order": {"steps": 2000}}
HIDDEN_SIZE = {"adding": 64, "copy": 128, "order": 64}


def train_defaults(problem: str) -> dict:
    """The Trainer's settings for ``problem`` when no flag is given."""
    return {**LAB_TRAIN_DEFAULTS, **PROBLEM_TRAIN_DEFAULTS[lab_data.check_problem(problem)]}


@dataclass
@with_defaults(batch_size=64)
class LabConfig(TaskConfig, BatchFields):
    """The model and the problem's size; the problem itself is the verb (adding, copy, order)."""

    unit, units = "example", "examples"  # freshly generated for every step

    length: int = field(default=100, metadata={"help": "T: adding's sequence length, copy's delay (sequences of "
                                                       "T + 20), order's shortest sequence (up to 1.1 T)"})
    cell: str = field(default="lstm", metadata={"help": "any cell of `rnnkit cells`"})
    hidden_size: int | None = field(default=None, metadata={"help": "H of every layer (default: 64, and 128 for "
                                                                    "copy, whose 10 symbols need more state)"})
    num_layers: int = field(default=1, metadata={"help": "stacked layers"})
    forget_bias: float | None = field(default=None, metadata={"help": "at init, the bias of the gate that keeps the "
                                                                      "state (LSTMs' f, GRUs' z; default 1.0 for "
                                                                      "adding and copy, 3.0 for order); the Elman "
                                                                      "RNN and IndRNN ignore it"})
    init: str = field(default="constant", metadata={"help": "the keep-gate bias at init: constant (forget_bias) or "
                                                          "chrono (per unit log U[1, S - 1], S the longest "
                                                          "sequence; Tallec & Ollivier 2018)"})
    test_size: int = field(default=1000, metadata={"help": "examples in the fixed test set, and in the fixed dev "
                                                         "set that picks best/ and decides --stop-when"})

    def validate(self, problem: str) -> None:
        lab_data.check_length(problem, self.length)
        if self.forget_bias is not None and not isinstance(self.forget_bias, (int, float)):
            raise ValueError(f"forget_bias must be a number or None, got {self.forget_bias!r}")
        check_choice("init", self.init, INITS)
        sizes = ("num_layers", "batch_size", "test_size")
        check_ints(self, sizes if self.hidden_size is None else ("hidden_size", *sizes))  # None: the problem's own

    def resolve(self, problem: str) -> LabConfig:
        """This config with the problem's defaults filled in where a setting is None (what config.json records)."""
        return replace(self, hidden_size=HIDDEN_SIZE[problem] if self.hidden_size is None else self.hidden_size,
                       forget_bias=FORGET_BIAS[problem] if self.forget_bias is None else self.forget_bias)


# ---------------------------------------------------------------------- the model


class LabModel(nn.Module):
    """Recurrent -> Linear, read where the problem asks (see the module notes).

    forward(x (S, N, I), lengths (N,) or None) -> adding: (N,) predictions; copy: (S, N, 10)
    logits; order: (N, 4) logits.
    """

    def __init__(self, problem: str, config: LabConfig) -> None:
        super().__init__()
        self.problem = lab_data.check_problem(problem)
        config = config.resolve(problem)
        self.rnn = Recurrent(config.cell, lab_data.input_size(problem), config.hidden_size, config.num_layers)
        self.head = nn.Linear(config.hidden_size, OUTPUTS[problem])
        if config.init == "chrono":
            init_chrono(self.rnn, lab_data.longest(problem, config.length))
        else:
            init_forget_bias(self.rnn, config.forget_bias)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        # The layer runs every sequence over all S steps, without lengths: the output of a
        # unidirectional layer at a sequence's own last step is its state there, the steps after it
        # change nothing before, and torch's packed-sequence LSTM is 10x slower on the CPU.
        out, _ = self.rnn(x)  # (S, N, H)
        return self.read(out, lengths)

    def read(self, out: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The head on what the problem reads from the top layer's outputs ``out`` (S, N, H): every step
        (copy), or the last step of each sequence (its own, given ``lengths``)."""
        if self.problem == "copy":
            return self.head(out)  # (S, N, 10)
        if lengths is None:
            last = out[-1]  # (N, H)
        else:
            last = out[lengths.to(out.device) - 1, torch.arange(out.shape[1], device=out.device)]  # (N, H)
        y = self.head(last)  # (N, 1) or (N, 4)
        return y.squeeze(-1) if self.problem == "adding" else y


def init_forget_bias(rnn: Recurrent, forget_bias: float) -> None:
    """Start the gate that keeps the state at ``forget_bias``: each ``KEEP_GATE`` block of ``bias_ih`` = its sign *
    forget_bias, the same block of ``bias_hh`` (where the cell has one) = 0, so their sum is the bias."""
    set_gate_biases(rnn, KEEP_GATE.get(rnn.cell.name, {}), lambda: torch.full((rnn.hidden_size,), float(forget_bias)))


def init_chrono(rnn: Recurrent, longest: int) -> None:
    """Chrono init: per unit b = log U[1, longest - 1] (torch's global RNG, seeded by the run) in each
    ``KEEP_GATE`` block with its sign, and -b in the LSTMs' input gate (``CHRONO_INPUT_GATE``)."""
    blocks = {**KEEP_GATE.get(rnn.cell.name, {}), **CHRONO_INPUT_GATE.get(rnn.cell.name, {})}
    high = max(float(longest - 1), 1.0)
    set_gate_biases(rnn, blocks, lambda: torch.empty(rnn.hidden_size).uniform_(1.0, high).log())


def set_gate_biases(rnn: Recurrent, blocks: dict[int, float], draw) -> None:
    """For every layer and direction: ``b = draw()`` (H,), then each block of ``bias_ih`` = sign * b and the same
    block of ``bias_hh``, where the cell has one, = 0."""
    if not blocks or not rnn.bias:
        return
    H = rnn.hidden_size
    with torch.no_grad():
        for k in range(rnn.num_layers):
            for d in range(rnn.num_directions):
                w = rnn.weights(k, d)
                b = draw()  # (H,)
                for block, sign in blocks.items():
                    w["bias_ih"][block * H : (block + 1) * H] = sign * b
                    if "bias_hh" in w:
                        w["bias_hh"][block * H : (block + 1) * H] = 0.0


def loss_of(problem: str, prediction: Tensor, batch: LabBatch) -> Tensor:
    """The mean training loss: MSE (adding) or cross-entropy (copy: over every step; order: per sequence)."""
    if problem == "adding":
        return F.mse_loss(prediction.float(), batch.y)
    if problem == "copy":
        return F.cross_entropy(prediction.float().flatten(0, 1), batch.y.flatten())
    return F.cross_entropy(prediction.float(), batch.y)


@torch.no_grad()
def score(model: LabModel, batch: LabBatch) -> dict[str, float]:
    """The problem's metrics on ``batch`` (evaluated in chunks of ``EVAL_BATCH`` examples)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums = {"loss": 0.0, "correct": 0.0, "counted": 0}
    n = batch.x.shape[1]
    for start in range(0, n, EVAL_BATCH):
        part = LabBatch(batch.x[:, start : start + EVAL_BATCH].to(device), batch.y[..., start : start + EVAL_BATCH]
                        .to(device), None if batch.lengths is None else batch.lengths[start : start + EVAL_BATCH])
        m = part.x.shape[1]
        prediction = model(part.x, part.lengths)
        sums["loss"] += float(loss_of(model.problem, prediction, part)) * m
        if model.problem == "copy":
            recalled = prediction[-COPY_RECALL:].argmax(-1) == part.y[-COPY_RECALL:]  # (10, m)
            sums["correct"] += float(recalled.sum())
            sums["counted"] += recalled.numel()
        elif model.problem == "order":
            sums["correct"] += float((prediction.argmax(-1) == part.y).sum())
            sums["counted"] += m
    model.train(was_training)
    if model.problem == "adding":
        return {"mse": sums["loss"] / n}
    return {"cross_entropy": sums["loss"] / n, "accuracy": sums["correct"] / sums["counted"]}


def result(problem: str, length: int, cell: str, metrics: dict[str, float], n: int, split: str = "test") -> dict:
    """``--json``'s object (and test.json's line): task, split, problem, n, length, cell, metric, value, baseline, and
    the problem's other metric beside its baseline (copy: accuracy on the recalled symbols; order: cross-entropy)."""
    base = lab_data.baseline(problem, length)
    metric = METRICS[problem][0]
    out = {"task": NAME, "split": split, "problem": problem, "n": n, "length": length, "cell": cell,
           "metric": metric, "value": metrics[metric], "baseline": base[metric]}
    for key, value in metrics.items():
        if key != metric:
            out[key] = value
            out[f"baseline_{key}"] = base[key]
    return out


def describe_result(r: dict) -> str:
    """One line: the metric beside its baseline (and the other metric beside its own)."""
    line = f"{r['problem']} T={r['length']} {r['cell']}: {r['split']} {r['metric']} {r['value']:.4f} (baseline " \
           f"{r['baseline']:.4f})"
    for key in ("accuracy", "cross_entropy"):
        if key in r and key != r["metric"]:
            line += f", {key} {r[key]:.4f} (baseline {r['baseline_' + key]:.4f})"
    return line + f", n {r['n']}"


# ---------------------------------------------------------------------- training


def training_batch(seed: int, index: int, problem: str, length: int, batch_size: int, device: torch.device
                   ) -> LabBatch:
    """Training batch ``index`` (a ``GeneratedStream``'s draw): ``make_batch(problem, T, B, seed *
    STREAM_SEED_STRIDE + index)``."""
    batch = lab_data.make_batch(problem, length, batch_size, seed * STREAM_SEED_STRIDE + index)
    return LabBatch(batch.x.to(device), batch.y.to(device), batch.lengths)


def held_out_set(problem: str, length: int, size: int, split: str = "test") -> LabBatch:
    """The fixed held-out examples of ``split`` ("dev" or "test"): the same for every run, seed and cell."""
    if split not in HELD_OUT_SEEDS:
        raise ValueError(f"split must be one of {', '.join(HELD_OUT_SEEDS)}, got {split!r}")
    return lab_data.make_batch(problem, length, size, HELD_OUT_SEEDS[split])


class LabTask:
    """The Trainer's view of a lab problem (``rnnkit.train.trainer.TrainingTask``).

    ``time_gradients`` gives the Trainer the norm of dL/dx_t per input step t of the last
    batch (the gradient that reached step t), for its gradient logging and NaN report.
    """

    name = NAME

    def __init__(self, problem: str, config: LabConfig, seed: int, device: torch.device) -> None:
        self.problem, self.config = problem, config
        self.metric, self.higher_is_better = METRICS[problem]
        self.model = LabModel(problem, config).to(device)
        self.stream = GeneratedStream(seed, partial(training_batch, problem=problem, length=config.length,
                                                    batch_size=config.batch_size, device=device))
        self.dev = held_out_set(problem, config.length, config.test_size, "dev")  # the Trainer's evaluations
        self.test = held_out_set(problem, config.length, config.test_size, "test")  # once, at the end, on best/
        self._x: Tensor | None = None  # the last batch's input, which autograd gives a gradient

    def shard(self, batch: LabBatch, rank: int, world_size: int) -> LabBatch:
        """This rank's examples of a batch under torchrun (every loss here is a mean over equal-sized examples, so
        N ranks give one process's gradient)."""
        y_dim = 1 if self.problem == "copy" else 0  # copy's y is (S, N); adding's and order's (N,)
        lengths = None if batch.lengths is None else split_batch(batch.lengths, rank, world_size, 0)
        return LabBatch(split_batch(batch.x, rank, world_size, 1), split_batch(batch.y, rank, world_size, y_dim),
                        lengths)

    def loss(self, batch: LabBatch, carry):
        x = batch.x.detach().requires_grad_(True)  # (S, N, I): its .grad is dL/dx_t for time_gradients
        self._x = x
        return loss_of(self.problem, self.model(x, batch.lengths), batch), None, x.shape[0] * x.shape[1]

    def time_gradients(self) -> Tensor | None:
        """||dL/dx_t|| over the batch and features for each step t of the last batch, (S,); None before one."""
        if self._x is None or self._x.grad is None:
            return None
        return self._x.grad.detach().flatten(1).norm(dim=1)  # (S,)

    def evaluate(self) -> dict[str, float]:
        """The dev set's metrics: they pick best/ and decide --stop-when (the test set is kept for the end)."""
        return score(self.model, self.dev)

    def describe(self) -> tuple[dict, None]:
        return {**self.config.model_settings(), "problem": self.problem}, None


def train(problem: str, config: LabConfig, train_config: TrainConfig, out: str | Path, resume: bool = False,
          console: Console | None = None, progress: bool = True) -> dict:
    """Train ``config.cell`` on ``problem`` into the run directory ``out``; returns the Trainer's summary (its
    evaluations on the dev set) plus ``test`` (``result``'s object for the best checkpoint on the fixed test set)."""
    lab_data.check_problem(problem)
    config.validate(problem)
    config = config.resolve(problem)  # config.json records the values used
    console, _ = begin(train_config, out, resume, console)
    task = LabTask(problem, config, train_config.seed, torch.device(train_config.device))
    summary = fit(task, train_config, out, resume, console, progress, lambda params: (
        f"lab {problem}: T={config.length}, {config.cell} {config.num_layers}x{config.hidden_size}, {params:,} "
        f"parameters, batch {config.batch_size}, dev set {config.test_size}, test set {config.test_size}"))
    # best/ was picked on the dev set: the test set is read here, once
    test = result(problem, config.length, config.cell, score(task.model, task.test), config.test_size)
    write_report(out, NAME, "test", test)
    console.print(f"{describe_result(test)}, {finished(summary, out)}", highlight=False)
    return {**summary, "test": test}


# ---------------------------------------------------------------------- a trained model


@dataclass(eq=False, repr=False)
class TrainedLab(Trained):
    """A trained lab model loaded from a checkpoint: ``evaluate`` (and ``model`` for ``rnnkit gradients``)."""

    task, config_class, what = NAME, LabConfig, "a lab model"

    problem: str  # one of PROBLEMS

    @classmethod
    def read(cls, ckpt: checkpoint.Checkpoint, config: LabConfig, path: Path) -> tuple[LabModel, dict]:
        problem = ckpt.config.get("problem")
        if problem not in PROBLEMS:
            raise checkpoint.CheckpointError(f"{path}: config.json names lab problem {problem!r}, expected one of "
                                             f"{', '.join(PROBLEMS)}")
        return LabModel(problem, config), {"problem": problem}

    def evaluate(self, *, length: int | None = None, size: int | None = None) -> dict:
        """``result``'s object on the fixed test set, at the run's length or another ``length``."""
        length = self.config.length if length is None else length
        size = self.config.test_size if size is None else size
        lab_data.check_length(self.problem, length)
        metrics = score(self.model, held_out_set(self.problem, length, size))
        return result(self.problem, length, self.config.cell, metrics, size)


# ---------------------------------------------------------------------- the task's SPEC (rnnkit.tasks.registry)

def train_problem(config: LabConfig, train_config: TrainConfig, out: str | Path, variant: str, resume: bool = False,
                  console: Console | None = None, progress: bool = True) -> dict:
    """``rnnkit lab PROBLEM``: ``train`` on the problem ``variant``; a resumed run must hold the same problem."""
    last = Path(out) / "last"
    if resume and checkpoint.recover(last):
        saved = checkpoint.load(last).config.get("problem")
        if saved != variant:
            raise ValueError(f"--resume: {out} holds a {saved!r} run, not {variant!r}")
    return train(variant, config, train_config, out, resume=resume, console=console, progress=progress)


def run_evaluate(trained: TrainedLab, args, as_json: bool) -> dict | None:
    """``rnnkit lab PROBLEM --checkpoint DIR``: the test result, at --length and --test-size if given."""
    if trained.problem != args.variant:
        raise ValueError(f"--checkpoint {args.checkpoint} holds a {trained.problem!r} run, not {args.variant!r}")
    result = trained.evaluate(length=getattr(args, "length", None), size=getattr(args, "test_size", None))
    if as_json:
        return result
    print(describe_result(result))
    return None


def export_spec(model, trained: TrainedLab, what: str):
    """``rnnkit export``: x (and lengths for order) -> y."""
    from ..export import Flat, Port, Spec, random_features, swap_layers

    problem, I = trained.problem, model.rnn.input_size
    with_lengths = problem == "order"
    call = (lambda m, x, lengths: (m(x, lengths),)) if with_lengths else (lambda m, x: (m(x),))  # noqa: E731
    inputs = [Port("x", ("time", "batch", str(I)))]
    if with_lengths:
        inputs.append(Port("lengths", ("batch",), torch.int64))
    out_axes = {"adding": ("batch",), "copy": ("time", "batch", "10"), "order": ("batch", "4")}[problem]
    outputs = [Port("y", out_axes)]
    return Spec(Flat(swap_layers(model), call), Flat(model, call), random_features(I, with_lengths), inputs,
                outputs, what.replace("lab model", f"lab {problem} model"))


SPEC = TaskSpec(NAME, "long-range dependency lab: adding, copy, order (generated data)", LabConfig, train_problem,
                TrainedLab.load, train_help="train on a long-range problem", export=export_spec,
                variants={"adding": "train on the adding problem (Le et al. 2015): MSE beside always-1's 0.167",
                          "copy": "train on copy memory (Arjovsky et al. 2016): cross-entropy and recall accuracy "
                                  "beside the memoryless baseline",
                          "order": "train on temporal order (Hochreiter & Schmidhuber 1997, 6a): accuracy beside "
                                   "chance"},
                variant_defaults=train_defaults,
                verbs={"evaluate": Verb("the test result of a trained run", None, run_evaluate)})
