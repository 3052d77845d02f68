"""The caption task: metrics checked by hand, the order-blind encoder's blindness, a short training run whose
loss falls, evaluate --json and predict through the CLI, and clear errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit.cli import main
from rnnkit.data import moving_digits as md
from rnnkit.tasks.caption import (
    CaptionConfig,
    Captioner,
    caption_scores,
    check_clips,
    constant_caption,
    encode,
    frame_direction_labels,
    make_batch,
    train,
)
from rnnkit.train.trainer import TrainConfig

pytest.importorskip("sacrebleu")
pytest.importorskip("sklearn")

TINY = dict(segment_length=4, hidden_size=16, cnn_channels=8, frame_features=16, embedding_size=8, dev_size=8,
            test_size=8, batch_size=8, pretrain_steps=3, beam_size=2)


def test_scores_by_hand():
    refs = ["the digit 3 moves left then the digit 7 moves down", "the digit 1 moves up then the digit 2 moves right"]
    hyps = ["the digit 3 moves left then the digit 7 moves down", "the digit 1 moves up then the digit 5 moves left"]
    got = caption_scores(hyps, refs)
    assert got["n"] == 2 and got["exact_match"] == 0.5
    assert got["slots"] == {"digit1": 1.0, "direction1": 1.0, "digit2": 0.5, "direction2": 0.5}
    assert got["slot_accuracy"] == pytest.approx(0.75)
    assert caption_scores(refs, refs)["bleu"] == pytest.approx(100.0)


def test_a_caption_off_the_template_gets_every_slot_wrong():
    refs = ["the digit 3 moves left then the digit 7 moves down"]
    got = caption_scores(["the digit 3 moves left then the digit"], refs)
    assert got["exact_match"] == 0.0 and got["slot_accuracy"] == 0.0 and set(got["slots"].values()) == {0.0}


def test_constant_caption_takes_each_slots_mode():
    slots = torch.tensor([[3, 0, 7, 3], [3, 1, 2, 3], [5, 1, 2, 0]])
    assert constant_caption(slots) == "the digit 3 moves right then the digit 2 moves down"


def test_frame_labels_follow_the_segments():
    slots = torch.tensor([[3, 0, 7, 2]])
    assert frame_direction_labels(slots, 2).tolist() == [[0, 0, 2, 2]]
    assert md.frame_digit_labels(slots, 2).tolist() == [[3, 3, 7, 7]]


def test_batch_targets_end_with_eos():
    clips, captions, slots = md.caption_clips(2, 0, "train", segment_length=4)
    batch = make_batch(clips, captions, slots, 4, torch.device("cpu"))
    assert batch.target.shape == (12, 2) and batch.frame_digits.shape == (2, 8)
    assert batch.target[:, 0].tolist() == [*encode(captions[0]), 2]


def test_order_blind_encoder_cannot_see_frame_order():
    torch.manual_seed(0)
    model = Captioner(CaptionConfig(encoder="order-blind", **TINY)).eval()
    clips, captions, slots = md.caption_clips(3, 0, "train", segment_length=4)
    batch = make_batch(clips, captions, slots, 4, torch.device("cpu"))
    shuffled = batch._replace(clips=batch.clips[:, torch.randperm(8)])
    with torch.no_grad():
        memory, lengths, _, directions = model.encode(batch.clips)
        assert memory.shape[0] == 1 and lengths.tolist() == [1, 1, 1] and directions is None
        torch.testing.assert_close(model(batch)[0], model(shuffled)[0], rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("caption") / "run"
    train_config = TrainConfig(steps=40, lr=1e-2, warmup_steps=2, eval_every=40, log_every=5, checkpoint_every=40)
    summary = train(CaptionConfig(**{**TINY, "pretrain_steps": 0}), train_config, out, progress=False)
    return out, summary


def test_training_loss_falls(run):
    out, summary = run
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
              if "loss" in r and "eval" not in r]
    assert len(losses) >= 5 and np.mean(losses[-2:]) < 0.85 * losses[0]
    assert set(summary["test"]) == {"greedy", "beam"}


def test_evaluate_json_has_the_design_keys(run, capsys):
    out, _ = run
    assert main(["caption", "evaluate", "--checkpoint", str(out), "--decoder", "greedy", "--n", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"task", "split", "n", "exact_match", "slot_accuracy", "slots", "bleu", "constant_bleu"} <= set(result)
    assert result["task"] == "caption" and result["n"] == 4 and result["split"] == "test"
    assert 0 <= result["exact_match"] <= result["slot_accuracy"] <= 1


def test_predict_generated_and_npy_clips(run, tmp_path, capsys):
    out, _ = run
    model = rnnkit.load(out)
    clips, _, _ = md.caption_clips(2, 5, "test", segment_length=4)
    assert len(model.predict(clips)) == 2 and len(model.predict(clips[0], decoder="greedy")) == 1
    path = tmp_path / "clips.npy"
    np.save(path, (clips.numpy() * 255).round().astype(np.uint8))
    assert main(["caption", "predict", "--checkpoint", str(out), str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [f"{path}:0", f"{path}:1"]
    assert main(["caption", "predict", "--checkpoint", str(out), "--n", "2", "--seed", "3"]) == 0
    assert "(true: the digit" in capsys.readouterr().out


@pytest.mark.parametrize("clips,message", [
    (torch.rand(2, 8, 16, 16), r"\(N, T, 32, 32\)"),
    (torch.rand(2, 8, 32, 32) * 2, r"values in \[0, 1\]"),
    (torch.ones(2, 8, 32, 32, dtype=torch.int64), "dtype"),
    ("clips", "tensor or array"),
])
def test_bad_clips_are_named(clips, message):
    with pytest.raises(ValueError, match=message):
        check_clips(clips)


def test_bad_npy_file_is_an_error(run, tmp_path, capsys):
    out, _ = run
    bad = tmp_path / "bad.npy"
    bad.write_text("not an array")
    assert main(["caption", "predict", "--checkpoint", str(out), str(bad)]) == 2
    assert "bad.npy" in capsys.readouterr().err
    assert main(["caption", "predict", "--checkpoint", str(out), str(tmp_path / "missing.npy")]) == 2


@pytest.mark.parametrize("field,value,message", [
    ("encoder", "mean", "encoder must be one of"),
    ("segment_length", 15, "segment_length"),
    ("aux_weight", -1.0, "aux_weight"),
    ("hidden_size", 0, "hidden_size"),
])
def test_bad_config_is_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        CaptionConfig(**{field: value}).validate()


def test_a_word_outside_the_template_is_an_error():
    with pytest.raises(ValueError, match="outside the template"):
        encode("the digit 3 moves sideways")
