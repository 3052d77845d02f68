"""The forecast task: metrics on hand-checked values, the seasonal naive baseline, the scaler fit on the
training part only, windows, the season, clear errors on bad files, and tiny training runs (direct and
autoregressive, quantile and MC-dropout intervals, multivariate) whose loss falls, with evaluate --json,
predict and rnnkit.load."""

from __future__ import annotations

import json
import math
from datetime import datetime

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit.cli import main
from rnnkit.tasks.forecast import (
    ForecastConfig,
    ForecastTask,
    TrainedForecaster,
    forecast,
    make_windows,
    pinball,
    train,
)
from rnnkit.tasks.series import (
    Scaler,
    coverage,
    ets_forecast,
    infer_season,
    mase,
    mase_scale,
    next_times,
    parse_time,
    read_series,
    seasonal_naive,
    smape,
    window_starts,
)
from rnnkit.train.trainer import TrainConfig

# ---------------------------------------------------------------------- metrics and baselines


def test_mase_on_hand_checked_values():
    train_part = np.array([1.0, 3.0, 2.0, 5.0, 4.0])
    # m = 2: |2-1| + |5-3| + |4-2| = 1 + 2 + 2 -> scale 5/3
    assert mase_scale(train_part, 2) == pytest.approx(5 / 3)
    # m = 1: |3-1| + |2-3| + |5-2| + |4-5| = 2 + 1 + 3 + 1 -> 7/4
    assert mase_scale(train_part, 1) == pytest.approx(7 / 4)
    # errors |6-5| = 1, |4-6| = 2: MAE 1.5, over 5/3 -> 0.9
    assert mase(np.array([6.0, 4.0]), np.array([5.0, 6.0]), 5 / 3) == pytest.approx(0.9)


def test_smape_on_hand_checked_values():
    # 2|100-110|/(100+110) = 0.095238..., 2|50-40|/(50+40) = 0.2222...; mean x 100 = 15.873...
    assert smape(np.array([100.0, 50.0]), np.array([110.0, 40.0])) == pytest.approx(100 * (20 / 210 + 20 / 90) / 2)
    assert smape(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == 0.0  # 0/0 counts 0
    assert smape(np.array([1.0]), np.array([-1.0])) == pytest.approx(200.0)


def test_coverage_counts_the_bounds_as_inside():
    assert coverage(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 0, 0, 5]), np.array([2.0, 2, 2, 6])) == 0.5


def test_seasonal_naive_repeats_the_last_season():
    history = np.arange(10.0)  # ..., 6, 7, 8, 9
    np.testing.assert_array_equal(seasonal_naive(history, 5, 3), [7, 8, 9, 7, 8])
    np.testing.assert_array_equal(seasonal_naive(history, 3, 1), [9, 9, 9])
    np.testing.assert_array_equal(seasonal_naive(np.array([1.0, 2.0]), 2, 12), [2, 2])  # shorter than m: naive


def test_pinball_loss_is_asymmetric():
    target = torch.tensor([1.0])
    # q = 0.9: under-forecast by 1 costs 0.9, over-forecast by 1 costs 0.1
    assert float(pinball(torch.tensor([[0.0]]), target, (0.9,))) == pytest.approx(0.9)
    assert float(pinball(torch.tensor([[2.0]]), target, (0.9,))) == pytest.approx(0.1)


# ---------------------------------------------------------------------- scaling, windows, the season


def test_scaler_is_fit_on_the_training_part_only():
    values = np.column_stack([np.arange(1.0, 101.0), np.linspace(-1, 1, 100)])  # (100, 2)
    scaler = Scaler.fit(values[:80], "auto")
    assert scaler.log.tolist() == [True, False]  # the second column has values <= 0
    np.testing.assert_allclose(scaler.mean, [np.log(values[:80, 0]).mean(), values[:80, 1].mean()])
    z = scaler.forward(values[:80])
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(0), 1)
    np.testing.assert_allclose(scaler.inverse(z[:, 0]), values[:80, 0])


def test_the_task_scaler_ignores_the_held_out_points(tmp_path):
    y = 10 + np.sin(np.arange(60) / 3)
    changed = y.copy()
    changed[-6:] *= 100  # the held-out part only
    config = ForecastConfig(lookback=12, horizon=6, hidden_size=4, ensemble=1)
    stats = []
    for values in (y, changed):
        path = tmp_path / "s.csv"
        path.write_text("y\n" + "\n".join(map(str, values)) + "\n")
        config.data = str(path)
        task = ForecastTask(config, read_series(str(path), [], None), 1, 0, torch.device("cpu"))
        stats.append((task.model.scale_mean.clone(), task.model.scale_std.clone(), task.z.clone()))
    for a, b in zip(*stats):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("strategy", ["direct", "autoregressive"])
def test_shard_splits_the_windows_so_two_ranks_mean_to_one_batch(tmp_path, strategy):
    path = tmp_path / "s.csv"
    path.write_text("y\n" + "\n".join(str(10 + math.sin(i / 3)) for i in range(60)) + "\n")
    config = ForecastConfig(data=str(path), lookback=12, horizon=6, hidden_size=4, ensemble=1, batch_size=8,
                            head_dropout=0.0, strategy=strategy)
    task = ForecastTask(config, read_series(str(path), [], None), 1, 0, torch.device("cpu"))
    batch = task.stream.next()
    halves = [task.loss(task.shard(batch, rank, 2), None)[0] for rank in range(2)]
    torch.testing.assert_close((halves[0] + halves[1]) / 2, task.loss(batch, None)[0])


def test_windows_cover_the_training_part_and_are_level_free():
    assert window_starts(10, 4, 3).tolist() == [0, 1, 2, 3]  # the last window's target ends at point 10
    with pytest.raises(ValueError, match="fewer than lookback \\+ horizon = 8 \\+ 3"):
        window_starts(10, 8, 3)
    z = torch.arange(20.0)[:, None]  # (N, 1)
    x, y = make_windows(z, [0, 5], lookback=4, horizon=3, direct=True)
    assert x.shape == (4, 2, 1) and y.shape == (2, 3)
    # window 0: inputs 0..3 (mean 1.5), targets 4..6
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([-1.5, -0.5, 0.5, 1.5]))
    torch.testing.assert_close(y[0], torch.tensor([2.5, 3.5, 4.5]))
    torch.testing.assert_close(y[1], y[0])  # a shifted level looks the same
    x, y = make_windows(z, [0], lookback=4, horizon=3, direct=False)
    assert x.shape == y.shape == (6, 1, 1)
    torch.testing.assert_close(y[:-1], x[1:])  # the next value at every step


@pytest.mark.parametrize("stamps,season", [
    (["1949-01", "1949-02", "1949-03"], 12),
    (["2010-01-01 00:00", "2010-01-01 01:00", "2010-01-01 02:00"], 24),
    (["2010-01-01", "2010-01-02", "2010-01-03"], 1),
])
def test_the_season_comes_from_the_time_stamps(stamps, season):
    assert infer_season([parse_time(s) for s in stamps]) == season


def test_next_times_continue_the_calendar():
    months = [parse_time(s) for s in ("1960-11", "1960-12")]
    assert next_times(months, 2) == [datetime(1961, 1, 1), datetime(1961, 2, 1)]


def test_bundled_series():
    air = read_series(None, [], None, "air_passengers")
    assert air.values.shape == (144, 1) and air.target[:3].tolist() == [112, 118, 132]
    assert infer_season(air.times) == 12
    sun = read_series(None, [], None, "sunspots")
    assert sun.values.shape == (2820, 1) and infer_season(sun.times) == 12
    temps = read_series(None, [], None, "seattle_temps")
    assert temps.values.shape == (8759, 1) and infer_season(temps.times) == 24


# ---------------------------------------------------------------------- bad input


def write(tmp_path, text, name="s.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text,columns,message", [
    ("t,y\n1,2\n", ["z"], "has no column 'z' \\(it has: t, y\\)"),
    ("t,y\n1,2\n2,abc\n", ["y"], "line 3, column 'y': 'abc' is not a number"),
    ("t,y\n1,2\n2,\n", ["y"], "line 3, column 'y': '' is not a number \\(a missing value"),
    ("t,y\n1,nan\n", ["y"], "line 2, column 'y': 'nan' is not finite"),
    ("t,y\n1,2\n2,inf\n", ["y"], "line 3, column 'y': 'inf' is not finite"),
    ("t,y\n", ["y"], "has a header but no rows"),
    ("t,y,z\n1,2,3\n", [], "name the one to forecast with --column"),
])
def test_bad_files_are_named_with_the_column_and_line(tmp_path, text, columns, message):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=message) as error:
        read_series(path, columns, None)
    assert path in str(error.value)


def test_an_empty_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="is empty"):
        read_series(write(tmp_path, ""), ["y"], None)


def test_a_bad_time_stamp_or_order_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="line 3, column 't': 'May' is not a time stamp"):
        read_series(write(tmp_path, "t,y\n2000-01,1\nMay,2\n"), ["y"], "t")
    with pytest.raises(ValueError, match="line 3, column 't': .* does not come after"):
        read_series(write(tmp_path, "t,y\n2000-02,1\n2000-01,2\n"), ["y"], "t")


def test_a_series_shorter_than_lookback_plus_horizon_is_refused(tmp_path, capsys):
    path = write(tmp_path, "y\n" + "\n".join(str(i) for i in range(1, 31)) + "\n")
    assert main(["forecast", "train", "--data", path, "--lookback", "12", "--horizon", "12", "--out",
                 str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert path in err and "has 30 points" in err and "12 + 2 x 12 = 36" in err


def test_a_missing_column_through_the_cli(tmp_path, capsys):
    path = write(tmp_path, "y\n1\n2\n")
    assert main(["forecast", "train", "--data", path, "--column", "sales", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    assert f"{path} has no column 'sales' (it has: y); name the right one with --column" in capsys.readouterr().err


@pytest.mark.parametrize("settings,message", [
    ({"strategy": "recursive"}, "strategy must be one of direct, autoregressive, got 'recursive'"),
    ({"interval": "mc_dropout", "head_dropout": 0.0}, "mc_dropout needs --head-dropout > 0"),
    ({"interval_level": 1.5}, "interval_level must be in \\(0, 1\\), got 1.5"),
    ({"horizon": 0}, "horizon must be a positive int, got 0"),
    ({"strategy": "autoregressive", "bidirectional": True}, "cannot use --bidirectional"),
])
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        ForecastConfig(**settings).validate()


# ---------------------------------------------------------------------- training


def tiny_series(tmp_path, n=72) -> str:
    """Trend + a period-8 wave + a second column that leads it; no time column (season 1)."""
    t = np.arange(n)
    y = 20 + 0.2 * t + 3 * np.sin(2 * np.pi * t / 8)
    x = np.cos(2 * np.pi * t / 8)
    return write(tmp_path, "y,x\n" + "\n".join(f"{a:.4f},{b:.4f}" for a, b in zip(y, x)) + "\n")


TINY = dict(lookback=16, horizon=6, hidden_size=12, ensemble=2, batch_size=8, rolling_origins=2)
TINY_TRAIN = dict(steps=60, eval_every=30, log_every=10, lr=1e-2, warmup_steps=5)


def losses(out) -> list[float]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r and "eval" not in r]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("forecast")
    path = tiny_series(root)
    out = root / "run"
    summary = train(ForecastConfig(data=path, column="y", **TINY), TrainConfig(**TINY_TRAIN), out, progress=False)
    return out, summary, path


def test_training_loss_falls_and_beats_the_naive_forecast(run_dir):
    out, summary, _ = run_dir
    curve = losses(out)
    assert curve[-1] < 0.5 * curve[0]
    test = summary["test"]
    assert test["n"] == test["horizon"] == 6 and test["season"] == 1
    assert test["mase"] < test["seasonal_naive_mase"]
    assert (out / "plots" / "forecast.png").stat().st_size > 0
    assert json.loads((out / "test.json").read_text())["mase"] == pytest.approx(test["mase"])


def test_evaluate_json_predict_and_rnnkit_load(run_dir, capsys):
    out, summary, path = run_dir
    assert main(["forecast", "evaluate", "--checkpoint", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"task", "split", "n", "mase", "smape", "seasonal_naive_mase", "ets_mase", "coverage",
            "horizon", "rolling_mase", "rolling_origins"} <= set(result)
    assert result["task"] == "forecast" and result["split"] == "test" and result["rolling_origins"] == 2
    assert result["mase"] == pytest.approx(summary["test"]["mase"], rel=1e-6)
    assert 0 <= result["coverage"] <= 1 and math.isfinite(result["ets_mase"])
    model = rnnkit.load(out)
    assert isinstance(model, TrainedForecaster)
    rows = model.predict(steps=4)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["lower"] <= r["forecast"] <= r["upper"] for r in rows)
    assert main(["forecast", "predict", "--checkpoint", str(out), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 6


@pytest.mark.parametrize("strategy,interval", [("autoregressive", "quantile"), ("direct", "mc_dropout"),
                                               ("autoregressive", "mc_dropout")])
def test_other_strategies_and_intervals_train(tmp_path, strategy, interval):
    path = tiny_series(tmp_path)
    config = ForecastConfig(data=path, column="y,x", strategy=strategy, interval=interval, mc_samples=8,
                            **{**TINY, "rolling_origins": 1, "ensemble": 1})
    task_config = TrainConfig(**{**TINY_TRAIN, "steps": 40, "eval_every": 40})
    summary = train(config, task_config, tmp_path / "run", progress=False)
    curve = losses(tmp_path / "run")
    assert curve[-1] < curve[0]
    test = summary["test"]
    assert math.isfinite(test["mase"]) and 0 <= test["coverage"] <= 1
    model = rnnkit.load(tmp_path / "run")
    again = forecast(model.model, read_series(path, ["y", "x"], None).values[:-6])
    np.testing.assert_allclose(again.point, forecast(model.model, read_series(path, ["y", "x"], None)
                                                     .values[:-6]).point)  # MC draws are seeded
    assert (again.lower <= again.point).all() and (again.point <= again.upper).all()


def test_multivariate_columns_through_the_cli(tmp_path, capsys):
    path = tiny_series(tmp_path)
    out = tmp_path / "run"
    assert main(["forecast", "train", "--data", path, "--column", "y", "--column", "x", "--lookback", "16",
                 "--horizon", "6", "--hidden-size", "8", "--ensemble", "1", "--rolling-origins", "1", "--steps",
                 "10", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    model = rnnkit.load(out)
    assert model.columns == ["y", "x"] and model.model.scale_mean.numel() == 2
    with pytest.raises(ValueError, match="the model reads 2 column\\(s\\) \\(y, x\\); --column names 1"):
        model.evaluate(column="y")


@pytest.mark.slow
def test_baselines_reproduce_the_reference_figures_on_air_passengers():
    y = read_series(None, [], None, "air_passengers").target
    train_part, test_part = y[:-24], y[-24:]
    scale = mase_scale(train_part, 12)
    assert mase(test_part, seasonal_naive(train_part, 24, 12), scale) == pytest.approx(2.494, abs=5e-4)
    ets, form = ets_forecast(train_part, 24, 12)
    assert form.name() == "ETS(M,A,M)" and mase(test_part, ets, scale) == pytest.approx(1.692, abs=5e-4)
