"""Bad input across the CLI and the public functions: a clear error, or a documented behaviour.

Never a traceback from inside torch. Each case here is a row of docs/reliability.md. CLI cases run
``rnnkit.cli.main(argv)`` in this process and expect exit status 2 with ``rnnkit: error: ...`` on
stderr naming the problem (an exception escaping ``main`` fails the test with its traceback); the
library cases call the function and expect rnnkit's exception with its message.

Safe loading (pickle, truncated safetensors, a newer format, a vocabulary that does not fit the
weights) is at the end.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

import rnnkit
from rnnkit.backends import NotSupported, fused
from rnnkit.cli import main
from rnnkit.train import checkpoint

# --------------------------------------------------------------------------- tiny data and runs

LM_TEXT = "the quick brown fox jumps over the lazy dog.\n" * 40
CLASSIFY_CSV = "text,label\n" + "".join(f"{'good fine great' if i % 2 else 'bad awful poor'} {i},"
                                        f"{'pos' if i % 2 else 'neg'}\n" for i in range(40))
CONLL = "\n".join(f"Ann B-PER\nflew O\nto O\n{p} B-LOC\n" for p in ["Rome", "Oslo", "Lima", "Kyiv"] * 10)
PAIRS = "".join(f"the {a} cat .\tle chat {b} .\n" for a, b in [("red", "rouge"), ("big", "grand")] * 30)
SERIES = "y\n" + "".join(f"{10 + math.sin(i / 3):.4f}\n" for i in range(60))
TS_HEADER = "@problemName tiny\n@dimensions 2\n@data\n"
TS_BODY = "".join(f"{i},{i + 1},{i + 2}:{-i},0,{i}:{'ab'[i % 2]}\n" for i in range(12))
TS_TEST = "".join(TS_BODY.splitlines(keepends=True)[:2])

TASKS_WITH_TRAIN = ["lm", "classify", "tag", "translate", "forecast", "speech", "asr"]
FAST = ["--steps", "2", "--eval-every", "2", "--checkpoint-every", "2", "--warmup-steps", "1", "--no-progress"]


def cli_error(argv: list[str], capsys, match: str) -> str:
    """``rnnkit argv`` exits with status 2 and ``rnnkit: error:`` + a message matching ``match``."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, f"exit status {code}, stderr: {err}"
    assert err.startswith("rnnkit: error: "), err
    assert re.search(match, err, re.IGNORECASE | re.DOTALL), f"{match!r} not in: {err}"
    return err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good and bad data files by name."""
    d = tmp_path_factory.mktemp("data")
    contents = {
        "lm.txt": LM_TEXT, "classify.csv": CLASSIFY_CSV, "tag.conll": CONLL, "pairs.tsv": PAIRS,
        "series.csv": SERIES, "Tiny_TRAIN.ts": TS_HEADER + TS_BODY, "Tiny_TEST.ts": TS_HEADER + TS_TEST,
    }
    for name, text in contents.items():
        (d / name).write_text(text)
    for stem, suffixes in {"empty": ("txt", "csv", "tsv", "conll", "jsonl"), "latin1": ("txt", "csv", "tsv", "conll"),
                           "binary": ("txt", "csv", "tsv", "conll")}.items():
        for suffix in suffixes:
            path = d / f"{stem}.{suffix}"
            if stem == "empty":
                path.write_bytes(b"")
            elif stem == "latin1":
                path.write_bytes("text,label\ncaf\xe9 cr\xe8me,pos\n".encode("latin-1"))
            else:
                path.write_bytes(bytes(range(256)) * 4)
    (d / "Empty_TRAIN.ts").write_bytes(b"")
    (d / "Latin_TRAIN.ts").write_bytes(TS_HEADER.encode() + "1,2:\xe9\n".encode("latin-1"))
    (d / "Binary_TRAIN.ts").write_bytes(bytes(range(256)) * 4)
    return d


@pytest.fixture(scope="module")
def runs(files, tmp_path_factory):
    """A trained (2 steps) run directory of each task, by task name."""
    d = tmp_path_factory.mktemp("runs")
    small = ["--hidden-size", "8", "--embedding-size", "8"]
    commands = {
        "lm": ["lm", "train", "--data", files / "lm.txt", *small, "--batch-size", "4", "--bptt", "16"],
        "classify": ["classify", "train", "--data", files / "classify.csv", *small, "--batch-size", "8"],
        "tag": ["tag", "train", "--data", files / "tag.conll", *small, "--char-hidden-size", "4",
                "--batch-size", "8"],
        "translate": ["translate", "train", "--data", files / "pairs.tsv", *small, "--attention-size", "8",
                      "--min-count", "1", "--batch-size", "8"],
        "forecast": ["forecast", "train", "--data", files / "series.csv", "--lookback", "12", "--horizon", "6",
                     "--hidden-size", "4", "--ensemble", "1", "--batch-size", "8", "--rolling-origins", "1"],
        "speech": ["speech", "train", "--data", files / "Tiny_TRAIN.ts", "--hidden-size", "4",
                   "--dev-fraction", "0.25"],
    }
    out = {}
    for task, argv in commands.items():
        out[task] = d / task
        assert main([str(a) for a in argv] + ["--out", str(out[task]), *FAST]) == 0, task
    return out


# --------------------------------------------------------------------------- data files, every train command

TRAIN_DATA = {  # task -> (argv before --data, file suffix for the bad files, extra flags)
    "lm": (["lm", "train"], "txt", []),
    "classify": (["classify", "train"], "csv", []),
    "tag": (["tag", "train"], "conll", []),
    "translate": (["translate", "train"], "tsv", []),
    "forecast": (["forecast", "train"], "csv", []),
}
BAD_FILES = {  # kind -> what the message must say
    "empty": r"empty|no (rows|sentences|pairs|data|values|text)",
    "latin1": r"not UTF-8|utf-8",
    "binary": r"binary|NUL|not UTF-8",
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
@pytest.mark.parametrize("task", list(TRAIN_DATA))
def test_train_refuses_a_bad_data_file(task, kind, files, tmp_path, capsys):
    verb, suffix, extra = TRAIN_DATA[task]
    path = files / f"{kind}.{suffix}"
    err = cli_error([*verb, "--data", path, "--out", tmp_path / "run", *extra, *FAST], capsys, BAD_FILES[kind])
    assert str(path) in err  # the message names the file
    assert not (tmp_path / "run" / "last").exists()


@pytest.mark.parametrize("kind,name", [("empty", "Empty_TRAIN.ts"), ("latin1", "Latin_TRAIN.ts"),
                                       ("binary", "Binary_TRAIN.ts")])
def test_speech_train_refuses_a_bad_ts_file(kind, name, files, tmp_path, capsys):
    err = cli_error(["speech", "train", "--data", files / name, "--out", tmp_path / "run", *FAST], capsys,
                    BAD_FILES[kind] + "|no cases|@data")
    assert name in err


def test_a_missing_data_file_is_named(tmp_path, capsys):
    cli_error(["lm", "train", "--data", tmp_path / "nowhere.txt", "--out", tmp_path / "run", *FAST], capsys,
              r"nowhere.txt: no such file")


def test_a_directory_given_as_data_is_refused(tmp_path, capsys):
    cli_error(["lm", "train", "--data", tmp_path, "--out", tmp_path / "run", *FAST], capsys, r"is a directory")


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """A WAV with no samples, a 'WAV' that is noise, and manifests that point at them or are broken."""
    import wave

    d = tmp_path_factory.mktemp("audio")
    with wave.open(str(d / "zero.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"")
    (d / "noise.wav").write_bytes(bytes(range(256)) * 4)
    (d / "empty.jsonl").write_bytes(b"")
    (d / "latin1.jsonl").write_bytes('{"audio_filepath": "zero.wav", "text": "caf\xe9"}\n'.encode("latin-1"))
    (d / "binary.jsonl").write_bytes(bytes(range(256)) * 4)
    (d / "notext.csv").write_text("path\nzero.wav\n")
    (d / "zero.jsonl").write_text('{"audio_filepath": "zero.wav", "text": "a"}\n')
    (d / "noise.jsonl").write_text('{"audio_filepath": "noise.wav", "text": "a"}\n')
    return d


@pytest.mark.parametrize("manifest,match", [
    ("empty.jsonl", r"empty.jsonl is empty"),
    ("latin1.jsonl", r"latin1.jsonl is not UTF-8"),
    ("binary.jsonl", r"binary.jsonl looks like a binary file"),
    ("notext.csv", r"notext.csv:2: needs the columns 'path' \(or 'audio_filepath'\) and 'text'"),
    ("zero.jsonl", r"zero.jsonl:1: .*zero.wav: the audio file has no samples"),
    ("noise.jsonl", r"noise.jsonl:1: .*noise.wav"),
])
def test_asr_train_refuses_a_bad_manifest(manifest, match, audio, tmp_path, capsys):
    cli_error(["asr", "train", "--data", audio / manifest, "--out", tmp_path / "r", *FAST], capsys, match)


@pytest.mark.parametrize("name,match", [("zero.wav", r"no samples"), ("noise.wav", r"noise.wav")])
def test_read_audio_refuses_empty_and_noise_files(name, match, audio):
    from rnnkit.audio import read_audio
    from rnnkit.audio.read import AudioError

    with pytest.raises(AudioError, match=match):
        read_audio(audio / name)


@pytest.mark.parametrize("argv,match", [
    (["gradients", "--length", "0", "--plot", ""], r"length .* must be an int >= 2, got 0"),
    (["gradients", "--batch-size", "0", "--plot", ""], r"batch_size must be a positive int, got 0"),
    (["gradients", "--hidden-size", "0", "--plot", ""], r"hidden_size must be a positive int, got 0"),
    (["gradients", "--cell", "nosuchcell", "--plot", ""], r"nosuchcell"),
    (["lab", "adding", "--length", "0", "--steps", "1", "--no-progress"], r"must be an int >= 2, got 0"),
    (["demo", "--steps", "0"], r"steps must be a positive int, got 0"),
    (["demo", "--max-minutes", "0"], r"max_minutes must be > 0"),
], ids=["gradients-length-0", "gradients-batch-0", "gradients-hidden-0", "gradients-unknown-cell", "lab-length-0",
        "demo-steps-0", "demo-minutes-0"])
def test_generated_data_commands_refuse_bad_sizes(argv, match, tmp_path, capsys):
    cli_error(argv + (["--out", tmp_path / "r"] if argv[0] in ("lab", "demo") else []), capsys, match)


@pytest.mark.parametrize("argv,match", [(["--threads", "0"], r"--rounds and --threads must be >= 1, got 3 and 0"),
                                        (["--rounds", "0"], r"--rounds and --threads must be >= 1, got 0 and 2"),
                                        (["--cells", "nosuch"], r"--cells: unknown nosuch; choose from rnn_tanh"),
                                        (["--shape", "0,10,8,8"], r"--shape"), (["--shape", "a,b"], r"--shape")])
def test_bench_refuses_bad_arguments(argv, match, capsys):
    """Before anything is timed: argparse's usage error (status 2) or bench's own message (SystemExit(message),
    status 1)."""
    with pytest.raises(SystemExit) as info:
        main(["bench", "--quick", *argv])
    code = info.value.code
    message = code if isinstance(code, str) else capsys.readouterr().err
    assert code == 2 or isinstance(code, str), code
    assert re.search(match, message), message


def test_a_checkpoint_that_does_not_exist(tmp_path, capsys):
    for task, verb in [("lm", "generate"), ("classify", "evaluate"), ("tag", "predict"), ("forecast", "predict")]:
        argv = [task, verb, "--checkpoint", tmp_path / "nowhere"] + (["x"] if verb == "predict" and task == "tag"
                                                                     else [])
        cli_error(argv, capsys, r"nowhere does not exist")


def test_resume_without_a_run(files, tmp_path, capsys):
    cli_error(["lm", "train", "--data", files / "lm.txt", "--hidden-size", "8", "--out", tmp_path / "r", "--resume",
               *FAST], capsys, r"no last/ checkpoint to continue from")


# --------------------------------------------------------------------------- CSV columns


def test_classify_csv_without_the_label_column(tmp_path, capsys):
    path = tmp_path / "nolabel.csv"
    path.write_text("text\nnice\nbad\n")
    cli_error(["classify", "train", "--data", path, "--out", tmp_path / "run", *FAST], capsys, r"label")


def test_classify_csv_with_extra_columns_trains_on_the_named_ones(files, tmp_path):
    """Documented: columns other than --text-column and --label-column are ignored."""
    path = tmp_path / "extra.csv"
    rows = CLASSIFY_CSV.splitlines()
    path.write_text("\n".join([rows[0] + ",id,notes"] + [f"{r},{i},x" for i, r in enumerate(rows[1:])]) + "\n")
    assert main(["classify", "train", "--data", str(path), "--out", str(tmp_path / "run"), "--hidden-size", "8",
                 "--embedding-size", "8", *FAST]) == 0


def test_classify_csv_row_with_a_missing_field(tmp_path, capsys):
    path = tmp_path / "ragged.csv"
    path.write_text(CLASSIFY_CSV + "just text and no label\n")
    cli_error(["classify", "train", "--data", path, "--out", tmp_path / "run", *FAST], capsys,
              r"line|row|label|field")


def test_classify_csv_row_with_an_extra_field(tmp_path, capsys):
    path = tmp_path / "ragged.csv"
    path.write_text(CLASSIFY_CSV + "some text,pos,surprise\n")
    cli_error(["classify", "train", "--data", path, "--out", tmp_path / "run", *FAST], capsys,
              r"line|row|field|column")


def test_forecast_csv_without_the_named_column(files, tmp_path, capsys):
    cli_error(["forecast", "train", "--data", files / "series.csv", "--column", "sales", "--out", tmp_path / "r",
               *FAST], capsys, r"sales")


def test_forecast_csv_with_several_columns_asks_which(tmp_path, capsys):
    path = tmp_path / "two.csv"
    path.write_text("a,b\n" + "".join(f"{i},{2 * i}\n" for i in range(60)))
    cli_error(["forecast", "train", "--data", path, "--out", tmp_path / "r", *FAST], capsys, r"--column")


def test_forecast_csv_row_with_a_missing_value(tmp_path, capsys):
    path = tmp_path / "gap.csv"
    path.write_text("t,y\n" + "".join(f"{i},{i}\n" for i in range(30)) + "30,\n" +
                    "".join(f"{i},{i}\n" for i in range(31, 60)))
    cli_error(["forecast", "train", "--data", path, "--column", "y", "--out", tmp_path / "r", *FAST], capsys,
              r"line|row|missing|empty|number")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_forecast_series_with_non_finite_values(value, tmp_path, capsys):
    path = tmp_path / "bad.csv"
    lines = SERIES.splitlines()
    lines[20] = value
    path.write_text("\n".join(lines) + "\n")
    cli_error(["forecast", "train", "--data", path, "--out", tmp_path / "r", *FAST], capsys,
              r"nan|inf|finite")


def test_forecast_series_with_text_in_a_number_column(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text(SERIES.replace("\n10.", "\nten.", 1))
    cli_error(["forecast", "train", "--data", path, "--out", tmp_path / "r", *FAST], capsys, r"number|ten")


def test_forecast_predict_refuses_non_finite_history(runs, tmp_path, capsys):
    path = tmp_path / "bad.csv"
    lines = SERIES.splitlines()
    lines[-3] = "nan"
    path.write_text("\n".join(lines) + "\n")
    cli_error(["forecast", "predict", "--checkpoint", runs["forecast"], "--data", path], capsys, r"nan|finite")


def test_speech_ts_with_nan_values(tmp_path, capsys):
    path = tmp_path / "Nan_TRAIN.ts"
    path.write_text(TS_HEADER + TS_BODY.replace("1,2,3:", "1,nan,3:", 1))
    cli_error(["speech", "train", "--data", path, "--out", tmp_path / "r", *FAST], capsys, r"nan|finite")


# --------------------------------------------------------------------------- labels never seen in training


def test_classify_evaluate_with_a_label_never_seen(runs, tmp_path, capsys):
    path = tmp_path / "new.csv"
    path.write_text("text,label\ngood,pos\nmeh,neutral\n")
    cli_error(["classify", "evaluate", "--checkpoint", runs["classify"], "--data", path], capsys, r"neutral")


def test_tag_evaluate_with_a_tag_never_seen(runs, tmp_path, capsys):
    path = tmp_path / "new.conll"
    path.write_text("Ann B-PER\nate O\nsushi B-FOOD\n")
    cli_error(["tag", "evaluate", "--checkpoint", runs["tag"], "--data", path], capsys, r"FOOD")


def test_speech_evaluate_with_a_label_never_seen(runs, tmp_path, capsys):
    (tmp_path / "Odd_TRAIN.ts").write_text(TS_HEADER + TS_BODY)
    (tmp_path / "Odd_TEST.ts").write_text(TS_HEADER + "1,2:3,4:z\n")
    cli_error(["speech", "evaluate", "--checkpoint", runs["speech"], "--data", tmp_path / "Odd_TRAIN.ts"], capsys,
              r"'z'")


def test_words_never_seen_map_to_unk(runs, capsys):
    """Documented: a word (or character) a model never saw reads as <unk>, for predict and translate."""
    assert main(["classify", "predict", "--checkpoint", str(runs["classify"]), "zyzzyva quux"]) == 0
    assert main(["translate", "predict", "--checkpoint", str(runs["translate"]), "the purple axolotl ."]) == 0
    assert main(["tag", "predict", "--checkpoint", str(runs["tag"]), "Zed flew to Qom"]) == 0


def test_lm_prompt_with_characters_never_seen(runs, capsys):
    cli_error(["lm", "generate", "--checkpoint", runs["lm"], "--prompt", "\u00e9\u00e9", "--length", "3"], capsys,
              r"not in the vocabulary|never seen|unknown|vocabulary")


def test_lm_evaluate_text_with_characters_never_seen(runs, tmp_path, capsys):
    path = tmp_path / "other.txt"
    path.write_text("\u00fcber \u00e9t\u00e9\n" * 5)
    cli_error(["lm", "evaluate", "--checkpoint", runs["lm"], "--data", path], capsys, r"vocabulary|never|unknown")


# --------------------------------------------------------------------------- lengths: zero, too long


def test_empty_text_to_predict(runs):
    """Documented: an empty text is a zero-length sequence that each task answers without an error:
    classify reads it as one <unk> token and gives a label, tag finds no entities, translate decodes from
    the end-of-sentence token alone (a 2-step model's output is noise, but it is a string)."""
    prediction = rnnkit.load(runs["classify"]).predict("")[0]
    assert prediction.label in ("pos", "neg") and 0 < prediction.probability <= 1
    assert rnnkit.load(runs["tag"]).predict("") == [[]]
    (translation,) = rnnkit.load(runs["translate"]).predict([""], decoder="greedy")
    assert isinstance(translation, str)


def test_predict_file_with_only_blank_lines(runs, tmp_path, capsys):
    path = tmp_path / "blank.txt"
    path.write_text("\n\n  \n")
    cli_error(["classify", "predict", "--checkpoint", runs["classify"], "--file", path], capsys, r"no text lines")
    cli_error(["translate", "predict", "--checkpoint", runs["translate"], "--file", path], capsys,
              r"no text lines")


def test_predict_file_that_is_binary(runs, files, capsys):
    cli_error(["classify", "predict", "--checkpoint", runs["classify"], "--file", files / "binary.txt"], capsys,
              r"binary")


def test_classify_text_longer_than_max_length_is_cut(runs):
    """Documented: the first max_length tokens of a text are read, the rest ignored."""
    model = rnnkit.load(runs["classify"])
    long = "good " * (model.config.max_length + 50)
    cut = "good " * model.config.max_length
    assert model.predict(long)[0].probability == pytest.approx(model.predict(cut)[0].probability, abs=1e-6)


def test_lm_generate_length_zero_and_negative(runs, capsys):
    assert main(["lm", "generate", "--checkpoint", str(runs["lm"]), "--prompt", "the", "--length", "0"]) == 0
    cli_error(["lm", "generate", "--checkpoint", runs["lm"], "--length", "-1"], capsys, r"length")


def test_forecast_predict_further_than_the_horizon(runs, capsys):
    cli_error(["forecast", "predict", "--checkpoint", runs["forecast"], "--steps", "7"], capsys, r"horizon|6")


def test_forecast_series_shorter_than_lookback_plus_horizon(tmp_path, capsys):
    path = tmp_path / "short.csv"
    path.write_text("y\n1\n2\n3\n")
    cli_error(["forecast", "train", "--data", path, "--out", tmp_path / "r", *FAST], capsys,
              r"points|short|longer|lookback")


def test_lm_text_shorter_than_one_batch(tmp_path, capsys):
    path = tmp_path / "short.txt"
    path.write_text("abc")
    cli_error(["lm", "train", "--data", path, "--out", tmp_path / "r", *FAST], capsys, r"fewer than|longer")


# --------------------------------------------------------------------------- sizes: batch size 0 and friends


SIZES = [("--batch-size", "0"), ("--batch-size", "-3"), ("--hidden-size", "0"), ("--num-layers", "0")]


@pytest.mark.parametrize("task,flag,value", [(task, flag, value) for task in TASKS_WITH_TRAIN for flag, value in SIZES
                                             if not (task == "forecast" and flag == "--num-layers")])
def test_train_refuses_non_positive_sizes(task, flag, value, tmp_path, capsys):
    name = flag.lstrip("-").replace("-", "_")
    cli_error([task, "train", flag, value, "--out", tmp_path / "r", *FAST], capsys, rf"{name}|{flag}")


def test_lab_refuses_batch_size_zero(tmp_path, capsys):
    cli_error(["lab", "adding", "--batch-size", "0", "--length", "10", "--out", tmp_path / "r", *FAST], capsys,
              r"batch_size")


@pytest.mark.parametrize("flag,value,match", [("--steps", "0", "steps"), ("--lr", "0", "lr"),
                                              ("--checkpoint-every", "0", "checkpoint_every"),
                                              ("--max-minutes", "-1", "max_minutes"),
                                              ("--checkpoint-minutes", "0", "checkpoint_minutes"),
                                              ("--clip", "-1", "clip")])
def test_train_refuses_bad_training_settings(flag, value, match, files, tmp_path, capsys):
    argv = ["lm", "train", "--data", files / "lm.txt", "--out", tmp_path / "r", *FAST, flag, value]
    cli_error(argv, capsys, match)


def test_a_flag_value_of_the_wrong_type_is_argparse_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["lm", "train", "--batch-size", "many"])
    assert info.value.code == 2
    assert "invalid int value: 'many'" in capsys.readouterr().err


# --------------------------------------------------------------------------- the layer itself


@pytest.mark.parametrize("make", [lambda: rnnkit.Recurrent("lstm", 3, 4), lambda: rnnkit.LSTM(3, 4),
                                  lambda: rnnkit.Recurrent("mingru", 3, 4)], ids=["Recurrent", "LSTM", "mingru"])
def test_layer_batch_of_zero_sequences(make):
    """B = 0 is an error naming the batch (torch.nn.LSTM returns empty outputs; rnnkit's fused kernels
    divided by zero here and killed the process with SIGFPE)."""
    with pytest.raises(ValueError, match=r"batch|0 sequences|empty"):
        make()(torch.randn(5, 0, 3))


def test_layer_step_with_a_batch_of_zero():
    with pytest.raises(ValueError, match=r"x_t has a batch of 0 sequences"):
        rnnkit.Recurrent("lstm", 3, 4).step(torch.randn(0, 3))


def test_layer_sequence_of_zero_steps():
    with pytest.raises(ValueError, match=r"time steps|T = 0|no time"):
        rnnkit.Recurrent("lstm", 3, 4)(torch.randn(0, 2, 3))


def test_layer_zero_length_in_lengths():
    with pytest.raises(ValueError, match=r"every length must be >= 1, got \[5, 0\]"):
        rnnkit.Recurrent("lstm", 3, 4)(torch.randn(5, 2, 3), lengths=torch.tensor([5, 0]))


def test_layer_lengths_longer_than_the_input():
    with pytest.raises(ValueError, match=r"lengths"):
        rnnkit.Recurrent("lstm", 3, 4)(torch.randn(5, 2, 3), lengths=torch.tensor([5, 6]))


def test_layer_nan_input_propagates():
    """Documented: the layer computes with NaN/Inf as torch does (no check per call: it would cost a
    synchronization per step on a GPU); the Trainer's NaN guard catches non-finite values in training."""
    x = torch.randn(5, 2, 3)
    x[2, 0, 1] = float("nan")
    out, _ = rnnkit.Recurrent("lstm", 3, 4)(x)
    assert not torch.isfinite(out[2:, 0]).all() and torch.isfinite(out[:, 1]).all()


@pytest.mark.parametrize("cell", sorted(fused.KERNELS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_fused_loops_propagate_nan_as_torch_does(cell, dtype):
    """A NaN at (t=2, b=0) makes every later output of sequence 0 NaN and leaves sequence 1 finite, in every
    path of the fused loops: batch 2 (gemv) and 16 (packed GEMM), training and inference (the tiled step), and
    layer.step. Catches an activation that clamps its input (float32's exp_u20 turned NaN into 0 in all four C++
    LSTM kinds, so the NaN never reached the loss and the Trainer's guard)."""
    for batch in (2, 16):
        x = torch.randn(5, batch, 3, dtype=dtype)
        x[2, 0, 1] = float("nan")
        layer = rnnkit.Recurrent(cell, 3, 4, num_layers=2, backend="fused", dtype=dtype)
        for training in (True, False):
            with torch.set_grad_enabled(training):
                out, _ = layer(x)
            assert layer.last_backend == "fused"
            assert not torch.isfinite(out[2:, 0]).any(), (batch, training)
            assert torch.isfinite(out[:, 1:]).all(), (batch, training)
    with torch.no_grad():
        state = None
        for t in range(5):
            y, state = layer.step(x[t, :2], state)
    assert not torch.isfinite(y[0]).any() and torch.isfinite(y[1]).all()


# --------------------------------------------------------------------------- checkpoints: safe loading


def test_a_pickle_checkpoint_is_refused(tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(checkpoint.CheckpointError, match=r"model.pt is a pickle file; rnnkit never unpickles"):
        checkpoint.load(path)
    with pytest.raises(checkpoint.CheckpointError, match=r"pickle file model.pt"):
        rnnkit.load(tmp_path)
    cli_error(["lm", "generate", "--checkpoint", path], capsys, r"pickle")


def test_a_pickle_renamed_to_safetensors_is_refused(runs, tmp_path):
    ckpt = tmp_path / "ckpt"
    _copy(runs["lm"] / "last", ckpt)
    torch.save({"weight": torch.zeros(2)}, ckpt / "model.safetensors")
    with pytest.raises(checkpoint.CheckpointError, match=r"model.safetensors is corrupt or truncated"):
        checkpoint.load(ckpt)


@pytest.mark.parametrize("file", ["model.safetensors", "optimizer.safetensors", "trainer.safetensors"])
@pytest.mark.parametrize("keep", [0.5, 0.99, 10])
def test_a_truncated_safetensors_file_is_refused(runs, tmp_path, file, keep):
    ckpt = tmp_path / "ckpt"
    _copy(runs["lm"] / "last", ckpt)
    raw = (ckpt / file).read_bytes()
    (ckpt / file).write_bytes(raw[: int(keep * len(raw)) if keep < 1 else keep])
    with pytest.raises(checkpoint.CheckpointError, match=rf"{file} is corrupt or truncated"):
        checkpoint.load(ckpt)


def test_a_newer_format_version_is_refused(runs, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    _copy(runs["lm"] / "last", ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["format_version"] = checkpoint.FORMAT_VERSION + 1
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(checkpoint.CheckpointError, match=r"written by a newer rnnkit \(format 2\).*upgrade"):
        checkpoint.load(ckpt)
    cli_error(["lm", "generate", "--checkpoint", ckpt], capsys, r"newer rnnkit")


@pytest.mark.parametrize("task", ["lm", "classify", "tag", "translate"])
def test_a_vocabulary_that_does_not_fit_the_weights_is_refused(task, runs, tmp_path):
    ckpt = tmp_path / "ckpt"
    _copy(runs[task] / "last", ckpt)
    vocab = json.loads((ckpt / "vocab.json").read_text())
    _grow_vocab(vocab)
    (ckpt / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(checkpoint.CheckpointError, match=r"vocab|do not fit"):
        rnnkit.load(ckpt)


@pytest.mark.parametrize("task,key", [("classify", "labels"), ("speech", "labels")])
def test_labels_that_do_not_fit_the_weights_are_refused(task, key, runs, tmp_path):
    ckpt = tmp_path / "ckpt"
    _copy(runs[task] / "last", ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config[key] = list(config[key]) + ["extra"]
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(checkpoint.CheckpointError, match=r"do not fit|labels"):
        rnnkit.load(ckpt)


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)


def _grow_vocab(vocab):
    """Add one entry to whatever list the vocabulary JSON keeps its tokens in."""
    for value in vocab.values():
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            value.append("\u2603" if all(len(v) == 1 for v in value) else "\u2603never-seen")
            return
        if isinstance(value, dict):
            _grow_vocab(value)
            return
    raise AssertionError(f"no token list in {list(vocab)}")


# --------------------------------------------------------------------------- export, video, ConvRecurrent, caption,
# --------------------------------------------------------------------------- nextframe (the commands of 2026-11-26)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A folder of 8 grey 16 x 16 .npy clips (4-6 frames) with labels.csv, and bad clips beside it."""
    import numpy as np
    from PIL import Image

    d = tmp_path_factory.mktemp("clips")
    good, bad = d / "good", d / "bad"
    good.mkdir()
    bad.mkdir()
    g = np.random.default_rng(0)
    for i in range(8):
        np.save(good / f"c{i}.npy", (g.random((4 + i % 3, 16, 16)) * 255).astype(np.uint8))
    (good / "labels.csv").write_text("clip,label\n" + "".join(f"c{i}.npy,{'ab'[i % 2]}\n" for i in range(8)))
    arrays = {"nan": np.full((3, 16, 16), np.nan, np.float32), "inf": np.full((3, 16, 16), np.inf, np.float32),
              "zero-frames": np.zeros((0, 16, 16), np.uint8), "zero-width": np.zeros((3, 16, 0), np.uint8),
              "2d": np.zeros((16, 16), np.uint8), "int64": np.zeros((3, 16, 16), np.int64),
              "rgb": np.zeros((3, 16, 16, 3), np.uint8), "bright": np.full((3, 16, 16), 7.0, np.float32),
              "long": np.zeros((300, 16, 16), np.uint8), "tiny": np.zeros((3, 1, 1), np.uint8),
              "caption-none": np.zeros((0, 20, 32, 32), np.uint8), "caption-16": np.zeros((20, 16, 16), np.uint8),
              "caption-nan": np.full((20, 32, 32), np.nan, np.float32),
              "caption-zero-frames": np.zeros((2, 0, 32, 32), np.uint8)}
    for name, array in arrays.items():
        np.save(bad / f"{name}.npy", array)
    np.save(bad / "object.npy", np.array([[["a"]]], dtype=object), allow_pickle=True)
    (bad / "empty.npy").write_bytes(b"")
    (bad / "binary.npy").write_bytes(bytes(range(256)) * 4)
    (bad / "text.npy").write_text("0.1 0.2 0.3\n")
    (bad / "binary.mp4").write_bytes(bytes(range(256)) * 4)
    (bad / "clip.txt").write_text("x")
    for folder in ("no-frames", "not-images", "grey-and-colour"):
        (bad / folder).mkdir()
    (bad / "not-images" / "f1.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(bad / "grey-and-colour" / "f1.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(bad / "grey-and-colour" / "f2.png")
    return d


VIDEO_SMALL = ["--model", "mean-frame", "--channels", "4", "--features", "8", "--frame-size", "16", "--batch-size", "4"]


@pytest.fixture(scope="module")
def video_run(clips, tmp_path_factory):
    """A 1-step video classifier (mean-frame, 2 labels, grey 16 x 16) trained on ``clips``."""
    out = tmp_path_factory.mktemp("video") / "run"
    fast = ["--steps", "1", "--eval-every", "1", "--checkpoint-every", "1", "--warmup-steps", "1", "--no-progress"]
    assert main([str(a) for a in ["video", "train", "--data", clips / "good", "--out", out, *VIDEO_SMALL,
                                  "--dev-fraction", "0.25", *fast]]) == 0
    return out


@pytest.mark.parametrize("clip,match", [
    ("empty.npy", r"empty.npy is empty \(0 bytes\)"),  # was numpy's EOFError traceback
    ("binary.npy", r"binary.npy is not a .npy file"),  # was numpy's "contains pickled (object) data"
    ("text.npy", r"text.npy is not a .npy file"),
    ("object.npy", r"object.npy is not a readable .npy array \(Object arrays cannot be loaded"),
    ("nan.npy", r"nan.npy holds NaN or infinite values"),
    ("inf.npy", r"inf.npy holds NaN or infinite values"),
    ("zero-frames.npy", r"zero-frames.npy is an empty clip, shape \(0, 16, 16, 1\)"),
    ("zero-width.npy", r"zero-width.npy is an empty clip"),
    ("2d.npy", r"2d.npy: a clip must be \(T, H, W\) or \(T, H, W, C\), got an array of shape \(16, 16\)"),
    ("int64.npy", r"int64.npy: expected uint8 \(0-255\) or float \(0-1\) values, got dtype int64"),
    ("rgb.npy", r"rgb.npy has 3 channels per frame, the model was trained on 1"),
    ("missing.npy", r"no such clip: .*missing.npy"),
    ("clip.txt", r"clip.txt: a clip must be a .npy array, a folder of image frames or a video file"),
    ("no-frames", r"no-frames is a clip folder with no image frames"),
    ("not-images", r"f1.png is not a readable image"),
    ("grey-and-colour", r"frame f2.png is 16x16 with 3 channel\(s\), frame f1.png is 16x16 with 1"),  # was: no channels
    ("binary.mp4", r"binary.mp4 (needs av|could not be decoded as a video)"),
])
def test_video_predict_refuses_a_bad_clip(clip, match, clips, video_run, capsys):
    cli_error(["video", "predict", "--checkpoint", video_run, clips / "bad" / clip], capsys, match)


def test_video_predict_documented_behaviours(clips, video_run, capsys):
    """Documented: float frames are taken as they are (expected in [0, 1], not checked); a clip of any length is
    read to its last frame (the models have no maximum T); frames of any size are resized to frame_size."""
    for clip in ("bright.npy", "long.npy", "tiny.npy"):
        assert main(["video", "predict", "--checkpoint", str(video_run), str(clips / "bad" / clip)]) == 0, clip
    assert capsys.readouterr().out.count("\n") == 3


@pytest.mark.parametrize("clip,match", [
    ([], r"no clips to predict"),
    ([torch.zeros(0, 1, 16, 16)], r"clip #0 is empty, shape \(0, 1, 16, 16\)"),  # was a NaN probability
    ([torch.zeros(3, 1, 0, 0)], r"clip #0 is empty"),  # was torch's interpolate error
    ([torch.full((3, 1, 16, 16), float("nan"))], r"clip #0 holds NaN or infinite values"),  # was a NaN probability
    ([torch.zeros(16, 16)], r"clip #0 must be a \(T, C, H, W\) tensor, got \(16, 16\)"),
], ids=["none", "zero-frames", "zero-size-frames", "nan", "2d"])
def test_video_predict_refuses_bad_tensors(clip, match, video_run):
    from rnnkit.tasks.video import TrainedVideo

    with pytest.raises(ValueError, match=match):
        TrainedVideo.load(video_run).predict(clip)


VIDEO_LABELS = {  # labels.csv -> what the message must say
    "empty": (b"", r"must have the columns clip and label, found no header"),
    "latin1": ("clip,label\nc0.npy,caf\xe9\n".encode("latin-1"), r"labels.csv is not UTF-8 text \(byte at offset 21\)"),
    "binary": (bytes(range(256)) * 4, r"labels.csv is not UTF-8 text"),
    "no-label-column": (b"clip\nc0.npy\n", r"must have the columns clip and label, found \['clip'\]"),
    "missing-field": (b"clip,label\nc0.npy,a\nc1.npy\n", r"labels.csv line 3: empty clip or label"),
    "extra-field": (b"clip,label\nc0.npy,a,zzz\nc1.npy,b\n",  # was silently ignored
                    r"labels.csv line 2 has more fields than the header \(clip, label\): \['zzz'\] left over"),
    "unknown-clip": (b"clip,label\nc0.npy,a\nc9.npy,b\n", r"line 3 names clip 'c9.npy', which is not in"),
    "header-only": (b"clip,label\n", r"lists no clips"),
    "unseen-label": (b"clip,label\nc0.npy,a\nc1.npy,zebra\n",
                     r"has label\(s\) never seen in training: 'zebra' \(first at clip c1.npy\); the model knows a, b"),
    "nan-clip": (b"clip,label\nc0.npy,a\nnan.npy,b\n", r"nan.npy holds NaN or infinite values"),
}


@pytest.mark.parametrize("kind", list(VIDEO_LABELS))
def test_video_evaluate_refuses_a_bad_folder(kind, clips, video_run, tmp_path, capsys):
    content, match = VIDEO_LABELS[kind]
    for name in ("c0.npy", "c1.npy"):
        (tmp_path / name).write_bytes((clips / "good" / name).read_bytes())
    (tmp_path / "nan.npy").write_bytes((clips / "bad" / "nan.npy").read_bytes())
    (tmp_path / "labels.csv").write_bytes(content)
    cli_error(["video", "evaluate", "--checkpoint", video_run, "--data", tmp_path], capsys, match)


def test_video_labels_with_extra_columns_are_ignored(clips, video_run, tmp_path):
    """Documented: columns other than clip and label are ignored."""
    for name in ("c0.npy", "c1.npy"):
        (tmp_path / name).write_bytes((clips / "good" / name).read_bytes())
    (tmp_path / "labels.csv").write_text("clip,label,notes\nc0.npy,a,x\nc1.npy,b,y\n")
    assert main(["video", "evaluate", "--checkpoint", str(video_run), "--data", str(tmp_path)]) == 0


@pytest.mark.parametrize("argv,match", [
    (["--data", "{empty}"], r"is empty: expected clips as .npy arrays"),
    (["--data", "{good}/labels.csv"], r"--data must be a folder of clips, .*labels.csv is not one"),
    (["--data", "{good}", "--labels", "{good}/nowhere.csv"], r"no labels file .*nowhere.csv"),
    (["--data", "{good}", "--dev-fraction", "0.99"],  # said "never seen in training ...; the model knows" (nothing)
     r"dev_fraction 0.99 holds out all 8 clip\(s\) of .*, leaving none to train on"),
    (["--data", "{mixed}"], r"clips with different channels: rgb.npy has 3, c0.npy has 1"),
    (["--batch-size", "0"], r"batch_size must be a positive int, got 0"),
    (["--frame-size", "0"], r"frame_size must be a positive multiple of 8, got 0"),
    (["--clip-length", "0"], r"clip_length must be an int >= 8"),
    (["--data", "{good}", "--steps", "0"], r"steps must be a positive int, got 0"),
], ids=["empty-folder", "file-as-folder", "no-labels-file", "all-dev", "mixed-channels", "batch-0", "frame-size-0",
        "clip-length-0", "steps-0"])
def test_video_train_refuses_bad_data_and_sizes(argv, match, clips, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "c0.npy").write_bytes((clips / "good" / "c0.npy").read_bytes())
    (tmp_path / "mixed" / "rgb.npy").write_bytes((clips / "bad" / "rgb.npy").read_bytes())
    (tmp_path / "mixed" / "labels.csv").write_text("clip,label\nc0.npy,a\nrgb.npy,b\n")
    argv = [a.format(empty=tmp_path / "empty", good=clips / "good", mixed=tmp_path / "mixed") for a in argv]
    small = VIDEO_SMALL if "--data" in argv else []
    fast = FAST if "--steps" not in argv else ["--no-progress"]
    cli_error(["video", "train", *argv, *small, "--out", tmp_path / "r", *fast], capsys, match)
    assert not (tmp_path / "r" / "last").exists()


@pytest.mark.parametrize("command", [["video", "predict", "x.npy"], ["video", "evaluate"], ["caption", "predict"],
                                     ["caption", "evaluate"], ["nextframe", "evaluate"]], ids=" ".join)
def test_new_commands_with_a_checkpoint_that_does_not_exist(command, tmp_path, capsys):
    cli_error([*command[:2], "--checkpoint", tmp_path / "nowhere", *command[2:]], capsys, r"nowhere does not exist")


@pytest.mark.parametrize("command,match", [
    (["video", "predict", "x.npy"], r"config.json names task 'classify', not 'video'"),
    (["caption", "predict"], r"config.json names task 'classify', not 'caption'"),
    (["nextframe", "evaluate"], r"config.json names task 'classify', not 'nextframe'"),
], ids=["video", "caption", "nextframe"])
def test_new_commands_with_another_tasks_checkpoint(command, match, runs, capsys):
    cli_error([*command[:2], "--checkpoint", runs["classify"], *command[2:]], capsys, match)


@pytest.mark.parametrize("argv,match", [
    (["caption", "train", "--batch-size", "0"], r"batch_size must be a positive int, got 0"),
    (["caption", "train", "--hidden-size", "0"], r"hidden_size must be a positive int, got 0"),
    (["caption", "train", "--beam-size", "0"], r"beam_size must be a positive int, got 0"),
    (["caption", "train", "--segment-length", "0"], r"segment_length must be an int in \[2, 11\]"),
    (["caption", "train", "--steps", "0"], r"steps must be a positive int, got 0"),
    (["nextframe", "train", "--batch-size", "0"], r"batch_size must be a positive int, got 0"),
    (["nextframe", "train", "--hidden-channels", "0"], r"hidden_channels must be a positive int, got 0"),
    (["nextframe", "train", "--length", "0"], r"length must be an int >= 10"),
    (["nextframe", "train", "--steps", "0"], r"steps must be a positive int, got 0"),
], ids=lambda v: "-".join(v).replace("--", "") if isinstance(v, list) else None)
def test_caption_and_nextframe_train_refuse_bad_sizes(argv, match, tmp_path, capsys):
    fast = FAST if "--steps" not in argv else ["--no-progress"]
    cli_error([*argv, "--out", tmp_path / "r", *fast], capsys, match)
    assert not (tmp_path / "r" / "last").exists()


@pytest.mark.parametrize("clip,match", [
    ("caption-zero-frames.npy", r"must be \(N, T, 32, 32\) or one clip \(T, 32, 32\), got shape \(2, 0, 32, 32\)"),
    ("caption-16.npy", r"got shape \(1, 20, 16, 16\)"),
    ("caption-nan.npy", r"must hold values in \[0, 1\]"),
    ("missing.npy", r"no such .npy file"),
    ("object.npy", r"is not a .npy array of numbers"),
    ("empty.npy", r"empty.npy is empty \(0 bytes\)"),
    ("caption-none.npy", r"got shape \(0, 20, 32, 32\)"),
])
def test_caption_predict_reads_npy_clips_with_a_clear_error(clip, match, clips):
    """``caption predict FILE.npy`` reads each file with ``caption.load_npy`` before the model runs."""
    from rnnkit.tasks import caption

    with pytest.raises((ValueError, FileNotFoundError), match=match):
        caption.load_npy(clips / "bad" / clip)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An LSTM(3, 4) exported as ONNX (if onnx and onnxruntime are installed) and TorchScript, by format."""
    from rnnkit.export import export_layer

    d = tmp_path_factory.mktemp("exported")
    layer = rnnkit.Recurrent("lstm", 3, 4).eval()
    files = {"torchscript": export_layer(layer, d / "lstm.pt", "torchscript").path}
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return files
    files["onnx"] = export_layer(layer, d / "lstm.onnx", "onnx").path
    return files


@pytest.mark.parametrize("argv,match", [
    (["--checkpoint", "{tmp}/nowhere"], r"nowhere does not exist; expected a checkpoint directory"),
    (["--checkpoint", "{tmp}/file.txt"], r"file.txt is a file; expected a checkpoint directory"),
    (["--checkpoint", "{tmp}/emptydir"], r"emptydir is neither a checkpoint directory .* it is empty"),
    (["--checkpoint", "{tag}"], r"holds a 'tag' model, which rnnkit export does not support: its prediction is CRF"),
    (["--checkpoint", "{classify}", "--out", "{tmp}"], r"is a directory; give a file name such as .*model.torchscript"),
    (["--checkpoint", "{classify}", "--out", "{tmp}/file.txt/model.pt"],  # was "[Errno 17] File exists: '...'"
     r"cannot write .*file.txt/model.pt: .*file.txt is a file, not a folder"),
], ids=["missing", "file", "empty-dir", "tag", "out-is-a-directory", "out-under-a-file"])
def test_export_refuses_bad_arguments(argv, match, runs, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "emptydir").mkdir()
    argv = [a.format(tmp=tmp_path, tag=runs["tag"], classify=runs["classify"]) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "model.pt")]
    cli_error(["export", "--format", "torchscript", *argv], capsys, match)


def test_export_format_is_an_argparse_choice(runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", "--checkpoint", str(runs["classify"]), "--format", "onnnx", "--out", str(tmp_path / "m")])
    assert info.value.code == 2 and "invalid choice: 'onnnx'" in capsys.readouterr().err


@pytest.mark.parametrize("call,error,match", [
    (lambda d: rnnkit.export.export_layer(rnnkit.Recurrent("lstm", 3, 4).eval(), d / "m", "onnxx"), ValueError,
     r"format must be one of onnx, torchscript, got 'onnxx'"),
    (lambda d: rnnkit.export.export_layer(torch.nn.LSTM(3, 4), d / "m.pt", "torchscript"), TypeError,
     r"layer must be an rnnkit.Recurrent, got LSTM"),
    (lambda d: rnnkit.export.export_layer(rnnkit.Recurrent("lstm", 3, 4, 2, dropout=0.5), d / "m.pt", "torchscript"),
     NotSupported, r"training mode with dropout=0.5"),
    (lambda d: rnnkit.export.ScriptedRecurrent(rnnkit.Recurrent("lstm", 3, 4).eval())(torch.randn(5, 0, 3)),
     ValueError, r"x has a batch of 0 sequences, shape \(5, 0, 3\)"),  # B = 0 gave empty outputs
    (lambda d: rnnkit.export.ScriptedRecurrent(rnnkit.Recurrent("lstm", 3, 4).eval())(torch.randn(0, 2, 3)),
     ValueError, r"x has 0 time steps, shape \(0, 2, 3\)"),  # was a TorchScript interpreter traceback
], ids=["format", "not-a-layer", "training-mode", "batch-0", "time-0"])
def test_export_layer_refuses_bad_arguments(call, error, match, tmp_path):
    import rnnkit.export  # noqa: F401

    with pytest.raises(error, match=match):
        call(tmp_path)


EXPORTED_INPUTS = {  # kind -> (inputs of the LSTM(3, 4) file, what the message must say); each was a runtime traceback
    "batch-0": ((torch.randn(5, 0, 3),), r"input x of .* is empty, shape \(5, 0, 3\)"),
    "time-0": ((torch.randn(0, 2, 3),), r"input x of .* is empty, shape \(0, 2, 3\)"),
    "features": ((torch.randn(5, 2, 4),), r"could not run on the inputs x \(5, 2, 4\) float32: .*"),
    "count": ((torch.randn(5, 2, 3), torch.randn(2)), r"takes 1 inputs \(x\), got 2"),
}


@pytest.mark.parametrize("kind", list(EXPORTED_INPUTS))
@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_run_file_refuses_bad_inputs(format, kind, exported):
    from rnnkit.export import run_file

    if format not in exported:
        pytest.skip("onnx and onnxruntime are not installed")
    inputs, match = EXPORTED_INPUTS[kind]
    with pytest.raises(ValueError, match=match):
        run_file(exported[format], format, inputs)


@pytest.mark.parametrize("content,error,match", [
    (None, FileNotFoundError, r"nope.bin does not exist; expected an exported"),
    (b"", ValueError, r"nope.bin is not a readable (onnx|torchscript) file"),
    (bytes(range(256)) * 4, ValueError, r"nope.bin is not a readable (onnx|torchscript) file"),
], ids=["missing", "empty", "binary"])
@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_run_file_refuses_a_bad_file(format, content, error, match, exported, tmp_path):
    from rnnkit.export import run_file

    if format not in exported:
        pytest.skip("onnx and onnxruntime are not installed")
    if content is not None:
        (tmp_path / "nope.bin").write_bytes(content)
    with pytest.raises(error, match=match):
        run_file(tmp_path / "nope.bin", format, (torch.randn(5, 2, 3),))


def test_exported_file_computes_nan_as_the_layer_does(exported):
    """Documented: NaN in the input is computed as the layer computes it (NaN from that step on, that sequence only)."""
    from rnnkit.export import run_file

    x = torch.randn(5, 2, 3)
    x[2, 0, 1] = float("nan")
    for format, path in exported.items():
        out = run_file(path, format, (x,))[0]
        assert out[2:, 0].isnan().all() and torch.isfinite(out[:, 1]).all() and torch.isfinite(out[:2]).all(), format


@pytest.mark.parametrize("call,match", [
    (lambda layer: layer(torch.randn(4, 0, 2, 5, 5)),  # was: empty outputs
     r"x has a batch of 0 clips, shape \(4, 0, 2, 5, 5\)"),
    (lambda layer: layer.step(torch.randn(0, 2, 5, 5)),  # was: empty outputs
     r"x_t has a batch of 0 clips, shape \(0, 2, 5, 5\)"),
    (lambda layer: layer(torch.randn(0, 2, 2, 5, 5)), r"x has 0 time steps, shape \(0, 2, 2, 5, 5\)"),
    (lambda layer: layer(torch.randn(4, 2, 2, 0, 5)), r"x has an empty frame, shape \(4, 2, 2, 0, 5\)"),
    (lambda layer: layer(torch.randn(4, 2, 2, 5, 5), lengths=torch.tensor([4, 0])), r"every length must be >= 1"),
    (lambda layer: layer(torch.randn(4, 2, 2, 5, 5), lengths=torch.tensor([4, 5])),
     r"lengths can be at most the 4 time steps of x, got \[4, 5\]"),
    (lambda layer: layer(torch.randn(4, 2, 2, 5, 5), lengths=torch.tensor([4, 4, 4])),
     r"lengths has 3 entries but the batch has 2 clips"),
    (lambda layer: layer(torch.randn(4, 2, 3, 5, 5)), r"x has 3 channels .* layer expects in_channels=2"),
], ids=["batch-0", "step-batch-0", "time-0", "empty-frame", "zero-length", "length-past-T", "lengths-count",
        "channels"])
def test_conv_recurrent_refuses_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(rnnkit.ConvRecurrent("convlstm", 2, 3, 3))


def test_conv_recurrent_nan_input_propagates():
    """Documented, as Recurrent: NaN is computed as torch computes it, no check per call. A NaN pixel reaches the
    neighbours the kernels reach, one ring a step, of that clip only."""
    x = torch.randn(4, 2, 2, 5, 5)
    x[1, 0, 0, 2, 2] = float("nan")
    out, _ = rnnkit.ConvRecurrent("convlstm", 2, 3, 3)(x)
    assert out[1:, 0].isnan().any() and torch.isfinite(out[0]).all() and torch.isfinite(out[:, 1]).all()
