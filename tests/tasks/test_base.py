"""The training and loading skeletons every task shares (rnnkit.tasks.base)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import pytest
import torch
from rich.console import Console
from torch import nn

from rnnkit.tasks.base import (
    Trained,
    begin,
    config_from,
    finished,
    fit,
    load_weights,
    open_checkpoint,
    scores_training_split,
    write_report,
)
from rnnkit.train import checkpoint
from rnnkit.train.trainer import TrainConfig


@dataclass
class ToyConfig:
    width: int = 1
    scale: float = 1.0


class ToyStream:
    def next(self):
        return torch.ones(4, 1)

    def state(self):
        return {}, {}

    def load_state(self, meta, tensors):
        pass


class ToyTask:
    """A one-weight model whose dev metric is best at the third evaluation (of five), so best/ != last/."""

    name, metric, higher_is_better = "toy", "score", True

    def __init__(self) -> None:
        self.model = nn.Linear(1, 1)
        self.stream = ToyStream()
        self.scores = iter([1.0, 2.0, 9.0, 3.0, 4.0])

    def loss(self, batch, carry):
        return (self.model(batch) - 5).pow(2).mean(), None, len(batch)

    def evaluate(self):
        return {"score": next(self.scores)}

    def describe(self):
        return {"width": 1}, None


def quiet() -> Console:
    return Console(file=open("/dev/null", "w"), width=200)  # noqa: SIM115 - the console owns it


def test_fit_reloads_best_not_last(tmp_path):
    task = ToyTask()
    lines = []
    summary = fit(task, TrainConfig(steps=10, eval_every=2, checkpoint_every=2, warmup_steps=0), tmp_path, False,
                  quiet(), False, lambda params: lines.append(params) or f"toy, {params} parameters")
    assert lines == [2] and summary["step"] == 10
    best, last = checkpoint.load(tmp_path / "best").model, checkpoint.load(tmp_path / "last").model
    assert not torch.equal(best["weight"], last["weight"])  # training moved on after the best evaluation
    assert torch.equal(task.model.weight.detach(), best["weight"])


def test_fit_can_keep_the_last_weights(tmp_path):
    task = ToyTask()
    fit(task, TrainConfig(steps=10, eval_every=2, checkpoint_every=2, warmup_steps=0), tmp_path, False, quiet(),
        False, str, reload_best=False)
    assert torch.equal(task.model.weight.detach(), checkpoint.load(tmp_path / "last").model["weight"])


def test_begin_seeds_and_returns_last_only_when_resuming(tmp_path):
    fit(ToyTask(), TrainConfig(steps=2, eval_every=2, checkpoint_every=2), tmp_path, False, quiet(), False, str)
    _, saved = begin(TrainConfig(seed=7), tmp_path, True, None)
    first = torch.rand(3)
    _, fresh = begin(TrainConfig(seed=7), tmp_path, False, None)
    assert torch.equal(torch.rand(3), first)  # seeded again: the same draws
    assert saved is not None and saved.config["width"] == 1 and fresh is None
    assert begin(TrainConfig(), tmp_path / "new", True, None)[1] is None  # nothing to resume: the Trainer says so


def test_write_report_writes_one_line_per_result(tmp_path):
    write_report(tmp_path, "toy", "dev", {"bleu": 1.0}, {"bleu": 2.0})
    lines = [json.loads(line) for line in (tmp_path / "dev.json").read_text().splitlines()]
    assert lines == [{"task": "toy", "split": "dev", "bleu": 1.0}, {"task": "toy", "split": "dev", "bleu": 2.0}]
    write_report(tmp_path, "toy", "dev", {"n": 3}, file="test.json")
    assert json.loads((tmp_path / "test.json").read_text())["split"] == "dev"
    assert finished({"step": 12, "elapsed_s": 90}, "runs/x") == "after 12 steps, 1.5 min; run directory runs/x"


def save_toy(directory, model, config: dict, vocab=None):
    checkpoint.save(directory, checkpoint.Checkpoint(model=model.state_dict(), config=config, vocab=vocab))


def test_open_checkpoint_reads_the_config_and_checks_what_the_task_needs(tmp_path):
    save_toy(tmp_path / "c", nn.Linear(2, 1), {"task": "toy", "width": 2, "labels": ["a"], "stranger": 1})
    path, ckpt, config = open_checkpoint(tmp_path / "c", ToyConfig, what="a toy", needs=("labels",))
    assert config == ToyConfig(width=2) and path == tmp_path / "c" and ckpt.config["labels"] == ["a"]
    with pytest.raises(checkpoint.CheckpointError, match=r"config.json lacks the labels or num_features of a toy"):
        open_checkpoint(tmp_path / "c", ToyConfig, what="a toy", needs=("labels", "num_features"))
    with pytest.raises(checkpoint.CheckpointError, match=r"config.json names task 'toy', not 'lm'"):
        open_checkpoint(tmp_path / "c", ToyConfig, what="a toy", task="lm", needs=("num_features",))  # task first
    with pytest.raises(checkpoint.CheckpointError, match=r"c lacks vocab.json of a toy"):
        open_checkpoint(tmp_path / "c", ToyConfig, what="a toy", vocab=())
    save_toy(tmp_path / "v", nn.Linear(2, 1), {"task": "toy"}, vocab={"words": ["x"]})
    with pytest.raises(checkpoint.CheckpointError, match=r"lacks vocab.json with the words, tags of a toy"):
        open_checkpoint(tmp_path / "v", ToyConfig, what="a toy", vocab=("words", "tags"))
    assert open_checkpoint(tmp_path / "v", ToyConfig, what="a toy", vocab=("words",)).ckpt.vocab == {"words": ["x"]}


def test_config_from_keeps_the_fields_and_defaults_the_rest():
    assert config_from({"width": 3, "task": "toy", "train": {}}, ToyConfig) == ToyConfig(width=3, scale=1.0)
    assert asdict(config_from({}, ToyConfig)) == asdict(ToyConfig())


def test_load_weights_names_what_does_not_fit(tmp_path):
    save_toy(tmp_path / "c", nn.Linear(2, 1), {"task": "toy"})
    ckpt = checkpoint.load(tmp_path / "c")
    model = load_weights(nn.Linear(2, 1), ckpt, tmp_path / "c")
    assert torch.equal(model.weight.detach(), ckpt.model["weight"])
    with pytest.raises(checkpoint.CheckpointError, match=r"do not fit the model its config.json describes "
                                                         r"\(shape differs: \['weight'\], missing: \[\], "
                                                         r"unexpected: \[\]\)"):
        load_weights(nn.Linear(3, 1), ckpt, tmp_path / "c")
    with pytest.raises(checkpoint.CheckpointError, match=r"missing: \[\], unexpected: \['bias'\]"):
        load_weights(nn.Linear(2, 1, bias=False), ckpt, tmp_path / "c")


def test_scores_training_split_tells_the_training_file_from_another(tmp_path, monkeypatch):
    # catches a comparison of the paths as written ("data.tsv" vs "./data.tsv" are one file) and one that takes
    # any file for the training data when the run trained on the bundled data (trained_on None)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.tsv").write_text("")
    assert scores_training_split(None, "dev", None) and scores_training_split(None, "test", "data.tsv")
    assert scores_training_split("./data.tsv", "train", str(tmp_path / "data.tsv"))
    assert not scores_training_split("other.tsv", "test", "data.tsv")
    assert not scores_training_split("data.tsv", "test", None)
    with pytest.raises(ValueError, match="split must be train, dev or test, got 'valid'"):
        scores_training_split("other.tsv", "valid", None)


@dataclass(eq=False, repr=False)
class TrainedToy(Trained):
    task, config_class, what, needs = "toy", ToyConfig, "a toy", ("labels",)

    labels: list[str]
    width_seen: int = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.width_seen = self.config.width

    @classmethod
    def read(cls, ckpt, config, path):
        return nn.Sequential(nn.Dropout(0.5), nn.Linear(config.width, 1)), {"labels": list(ckpt.config["labels"])}


def test_trained_load_builds_the_model_from_the_checkpoint_and_puts_it_in_eval_mode(tmp_path):
    saved = nn.Sequential(nn.Dropout(0.5), nn.Linear(2, 1))
    save_toy(tmp_path / "c", saved, {"task": "toy", "width": 2, "labels": ["a", "b"]})
    trained = TrainedToy.load(tmp_path / "c")
    assert (trained.config, trained.path, trained.labels, trained.width_seen) == (ToyConfig(width=2), tmp_path / "c",
                                                                                  ["a", "b"], 2)
    assert torch.equal(trained.model[1].weight, saved[1].weight) and not trained.model.training  # dropout off


def test_trained_load_refuses_another_tasks_checkpoint_and_what_the_task_lacks(tmp_path):
    save_toy(tmp_path / "other", nn.Sequential(nn.Dropout(), nn.Linear(1, 1)), {"task": "lm", "labels": ["a"]})
    with pytest.raises(checkpoint.CheckpointError, match=r"other: config.json names task 'lm', not 'toy'"):
        TrainedToy.load(tmp_path / "other")
    save_toy(tmp_path / "bare", nn.Sequential(nn.Dropout(), nn.Linear(1, 1)), {"task": "toy"})
    with pytest.raises(checkpoint.CheckpointError, match=r"config.json lacks the labels of a toy"):
        TrainedToy.load(tmp_path / "bare")
    save_toy(tmp_path / "wide", nn.Sequential(nn.Dropout(), nn.Linear(3, 1)), {"task": "toy", "labels": ["a"]})
    with pytest.raises(checkpoint.CheckpointError, match=r"do not fit"):
        TrainedToy.load(tmp_path / "wide")  # width 1 by default: the weights are of width 3
