"""ONNX and TorchScript export: every cell, stacks, directions, lengths, and trained task models.

Every file is traced at one batch size and length (``export.EXAMPLE``) and run here at others:
a time loop unrolled at export would give the wrong number of steps, so a shape or value check
at a second length is the test that matters (design section 4).
"""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

import rnnkit
from rnnkit import export
from rnnkit.backends import NotSupported
from rnnkit.cells import LSTMState
from rnnkit.cli import main
from rnnkit.tasks.registry import specs
from rnnkit.train import checkpoint
from tests.helpers import assert_close

SHAPES = [(4, 9), (1, 3)]  # (B, T) the files run at; export.EXAMPLE is (2, 5)
F32 = 1e-5  # the bound for float32


def needs_onnx():
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


def run_against_layer(layer, path, format, lengths, initial_state, tol):
    """Run the file at each of SHAPES and compare out, h_n (and c_n) with the layer itself."""
    layer = layer.eval()
    spec = export.layer_spec(layer, lengths, initial_state)
    lstm = layer.cell.state_type is LSTMState
    run = export.load_file(path, format)
    for B, T in SHAPES:
        inputs = spec.make_inputs(B, T)
        got = run(*inputs)
        x, rest = inputs[0], list(inputs[1:])
        n = rest.pop(0) if lengths else None
        state = None
        if initial_state:
            state = LSTMState(rest[0], rest[1]) if lstm else rest[0]
        with torch.no_grad():
            out, final = layer(x, state, lengths=n)
        expected = [out, *((final.h, final.c) if lstm else (final,))]
        assert len(got) == len(expected)
        for name, e, g in zip(["out", "h_n", "c_n"], expected, got):
            assert_close(f"{layer.cell.name} {format} {name} at B={B}, T={T}", e, g, tol)


def onnx_ops(path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


# ---------------------------------------------------------------------- layers


@pytest.mark.parametrize("cell", rnnkit.cells())
def test_every_cell_exports_to_onnx_and_runs_at_other_lengths(cell, tmp_path):
    needs_onnx()
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cell, 3, 5).eval()
    path = tmp_path / f"{cell}.onnx"
    result = export.export_layer(layer, path, "onnx")
    assert "Loop" in onnx_ops(path), "the time loop was unrolled instead of exported as an ONNX Loop"
    assert result.max_abs_diff <= F32 and result.check_shape != result.example_shape
    run_against_layer(layer, path, "onnx", False, False, F32)


@pytest.mark.parametrize("cell", rnnkit.cells())
def test_every_cell_exports_to_torchscript_with_lengths_and_state(cell, tmp_path):
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cell, 3, 5).eval()
    path = tmp_path / f"{cell}.pt"
    export.export_layer(layer, path, "torchscript", lengths=True, initial_state=True)
    run_against_layer(layer, path, "torchscript", True, True, F32)


STACKS = [
    ("lstm", dict(num_layers=2, bidirectional=True)),
    ("gru", dict(num_layers=2, bidirectional=True)),
    ("peephole_lstm", dict(num_layers=2, proj_size=3)),
    ("layernorm_lstm", dict(bidirectional=True)),
    ("indrnn", dict(bidirectional=True, nonlinearity="tanh", recurrent_max=0.9)),
]


@pytest.mark.parametrize("cell,options", STACKS, ids=[c for c, _ in STACKS])
@pytest.mark.parametrize("format", export.FORMATS)
def test_stacks_and_directions_with_lengths_match(cell, options, format, tmp_path):
    if format == "onnx":
        needs_onnx()
    torch.manual_seed(1)
    layer = rnnkit.Recurrent(cell, 3, 5, **options).eval()
    path = tmp_path / f"{cell}.{format}"
    export.export_layer(layer, path, format, lengths=True, initial_state=True)
    run_against_layer(layer, path, format, True, True, F32)


def test_float64_torchscript_is_exact_and_batch_first_is_kept(tmp_path):
    torch.manual_seed(2)
    layer = rnnkit.Recurrent("cifg_lstm", 3, 5, num_layers=2, bidirectional=True, batch_first=True).double().eval()
    path = tmp_path / "cifg.pt"
    result = export.export_layer(layer, path, "torchscript", lengths=True)
    assert result.inputs[0].axes == ("batch", "time", "3") and result.outputs[0].axes == ("batch", "time", "10")
    run_against_layer(layer, path, "torchscript", True, False, 1e-12)


def test_regularizers_are_absent_and_dropout_off_in_the_file(tmp_path):
    torch.manual_seed(3)
    layer = rnnkit.Recurrent("lstm", 3, 5, num_layers=2, dropout=0.5, zoneout=0.3, hidden_dropout=0.2,
                             weight_drop=0.4)
    layer.eval()
    export.export_layer(layer, tmp_path / "m.pt", "torchscript")
    run_against_layer(layer, tmp_path / "m.pt", "torchscript", False, False, F32)


# ---------------------------------------------------------------------- refusals


def test_a_layer_in_training_mode_with_regularizers_is_refused(tmp_path):
    layer = rnnkit.Recurrent("lstm", 3, 5, zoneout=0.1)
    with pytest.raises(NotSupported, match=r"training mode with zoneout.*layer.eval\(\)"):
        export.export_layer(layer, tmp_path / "m.onnx", "onnx")


def test_a_scripted_layer_called_another_way_than_built_says_so():
    scripted = export.ScriptedRecurrent(rnnkit.Recurrent("gru", 3, 5).eval())
    with pytest.raises(ValueError, match="built without lengths, but is called with it"):
        scripted(torch.randn(4, 2, 3), lengths=torch.tensor([4, 2]))


def test_packed_and_unbatched_inputs_are_refused():
    from torch.nn.utils.rnn import pack_sequence

    scripted = export.ScriptedRecurrent(rnnkit.Recurrent("gru", 3, 5).eval(), lengths=True)
    with pytest.raises(NotSupported, match="PackedSequence cannot be exported: pass the padded tensor and lengths"):
        scripted(pack_sequence([torch.randn(4, 3), torch.randn(2, 3)]))
    with pytest.raises(ValueError, match=r"x must be 3-D \(T, B, I\) to export, got 2-D"):
        scripted(torch.randn(4, 3), lengths=torch.tensor([4]))


def test_torch_compatible_classes_export(tmp_path):
    torch.manual_seed(7)
    layer = rnnkit.LSTM(3, 5, num_layers=2, batch_first=True).eval()
    export.export_layer(layer, tmp_path / "m.pt", "torchscript", initial_state=True)
    run_against_layer(layer, tmp_path / "m.pt", "torchscript", False, True, F32)


def test_bad_format_and_directory_out_are_named(tmp_path):
    layer = rnnkit.Recurrent("gru", 3, 5).eval()
    with pytest.raises(ValueError, match="format must be one of onnx, torchscript, got 'tflite'"):
        export.export_layer(layer, tmp_path / "m", "tflite")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        export.export_layer(layer, tmp_path, "torchscript")


def test_missing_onnx_names_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(ImportError, match=r"rnnkit\[export\]"):
        export.export_layer(rnnkit.Recurrent("gru", 3, 5).eval(), tmp_path / "m.onnx", "onnx")


@pytest.mark.parametrize("task", sorted(name for name, spec in specs().items() if not callable(spec.export)))
def test_tasks_without_a_tensor_forward_are_refused_by_name(task, tmp_path, capsys):
    checkpoint.save(tmp_path / "ckpt", checkpoint.Checkpoint(model={"w": torch.zeros(1)}, config={"task": task}))
    with pytest.raises(NotSupported, match=f"holds a '{task}' model, which rnnkit export does not support"):
        export.export_checkpoint(tmp_path / "ckpt", tmp_path / "m.onnx")
    assert main(["export", "--checkpoint", str(tmp_path / "ckpt"), "--format", "onnx",
                 "--out", str(tmp_path / "m.onnx")]) == 2
    assert f"'{task}' model" in capsys.readouterr().err


# ---------------------------------------------------------------------- trained task models


def save_task(directory, model, config: dict, vocab=None):
    checkpoint.save(directory, checkpoint.Checkpoint(model=model.state_dict(), config=config, vocab=vocab))
    return directory


def lab_checkpoint(directory, problem: str):
    from rnnkit.tasks.lab import LabConfig, LabModel

    config = LabConfig(length=10, cell="peephole_lstm", hidden_size=4, num_layers=2)
    return save_task(directory, LabModel(problem, config), {"task": "lab", **asdict(config), "problem": problem})


def classify_checkpoint(directory):
    from rnnkit.data.vocab import Vocab
    from rnnkit.tasks.classify import Classifier, ClassifyConfig

    vocab = Vocab.build("the movie was good and bad", "word")
    config = ClassifyConfig(cell="gru", hidden_size=4, embedding_size=6, bidirectional=True, pooling="attention")
    return save_task(directory, Classifier(len(vocab), 3, config),
                     {"task": "classify", **asdict(config), "labels": ["neg", "mid", "pos"], "majority": "neg"},
                     vocab.to_json())


def lm_checkpoint(directory):
    from rnnkit.data.vocab import Vocab
    from rnnkit.tasks.lm import LanguageModel, LMConfig

    vocab = Vocab.build("to be or not to be", "char")
    config = LMConfig(cell="lstm", hidden_size=6, proj_size=4, num_layers=2, embedding_size=5)
    return save_task(directory, LanguageModel(len(vocab), config), {"task": "lm", **asdict(config)}, vocab.to_json())


def speech_checkpoint(directory):
    from rnnkit.tasks.speech import SequenceClassifier, SpeechConfig

    config = SpeechConfig(cell="minlstm", hidden_size=4, bidirectional=True, pooling="max")
    return save_task(directory, SequenceClassifier(12, 3, config),
                     {"task": "speech", **asdict(config), "labels": ["1", "2", "3"], "majority": "1",
                      "num_features": 12})


def forecast_checkpoint(directory, strategy: str):
    from rnnkit.tasks.forecast import ForecastConfig, Forecaster

    config = ForecastConfig(cell="gru", hidden_size=4, lookback=8, horizon=3, ensemble=2, strategy=strategy)
    return save_task(directory, Forecaster(1, config),
                     {"task": "forecast", **asdict(config), "columns": ["y"], "num_features": 1})


TASKS = {
    "lab-adding": lambda d: lab_checkpoint(d, "adding"),
    "lab-copy": lambda d: lab_checkpoint(d, "copy"),
    "lab-order": lambda d: lab_checkpoint(d, "order"),
    "classify": classify_checkpoint,
    "lm": lm_checkpoint,
    "speech": speech_checkpoint,
    "forecast-direct": lambda d: forecast_checkpoint(d, "direct"),
    "forecast-autoregressive": lambda d: forecast_checkpoint(d, "autoregressive"),
}


@pytest.mark.parametrize("task", list(TASKS))
def test_task_models_export_to_onnx_and_match_at_a_second_shape(task, tmp_path):
    needs_onnx()
    torch.manual_seed(4)
    directory = TASKS[task](tmp_path / "ckpt")
    result = export.export_checkpoint(directory, tmp_path / "m.onnx", "onnx")
    assert result.max_abs_diff <= F32, result.describe()
    assert result.check_shape[0] != result.example_shape[0]
    if task == "forecast-direct":  # the skip connection reads exactly lookback steps
        assert result.check_shape[1] == result.example_shape[1] == 8
    else:
        assert result.check_shape[1] != result.example_shape[1]
        assert "Loop" in onnx_ops(tmp_path / "m.onnx")


def test_lm_file_streams_its_state_like_the_model(tmp_path):
    """Two calls to the file, the state carried, equal one call to the model over both parts."""
    torch.manual_seed(5)
    directory = lm_checkpoint(tmp_path / "ckpt")
    export.export_checkpoint(directory, tmp_path / "lm.pt", "torchscript")
    model = rnnkit.load(directory).model
    ids = torch.randint(0, model.embedding.num_embeddings, (7, 2))
    with torch.no_grad():
        expected, _ = model(ids)
    zeros = (torch.zeros(2, 2, 4), torch.zeros(2, 2, 6))
    first = export.run_file(tmp_path / "lm.pt", "torchscript", (ids[:3], *zeros))
    second = export.run_file(tmp_path / "lm.pt", "torchscript", (ids[3:], first[1], first[2]))
    assert_close("logits", expected, torch.cat([first[0], second[0]]), F32)


def test_cli_exports_a_checkpoint_and_prints_the_check(tmp_path, capsys):
    needs_onnx()
    torch.manual_seed(6)
    directory = classify_checkpoint(tmp_path / "run" / "best")
    out = tmp_path / "classifier.onnx"
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.exists() and str(directory) in printed
    for expected in ("input  ids (time, batch) int64", "input  lengths (batch) int64",
                     "output logits (batch, 3) float32", "dynamic axes: batch, time", "labels in logit order: neg, "
                     "mid, pos", "check: run at batch 3, time 11 (traced at batch 2, time 5)"):
        assert expected in printed
    diff = float(printed.rsplit("max abs difference to PyTorch ", 1)[1].split()[0])
    assert diff <= F32


@pytest.mark.slow
def test_cli_exports_a_trained_lab_run(tmp_path, capsys):
    needs_onnx()
    out = tmp_path / "run"
    assert main(["lab", "adding", "--cell", "gru", "--length", "10", "--hidden-size", "4", "--steps", "5",
                 "--test-size", "16", "--out", str(out), "--no-progress"]) == 0
    for format in export.FORMATS:
        assert main(["export", "--checkpoint", str(out), "--format", format, "--out", str(tmp_path / "m")]) == 0
        printed = capsys.readouterr().out
        assert "output y (batch) float32" in printed and "dynamic axes: batch, time" in printed
