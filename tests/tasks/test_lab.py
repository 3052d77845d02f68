"""The long-range dependency lab: the generators' targets (hand-checked small cases), their
determinism and baselines, the LSTM family's forget-gate init, a short run that learns, the
CLI's --json and the evaluation of a checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import rnnkit
from rnnkit.cli import main
from rnnkit.tasks import lab_data
from rnnkit.tasks.lab import (
    KEEP_GATE,
    LAB_TRAIN_DEFAULTS,
    LabConfig,
    LabModel,
    LabTask,
    TrainedLab,
    held_out_set,
    score,
    train,
    train_defaults,
)
from rnnkit.tasks.lab_data import ORDER_SYMBOLS, baseline, make_batch
from rnnkit.train import checkpoint
from rnnkit.train.report import read_metrics
from rnnkit.train.trainer import TrainConfig


def test_adding_targets_are_the_sum_of_the_two_marked_values():
    batch = make_batch("adding", 6, 5, seed=3)
    assert batch.x.shape == (6, 5, 2) and batch.y.shape == (5,) and batch.lengths is None
    values, markers = batch.x[..., 0], batch.x[..., 1]  # (6, 5) each
    assert ((values >= 0) & (values < 1)).all()
    for b in range(5):
        marked = markers[:, b].nonzero().flatten().tolist()
        assert len(marked) == 2 and marked[0] < 3 <= marked[1]  # one in each half
        assert batch.y[b] == pytest.approx(float(values[marked[0], b] + values[marked[1], b]))


def test_adding_by_hand():
    """T = 2: the markers can only sit at steps 0 and 1, so the target is the sum of both values."""
    batch = make_batch("adding", 2, 3, seed=0)
    assert batch.x[..., 1].eq(1).all()
    torch.testing.assert_close(batch.y, batch.x[0, :, 0] + batch.x[1, :, 0])


def test_copy_layout_by_hand():
    T = 3
    batch = make_batch("copy", T, 4, seed=1)
    symbols = batch.x.argmax(-1)  # (23, 4)
    assert batch.x.shape == (T + 20, 4, 10) and batch.y.shape == (T + 20, 4)
    data = symbols[:10]
    assert ((data >= 1) & (data <= 8)).all()
    assert symbols[10:12].eq(0).all()  # T - 1 = 2 blanks
    assert symbols[12].eq(9).all()  # the delimiter
    assert symbols[13:].eq(0).all()  # 10 blanks while the model recalls
    assert batch.y[:13].eq(0).all()  # T + 10 blank targets
    torch.testing.assert_close(batch.y[13:], data)  # then the data, in order


def test_copy_memoryless_baseline_is_10_ln8_over_T_plus_20():
    T = 7
    batch = make_batch("copy", T, 200, seed=2)
    # blank for T + 10 steps, then uniform over the 8 data symbols
    logits = torch.full((T + 20, 200, 10), -1e9)
    logits[: T + 10, :, 0] = 0.0
    logits[T + 10 :, :, 1:9] = 0.0
    ce = F.cross_entropy(logits.flatten(0, 1), batch.y.flatten())
    assert float(ce) == pytest.approx(10 * math.log(8) / (T + 20), rel=1e-5)
    assert baseline("copy", T)["cross_entropy"] == pytest.approx(10 * math.log(8) / (T + 20))


def test_order_layout_matches_experiment_6a():
    batch = make_batch("order", 100, 300, seed=4)
    assert batch.x.shape == (110, 300, 8) and batch.lengths.min() >= 100 and batch.lengths.max() <= 110
    B, E, X, Y = (ORDER_SYMBOLS.index(s) for s in "BEXY")
    symbols = batch.x.argmax(-1)  # (110, 300)
    for b in range(300):
        n = int(batch.lengths[b])
        seq = symbols[:n, b].tolist()
        assert seq[0] == B and seq[-1] == E
        assert batch.x[n:, b].eq(0).all()  # padding is zeros
        marked = [t for t, s in enumerate(seq) if s in (X, Y)]
        assert len(marked) == 2 and 10 <= marked[0] <= 20 and 50 <= marked[1] <= 60
        assert all(s < 4 for t, s in enumerate(seq[1:-1], 1) if t not in marked)  # distractors a-d
        first, second = (0 if seq[t] == X else 1 for t in marked)
        assert int(batch.y[b]) == 2 * first + second  # XX 0, XY 1, YX 2, YY 3
    assert set(batch.y.tolist()) == {0, 1, 2, 3}


def test_adding_baseline_always_one_scores_one_sixth():
    batch = make_batch("adding", 50, 20000, seed=5)
    assert float(((1 - batch.y) ** 2).mean()) == pytest.approx(1 / 6, abs=0.005)
    assert baseline("adding", 50)["mse"] == pytest.approx(0.1667, abs=1e-4)


@pytest.mark.parametrize("problem", lab_data.PROBLEMS)
def test_generators_are_deterministic_and_the_test_set_fixed(problem):
    a, b, c = (make_batch(problem, 12, 8, seed) for seed in (7, 7, 8))
    torch.testing.assert_close(a.x, b.x)
    torch.testing.assert_close(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    torch.testing.assert_close(held_out_set(problem, 12, 16).x, held_out_set(problem, 12, 16).x)
    torch.testing.assert_close(held_out_set(problem, 12, 16, "dev").x, held_out_set(problem, 12, 16, "dev").x)
    assert not torch.equal(held_out_set(problem, 12, 16, "dev").x, held_out_set(problem, 12, 16).x)


def test_best_checkpoint_and_stop_when_read_the_dev_set_and_test_is_scored_once_on_best(tmp_path):
    """Every evaluation logged during training is the dev set's score (it picks best/ and decides --stop-when);
    the test set is read once, on best/. Fails if the Trainer's evaluation scored the test set (the lab did)."""
    config = LabConfig(length=6, cell="gru", hidden_size=8, batch_size=16, test_size=64)
    dev, test = held_out_set("adding", 6, 64, "dev"), held_out_set("adding", 6, 64, "test")
    summary = train("adding", config, TrainConfig(**{**LAB_TRAIN_DEFAULTS, "steps": 12, "lr": 3e-2, "warmup_steps": 1,
                                                     "eval_every": 3, "checkpoint_every": 3, "log_every": 3}),
                    tmp_path, progress=False)
    evals = [r["eval"]["mse"] for r in read_metrics(tmp_path / "metrics.jsonl") if "eval" in r]
    assert len(evals) == 4

    def weights(name):
        model = LabModel("adding", config)
        model.load_state_dict(checkpoint.load(tmp_path / name).model)
        return model

    last, best = weights("last"), weights("best")
    on_dev, on_test = score(last, dev)["mse"], score(last, test)["mse"]
    assert abs(on_dev - on_test) > 1e-3 * on_test  # the two sets tell apart which one was read
    assert evals[-1] == pytest.approx(on_dev, rel=1e-6) and summary["eval"]["mse"] == pytest.approx(on_dev, rel=1e-6)
    assert score(best, dev)["mse"] == pytest.approx(min(evals), rel=1e-6)  # best/ is the lowest dev score
    assert summary["test"]["value"] == pytest.approx(score(best, test)["mse"], rel=1e-6)
    assert json.loads((tmp_path / "test.json").read_text())["value"] == summary["test"]["value"]


@pytest.mark.parametrize("problem,length,message", [("adding", 1, "length of the adding problem"),
                                                    ("order", 5, "length of the order problem"),
                                                    ("sorting", 10, "problem must be one of")])
def test_bad_problem_or_length_is_named(problem, length, message):
    with pytest.raises(ValueError, match=message):
        make_batch(problem, length, 2, 0)


@pytest.mark.parametrize("cell,block,gates,sign", [("lstm", 1, 4, 1), ("peephole_lstm", 1, 4, 1),
                                                   ("cifg_lstm", 0, 3, 1), ("gru", 1, 3, 1), ("cho_gru", 1, 3, 1),
                                                   ("minlstm", 0, 3, 1), ("minlstm", 1, 3, -1), ("mingru", 0, 2, -1)])
def test_the_gate_that_keeps_the_state_starts_at_forget_bias(cell, block, gates, sign):
    model = LabModel("adding", LabConfig(cell=cell, hidden_size=6, num_layers=2, forget_bias=1.5))
    for k in range(2):
        w = model.rnn.weights(k, 0)
        keep = slice(block * 6, (block + 1) * 6)
        assert w["bias_ih"][keep].eq(sign * 1.5).all()
        assert "bias_hh" not in w or w["bias_hh"][keep].eq(0).all()
        assert not w["bias_ih"].eq(sign * 1.5).all()  # the other gates keep the cell's own init
        assert w["bias_ih"].shape == (gates * 6,)


@pytest.mark.parametrize("cell", ["gru", "cho_gru", "mingru", "minlstm"])
def test_a_large_keep_bias_keeps_the_state(cell):
    """The sign is right: with the keep gate shut on the state, h stays at h_0 = 0 whatever the input."""
    model = LabModel("adding", LabConfig(cell=cell, hidden_size=5, forget_bias=30.0)).double()
    out, _ = model.rnn(torch.randn(4, 3, 2, dtype=torch.float64))
    assert out.abs().max() < 1e-9


def test_a_short_run_learns(tmp_path):
    torch.set_num_threads(1)
    config = LabConfig(length=10, cell="gru", hidden_size=16, batch_size=32, test_size=200)
    summary = train("adding", config, TrainConfig(**{**LAB_TRAIN_DEFAULTS, "steps": 150, "lr": 1e-2,
                                                     "warmup_steps": 10, "eval_every": 75, "log_every": 25}),
                    tmp_path / "run", progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert losses[-1] < 0.5 * losses[0]
    test = summary["test"]
    assert test["metric"] == "mse" and test["value"] < 0.5 * test["baseline"]
    assert TrainedLab.load(tmp_path / "run").evaluate()["value"] == pytest.approx(test["value"], rel=1e-5)
    assert isinstance(rnnkit.load(tmp_path / "run"), TrainedLab)


@pytest.mark.parametrize("problem,extra", [("adding", set()), ("copy", {"accuracy", "baseline_accuracy"}),
                                           ("order", {"cross_entropy", "baseline_cross_entropy"})])
def test_cli_json_has_the_keys_and_the_baseline(tmp_path, capsys, problem, extra):
    out = tmp_path / problem
    assert main(["lab", problem, "--cell", "gru", "--length", "10", "--hidden-size", "4", "--steps", "3",
                 "--test-size", "20", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"task", "problem", "split", "n", "length", "cell", "metric", "value", "baseline"} | extra
    assert (result["task"], result["problem"], result["split"], result["n"]) == ("lab", problem, "test", 20)
    assert result["baseline"] == pytest.approx(baseline(problem, 10)[result["metric"]])
    assert main(["lab", problem, "--checkpoint", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["value"] == pytest.approx(result["value"], rel=1e-5)


def test_cli_checkpoint_of_another_problem_is_an_error(tmp_path, capsys):
    out = tmp_path / "adding"
    main(["lab", "adding", "--cell", "rnn_tanh", "--length", "4", "--hidden-size", "4", "--steps", "2",
          "--test-size", "8", "--out", str(out), "--json"])
    capsys.readouterr()
    assert main(["lab", "copy", "--checkpoint", str(out)]) == 2
    assert "holds a 'adding' run, not 'copy'" in capsys.readouterr().err


@pytest.mark.parametrize("problem,expected", [("adding", 1.0), ("copy", 1.0), ("order", 3.0)])
def test_forget_bias_default_depends_on_the_problem(problem, expected):
    model = LabModel(problem, LabConfig(cell="lstm", hidden_size=3))
    assert model.rnn.bias_ih_l0[3:6].eq(expected).all()
    rnn = LabModel(problem, LabConfig(cell="rnn_tanh", hidden_size=3, forget_bias=9.0)).rnn  # ignored
    assert rnn.bias_ih_l0.abs().max() < 1


@pytest.mark.parametrize("problem", ["adding", "copy", "order"])
def test_shard_splits_the_examples_so_two_ranks_mean_to_one_batch(problem):
    task = LabTask(problem, LabConfig(length=10, cell="gru", hidden_size=4, batch_size=8, test_size=4), 0,
                   torch.device("cpu"))
    batch = task.stream.next()
    parts = [task.shard(batch, rank, 2) for rank in range(2)]
    whole = task.loss(batch, None)[0]
    halves = [task.loss(part, None)[0] for part in parts]
    torch.testing.assert_close((halves[0] + halves[1]) / 2, whole)
    assert torch.cat([p.x for p in parts], dim=1).equal(batch.x)


@pytest.mark.parametrize("cell", ["lstm", "gru", "mingru", "minlstm"])
def test_chrono_init_spreads_the_keep_bias_over_log_1_to_log_s(cell):
    config = LabConfig(cell=cell, length=50, hidden_size=200, init="chrono")
    model = LabModel("copy", config)  # S = 70
    w = model.rnn.weights(0, 0)
    H = 200
    block, sign = next(iter(KEEP_GATE[cell].items()))
    b = sign * w["bias_ih"][block * H : (block + 1) * H]
    assert b.min() >= 0 and b.max() <= math.log(69) and b.max() > math.log(40)  # spread over [0, log 69]
    if cell == "lstm":
        torch.testing.assert_close(w["bias_ih"][:H], -b)  # the input gate at -b
        assert w["bias_hh"][: 2 * H].eq(0).all()


def test_an_unknown_init_is_named():
    with pytest.raises(ValueError, match="init must be one of constant, chrono, got 'orthogonal'"):
        LabConfig(init="orthogonal").validate("adding")


def test_copy_has_its_own_defaults_and_config_json_records_them():
    assert (train_defaults("copy")["lr"], train_defaults("copy")["steps"]) == (1e-2, 5000)
    assert train_defaults("order")["steps"] == 2000 and train_defaults("adding") == LAB_TRAIN_DEFAULTS
    assert LabConfig().resolve("copy").hidden_size == 128 and LabConfig().resolve("adding").hidden_size == 64
    assert LabConfig(hidden_size=32).resolve("copy").hidden_size == 32
    assert LabModel("copy", LabConfig()).rnn.hidden_size == 128
