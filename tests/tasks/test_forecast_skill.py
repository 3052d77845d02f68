"""Forecasting returns and daily weather: the Diebold-Mariano and binomial tests on hand-computed cases, the
baselines, log returns, the series read from arch and vega_datasets, the settings each series implies, walk-forward
evaluation that never lets the model see the test part, clear errors on users' price files, and (slow) seeded runs
on generated prices: a random walk (no skill) and AR(1) returns (skill)."""

from __future__ import annotations

import importlib.util
import json
import math
from datetime import date, datetime, timedelta

import numpy as np
import pytest
import torch

from rnnkit.cli import main
from rnnkit.tasks.forecast import ForecastConfig, ForecastTask, forecast
from rnnkit.tasks.series import Series, log_returns, read_series
from rnnkit.tasks.skill import (
    climatology,
    diebold_mariano,
    directional_test,
    ets_walk_forward,
    prevailing_mean,
)
from rnnkit.tasks.walk_forward import Forecasts, score_walk_forward, verdict, walk_forward_forecasts

needs_arch = pytest.mark.skipif(importlib.util.find_spec("arch") is None, reason="arch is not installed")
needs_vega = pytest.mark.skipif(importlib.util.find_spec("vega_datasets") is None,
                                reason="vega_datasets is not installed")

# ---------------------------------------------------------------------- the tests, by hand


def test_diebold_mariano_one_step_by_hand():
    # d = e1^2 - e2^2 = (1-4, 4-4, 1-1) = (-3, 0, 0); dbar = -1; gamma_0 = (4 + 1 + 1) / 3 = 2; V = 2/3
    # DM = -1 / sqrt(2/3); HLN: x sqrt((3 + 1 - 2) / 3) = sqrt(2/3), so DM* = -1
    # t with 2 degrees of freedom: F(t) = 1/2 + t / (2 sqrt(t^2 + 2)) -> F(-1) = 1/2 - 1 / (2 sqrt(3))
    statistic, p = diebold_mariano(np.array([1.0, -2.0, 1.0]), np.array([2.0, 2.0, -1.0]), 1)
    assert statistic == pytest.approx(-1.0)
    assert p == pytest.approx(0.5 - 1 / (2 * math.sqrt(3)))


def test_diebold_mariano_two_steps_by_hand():
    # d = (1-4, 1-0, 0-0, 0-2) = (-3, 1, 0, -2); dbar = -1; deviations (-2, 2, 1, -1)
    # gamma_0 = (4 + 4 + 1 + 1) / 4 = 2.5; gamma_1 = (2*-2 + 1*2 + -1*1) / 4 = -0.75
    # V = (2.5 + 2 (1 - 1/2) (-0.75)) / 4 = 0.4375 (Bartlett weight 1/2; a weight of 1, as R's default, gives 0.25)
    # HLN: sqrt((4 + 1 - 4 + 2*1/4) / 4) = sqrt(0.375); DM* = -sqrt(0.375 / 0.4375) = -sqrt(6/7)
    statistic, p = diebold_mariano(np.array([1.0, 1.0, 0.0, 0.0]), np.array([2.0, 0.0, 0.0, math.sqrt(2)]), 2)
    assert statistic == pytest.approx(-math.sqrt(6 / 7))
    # t with 3 degrees of freedom: F(t) = 1/2 + (t / (sqrt(3) (1 + t^2/3)) + atan(t / sqrt(3))) / pi
    t = -math.sqrt(6 / 7)
    assert p == pytest.approx(0.5 + (t / (math.sqrt(3) * (1 + t * t / 3)) + math.atan(t / math.sqrt(3))) / math.pi)


def test_diebold_mariano_is_one_sided_and_refuses_bad_shapes():
    worse = diebold_mariano(np.array([2.0, 2.0, -1.0]), np.array([1.0, -2.0, 1.0]), 1)  # the roles swapped
    assert worse[0] == pytest.approx(1.0) and worse[1] == pytest.approx(0.5 + 1 / (2 * math.sqrt(3)))
    assert diebold_mariano(np.ones(5), -np.ones(5), 1) == (pytest.approx(math.nan, nan_ok=True), 1.0)  # V = 0
    with pytest.raises(ValueError, match="same length"):
        diebold_mariano(np.ones(3), np.ones(4), 1)
    with pytest.raises(ValueError, match="horizon must be in 1..2"):
        diebold_mariano(np.ones(3), np.zeros(3), 3)


def test_directional_test_by_hand():
    # 8 of 10 right: P(X >= 8) = (C(10,8) + C(10,9) + C(10,10)) / 2^10 = (45 + 10 + 1) / 1024
    forecast_change = np.ones(11)
    actual = np.array([1.0] * 8 + [-1.0, -1.0, 0.0])  # the actual 0 is not counted
    accuracy, p = directional_test(forecast_change, actual)
    assert accuracy == 0.8 and p == pytest.approx(56 / 1024)


# ---------------------------------------------------------------------- baselines


def test_prevailing_mean_uses_the_returns_up_to_each_origin():
    r = np.array([1.0, 3.0, 5.0, 7.0])
    np.testing.assert_allclose(prevailing_mean(r, np.array([1, 2, 4])), [1.0, 2.0, 4.0])


def test_climatology_is_a_circular_15_day_mean_of_the_training_days():
    days = [datetime(2013, 1, 1) + timedelta(days=i) for i in range(365)]
    values = np.arange(365.0)  # day of the year - 1
    got = climatology(values, days, [datetime(2014, 3, 1), datetime(2014, 1, 1)])
    assert got[0] == pytest.approx(59.0)  # days 53..67 (0-based values 52..66) centred on 59
    # 1 January: 25 Dec .. 8 Jan across the year's end: values 0..7 and 358..364
    assert got[1] == pytest.approx((sum(range(8)) + sum(range(358, 365))) / 15)


def test_ets_walk_forward_matches_a_fit_and_never_reads_ahead():
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    rng = np.random.default_rng(0)
    y = 50 + np.cumsum(rng.normal(size=120)) + 0.3 * np.arange(120)
    origins = np.arange(100, 120)
    got, form = ets_walk_forward(y, 100, origins, 3)
    fit = ETSModel(y[:100], error="add", trend=form.trend, damped_trend=form.damped).fit(disp=False)
    np.testing.assert_allclose(got[0], fit.forecast(3), rtol=1e-8)  # the first origin: the training fit's forecast
    changed = y.copy()
    changed[110:] += 100  # after origin 110
    again, _ = ets_walk_forward(changed, 100, origins, 3)
    np.testing.assert_array_equal(again[:11], got[:11])  # origins 100..110 saw none of it
    assert not np.allclose(again[11:], got[11:])


# ---------------------------------------------------------------------- returns and the packaged series


def write(tmp_path, text, name="prices.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_log_returns_and_a_non_positive_price(tmp_path):
    series = read_series(write(tmp_path, "date,close,volume\n2020-01-01,100,5\n2020-01-02,110,6\n2020-01-03,99,7\n"),
                         ["close", "volume"], "date")
    returns = log_returns(series)
    np.testing.assert_allclose(returns.values, [[math.log(1.1), 6], [math.log(0.9), 7]])
    assert returns.times == series.times[1:] and returns.columns == ["close", "volume"]
    path = write(tmp_path, "date,close\n2020-01-01,100\n2020-01-02,0\n")
    with pytest.raises(ValueError, match="line 3, column 'close': 0.0 is not a positive price") as error:
        log_returns(read_series(path, ["close"], "date"))
    assert path in str(error.value)


@needs_arch
def test_the_market_series_come_from_the_arch_wheel():
    sp500 = read_series(None, [], None, "sp500")
    assert sp500.values.shape == (5031, 1) and sp500.columns == ["close"]
    assert sp500.times[0].date().isoformat() == "1999-01-04" and sp500.times[-1].date().isoformat() == "2018-12-31"
    assert sp500.target[0] == pytest.approx(1228.099976)
    wide = read_series(None, ["close", "high", "low", "log_range"], None, "nasdaq")
    np.testing.assert_allclose(wide.values[:, 3], np.log(wide.values[:, 1] / wide.values[:, 2]))


@needs_vega
def test_the_seattle_weather_comes_from_vega_datasets_with_the_weather_one_hot():
    weather = read_series(None, [], None, "seattle_daily")
    assert weather.values.shape == (1461, 9) and weather.columns[0] == "temp_max"
    assert weather.times[0].date().isoformat() == "2012-01-01" and weather.times[-1].date().isoformat() == "2015-12-31"
    np.testing.assert_array_equal(weather.values[:, 4:].sum(1), 1.0)  # one kind of weather a day
    assert weather.values[0, :5].tolist() == [12.8, 0.0, 5.0, 4.7, 1.0]  # 2012-01-01: drizzle


@needs_vega
def test_the_monthly_stocks_come_from_vega_datasets_made_wide():
    stocks = read_series(None, ["MSFT", "AMZN", "IBM", "AAPL"], None, "stocks")
    assert stocks.values.shape == (123, 4)
    assert stocks.times[0].date().isoformat() == "2000-01-01" and stocks.times[-1].date().isoformat() == "2010-03-01"
    assert stocks.values[0].tolist() == [39.81, 64.56, 100.52, 25.94]  # the file's Jan 1 2000 rows


@pytest.mark.parametrize("settings,expected", [
    ({"series": "sp500"}, ("returns", 1, "walk_forward", 250)),
    ({"series": "seattle_daily"}, ("levels", 7, "walk_forward", 365)),
    ({"series": "stocks"}, ("returns", 1, "walk_forward", 36)),
    ({"data": "prices.csv", "target": "returns"}, ("returns", 1, "walk_forward", 250)),
    ({"data": "prices.csv"}, ("levels", 24, "holdout", 4)),
    ({"series": "sp500", "horizon": 5, "rolling_origins": 100}, ("returns", 5, "walk_forward", 100)),
    ({"series": "sp500", "target": "levels"}, ("levels", 24, "holdout", 4)),
    ({"series": "air_passengers", "evaluation": "walk_forward"}, ("levels", 24, "walk_forward", 250)),
])
def test_each_series_implies_its_settings(settings, expected):
    config = ForecastConfig(**settings)
    config.validate()
    assert (config.target, config.horizon, config.evaluation, config.rolling_origins) == expected


def test_bad_target_or_evaluation_is_named():
    with pytest.raises(ValueError, match="target must be one of auto, levels, returns, got 'prices'"):
        ForecastConfig(target="prices").validate()
    with pytest.raises(ValueError, match="evaluation must be one of auto, holdout, walk_forward, got 'cv'"):
        ForecastConfig(evaluation="cv").validate()


# ---------------------------------------------------------------------- walk-forward evaluation


def ar_prices(phi: float, n: int, seed: int) -> np.ndarray:
    """Prices 100 exp(cumsum r) whose log returns follow r_t = phi r_{t-1} + e_t, e_t ~ N(0, 0.01^2)."""
    rng = np.random.default_rng(seed)
    e = rng.normal(0, 0.01, n)
    r = np.zeros(n)
    for t in range(1, n):
        r[t] = phi * r[t - 1] + e[t]
    return 100 * np.exp(np.cumsum(r))


def price_file(tmp_path, phi: float, n: int = 800, seed: int = 0) -> str:
    prices = ar_prices(phi, n, seed)
    first = date(2000, 1, 1)
    return write(tmp_path, "date,close\n" + "".join(f"{first + timedelta(days=i)},{float(p)!r}\n"
                                                    for i, p in enumerate(prices)), f"ar{phi}.csv")


def test_walk_forward_never_lets_the_model_or_its_scaler_see_the_test_part(tmp_path):
    path = price_file(tmp_path, 0.4, n=120)
    config = ForecastConfig(data=path, column="close", target="returns", lookback=8, hidden_size=4, ensemble=1,
                            rolling_origins=20)
    config.validate()
    series = log_returns(read_series(path, ["close"], "date"))  # 119 returns; the first origin is 99
    changed = Series(series.values.copy(), series.columns, None, series.source)
    changed.values[99:] *= 50  # the test part only
    tasks = [ForecastTask(config, s, 1, 0, torch.device("cpu")) for s in (series, changed)]
    torch.testing.assert_close(tasks[0].z, tasks[1].z)  # the scaler and the training windows
    assert len(tasks[0].z) == 99
    model = tasks[0].model
    got = [walk_forward_forecasts(lambda history, steps: forecast(model, history, steps), s.values, 20, 1)
           for s in (series, changed)]
    # the forecast from origin o reads the returns before o only: the first origin saw none of the change
    assert got[0].point[0, 0] == got[1].point[0, 0] and got[0].point[1, 0] != got[1].point[1, 0]


def oracle_forecasts(phi_model: float, phi_data: float, n: int = 1200, origins: int = 400) -> tuple:
    """Walk-forward forecasts rhat_o = phi_model r_{o-1} of AR(phi_data) returns, made without a network."""
    r = np.diff(np.log(ar_prices(phi_data, n + 1, 1)))
    series = Series(r[:, None], ["close"], None, "generated")
    predict = lambda history, steps: (phi_model * history[-1:, 0],) * 3  # noqa: E731
    return series, walk_forward_forecasts(predict, series.values, origins, 1)


def test_skill_is_true_for_the_right_rule_on_ar1_returns_and_false_on_a_random_walk():
    series, forecasts = oracle_forecasts(0.4, 0.4)
    result, _ = score_walk_forward(series, forecasts, "returns", 0.8)
    assert result["skill"] and result["mse"] < result["random_walk_mse"] and result["dm_pvalue"] < 0.05
    assert result["n_origins"] == 400 and result["directional_accuracy"] > 0.5
    assert verdict(result).startswith("beats the random walk (p = ")
    series, forecasts = oracle_forecasts(0.4, 0.0)
    result, _ = score_walk_forward(series, forecasts, "returns", 0.8)
    assert not result["skill"] and result["mse"] > result["random_walk_mse"]
    assert verdict(result) == f"no evidence of skill over the random walk (p = {result['dm_pvalue']:.2g})"


def test_the_headline_is_the_last_step_and_every_step_has_its_mae():
    values = np.arange(10.0)[:, None]  # a line: the model below forecasts it exactly, the random walk lags
    series = Series(values, ["y"], None, "line")
    forecasts = walk_forward_forecasts(lambda h, steps: (h[-1, 0] + np.arange(1.0, steps + 1),) * 3, values, 5, 2)
    assert isinstance(forecasts, Forecasts) and forecasts.origins.tolist() == [5, 6, 7, 8, 9]
    assert forecasts.actual[0].tolist() == [5.0, 6.0] and np.isnan(forecasts.actual[4, 1])  # past the end
    result, _ = score_walk_forward(series, forecasts, "levels", 0.8)
    assert result["n_origins"] == 4 and result["mae"] == 0.0 and result["random_walk_mae"] == 2.0
    assert result["by_horizon"]["random_walk"] == [1.0, 2.0] and result["by_horizon"]["model"] == [0.0, 0.0]
    assert result["mae_over_horizons"]["random_walk"] == 1.5


# ---------------------------------------------------------------------- users' price files


PRICES_FLAGS = ["--column", "close", "--time-column", "date", "--target", "returns"]


@pytest.mark.parametrize("text,message", [
    ("date,close\n" + "".join(f"2020-01-{d:02d},{100 + d}\n" for d in range(1, 21)),
     "has 19 points of returns; walk-forward evaluation needs at least lookback \\+ horizon \\+ rolling_origins"),
    ("date,close\n2020-01-01,100\n2020-01-02,-3\n", "line 3, column 'close': -3.0 is not a positive price"),
    ("date,close\n2020-01-01,100\n2 Jan 2020,101\n", "line 3, column 'date': '2 Jan 2020' is not a time stamp"),
])
def test_bad_price_files_are_named_with_the_file_and_row(tmp_path, capsys, text, message):
    path = write(tmp_path, text)
    assert main(["forecast", "train", "--data", path, *PRICES_FLAGS, "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert path in err
    assert __import__("re").search(message, err), err


@pytest.mark.slow
@pytest.mark.parametrize("phi,skill", [(0.0, False), (0.4, True)])
def test_a_seeded_run_on_generated_prices_finds_skill_only_where_there_is_some(tmp_path, capsys, phi, skill):
    """Returns that are independent (a random walk) give no skill; AR(1) returns with coefficient 0.4 give skill
    and an MSE below the random walk's (the best possible: 1 - 0.4^2 = 84% of it)."""
    path = price_file(tmp_path, phi)
    out = tmp_path / "run"
    assert main(["forecast", "train", "--data", path, *PRICES_FLAGS, "--lookback", "8", "--hidden-size", "8",
                 "--ensemble", "1", "--batch-size", "32", "--lr", "0.01", "--steps", "100", "--eval-every", "100",
                 "--seed", "0", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["forecast", "evaluate", "--checkpoint", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"target", "n_origins", "mse", "mae", "random_walk_mse", "random_walk_mae", "mean_return_mse", "dm_stat",
            "dm_pvalue", "directional_accuracy", "directional_pvalue", "skill"} <= set(result)
    assert result["target"] == "returns" and result["n_origins"] == 250 and result["horizon"] == 1
    assert result["skill"] is skill
    if skill:
        assert result["mse"] < result["random_walk_mse"]
    assert (out / "plots" / "forecast.png").stat().st_size > 0 and (out / "plots" / "long_or_flat.png").is_file()
    assert main(["forecast", "evaluate", "--checkpoint", str(out)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"Verdict: {verdict(result)}."
