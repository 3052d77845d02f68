"""The speech task: the .ts parser on the bundled JapaneseVowels and on malformed lines, training
above the majority baseline, evaluate --json, BasicMotions and a user's NAME_TRAIN.ts through --data."""

from __future__ import annotations

import json

import pytest
import torch

import rnnkit
from rnnkit.cli import main
from rnnkit.tasks.speech import (
    SpeechConfig,
    SpeechTask,
    TrainedSpeech,
    load_bundled,
    load_data,
    load_splits,
    parse_ts,
    train,
)
from rnnkit.train.trainer import TrainConfig

HEADER = "@problemName tiny\n@dimensions 2\n@data\n"


@pytest.mark.parametrize("split,n", [("train", 270), ("test", 370)])
def test_bundled_files_hold_the_standard_split(split, n):
    cases = load_bundled(split)
    assert len(cases.series) == len(cases.labels) == n
    assert {s.shape[1] for s in cases.series} == {12}
    assert all(7 <= len(s) <= 29 for s in cases.series)
    assert sorted(set(cases.labels)) == [str(i) for i in range(1, 10)]


@pytest.mark.parametrize("split", ["train", "test"])
def test_basicmotions_holds_40_cases_of_6_channels_and_100_steps(split):
    cases = load_bundled(split, "basicmotions")
    assert len(cases.series) == len(cases.labels) == 40
    assert {tuple(s.shape) for s in cases.series} == {(100, 6)}
    assert sorted(set(cases.labels)) == ["Badminton", "Running", "Standing", "Walking"]
    assert all(cases.labels.count(label) == 10 for label in set(cases.labels))
    assert load_data("basicmotions", split).labels == cases.labels


def test_bundled_lengths_span_7_to_29_frames():
    lengths = [len(s) for split in ("train", "test") for s in load_bundled(split).series]
    assert (min(lengths), max(lengths)) == (7, 29)


def test_parser_reads_dimensions_and_label():
    cases = parse_ts(HEADER + "1,2,3:4,5,6:a\n\n0.5:1.5:b\n", "tiny")
    assert cases.labels == ["a", "b"]
    torch.testing.assert_close(cases.series[0], torch.tensor([[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]))
    assert cases.series[1].shape == (1, 2)


@pytest.mark.parametrize("body,message", [
    ("1,2:3,4:a\n1,x:3,4:b\n", "line 5: not a number"),
    ("1,2:3,4:a\n1,2:b\n", "line 5: 1 dimensions"),
    ("1,2:3:a\n", "line 4: its dimensions differ in length"),
    ("1,2,3\n", "line 4: expected dimensions"),
    ("# a comment\n\n  \n1,2:3,4:a\n1,2:3:a\n", "line 8: its dimensions differ"),  # comments and blanks count
])
def test_a_malformed_line_is_named_by_its_number(body, message):
    with pytest.raises(ValueError, match=message):
        parse_ts(HEADER + body, "tiny.ts")


def test_a_file_without_data_is_an_error():
    with pytest.raises(ValueError, match="no cases"):
        parse_ts(HEADER, "tiny.ts")


def test_padding_does_not_change_a_prediction():
    splits = load_splits(0.15)
    task = SpeechTask(SpeechConfig(hidden_size=8), splits, [str(i) for i in range(1, 10)], 0, torch.device("cpu"))
    from rnnkit.tasks.sequence_classification import predict_probs

    series = splits["test"].series[:20]
    together = predict_probs(task.model, series)
    alone = torch.cat([predict_probs(task.model, [s]) for s in series])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "speech"
    summary = train(SpeechConfig(hidden_size=16), TrainConfig(steps=60, eval_every=30, log_every=10, lr=1e-2,
                                                              warmup_steps=5), out, progress=False)
    return out, summary


def test_training_beats_the_majority_baseline(run_dir):
    out, summary = run_dir
    test = summary["test"]
    assert test["n"] == 370 and test["accuracy"] > test["majority_accuracy"] + 0.3
    assert json.loads((out / "test.json").read_text())["task"] == "speech"


def test_evaluate_json_and_rnnkit_load(run_dir, capsys):
    out, summary = run_dir
    assert main(["speech", "evaluate", "--checkpoint", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"task", "split", "n", "accuracy", "macro_f1", "majority_accuracy"}
    assert result["task"] == "speech" and result["split"] == "test" and result["n"] == 370
    assert result["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    assert isinstance(rnnkit.load(out), TrainedSpeech)


def test_predict_verb_prints_one_line_per_case_agreeing_with_evaluate(run_dir, tmp_path, capsys):
    out, summary = run_dir
    cases = load_bundled("test")
    body = "".join(":".join(",".join(f"{v:.6f}" for v in s[:, f].tolist()) for f in range(12)) + f":{y}\n"
                   for s, y in zip(cases.series[:5], cases.labels[:5]))
    # five cases of the bundled test split, written as a user's .ts file
    (tmp_path / "five.ts").write_text("@problemName five\n@data\n" + body)
    assert main(["speech", "predict", "--checkpoint", str(out), str(tmp_path / "five.ts")]) == 0
    lines = capsys.readouterr().out.splitlines()
    trained = rnnkit.load(out)
    expected = trained.predict(cases.series[:5])
    assert len(lines) == 5
    for line, prediction, given in zip(lines, expected, cases.labels[:5]):
        label, probability, file_label = line.split("\t")
        assert (label, file_label) == (prediction.label, given)
        assert float(probability) == pytest.approx(prediction.probability, abs=1e-3)
        assert prediction.probability == max(prediction.probabilities.values())
    everything = trained.predict(cases.series)  # in the input order, so its accuracy is evaluate's
    accuracy = sum(p.label == y for p, y in zip(everything, cases.labels)) / len(cases.labels)
    assert accuracy == pytest.approx(trained.evaluate()["accuracy"])
    with pytest.raises(ValueError, match=r"series\[0\] must be \(T, 12\) frames"):
        trained.predict([torch.zeros(5, 6)])


def test_data_flag_names_what_it_takes(tmp_path, capsys):
    assert main(["speech", "train", "--data", "x.ts", "--steps", "1", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    assert "data must be a bundled set (japanese_vowels, basicmotions) or a NAME_TRAIN.ts file" in \
        capsys.readouterr().err


def test_a_users_ts_files_train_and_evaluate(tmp_path):
    body = "".join(f"{i},{i + 1},{i + 2}:{-i},0,{i}:{'ab'[i % 2]}\n" for i in range(12))
    (tmp_path / "Tiny_TRAIN.ts").write_text(HEADER + body)
    (tmp_path / "Tiny_TEST.ts").write_text(HEADER + "".join(body.splitlines(keepends=True)[:2]))
    out = tmp_path / "run"
    summary = train(SpeechConfig(data=str(tmp_path / "Tiny_TRAIN.ts"), hidden_size=4, dev_fraction=0.25),
                    TrainConfig(steps=2, eval_every=2, checkpoint_every=2), out, progress=False)
    assert summary["test"]["n"] == 2
    assert TrainedSpeech.load(out).evaluate()["n"] == 2  # the data it was trained on, from config.json
    with pytest.raises(FileNotFoundError, match="no such .ts file"):
        load_data(str(tmp_path / "Missing_TRAIN.ts"), "train")
