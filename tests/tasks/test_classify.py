"""The classify task: data and splits, pooling that ignores padding, training above the majority
baseline, exact resume through the CLI, predict, evaluate --json, and clear errors."""

from __future__ import annotations

import csv
import json
import random

import pytest
import torch

import rnnkit
from rnnkit.cli import main
from rnnkit.tasks.classify import (
    Classifier,
    ClassifyConfig,
    TrainedClassifier,
    load_table,
    train,
)
from rnnkit.train.trainer import TrainConfig

TINY = ["--hidden-size", "12", "--embedding-size", "8", "--batch-size", "8", "--no-progress"]
WORDS = ["movie", "plot", "actor", "scene", "story", "film", "the", "a", "and", "was"]


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """Texts of filler words with one cue word: good/great -> pos, bad/awful -> neg."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = rng.choices(WORDS, k=rng.randint(2, 9))
        words.insert(rng.randint(0, len(words)), rng.choice(["good", "great"] if label == "pos" else ["bad", "awful"]))
        rows.append({"review": " ".join(words), "sentiment": label})
    return rows


def write_csv(path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    write_csv(path, synthetic_rows(400))
    return path


@pytest.fixture(scope="module")
def run_dir(data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "classify"
    config = ClassifyConfig(data=str(data_file), text_column="review", label_column="sentiment", hidden_size=16,
                            embedding_size=16, batch_size=16, pooling="mean")
    summary = train(config, TrainConfig(steps=60, eval_every=30, log_every=10, lr=1e-2, warmup_steps=5), out,
                    progress=False)
    return out, summary


def test_bundled_data_has_the_documented_split():
    table = load_table(None, "text", "label")
    assert {s: len(table.texts[s]) for s in ("train", "dev", "test")} == {"train": 8454, "dev": 1057, "test": 1057}
    assert set(table.labels["train"]) == {"pos", "neg"} and table.has_split
    assert any("é" in t for t in table.texts["train"])  # decoded as UTF-8, no mojibake


def test_a_file_without_a_split_column_gets_a_seeded_80_10_10_split(data_file):
    a = load_table(str(data_file), "review", "sentiment")
    b = load_table(str(data_file), "review", "sentiment")
    assert a == b and not a.has_split
    assert [len(a.texts[s]) for s in ("train", "dev", "test")] == [320, 40, 40]


def test_training_beats_the_majority_baseline(run_dir):
    out, summary = run_dir
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < 0.5 * losses[0]
    test = summary["test"]
    assert test["split"] == "test" and test["n"] == 40
    assert test["accuracy"] >= 0.9 > test["majority_accuracy"] and test["macro_f1"] >= 0.85
    assert (out / "plots" / "confusion_test.png").stat().st_size > 1000


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("cell,bidirectional,layers", [("lstm", True, 2), ("gru", False, 1)], ids=["bilstm2", "gru"])
def test_padding_does_not_change_the_prediction(pooling, cell, bidirectional, layers):
    torch.manual_seed(0)
    config = ClassifyConfig(cell=cell, bidirectional=bidirectional, num_layers=layers, pooling=pooling,
                            hidden_size=6, embedding_size=5)
    model = Classifier(20, 3, config).double().eval()
    short, long = torch.tensor([3, 1, 4]), torch.tensor([5, 9, 2, 6, 5, 3, 5])
    alone = model(short[:, None], torch.tensor([3]))  # (1, C)
    padded = torch.zeros(7, 2, dtype=torch.long)
    padded[:, 0], padded[:3, 1], padded[3:, 1] = long, short, 7  # junk past the short example's end
    batch = model(padded, torch.tensor([7, 3]))  # (2, C)
    torch.testing.assert_close(batch[1], alone[0], rtol=1e-10, atol=1e-10)


def test_cli_resume_continues_bit_identically(data_file, tmp_path):
    flags = ["--data", str(data_file), "--text-column", "review", "--label-column", "sentiment", *TINY,
             "--eval-every", "4", "--checkpoint-every", "2"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(["classify", "train", *flags, "--out", str(whole), "--steps", "8"]) == 0
    assert main(["classify", "train", *flags, "--out", str(split), "--steps", "5"]) == 0
    assert main(["classify", "train", "--out", str(split), "--resume", "--steps", "8", "--no-progress"]) == 0
    assert json.loads((split / "last" / "trainer.json").read_text())["step"] == 8
    a, b = rnnkit.load(whole / "last").model.state_dict(), rnnkit.load(split / "last").model.state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_predict_prints_label_and_probability(run_dir, tmp_path, capsys):
    out, _ = run_dir
    assert main(["classify", "predict", "--checkpoint", str(out), "the movie was great"]) == 0
    label, probability = capsys.readouterr().out.strip().split("\t")
    assert label == "pos" and 0.5 < float(probability) <= 1
    lines = tmp_path / "lines.txt"
    lines.write_text("an awful plot\n\nthe film was good\n")
    assert main(["classify", "predict", "--checkpoint", str(out), "--file", str(lines)]) == 0
    printed = [line.split("\t") for line in capsys.readouterr().out.strip().split("\n")]
    assert [(p[0], p[2]) for p in printed] == [("neg", "an awful plot"), ("pos", "the film was good")]
    model = rnnkit.load(out)
    assert isinstance(model, TrainedClassifier)
    prediction = model.predict("good")[0]
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0)


def test_evaluate_json_has_the_design_keys(run_dir, capsys):
    out, summary = run_dir
    assert main(["classify", "evaluate", "--checkpoint", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"task", "split", "n", "accuracy", "macro_f1", "majority_accuracy"}
    assert result["task"] == "classify" and result["split"] == "test"
    assert result["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    assert main(["classify", "evaluate", "--checkpoint", str(out), "--split", "dev", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(summary["best_metric"])


def test_evaluate_scores_another_file_whole(run_dir, tmp_path, capsys):
    out, _ = run_dir
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in synthetic_rows(30, seed=5)))
    assert main(["classify", "evaluate", "--checkpoint", str(out), "--data", str(other), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == str(other) and result["n"] == 30


def test_a_missing_column_is_named(data_file, tmp_path, capsys):
    assert main(["classify", "train", "--data", str(data_file), "--out", str(tmp_path / "r"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "has no column 'text' (it has: review, sentiment); name the right one with --text-column" in err


def test_a_label_never_seen_in_training_is_refused(tmp_path, capsys):
    rows = [{"split": "train", **r} for r in synthetic_rows(20)] + [{"split": "test", "review": "meh",
                                                                      "sentiment": "mixed"}]
    path = tmp_path / "data.tsv"
    path.write_text("split\treview\tsentiment\n" + "".join(f"{r['split']}\t{r['review']}\t{r['sentiment']}\n"
                                                          for r in rows))
    assert main(["classify", "train", "--data", str(path), "--text-column", "review", "--label-column",
                 "sentiment", "--out", str(tmp_path / "r"), "--steps", "1"]) == 2
    assert "the test split has label(s) never seen in training: 'mixed'" in capsys.readouterr().err


def test_an_empty_file_is_refused(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main(["classify", "train", "--data", str(empty), "--out", str(tmp_path / "r"), "--steps", "1"]) == 2
    assert "empty.csv is empty" in capsys.readouterr().err
    header = tmp_path / "header.csv"
    header.write_text("text,label\n")
    assert main(["classify", "train", "--data", str(header), "--out", str(tmp_path / "r"), "--steps", "1"]) == 2
    assert "has a header but no rows" in capsys.readouterr().err


def test_an_unknown_extension_asks_for_format(tmp_path, capsys):
    path = tmp_path / "data.dat"
    path.write_text("text,label\na,b\n")
    assert main(["classify", "train", "--data", str(path), "--out", str(tmp_path / "r"), "--steps", "1"]) == 2
    assert "pass --format csv, tsv or jsonl" in capsys.readouterr().err
