"""The Trainer's gradient logging (``log_grad_norms``) and the NaN guard's report of the layer and
the time steps where the gradient stopped being finite."""

from __future__ import annotations

import json

import pytest
import torch

from rnnkit.tasks.lab import LabConfig, LabTask
from rnnkit.train.trainer import TrainConfig, Trainer, TrainingDiverged, parameter_layer, time_buckets


def small_task(problem: str = "copy") -> LabTask:
    torch.manual_seed(0)
    return LabTask(problem, LabConfig(length=5, cell="gru", hidden_size=6, num_layers=2, batch_size=4, test_size=8),
                   seed=0, device=torch.device("cpu"))


def records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name,layer", [("rnn.weight_hh_l1", "rnn.l1"), ("rnn.bias_ih_l0_reverse", "rnn.l0_reverse"),
                                        ("head.weight", "head"), ("rnn.weight_peephole_l0", "rnn.l0"),
                                        ("scale", "scale")])
def test_parameter_layer(name, layer):
    assert parameter_layer(name) == layer


def test_time_buckets_sum_in_quadrature():
    buckets = time_buckets(torch.tensor([3.0, 4.0, 0.0, 1.0, 2.0]), 2)
    assert list(buckets) == ["0-2", "3-4"]
    assert buckets["0-2"] == pytest.approx(5.0) and buckets["3-4"] == pytest.approx(5**0.5)
    assert list(time_buckets(torch.ones(3), 10)) == ["0-0", "1-1", "2-2"]


def test_gradient_logging_writes_layers_and_time_buckets(tmp_path):
    task = small_task()
    Trainer(task, TrainConfig(steps=4, log_every=2, eval_every=4, log_grad_norms=True), tmp_path / "on",
            progress=False).fit()
    logged = [r for r in records(tmp_path / "on") if "loss" in r]
    assert len(logged) == 2
    for r in logged:
        assert set(r["grad_norm_layers"]) == {"rnn.l0", "rnn.l1", "head"}
        total = sum(v**2 for v in r["grad_norm_layers"].values()) ** 0.5
        assert total == pytest.approx(r["grad_norm"], rel=1e-4)  # the layers partition the parameters
        assert len(r["grad_norm_time"]) == 10 and list(r["grad_norm_time"])[-1] == "23-24"  # copy: T + 20 steps
        assert all(v >= 0 for v in r["grad_norm_time"].values())


def test_gradient_logging_is_off_by_default(tmp_path):
    Trainer(small_task(), TrainConfig(steps=2, log_every=1, eval_every=2), tmp_path / "off", progress=False).fit()
    assert not any("grad_norm_layers" in r or "grad_norm_time" in r for r in records(tmp_path / "off"))


class _PoisonEarlySteps(torch.autograd.Function):
    """Identity forward; backward makes the gradient of the steps before ``until`` NaN."""

    @staticmethod
    def forward(ctx, out, until):
        ctx.until = until
        return out.clone()

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        grad[: ctx.until] = float("nan")
        return grad, None


def test_nan_guard_names_the_layer_and_the_time_steps(tmp_path):
    task = small_task()
    model = task.model

    def poisoned_forward(x, lengths=None):
        out, state = model.rnn(x, lengths=lengths)  # (S, N, H)
        return model.head(_PoisonEarlySteps.apply(out, 3))  # NaN flows into the rnn, not into the head

    model.forward = poisoned_forward
    with pytest.raises(TrainingDiverged, match=r"layer\(s\) rnn.l0, rnn.l1 .*time steps 0-2 of 25"):
        Trainer(task, TrainConfig(steps=5, nan_patience=2), tmp_path / "nan", progress=False).fit()
    events = [r for r in records(tmp_path / "nan") if r.get("event") == "non-finite"]
    assert events[0]["layers"] == ["rnn.l0", "rnn.l1"] and events[0]["time_steps"] == [0, 2]
    assert "first met it at step 2" in events[0]["message"]
