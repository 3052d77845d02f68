"""The next-frame task: baselines computed by hand, stepping equals the teacher-forced pass, a short training
run whose loss falls, evaluate --json and the rollout strip, and clear errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit.cli import main
from rnnkit.data import moving_digits as md
from rnnkit.tasks.nextframe import FrameForecaster, NextFrameConfig, check_clips, scores, train
from rnnkit.train.trainer import TrainConfig

pytest.importorskip("sklearn")

TINY = dict(hidden_channels=4, channels=8, dev_size=4, test_size=4, batch_size=4)


def test_stepping_equals_the_teacher_forced_pass():
    torch.manual_seed(0)
    model = FrameForecaster(NextFrameConfig(**TINY)).eval()
    clips = md.bouncing_clips(2, 0, "train", 10)
    with torch.no_grad():
        logits = model(clips)  # (2, 10, 32, 32)
        state = None
        for t in range(10):
            step_logits, state = model.step(clips[:, t], state)
            torch.testing.assert_close(step_logits, logits[:, t], rtol=1e-4, atol=1e-5)
        # the rollout's first prediction is the one-step prediction after the frames it read
        torch.testing.assert_close(model.rollout(clips[:, :5], 3)[:, 0], logits[:, 4].sigmoid(), rtol=1e-4,
                                   atol=1e-5)


def test_baselines_by_hand():
    torch.manual_seed(0)
    model = FrameForecaster(NextFrameConfig(**TINY))
    model.mean_image.fill_(0.25)
    clips = md.bouncing_clips(3, 1, "test", 10)
    got = scores(model, clips, batch_size=2)
    copy_last = ((clips[:, 1:-1] - clips[:, 2:]) ** 2).mean()  # targets 2..9, predicted by frames 1..8
    mean_image = ((clips[:, 2:] - 0.25) ** 2).mean()
    rollout_copy = ((clips[:, 4:5] - clips[:, 5:10]) ** 2).mean()
    assert got["n"] == 3
    assert got["copy_last_mse"] == pytest.approx(float(copy_last), rel=1e-5)
    assert got["mean_image_mse"] == pytest.approx(float(mean_image), rel=1e-5)
    assert got["rollout_copy_last_mse"] == pytest.approx(float(rollout_copy), rel=1e-5)
    assert got["rollout_mean_image_mse"] == pytest.approx(float(((clips[:, 5:10] - 0.25) ** 2).mean()), rel=1e-5)
    with torch.no_grad():
        predicted = model(clips).sigmoid()[:, 1:-1]
    assert got["mse"] == pytest.approx(float(((predicted - clips[:, 2:]) ** 2).mean()), rel=1e-4)


def test_feedback_training_feeds_predictions_back():
    from rnnkit.tasks.nextframe import NextFrameTask

    torch.manual_seed(0)
    clips = md.bouncing_clips(2, 0, "train", 10)
    task = NextFrameTask(NextFrameConfig(**{**TINY, "feedback_steps": 0}), 0, torch.device("cpu"))
    forced = task.loss(clips, None)[0]
    task.config = NextFrameConfig(**{**TINY, "feedback_steps": 4})
    fed = task.loss(clips, None)[0]
    fed.backward()  # gradients flow through the fed-back predictions
    assert torch.isfinite(fed) and fed.item() != pytest.approx(forced.item(), rel=1e-4)
    task.config = NextFrameConfig(**{**TINY, "feedback_steps": 0})
    # causal: the prediction at t reads frames 0..t only, so a shorter clip gives the same first predictions
    with torch.no_grad():
        torch.testing.assert_close(task.model(clips)[:, :4], task.model(clips[:, :5])[:, :4], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("nextframe") / "run"
    summary = train(NextFrameConfig(**TINY), TrainConfig(steps=30, lr=1e-2, warmup_steps=2, eval_every=30,
                                                         log_every=5, checkpoint_every=30), out, progress=False)
    return out, summary


def test_training_loss_falls_and_writes_the_strip(run):
    out, summary = run
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
              if "loss" in r and "eval" not in r]
    assert len(losses) >= 5 and np.mean(losses[-2:]) < 0.8 * losses[0]
    assert (out / "plots" / "rollout.png").stat().st_size > 1000
    assert summary["test"]["n"] == 4


def test_evaluate_json_has_the_design_keys(run, capsys, tmp_path):
    out, _ = run
    png = tmp_path / "strip.png"
    assert main(["nextframe", "evaluate", "--checkpoint", str(out), "--n", "3", "--json", "--plot", str(png)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"task", "split", "n", "mse", "copy_last_mse", "mean_image_mse", "rollout_mse"} <= set(result)
    assert result["task"] == "nextframe" and result["n"] == 3 and png.exists()


def test_predict_rolls_out(run):
    out, _ = run
    model = rnnkit.load(out)
    future = model.predict(md.bouncing_clips(2, 0, "test", 6), ahead=4)
    assert future.shape == (2, 4, 32, 32) and 0 <= float(future.min()) <= float(future.max()) <= 1
    with pytest.raises(ValueError, match="ahead"):
        model.predict(md.bouncing_clips(1, 0, "test", 6), ahead=0)


@pytest.mark.parametrize("clips,message", [
    (torch.rand(2, 10, 16, 16), r"\(N, T, 32, 32\)"),
    (torch.rand(2, 2, 32, 32), "T >= 3"),
    (torch.rand(2, 10, 32, 32) + 1, r"float in \[0, 1\]"),
    (np.zeros((2, 10, 32, 32)), "must be a tensor"),
])
def test_bad_clips_are_named(clips, message):
    with pytest.raises(ValueError, match=message):
        check_clips(clips)


@pytest.mark.parametrize("field,value,message", [
    ("cell", "lstm", "cell must be one of"),
    ("length", 8, "length must be an int >= 10"),
    ("kernel_size", 2, "kernel_size"),
    ("channels", 6, "multiple of 4"),
    ("feedback_steps", 9, "feedback_steps"),
])
def test_bad_config_is_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        NextFrameConfig(**{field: value}).validate()
