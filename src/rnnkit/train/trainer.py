"""One Trainer for every task: AdamW, warmup + cosine, clipping, TBPTT, bf16, NaN guard, budgets.

A task hands the Trainer a ``TrainingTask`` (the model, a resumable batch stream, a loss, an
evaluation); the Trainer owns everything else, so no task re-implements the loop:

- AdamW with decoupled weight decay on the matrices only (biases, gains and 1-D weights
  are not decayed), the learning rate of ``schedule.lr_at`` set before every step;
- clipping by global norm (``clip``, 1.0 by default; the norm before clipping is logged);
- truncated BPTT: the task's loss returns the state to carry into the next batch; the
  Trainer detaches it, keeps it across batches and in checkpoints, and the task resets it
  at document boundaries;
- bfloat16 autocast (``bf16``) on CPU and GPU;
- a NaN/Inf guard: a step whose loss or gradient is not finite is skipped, the learning
  rate is multiplied by ``nan_lr_factor``, the layers and parameters with non-finite
  gradients are named in the log (and, for a task with ``time_gradients``, the time steps),
  the carried state is reset, and after ``nan_patience`` such steps in a row training stops
  with ``TrainingDiverged``; no non-finite checkpoint is ever written;
- gradient logging (``log_grad_norms``, off by default): every log step's record in
  metrics.jsonl also holds ``grad_norm_layers``, the gradient norm per layer (parameters
  grouped by ``parameter_layer``), and, for a task with ``time_gradients``,
  ``grad_norm_time``, the norm of dL/dx_t summed in quadrature over ``GRAD_TIME_BUCKETS``
  contiguous buckets of time steps (keys ``"first-last"``);
- evaluation every ``eval_every`` steps, the best checkpoint kept in ``best/``, early
  stopping after ``patience`` evaluations without improvement;
- budgets: ``steps``, or ``max_minutes``, or both (the first reached stops). A time budget measures its
  speed over its first ``calibration_steps`` steps and 3% of the budget, times one evaluation and one save,
  and plans the step count that fits (the cosine schedule needs one); then, every ``calibration_steps`` steps
  and 3% of the budget, it measures the speed again over that window (evaluations and saves included) and
  re-plans the remaining steps, so a slow start or a busy spell does not shrink the whole run. The plan and
  its window are stored in the checkpoint, so a resumed run keeps them;
- checkpoints every ``checkpoint_every`` steps (and, with ``checkpoint_minutes``, at least every
  that many minutes of wall-clock time) in ``last/`` with every piece of state the
  next step depends on, so ``resume`` continues bit-identically; Ctrl-C stops after the
  current step and writes ``last/`` first;
- several processes under ``torchrun`` (``distributed``): DDP, data sharded by rank, rank 0 writes.
"""

from __future__ import annotations

import math
import operator
import random
import re
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from rich.console import Console
from torch import Tensor, nn

from ..cells import LSTMState
from ..console import make_console
from . import checkpoint, distributed
from .report import MetricsLog, ProgressBar, TensorBoard, read_metrics
from .schedule import lr_at

# A time budget measures its speed over at least this fraction of the budget (and at least
# calibration_steps steps) before each plan: a few fast steps mislead, as the first ones on a busy machine do.
CALIBRATION_FRACTION = 0.03
# A plan fills this share of the time left: the steps after the last re-plan run at the last window's speed,
# and a run that plans too many steps is cut by the clock before its cosine schedule ends.
PLAN_MARGIN = 0.98
# log_grad_norms splits the time steps into at most this many contiguous buckets: enough to see a
# gradient fade over the sequence, few enough to read in metrics.jsonl.
GRAD_TIME_BUCKETS = 10
_LAYER_SUFFIX = re.compile(r"_l(?P<layer>\d+)(?P<reverse>_reverse)?$")

Carry = Any  # None, a Tensor, an LSTMState, or a tuple of them: whatever the task's loss carries


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row; the message says where and what to try."""


@dataclass
class TrainConfig:
    """How to train; the same flags for every task (``rnnkit <task> train --help``)."""

    steps: int | None = field(default=None, metadata={"help": "optimizer steps to run (the budget; the task's "
                                                              "own count applies unless --max-minutes is given)"})
    max_minutes: float | None = field(default=None, metadata={"help": "wall-clock budget in minutes: plans the "
                                                                      "steps that fit, re-planned as the speed "
                                                                      "changes; with --steps the first reached stops"})
    lr: float = field(default=3e-3, metadata={"help": "peak learning rate of AdamW"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW's decoupled weight decay, on matrices"})
    warmup_steps: int = field(default=50, metadata={"help": "linear warmup steps before the cosine decay"})
    min_lr_ratio: float = field(default=0.05, metadata={"help": "the cosine decays to lr * this"})
    clip: float = field(default=1.0, metadata={"help": "clip gradients to this global norm (0: off)"})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 autocast"})
    eval_every: int = field(default=500, metadata={"help": "evaluate every N steps (and at the end)"})
    log_every: int = field(default=25, metadata={"help": "log loss, norm and speed every N steps"})
    checkpoint_every: int = field(default=500, metadata={"help": "write last/ every N steps"})
    checkpoint_minutes: float | None = field(default=None, metadata={"help": "also write last/ whenever M minutes "
                                                                             "have passed since the last write"})
    patience: int = field(default=0, metadata={"help": "stop after N evaluations without improvement (0: never)"})
    stop_when: str | None = field(default=None, metadata={"help": "stop at the first evaluation where METRIC OP VALUE "
                                                                  "holds, e.g. 'accuracy>=0.99' or 'mse<0.01'"})
    nan_patience: int = field(default=5, metadata={"help": "stop after N non-finite steps in a row"})
    nan_lr_factor: float = field(default=0.5, metadata={"help": "multiply the lr by this after a non-finite step"})
    calibration_steps: int = field(default=20, metadata={"help": "a time budget measures its speed over at least "
                                                                  "these steps and 3% of the budget, then "
                                                                  "re-plans after each such window"})
    seed: int = field(default=0, metadata={"help": "seed of every random number generator"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, cuda:1, ..."})
    tensorboard: bool = field(default=False, metadata={"help": "also write TensorBoard scalars to OUT/tensorboard"})
    log_grad_norms: bool = field(default=False, metadata={"help": "also log gradient norms per layer and per "
                                                                  "time-step bucket to metrics.jsonl"})

    def validate(self) -> None:
        if self.steps is None and self.max_minutes is None:
            raise ValueError("give a budget: --steps N, --max-minutes M, or both")
        for name in ("steps", "eval_every", "log_every", "checkpoint_every", "nan_patience", "calibration_steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.checkpoint_minutes is not None and not self.checkpoint_minutes > 0:
            raise ValueError(f"checkpoint_minutes must be > 0, got {self.checkpoint_minutes!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.clip < 0:
            raise ValueError(f"clip must be >= 0 (0 turns clipping off), got {self.clip!r}")
        if self.warmup_steps < 0 or self.patience < 0:
            raise ValueError("warmup_steps and patience must be >= 0")
        if not 0 < self.nan_lr_factor <= 1:
            raise ValueError(f"nan_lr_factor must be in (0, 1], got {self.nan_lr_factor!r}")
        if self.stop_when is not None:
            parse_stop_when(self.stop_when)


STOP_OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def parse_stop_when(text: str) -> tuple[str, str, float]:
    """``'accuracy>=0.99'`` -> ("accuracy", ">=", 0.99): the metric, the comparison and the value of ``stop_when``."""
    match = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*", str(text))
    try:
        value = float(match.group(3)) if match else math.nan
    except ValueError:
        value = math.nan
    if not match or not math.isfinite(value):
        raise ValueError(f"stop_when must read METRIC OP VALUE with OP one of >=, <=, >, < (e.g. 'accuracy>=0.99'), "
                         f"got {text!r}")
    return match.group(1), match.group(2), value


class BatchStream(Protocol):
    """A task's endless, resumable source of training batches."""

    def next(self) -> Any: ...
    def state(self) -> tuple[dict, dict[str, Tensor]]: ...
    def load_state(self, meta: dict, tensors: dict[str, Tensor]) -> None: ...


class TrainingTask(Protocol):
    """What a task gives the Trainer."""

    name: str  # the task's registry name (its TaskSpec.name): config.json's "task"
    model: nn.Module
    stream: BatchStream
    metric: str  # the key of evaluate() that picks the best checkpoint
    higher_is_better: bool

    def loss(self, batch: Any, carry: Carry) -> tuple[Tensor, Carry, int]:
        """The mean loss of ``batch``, the state to carry into the next batch, the tokens counted."""
        ...

    def evaluate(self) -> dict[str, float]: ...

    def describe(self) -> tuple[dict, dict | None]:
        """config.json's task part and vocab.json (or None)."""
        ...

    # Optional: ``time_gradients() -> Tensor | None``, after the backward pass the norm of the
    # gradient that reached each time step t of the last batch, (T,) (the lab: ||dL/dx_t||). The
    # Trainer uses it for ``log_grad_norms`` and to name the time steps in the NaN report.
    # Optional: ``shard(batch, rank, world_size) -> batch``, this rank's share of a batch, under torchrun;
    # without it rank r trains on the stream's batches r, r + N, ... (see ``distributed``).


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's generators (every device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def detach_state(carry: Carry) -> Carry:
    """The carried state cut from the graph of the batch that made it (a tree map)."""
    if carry is None:
        return None
    if isinstance(carry, Tensor):
        return carry.detach()
    return type(carry)(*(detach_state(part) for part in carry))


@dataclass
class TrainState:
    """Everything besides the model, optimizer and RNGs that the next step depends on."""

    step: int = 0  # optimizer steps done (skipped non-finite steps count: the data moved on)
    total_steps: int | None = None  # fixed by --steps, or planned (and re-planned) by the time budget
    plan_step: int | None = None  # a time budget: the step where its current speed window began
    plan_elapsed_s: float = 0.0  # ... and the training time at that step
    reserve_s: float | None = None  # a time budget: one evaluation and one save, kept for the run's end; None
    # until the first plan timed them
    lr_factor: float = 1.0  # the NaN guard's cut of the learning rate
    nan_failures: int = 0  # non-finite steps in a row
    best_metric: float | None = None
    evals_since_best: int = 0
    elapsed_s: float = 0.0  # training time spent before this process
    tokens: int = 0
    stop_reason: str | None = None


class Trainer:
    """Trains ``task`` under ``config``, writing the run directory ``out``.

    ``out`` gets ``last/`` and ``best/`` checkpoints, ``metrics.jsonl``, ``plots/loss.png`` and
    ``config.json`` (the resolved configuration). ``resume=True`` continues from ``out/last``.
    """

    def __init__(self, task: TrainingTask, config: TrainConfig, out: str | Path, resume: bool = False,
                 console: Console | None = None, progress: bool = True,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        """``clock`` (seconds) times the budget, the speed and the logs; tests give a fake one."""
        config.validate()
        self.clock = clock
        if config.tensorboard:
            TensorBoard.require()  # before any work, not after the first steps
        self.task = task
        self.config = config
        self.out = Path(out)
        self.console = console or make_console()
        self.show_progress = progress
        self.device = torch.device(config.device)
        self.group = distributed.setup(self.device)  # rank 0 of 1 outside torchrun
        if not self.group.is_main:  # only rank 0 speaks and writes
            self.console, self.show_progress = make_console(quiet=True), False
        self.model = task.model  # unwrapped: state_dict, evaluation and clipping use it
        self.optimizer = torch.optim.AdamW(_param_groups(self.model, config.weight_decay), lr=config.lr)
        self.state = TrainState(total_steps=config.steps)
        self.carry: Carry = None
        self.metrics = MetricsLog(self.out / "metrics.jsonl") if self.group.is_main else distributed.NoLog()
        if resume:
            self._resume()
        elif checkpoint.recover(self.out / "last"):
            raise FileExistsError(f"{self.out} already holds a run (last/ exists): pass --resume to continue it, "
                                  "or choose another --out")
        else:  # a run killed before its first checkpoint left only log lines: this run replaces them
            self.metrics.truncate_after(-1)
        # the forward and backward of a step; under torchrun through DDP, which averages the gradients
        self._loss = (distributed.data_parallel(self.model, task.loss, self.group) if self.group.active
                      else task.loss)
        self._stop_requested = False

    # ------------------------------------------------------------------ the loop

    def fit(self, until: int | None = None) -> dict[str, Any]:
        """Train until the budget is spent (or early stopping); returns the final summary.

        ``until`` stops after that step as if interrupted there (``last/`` written), without
        touching the schedule: a resumed run continues as if nothing happened.
        """
        cfg, st = self.config, self.state
        if self.group.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        board = TensorBoard(self.out / "tensorboard") if cfg.tensorboard and self.group.is_main else None
        started = self.clock()
        budget_s = None if cfg.max_minutes is None else cfg.max_minutes * 60
        last_eval: dict | None = None
        last_save = self.clock()
        log_tokens, log_time, log_losses = 0, self.clock(), []
        self.model.train()
        previous_handler = self._catch_interrupt()
        bar = ProgressBar(self.console, st.total_steps, st.step, enabled=self.show_progress)
        try:
            with bar:
                while True:
                    elapsed = st.elapsed_s + self.clock() - started
                    if self.group.active:  # rank 0's clock and Ctrl-C decide, so every rank stops at the same step
                        elapsed, self._stop_requested = distributed.broadcast((elapsed, self._stop_requested),
                                                                              self.group)
                    if st.total_steps is not None and st.step >= st.total_steps:
                        st.stop_reason = st.stop_reason or "steps"
                        break
                    if budget_s is not None and elapsed >= budget_s:
                        st.stop_reason = "time"
                        if st.total_steps is None:  # spent before the calibration ended: these steps were the run
                            st.total_steps = st.step
                        break
                    if self._stop_requested or (until is not None and st.step >= until):
                        st.stop_reason = "interrupted"
                        break

                    loss, tokens = self._train_step()
                    st.step += 1
                    st.tokens += tokens
                    log_tokens += tokens
                    if loss is not None:
                        log_losses.append(loss)

                    if budget_s is not None:  # measure the speed over a window of steps, then (re-)plan
                        self._plan(budget_s, st.elapsed_s + self.clock() - started, bar)

                    if st.step % cfg.log_every == 0 or st.step == st.total_steps:
                        now = self.clock()
                        record = {"step": st.step, "loss": _mean(log_losses), "lr": self._lr(st.step - 1),
                                  "grad_norm": self._last_norm, "tokens_per_s": log_tokens / max(now - log_time, 1e-9),
                                  "elapsed_s": round(st.elapsed_s + now - started, 3)}
                        if cfg.log_grad_norms:
                            record.update(self._last_grad_norms)
                        self.metrics.write(record)
                        if board:
                            board.scalars(st.step, record, "train")
                        bar.update(st.step, record["loss"], record["tokens_per_s"])
                        log_tokens, log_time, log_losses = 0, now, []
                    else:
                        bar.update(st.step)

                    if st.step % cfg.eval_every == 0:
                        last_eval = self._evaluate(bar, board)
                        if self._early_stop():
                            st.stop_reason = "early stopping"
                        elif self._target_reached(last_eval["metrics"]):
                            st.stop_reason = f"reached {cfg.stop_when}"
                    due = st.step % cfg.checkpoint_every == 0
                    if cfg.checkpoint_minutes is not None and not due:  # rank 0's clock decides, for every rank
                        due = distributed.broadcast(self.clock() - last_save >= 60 * cfg.checkpoint_minutes,
                                                    self.group)
                    if due:
                        self._save("last", st.elapsed_s + self.clock() - started)
                        last_save = self.clock()
                    if st.stop_reason == "early stopping" or (st.stop_reason or "").startswith("reached "):
                        break
            if last_eval is None or last_eval["step"] != st.step:
                last_eval = self._evaluate(bar, board)
            st.elapsed_s += self.clock() - started
            started = self.clock()
            self._save("last", st.elapsed_s)
            self.metrics.write({"step": st.step, "event": "stop", "message": st.stop_reason})
        finally:
            signal.signal(signal.SIGINT, previous_handler) if previous_handler is not None else None
            self.metrics.close()
            if board:
                board.close()
        if self.group.is_main:
            self._plot()
        elif distributed.ending_workers_after_fit():
            raise distributed.WorkerFinished(f"rank {self.group.rank} done at step {st.step}")
        return {"step": st.step, "total_steps": st.total_steps, "stop_reason": st.stop_reason,
                "elapsed_s": st.elapsed_s, "tokens": st.tokens, "eval": last_eval["metrics"],
                "best_metric": st.best_metric}

    def _train_step(self) -> tuple[float | None, int]:
        """One optimizer step (or a skipped one): the loss, or None if it was not finite, and tokens."""
        cfg, st = self.config, self.state
        lr = self._lr(st.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = self._next_batch()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            loss, carry, tokens = self._loss(batch, self.carry)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])  # before clipping, as logged
        self._last_norm = float(norm)
        value = float(loss.detach())
        if self.group.active:  # the mean loss and the tokens of all ranks; a non-finite loss anywhere skips everywhere
            self._check_carry(carry)
            loss_sum, tokens_sum = distributed.sum_floats([value, tokens], self.group, self.device)
            value, tokens = loss_sum / self.group.world_size, int(tokens_sum)
        if cfg.log_grad_norms:  # before clipping, as grad_norm
            self._last_grad_norms = self._grad_norms()
        if math.isfinite(value) and math.isfinite(self._last_norm):
            if cfg.clip > 0:
                torch.nn.utils.clip_grads_with_norm_(params, cfg.clip, norm)
            self.optimizer.step()
            self.carry = detach_state(carry)
            st.nan_failures = 0
            return value, tokens
        self._skip_non_finite(value)
        return None, tokens

    def _next_batch(self) -> Any:
        """The stream's next batch; under torchrun this rank's share (see ``distributed``)."""
        if not self.group.active:
            return self.task.stream.next()
        shard = getattr(self.task, "shard", None)
        if shard is not None:  # every rank draws the same batch and keeps its part
            return shard(self.task.stream.next(), self.group.rank, self.group.world_size)
        batches = [self.task.stream.next() for _ in range(self.group.world_size)]  # the same on every rank
        return batches[self.group.rank]

    def _check_carry(self, carry: Carry) -> None:
        if carry is not None and getattr(self.task, "shard", None) is None:
            raise ValueError(f"task {self.task.name!r} carries state from one batch to the next (truncated BPTT), "
                             "but on several processes each rank trains on every N-th batch, which does not "
                             "continue the last one: give the task a shard(batch, rank, world_size) method that "
                             "splits each batch between the ranks, or train it in one process")

    def _skip_non_finite(self, loss: float) -> None:
        cfg, st = self.config, self.state
        bad = [name for name, p in self.model.named_parameters()
               if p.grad is not None and not torch.isfinite(p.grad).all()]
        layers = list(dict.fromkeys(parameter_layer(name) for name in bad))
        steps = self._non_finite_steps()
        self.optimizer.zero_grad(set_to_none=True)
        self.carry = None  # a state computed from the bad batch may itself be non-finite
        st.nan_failures += 1
        st.lr_factor *= cfg.nan_lr_factor
        where = (f"non-finite gradient in layer(s) {', '.join(layers)} ({', '.join(bad[:5])}"
                 + (" ..." if len(bad) > 5 else "") + ")") if bad else f"non-finite loss ({loss})"
        if steps is not None:
            first, last, total = steps
            where += (f", at time steps {first}-{last} of {total} (the backward pass, running from the last step, "
                      f"first met it at step {last})")
        message = (f"step {st.step + 1} skipped: {where}; learning rate now x{st.lr_factor:g} "
                   f"({st.nan_failures} non-finite step(s) in a row)")
        self.console.print(f"[yellow]{message}[/yellow]")
        self.metrics.write({"step": st.step + 1, "event": "non-finite", "message": message, "parameters": bad,
                            "layers": layers, "time_steps": None if steps is None else list(steps[:2])})
        if st.nan_failures >= cfg.nan_patience:
            raise TrainingDiverged(
                f"training diverged: {st.nan_failures} non-finite steps in a row (last: {where}). The last "
                f"finite checkpoint is in {self.out / 'last'}; try a lower --lr (now {cfg.lr}), a smaller --clip, "
                "or float32 instead of --bf16")

    def _time_gradients(self) -> Tensor | None:
        """The task's per-time-step gradient norms of the last batch, (T,), or None where it cannot tell."""
        time_gradients = getattr(self.task, "time_gradients", None)
        return None if time_gradients is None else time_gradients()

    def _grad_norms(self) -> dict:
        """``grad_norm_layers`` and, where the task can tell, ``grad_norm_time`` (see the module notes)."""
        squares: dict[str, float] = {}
        for name, p in self.model.named_parameters():
            if p.grad is not None:
                layer = parameter_layer(name)
                squares[layer] = squares.get(layer, 0.0) + float(p.grad.detach().float().pow(2).sum())
        record: dict[str, Any] = {"grad_norm_layers": {k: math.sqrt(v) for k, v in squares.items()}}
        norms = self._time_gradients()
        if norms is not None:
            record["grad_norm_time"] = time_buckets(norms, GRAD_TIME_BUCKETS)
        return record

    def _non_finite_steps(self) -> tuple[int, int, int] | None:
        """(first, last, T): the span of time steps whose gradient is not finite, or None."""
        norms = self._time_gradients()
        if norms is None:
            return None
        bad = (~torch.isfinite(norms)).nonzero().flatten()
        if bad.numel() == 0:
            return None
        return int(bad[0]), int(bad[-1]), int(norms.numel())

    def _lr(self, step: int) -> float:
        cfg = self.config
        return lr_at(step, self.state.total_steps, cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio) * self.state.lr_factor

    def _plan(self, budget_s: float, elapsed: float, bar: ProgressBar) -> None:
        """A time budget's plan of ``total_steps``, made once its speed window is long enough.

        The window opens at step 2 (step 1 pays one-time costs: extension builds, allocations) and
        after each plan; it is long enough after ``calibration_steps`` steps and 3% of the budget. Then

            s = (elapsed - plan_elapsed_s) / (step - plan_step)       seconds per step over the window
            total = step + PLAN_MARGIN (budget_s - elapsed - reserve_s) / s, at most --steps

        The first plan also times one evaluation and one save (``reserve_s``: the run's last ones);
        later windows hold the evaluations and saves that fell in them.
        """
        cfg, st = self.config, self.state
        if st.plan_step is None:
            if st.step >= 2:
                st.plan_step, st.plan_elapsed_s = st.step, elapsed
            return
        if st.step - st.plan_step < cfg.calibration_steps:  # the same on every rank: no need to ask rank 0
            return
        window_s = elapsed - st.plan_elapsed_s
        if not distributed.broadcast(window_s >= CALIBRATION_FRACTION * budget_s, self.group):  # rank 0's clock
            return
        step_s = window_s / (st.step - st.plan_step)
        first = st.reserve_s is None
        if first:
            t0 = self.clock()
            self._evaluate(bar, None)  # its cost is part of the plan (and it is a useful early reading)
            eval_s = self.clock() - t0
            self._save("last", elapsed + self.clock() - t0)
            st.reserve_s = self.clock() - t0
            elapsed += st.reserve_s
        left = budget_s - elapsed - st.reserve_s
        total = st.step + max(1, int(PLAN_MARGIN * left / step_s))
        if cfg.steps is not None:
            total = min(total, cfg.steps)
        total = distributed.broadcast(total, self.group)  # rank 0's clock: the same schedule on every rank
        if first:
            bar.print(f"time budget {cfg.max_minutes:g} min: {step_s * 1e3:.0f} ms/step, evaluation {eval_s:.1f} s "
                      f"-> {total} steps")
        if total != st.total_steps:
            self.metrics.write({"step": st.step, "event": "budget", "message": f"planned total_steps={total}",
                                "step_s": step_s, "elapsed_s": round(elapsed, 3)})
            bar.set_total(total)
        st.total_steps, st.plan_step, st.plan_elapsed_s = total, st.step, elapsed

    # ------------------------------------------------------------------ evaluation and checkpoints

    def _evaluate(self, bar: ProgressBar, board: TensorBoard | None) -> dict:
        st = self.state
        self.model.eval()
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16):
            metrics = self.task.evaluate()
        self.model.train()
        metrics = distributed.broadcast(metrics, self.group)  # rank 0's reading picks best/ and stops, on every rank
        value = metrics[self.task.metric]
        better = st.best_metric is None or (value > st.best_metric if self.task.higher_is_better
                                            else value < st.best_metric)
        if better and math.isfinite(value):
            st.best_metric = value
            st.evals_since_best = 0
        else:
            st.evals_since_best += 1
        self.metrics.write({"step": st.step, "eval": metrics})
        if board:
            board.scalars(st.step, metrics, "eval")
        shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        bar.print(f"step {st.step}: {shown}" + (" (best)" if st.evals_since_best == 0 else ""))
        if st.evals_since_best == 0:
            self._save("best", st.elapsed_s)
        return {"step": st.step, "metrics": metrics}

    def _target_reached(self, metrics: dict) -> bool:
        """``stop_when`` holds for this evaluation's ``metrics`` (never, without one)."""
        if self.config.stop_when is None:
            return False
        name, op, value = parse_stop_when(self.config.stop_when)
        if name not in metrics:
            raise ValueError(f"stop_when names the metric {name!r}, but this task's evaluation reports "
                             f"{', '.join(metrics)}")
        return STOP_OPERATORS[op](metrics[name], value)

    def _early_stop(self) -> bool:
        return self.config.patience > 0 and self.state.evals_since_best >= self.config.patience

    def _save(self, name: str, elapsed_s: float) -> None:
        """Write ``out/name`` (rank 0; the other ranks wait until it is written)."""
        carries = distributed.gather(_carry_to_tensors(self.carry), self.group)  # each rank's own state
        if self.group.is_main:
            self._write_checkpoint(name, elapsed_s, carries[1:])
        distributed.barrier(self.group)

    def _write_checkpoint(self, name: str, elapsed_s: float, other_carries: list[tuple[dict, dict]]) -> None:
        """Write ``out/name`` atomically with everything the next step depends on."""
        st = self.state
        task_config, vocab = self.task.describe()
        rng_meta, rng_tensors = checkpoint.capture_rng()
        stream_meta, stream_tensors = self.task.stream.state()
        carry_meta, carry_tensors = _carry_to_tensors(self.carry)
        trainer_meta = {**asdict(st), "elapsed_s": elapsed_s, "rng": rng_meta, "stream": stream_meta,
                        "carry": carry_meta}
        tensors = {**{f"rng.{k}": v for k, v in rng_tensors.items()},
                   **{f"stream.{k}": v for k, v in stream_tensors.items()},
                   **{f"carry.{k}": v for k, v in carry_tensors.items()}}
        if other_carries:  # under torchrun: ranks 1.. carry their own state
            trainer_meta["carry_ranks"] = [meta for meta, _ in other_carries]
            for rank, (_, parts) in enumerate(other_carries, start=1):
                tensors.update({f"carry_rank{rank}.{k}": v for k, v in parts.items()})
        config = {"task": self.task.name, **task_config, "train": asdict(self.config)}
        checkpoint.save(self.out / name, checkpoint.Checkpoint(
            model=self.model.state_dict(), optimizer=self.optimizer.state_dict(), config=config, vocab=vocab,
            trainer=trainer_meta, trainer_tensors=tensors))

    def _resume(self) -> None:
        last = self.out / "last"
        if not checkpoint.recover(last):  # a kill between a save's two renames left .last.old-PID
            raise FileNotFoundError(f"--resume: {self.out} has no last/ checkpoint to continue from")
        ckpt = checkpoint.load(last, map_location=self.device)
        task_config, _ = self.task.describe()
        saved = {k: v for k, v in ckpt.config.items() if k not in ("train", "format_version", "rnnkit_version")}
        if saved.get("task") != self.task.name:
            raise checkpoint.CheckpointError(f"{last} is a {saved.get('task')!r} run, not {self.task.name!r}")
        # A setting the run's config.json lacks was added to rnnkit after the run began: its default, which a new
        # setting must choose to keep the old behaviour, is what the run used.
        added = sorted(k for k in task_config if k not in saved)
        if added:
            self.console.print(f"--resume: {self.out} predates the setting(s) {', '.join(added)}; continuing with "
                               f"{', '.join(f'{k}={task_config[k]!r}' for k in added)}")
        different = {k: (saved[k], v) for k, v in task_config.items() if k in saved and saved[k] != v}
        if different:
            shown = ", ".join(f"{k}: {a!r} in the run, {b!r} now" for k, (a, b) in different.items())
            raise checkpoint.CheckpointError(f"--resume: the model settings differ from the run in {self.out} "
                                             f"({shown}); resume with the run's settings")
        self.model.load_state_dict(ckpt.model)
        self.optimizer.load_state_dict(ckpt.optimizer)
        meta = dict(ckpt.trainer)
        rng_meta, stream_meta, carry_meta = meta.pop("rng"), meta.pop("stream"), meta.pop("carry")
        carry_ranks = meta.pop("carry_ranks", [])  # ranks 1.. of a run under torchrun
        self.state = TrainState(**meta)
        if self.config.steps is not None and self.config.steps != ckpt.config.get("train", {}).get("steps"):
            self.state.total_steps = self.config.steps  # another --steps than the run's extends (or shortens) it
        self.state.stop_reason = None
        group = _split(ckpt.trainer_tensors)
        checkpoint.restore_rng(rng_meta, group.get("rng", {}))
        self.task.stream.load_state(stream_meta, group.get("stream", {}))
        carries = [(carry_meta, group.get("carry", {}))] + [(m, group.get(f"carry_rank{r}", {}))
                                                            for r, m in enumerate(carry_ranks, start=1)]
        if len(carries) != self.group.world_size and any(m["kind"] != "none" for m, _ in carries):
            raise checkpoint.CheckpointError(f"--resume: {last} carries the state of {len(carries)} process(es), "
                                             f"but this run has {self.group.world_size}; resume with "
                                             f"--nproc-per-node {len(carries)} (in all)")
        carry_meta, carry_tensors = carries[self.group.rank] if self.group.rank < len(carries) else ({"kind": "none"},
                                                                                                    {})
        self.carry = _carry_from_tensors(carry_meta, carry_tensors, self.device)
        self.metrics.truncate_after(self.state.step)

    def _plot(self) -> None:
        from ..plots import loss_curve

        path = self.out / "metrics.jsonl"
        if path.exists():
            loss_curve(read_metrics(path), self.out / "plots" / "loss.png", title=f"{self.task.name} training")

    def _catch_interrupt(self):
        """Ctrl-C asks the loop to stop after the current step (and write last/); a second one aborts."""
        def handler(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            self.console.print("[yellow]stopping after this step (Ctrl-C again to abort without saving)[/yellow]")
        try:
            return signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: leave signals alone
            return None

    _last_norm: float = float("nan")
    _last_grad_norms: dict = {}


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices and embeddings (dim >= 2) only, the usual AdamW practice."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def parameter_layer(name: str) -> str:
    """The layer a parameter belongs to, by torch's names: ``rnn.weight_hh_l1`` -> ``rnn.l1``,
    ``rnn.weight_ih_l0_reverse`` -> ``rnn.l0_reverse``; otherwise its module: ``head.weight`` -> ``head``."""
    module, _, leaf = name.rpartition(".")
    match = _LAYER_SUFFIX.search(leaf)
    if match is None:
        return module or leaf
    return f"{module + '.' if module else ''}l{match['layer']}{match['reverse'] or ''}"


def time_buckets(norms: Tensor, buckets: int) -> dict[str, float]:
    """Per-step norms (T,) summed in quadrature over at most ``buckets`` contiguous spans: {"first-last": norm}."""
    norms = norms.detach().double().cpu()
    out = {}
    for span in torch.arange(norms.numel()).tensor_split(min(buckets, norms.numel())):
        out[f"{int(span[0])}-{int(span[-1])}"] = float(norms[span].pow(2).sum().sqrt())
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _split(tensors: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """{"rng.torch": t, ...} -> {"rng": {"torch": t}, ...}."""
    groups: dict[str, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        prefix, _, rest = key.partition(".")
        groups.setdefault(prefix, {})[rest] = value
    return groups


def _carry_to_tensors(carry: Carry) -> tuple[dict, dict[str, Tensor]]:
    """The carried TBPTT state as named tensors and its structure as JSON."""
    if carry is None:
        return {"kind": "none"}, {}
    if isinstance(carry, Tensor):
        return {"kind": "tensor"}, {"state": carry}
    if isinstance(carry, LSTMState):
        return {"kind": "lstm"}, {"h": carry.h, "c": carry.c}
    if isinstance(carry, tuple):
        metas, tensors = [], {}
        for i, part in enumerate(carry):
            meta, parts = _carry_to_tensors(part)
            metas.append(meta)
            tensors.update({f"{i}.{k}": v for k, v in parts.items()})
        return {"kind": "tuple", "parts": metas}, tensors
    raise TypeError(f"cannot checkpoint a carried state of type {type(carry).__name__}")


def _carry_from_tensors(meta: dict, tensors: dict[str, Tensor], device: torch.device) -> Carry:
    kind = meta["kind"]
    if kind == "none":
        return None
    if kind == "tensor":
        return tensors["state"].to(device)
    if kind == "lstm":
        return LSTMState(tensors["h"].to(device), tensors["c"].to(device))
    parts = []
    for i, part in enumerate(meta["parts"]):
        prefix = f"{i}."
        parts.append(_carry_from_tensors(part, {k[len(prefix):]: v for k, v in tensors.items()
                                                if k.startswith(prefix)}, device))
    return tuple(parts)
