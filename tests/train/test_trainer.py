"""The Trainer: exact resume, the NaN guard, budgets, early stopping, what a run directory holds."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from rnnkit.data import bundled_text
from rnnkit.tasks.lm import LMConfig, LMTask, build_corpus
from rnnkit.train import checkpoint
from rnnkit.train.report import read_metrics
from rnnkit.train.schedule import lr_at
from rnnkit.train.trainer import TrainConfig, Trainer, TrainingDiverged, seed_everything


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "plays.txt"
    path.write_text(bundled_text()[:40_000])
    return path


def lm_task(text_file, seed=0, **overrides):
    settings = {"data": str(text_file), "hidden_size": 24, "embedding_size": 8, "batch_size": 4, "bptt": 12,
                "num_layers": 2, "input_dropout": 0.1, "hidden_dropout": 0.1, "zoneout": 0.1, "weight_drop": 0.2,
                "dropout": 0.1, **overrides}
    config = LMConfig(**settings)
    seed_everything(seed)
    return LMTask(config, build_corpus(config), seed, torch.device("cpu"))


def quick(**overrides) -> TrainConfig:
    settings = {"steps": 8, "log_every": 1, "eval_every": 4, "checkpoint_every": 4, "warmup_steps": 2, "lr": 1e-2}
    return TrainConfig(**{**settings, **overrides})


def test_resume_continues_bit_identically(text_file, tmp_path):
    straight = Trainer(lm_task(text_file), quick(), tmp_path / "a", progress=False)
    straight.fit()
    first = Trainer(lm_task(text_file), quick(), tmp_path / "b", progress=False)
    first.fit(until=4)
    assert checkpoint.load(tmp_path / "b" / "last").trainer["step"] == 4
    resumed = Trainer(lm_task(text_file, seed=0), quick(), tmp_path / "b", resume=True, progress=False)
    resumed.fit()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    opt_a, opt_b = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for key in opt_a:
        for name in opt_a[key]:
            assert torch.equal(opt_a[key][name], opt_b[key][name]), (key, name)

    def losses(run):
        return [r["loss"] for r in read_metrics(tmp_path / run / "metrics.jsonl") if "loss" in r]

    assert losses("a") == losses("b")  # steps 5-8 of the resumed run, and the first 4 kept once
    # and the batch after the budget: the same loss from the same carried state and stream position
    # (one process holds both runs, so each draws its dropout masks from the same seed)
    torch.manual_seed(1)
    next_a = straight._train_step()[0]
    torch.manual_seed(1)
    assert resumed._train_step()[0] == next_a


def test_run_directory_holds_checkpoints_metrics_and_plot(text_file, tmp_path):
    summary = Trainer(lm_task(text_file), quick(), tmp_path, progress=False).fit()
    for name in ("last/model.safetensors", "last/optimizer.safetensors", "last/config.json", "last/vocab.json",
                 "last/trainer.json", "best/model.safetensors", "metrics.jsonl", "plots/loss.png"):
        assert (tmp_path / name).exists(), name
    config = json.loads((tmp_path / "last" / "config.json").read_text())
    assert config["task"] == "lm" and config["cell"] == "lstm" and config["train"]["steps"] == 8
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 9))
    assert all(math.isfinite(r["grad_norm"]) for r in records if "loss" in r)
    assert summary["step"] == 8 and summary["stop_reason"] == "steps"


def test_an_existing_run_is_not_overwritten(text_file, tmp_path):
    Trainer(lm_task(text_file), quick(steps=2), tmp_path, progress=False).fit()
    with pytest.raises(FileExistsError, match="pass --resume"):
        Trainer(lm_task(text_file), quick(steps=2), tmp_path, progress=False)


def test_resume_with_other_model_settings_is_refused(text_file, tmp_path):
    Trainer(lm_task(text_file), quick(steps=2), tmp_path, progress=False).fit()
    with pytest.raises(checkpoint.CheckpointError, match="hidden_size: 24 in the run, 32 now"):
        Trainer(lm_task(text_file, hidden_size=32), quick(steps=4), tmp_path, resume=True, progress=False)


def test_resume_of_a_run_that_predates_a_setting_takes_its_default(text_file, tmp_path, capsys):
    Trainer(lm_task(text_file), quick(steps=2), tmp_path, progress=False).fit()
    path = tmp_path / "last" / "config.json"
    config = json.loads(path.read_text())
    del config["zoneout"]  # as if the run began before zoneout existed
    path.write_text(json.dumps(config))
    Trainer(lm_task(text_file), quick(steps=4), tmp_path, resume=True, progress=False).fit()
    # the message begins with the run directory, whose length is pytest's: compare the words after it, not where
    # the lines break (that output to a pipe is never wrapped is tests/test_console.py's to check)
    printed = " ".join(capsys.readouterr().out.split())
    assert "predates the setting(s) zoneout; continuing with zoneout=0.1" in printed


def test_stop_when_stops_at_the_first_evaluation_that_meets_it(text_file, tmp_path):
    summary = Trainer(lm_task(text_file), quick(steps=40, stop_when="nats_per_char<99"), tmp_path,
                      progress=False).fit()
    assert (summary["step"], summary["stop_reason"]) == (4, "reached nats_per_char<99")  # the first evaluation


@pytest.mark.parametrize("text,message", [("accuracy=0.9", "METRIC OP VALUE"), ("acc>=x", "METRIC OP VALUE"),
                                          (">=0.5", "METRIC OP VALUE")])
def test_stop_when_must_be_metric_op_value(text, message):
    with pytest.raises(ValueError, match=message):
        quick(stop_when=text).validate()


def test_stop_when_names_a_metric_the_task_reports(text_file, tmp_path):
    with pytest.raises(ValueError, match="stop_when names the metric 'accuracy', but this task's evaluation"):
        Trainer(lm_task(text_file), quick(stop_when="accuracy>0.5"), tmp_path, progress=False).fit()


def test_time_budget_fixes_the_step_count_and_a_resumed_run_keeps_it(text_file, tmp_path):
    # on FakeClock (below) each step costs 0.25 s, so the 3-second budget plans 12 steps on any machine, however
    # busy (on the wall clock a loaded machine ran only 2 steps in it)
    clock = FakeClock()
    task = lm_task(text_file)
    loss = task.loss

    def timed_loss(batch, carry):
        clock.now += 0.25
        return loss(batch, carry)

    task.loss = timed_loss
    config = quick(steps=None, max_minutes=0.05, calibration_steps=3, eval_every=1000, checkpoint_every=1000)
    summary = Trainer(task, config, tmp_path, progress=False, clock=clock).fit()
    assert summary["total_steps"] is not None and summary["total_steps"] > 3
    stored = checkpoint.load(tmp_path / "last").trainer["total_steps"]
    assert stored == summary["total_steps"]
    resumed = Trainer(lm_task(text_file), config, tmp_path, resume=True, progress=False)
    assert resumed.state.total_steps == stored


class FakeClock:
    """Seconds that pass only when a test says: each training step costs what ``step_cost(step)`` returns."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def slow_start_run(text_file, out, clock, resume=False):
    """A 9-second budget whose first 15 steps take 0.25 s each and every later one 0.125 s (binary fractions,
    so the elapsed times of a resumed run add up to the same floats as an uninterrupted run's)."""
    task = lm_task(text_file, num_layers=1, dropout=0.0, input_dropout=0.0, hidden_dropout=0.0, zoneout=0.0,
                   weight_drop=0.0)
    loss = task.loss

    def timed_loss(batch, carry):
        clock.now += 0.25 if trainer.state.step < 15 else 0.125
        return loss(batch, carry)

    task.loss = timed_loss
    config = quick(steps=None, max_minutes=0.15, calibration_steps=10, eval_every=1000, checkpoint_every=1000)
    trainer = Trainer(task, config, out, resume=resume, progress=False, clock=clock)
    return trainer


def test_a_slow_start_is_re_planned_and_the_run_uses_its_time_budget(text_file, tmp_path):
    # planned once, at the first window's 0.25 s/step, the run would stop after 35 steps and 6.25 of its 9 s
    summary = slow_start_run(text_file, tmp_path, FakeClock()).fit()
    assert summary["stop_reason"] == "steps"  # its plan ended it, not the clock cutting the cosine short
    assert 0.95 * 9 <= summary["elapsed_s"] <= 9, summary
    plans = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r.get("event") == "budget"]
    assert len(plans) > 2 and plans[-1]["message"] == f"planned total_steps={summary['step']}"


def test_a_resumed_run_keeps_the_plan_and_writes_the_same_metrics(text_file, tmp_path):
    slow_start_run(text_file, tmp_path / "a", FakeClock()).fit()
    straight = read_metrics(tmp_path / "a" / "metrics.jsonl")
    replans = [r["step"] for r in straight if r.get("event") == "budget"]
    stop = replans[1] + 5  # after the first re-plan, where the run logs its loss and nothing else
    assert [r for r in straight if r["step"] == stop and "loss" not in r] == []
    slow_start_run(text_file, tmp_path / "b", FakeClock()).fit(until=stop)
    slow_start_run(text_file, tmp_path / "b", FakeClock(), resume=True).fit()
    resumed = read_metrics(tmp_path / "b" / "metrics.jsonl")
    # what differs: the interrupted run evaluated at its last step and logged why it stopped, as any stop does
    at_stop = [r for r in resumed if r["step"] == stop and "loss" not in r]
    assert [("eval" in r or r.get("event")) for r in at_stop] == [True, "stop"]
    assert [r for r in resumed if r not in at_stop] == straight


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    assert lr_at(0, 100, 1.0, 10, 0.1) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10, 0.1) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, 10, 0.1) == pytest.approx(1.0)
    assert lr_at(55, 100, 1.0, 10, 0.1) == pytest.approx(0.55)
    assert lr_at(100, 100, 1.0, 10, 0.1) == pytest.approx(0.1)
    assert lr_at(50, None, 1.0, 10, 0.1) == 1.0


@dataclass
class _Stream:
    i: int = 0

    def next(self):
        self.i += 1
        return self.i

    def state(self):
        return {"i": self.i}, {}

    def load_state(self, meta, tensors):
        self.i = meta["i"]


class _NaNTask:
    """A linear model whose loss is NaN through parameter ``b`` on the batches listed."""

    name = "toy"
    metric = "loss"
    higher_is_better = False

    def __init__(self, bad_batches, evals=None):
        torch.manual_seed(0)
        self.model = nn.ModuleDict({"a": nn.Linear(3, 1), "b": nn.Linear(3, 1)})
        self.stream = _Stream()
        self.bad = set(bad_batches)
        self.evals = list(evals or [])

    def loss(self, batch, carry):
        x = torch.ones(2, 3)
        loss = (self.model["a"](x) ** 2).mean()
        scale = float("nan") if batch in self.bad else 1.0
        return loss + scale * self.model["b"](x).mean() ** 2, None, 2

    def evaluate(self):
        return {"loss": self.evals.pop(0) if self.evals else 1.0}

    def describe(self):
        return {"kind": "toy"}, None


def test_nan_guard_skips_the_step_names_the_parameter_and_lowers_the_lr(tmp_path):
    task = _NaNTask(bad_batches=[3])
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    trainer = Trainer(task, quick(steps=5, eval_every=100, checkpoint_every=100), tmp_path, progress=False)
    trainer.fit(until=3)
    events = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r.get("event") == "non-finite"]
    assert len(events) == 1 and events[0]["step"] == 3
    assert "b.weight" in events[0]["message"] and "a.weight" not in events[0]["parameters"]
    assert trainer.state.lr_factor == 0.5 and trainer.state.nan_failures == 1
    assert all(torch.isfinite(p).all() for p in task.model.parameters())
    assert not torch.equal(before["a.weight"], task.model["a"].weight)  # steps 1 and 2 ran


def test_nan_guard_stops_after_k_in_a_row_and_keeps_a_finite_checkpoint(tmp_path):
    task = _NaNTask(bad_batches=range(3, 100))
    trainer = Trainer(task, quick(steps=50, checkpoint_every=2, eval_every=100, nan_patience=3), tmp_path,
                      progress=False)
    with pytest.raises(TrainingDiverged, match="3 non-finite steps in a row .*b.weight"):
        trainer.fit()
    saved = checkpoint.load(tmp_path / "last")
    assert all(torch.isfinite(t).all() for t in saved.model.values())


def test_early_stopping_after_patience_evaluations_without_improvement(tmp_path):
    task = _NaNTask(bad_batches=[], evals=[1.0, 0.5, 0.6, 0.7, 0.8])
    summary = Trainer(task, quick(steps=100, eval_every=1, patience=2), tmp_path, progress=False).fit()
    assert summary["stop_reason"] == "early stopping" and summary["step"] == 4
    assert summary["best_metric"] == 0.5


def test_bad_budgets_are_refused():
    with pytest.raises(ValueError, match="give a budget"):
        TrainConfig().validate()
    with pytest.raises(ValueError, match="steps must be a positive int"):
        TrainConfig(steps=0).validate()


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed: importing it raises
    with pytest.raises(ImportError, match="pip install tensorboard"):
        Trainer(_NaNTask(bad_batches=[]), quick(steps=2, tensorboard=True), tmp_path, progress=False)
    assert not (tmp_path / "metrics.jsonl").exists()  # refused before any work


def test_tensorboard_scalars_read_back_equal_metrics_jsonl(text_file, tmp_path):
    """The event file holds train/ scalars at every log step and eval/ scalars at every evaluation, with the values
    of metrics.jsonl (float32 in the event file). Fails if the writer drops, renames or misplaces a scalar."""
    pytest.importorskip("tensorboard", reason="tensorboard is in the dev extra: pip install -e '.[dev]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    Trainer(lm_task(text_file), quick(log_every=2, tensorboard=True), tmp_path, progress=False).fit()
    records = read_metrics(tmp_path / "metrics.jsonl")
    logged = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval" in r]
    assert [r["step"] for r in logged] == [2, 4, 6, 8] and [r["step"] for r in evals] == [4, 8]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()

    def series(tag):
        return [(e.step, e.value) for e in events.Scalars(tag)]

    for name in ("loss", "lr", "grad_norm", "tokens_per_s"):
        assert series(f"train/{name}") == [(r["step"], pytest.approx(r[name], rel=1e-6)) for r in logged], name
    for name in evals[0]["eval"]:
        assert series(f"eval/{name}") == [(r["step"], pytest.approx(r["eval"][name], rel=1e-6)) for r in evals], name
    assert "eval/nats_per_char" in events.Tags()["scalars"] and "train/step" not in events.Tags()["scalars"]
