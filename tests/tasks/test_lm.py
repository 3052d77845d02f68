"""The lm task: its data stream, a loss that falls below the unigram baseline, generate, evaluate, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

import rnnkit
from rnnkit.backends.fused import extension
from rnnkit.cli import main
from rnnkit.data import bundled_text
from rnnkit.tasks.lm import LMConfig, TextStream, TrainedLM, train
from rnnkit.train.trainer import TrainConfig

SMALL = {"hidden_size": 64, "embedding_size": 16, "batch_size": 16, "bptt": 32}


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "plays.txt"
    path.write_text(bundled_text()[:60_000])
    return path


@pytest.fixture(scope="module")
def run_dir(text_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "lm"
    summary = train(LMConfig(data=str(text_file), **SMALL),
                    TrainConfig(steps=120, eval_every=60, log_every=20, lr=1e-2, warmup_steps=10), out,
                    progress=False)
    return out, summary


def test_training_beats_the_unigram_baseline(run_dir):
    _, summary = run_dir
    result = summary["eval"]
    assert result["nats_per_char"] < result["unigram_nats_per_char"] - 0.4
    assert result["bits_per_char"] == pytest.approx(result["nats_per_char"] / torch.log(torch.tensor(2.0)).item())


def test_the_stream_is_contiguous_and_resets_each_pass():
    ids = torch.arange(100)
    stream = TextStream(ids, batch_size=2, bptt=10, seed=0, device=torch.device("cpu"))
    first = stream.next()
    assert first.reset and first.x[:, 0].tolist() == list(range(10)) and first.x[:, 1].tolist() == list(range(50, 60))
    assert torch.equal(first.y, first.x + 1)
    second = stream.next()
    assert not second.reset and second.x[0, 0] == 10
    for _ in range(3):
        batch = stream.next()
    assert batch.reset and stream.epoch == 1  # 50 per stream: windows at 0, 10, 20, 30, then a new pass
    meta, tensors = stream.state()
    again = TextStream(ids, 2, 10, 0, torch.device("cpu"))
    again.load_state(meta, tensors)
    assert torch.equal(again.next().x, stream.next().x)


def test_generate_is_seeded_and_streams_the_requested_length(run_dir):
    out, _ = run_dir
    model = rnnkit.load(out)
    assert isinstance(model, TrainedLM)
    a = "".join(model.generate("ROMEO.", 50, seed=3))
    b = "".join(model.generate("ROMEO.", 50, seed=3))
    assert a == b and len(a) == 50
    assert "".join(model.generate("ROMEO.", 20, temperature=0)) == "".join(model.generate("ROMEO.", 20, temperature=0))


def test_generate_matches_the_full_forward_pass(run_dir):
    """The stepped generation reads the same logits as a forward pass over the whole text."""
    out, _ = run_dir
    model = rnnkit.load(out)
    text = "ROMEO." + "".join(model.generate("ROMEO.", 30, temperature=0))
    ids = torch.tensor(model.vocab.encode(text))[:, None]
    with torch.no_grad():
        logits, _ = model.model(ids)
    greedy = logits[5:-1, 0].argmax(-1).tolist()  # the prediction after each prompt-or-generated char
    assert model.vocab.decode(greedy) == text[6:]


def test_a_prompt_character_outside_the_vocabulary_is_refused(run_dir):
    out, _ = run_dir
    with pytest.raises(ValueError, match="the prompt cannot be encoded: character '€' at position 2"):
        list(rnnkit.load(out).generate("AB€"))


def test_evaluate_json_has_the_design_keys(run_dir, capsys):
    out, summary = run_dir
    assert main(["lm", "evaluate", "--checkpoint", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"task", "split", "n", "nats_per_char", "bits_per_char", "unigram_nats_per_char"} <= set(result)
    assert result["task"] == "lm" and result["split"] == "validation"
    assert result["nats_per_char"] == pytest.approx(summary["best_metric"], abs=1e-6)


def test_evaluate_on_a_file(run_dir, text_file, tmp_path, capsys):
    out, _ = run_dir
    other = tmp_path / "other.txt"
    other.write_text(bundled_text()[-5000:])
    assert main(["lm", "evaluate", "--checkpoint", str(out), "--data", str(other), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == str(other) and result["n"] == 4999


def test_cli_train_rejects_text_that_is_not_utf8(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello \xff world" * 10)
    assert main(["lm", "train", "--data", str(bad), "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    assert "is not UTF-8 text: byte 0xff at offset 6" in capsys.readouterr().err


def test_cli_generate_streams_text(run_dir, capsys):
    out, _ = run_dir
    assert main(["lm", "generate", "--checkpoint", str(out), "--prompt", "KING", "--length", "40",
                 "--top-k", "5", "--top-p", "0.9"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("KING") and len(printed.rstrip("\n")) >= 40


def test_cli_train_and_resume(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--data", str(text_file), "--out", str(out), "--hidden-size", "16", "--embedding-size", "8",
             "--batch-size", "4", "--bptt", "8", "--eval-every", "3", "--no-progress"]
    assert main(["lm", "train", *flags, "--steps", "3"]) == 0
    assert main(["lm", "train", "--out", str(out), "--resume", "--steps", "5", "--no-progress"]) == 0
    assert json.loads((out / "last" / "trainer.json").read_text())["step"] == 5
    assert "validation:" in capsys.readouterr().out


def test_word_level_trains(text_file, tmp_path):
    summary = train(LMConfig(data=str(text_file), level="word", max_vocab=500, **SMALL),
                    TrainConfig(steps=120, eval_every=120, lr=1e-2, warmup_steps=5), tmp_path / "w", progress=False)
    result = summary["eval"]
    assert result["perplexity"] < result["unigram_perplexity"]


def test_a_config_json_with_the_removed_bidirectional_key_still_loads():
    """LMConfig had a ``bidirectional`` field that only refused True; runs written before its removal keep the
    key in config.json (tests/data/runs/lm has it), and the loader drops it."""
    from pathlib import Path

    from rnnkit.tasks.base import config_from

    run = Path(__file__).parent.parent / "data" / "runs" / "lm"
    assert '"bidirectional": false' in (run / "best" / "config.json").read_text()
    trained = rnnkit.load(run)
    assert isinstance(trained, TrainedLM) and not hasattr(trained.config, "bidirectional")
    assert config_from({"bidirectional": False, "hidden_size": 8}, LMConfig) == LMConfig(hidden_size=8)
    with pytest.raises(SystemExit):  # the flag is gone from the command line
        main(["lm", "train", "--bidirectional", "--steps", "1"])


def test_bf16_autocast_trains_as_float32_does(tmp_path):
    """--bf16 runs the recurrent layer under bfloat16 autocast in training and evaluation (a forward hook on
    every ``Recurrent`` sees its output's dtype: bf16, or float32 from the C++ loops), and its losses track
    the float32 run's from the same seed: per logged step and at the evaluation within 0.02 nats. Measured
    (torch 2.13 CPU): at most 1.5e-3 per step and 9e-4 at the evaluation, while the loss falls from 4.17 to
    3.08, below the unigram baseline (3.18), so a recurrent layer whose bf16 output were wrong (zeros, say:
    about unigram) would be 0.1 off."""
    text = tmp_path / "plays.txt"
    text.write_text(bundled_text()[:15_000])
    seen: list[tuple[bool, torch.dtype]] = []

    def hook(module, args, output):
        if isinstance(module, rnnkit.Recurrent):
            seen.append((module.training, output[0].dtype))

    runs = {}
    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        for bf16 in (False, True):
            seen.clear()
            out = tmp_path / ("bf16" if bf16 else "float32")
            summary = train(LMConfig(data=str(text), output_dropout=0.1, **SMALL),
                            TrainConfig(steps=8, eval_every=8, log_every=1, lr=3e-2, warmup_steps=1, bf16=bf16),
                            out, progress=False)
            losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
                      if '"loss"' in line]
            runs[bf16] = summary, losses, sorted(set(seen))
    finally:
        handle.remove()
    (summary32, losses32, seen32), (summary16, losses16, seen16) = runs[False], runs[True]
    assert seen32 == [(False, torch.float32), (True, torch.float32)], f"float32 run: (training, dtype) {seen32}"
    # the lstm's fused C++ loops run float32 under autocast (and say so); the Python loops run bf16
    layer_dtype = torch.float32 if extension.load() is not None else torch.bfloat16
    assert seen16 == [(False, layer_dtype), (True, layer_dtype)], f"bf16 run: (training, dtype) {seen16}"
    assert summary16["step"] == 8 and len(losses16) == len(losses32) == 8
    nats32, nats16 = summary32["eval"]["nats_per_char"], summary16["eval"]["nats_per_char"]
    assert nats32 < summary32["eval"]["unigram_nats_per_char"] < losses32[0], "float32 learned nothing to compare"
    for step, (a, b) in enumerate(zip(losses32, losses16), 1):
        assert abs(a - b) <= 0.02, f"step {step}: bf16 loss {b:.4f}, float32 {a:.4f}"
    assert abs(nats16 - nats32) <= 0.02, f"evaluation: bf16 {nats16:.4f} nats/char, float32 {nats32:.4f}"


def test_cli_reports_a_bad_flag_value_without_a_traceback(tmp_path, capsys):
    assert main(["lm", "train", "--out", str(tmp_path / "r"), "--steps", "0"]) == 2
    assert capsys.readouterr().err.strip() == "rnnkit: error: steps must be a positive int, got 0"


def test_cli_resume_without_out_is_refused(capsys):
    assert main(["lm", "train", "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
