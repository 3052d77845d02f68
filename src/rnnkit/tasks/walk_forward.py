"""Walk-forward evaluation of ``rnnkit forecast`` (``--evaluation walk_forward``, the default for ``--target
returns`` and for the daily Seattle weather): forecasts from each of the last N origins, scored beside the random
walk and the other baselines of ``rnnkit.tasks.skill``, with the Diebold-Mariano and directional tests.

A series of n points (levels, or log returns); N = ``rolling_origins``, H = ``horizon``. The test part is the last
N points. The model and its scaler are fitted once, on the n - N points before the first origin, and never refit:
at origin o = n - N, ..., n - 1 the trained model reads the points before o (index 0..o-1) and forecasts the
points o, ..., o + H - 1 (step h is point o + h - 1), as far as the series goes. Step h thus has N - h + 1
forecasts, every one of a test point.

The headline (``mse``, ``mae``, the tests, ``skill``) is step H: the H-step forecasts, one per origin
(``n_origins`` = N - H + 1); ``by_horizon`` gives the MAE of the model and of each baseline at every step, and
``mae_over_horizons`` their means over the H steps. ``skill`` is true only when the Diebold-Mariano p-value against
the random walk is below 0.05.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .series import Series
from .skill import climatology, diebold_mariano, directional_test, ets_walk_forward, prevailing_mean

SKILL_LEVEL = 0.05  # the Diebold-Mariano p-value below which ``skill`` is true


class Forecasts(NamedTuple):
    """The model's walk-forward forecasts: each (K, H), NaN where step h of an origin lies past the series' end."""

    origins: np.ndarray  # (K,) the number of points seen at each origin
    point: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    actual: np.ndarray


def walk_forward_forecasts(predict: Callable, values: np.ndarray, n_origins: int, horizon: int) -> Forecasts:
    """``predict(history (o, F), steps)`` -> (point, lower, upper) at each of the last ``n_origins`` origins."""
    n = len(values)
    origins = np.arange(n - n_origins, n)
    point, lower, upper, actual = (np.full((n_origins, horizon), np.nan) for _ in range(4))
    for k, o in enumerate(origins):
        steps = min(horizon, n - o)
        forecast = predict(values[:o], steps)
        point[k, :steps], lower[k, :steps], upper[k, :steps] = forecast[0], forecast[1], forecast[2]
        actual[k, :steps] = values[o : o + steps, 0]
    return Forecasts(origins, point, lower, upper, actual)


def baselines(series: Series, forecasts: Forecasts, target: str) -> dict[str, np.ndarray]:
    """Each baseline's (K, H) forecasts of the test part (``rnnkit.tasks.skill``): random walk; for returns the
    prevailing mean; for levels ETS without a season and, for daily data of more than a year, climatology."""
    y, origins = series.target, forecasts.origins
    K, H = forecasts.point.shape
    if target == "returns":
        return {"random_walk": np.zeros((K, H)),
                "mean_return": np.repeat(prevailing_mean(y, origins)[:, None], H, 1)}
    out = {"random_walk": np.repeat(y[origins - 1, None], H, 1)}
    n_train = int(origins[0])
    ets, _ = ets_walk_forward(y, n_train, origins, H)
    if ets is not None:
        out["ets"] = ets
    times = series.times
    if times is not None and (times[n_train - 1] - times[0]).days >= 365 and (times[1] - times[0]).days == 1:
        index = np.minimum(origins[:, None] + np.arange(H)[None, :], len(y) - 1)  # (K, H), clipped past the end
        target_times = [times[i] for i in index.ravel()]
        out["climatology"] = climatology(y[:n_train], times[:n_train], target_times).reshape(K, H)
    return out


def _mae(actual: np.ndarray, forecast: np.ndarray) -> float:
    return float(np.mean(np.abs(actual - forecast)))


def _mse(actual: np.ndarray, forecast: np.ndarray) -> float:
    return float(np.mean((actual - forecast) ** 2))


def score_walk_forward(series: Series, forecasts: Forecasts, target: str, interval_level: float
                       ) -> tuple[dict, dict]:
    """The result (see the module notes; the caller adds the task and split) and the curves for the plots."""
    K, H = forecasts.point.shape
    others = baselines(series, forecasts, target)
    valid = [~np.isnan(forecasts.actual[:, h]) for h in range(H)]  # (K,) per step
    by_horizon = {"model": [_mae(forecasts.actual[v, h], forecasts.point[v, h]) for h, v in enumerate(valid)]}
    for name, values in others.items():
        by_horizon[name] = [_mae(forecasts.actual[v, h], values[v, h]) for h, v in enumerate(valid)]
    last = valid[H - 1]  # the headline: step H
    actual, ours, walk = forecasts.actual[last, H - 1], forecasts.point[last, H - 1], others["random_walk"][last, H - 1]
    dm_stat, dm_pvalue = diebold_mariano(actual - ours, actual - walk, H)
    if target == "returns":
        accuracy, direction_p = directional_test(ours, actual)
    else:
        accuracy, direction_p = directional_test(ours - walk, actual - walk)  # the change from the last value
    inside = (forecasts.lower[last, H - 1] <= actual) & (actual <= forecasts.upper[last, H - 1])
    result = {"n": K, "horizon": H, "target": target, "evaluation": "walk_forward", "n_origins": int(last.sum()),
              "mse": _mse(actual, ours), "mae": _mae(actual, ours), "random_walk_mse": _mse(actual, walk),
              "random_walk_mae": _mae(actual, walk)}
    for name in [name for name in others if name != "random_walk"]:  # in a fixed order
        result[f"{name}_mse"] = _mse(actual, others[name][last, H - 1])
        result[f"{name}_mae"] = _mae(actual, others[name][last, H - 1])
    result.update({"dm_stat": None if math.isnan(dm_stat) else dm_stat, "dm_pvalue": dm_pvalue,
                   "directional_accuracy": accuracy, "directional_pvalue": direction_p,
                   "skill": bool(dm_pvalue < SKILL_LEVEL), "coverage": float(inside.mean()),
                   "interval_level": interval_level, "by_horizon": by_horizon,
                   "mae_over_horizons": {name: float(np.mean(v)) for name, v in by_horizon.items()}})
    return result, {"forecasts": forecasts, "baselines": others}


def verdict(result: dict) -> str:
    """The plain sentence every walk-forward result ends with."""
    p = f"p = {result['dm_pvalue']:.2g}"
    return f"beats the random walk ({p})" if result["skill"] else f"no evidence of skill over the random walk ({p})"


def describe_walk_forward(result: dict) -> str:
    """One paragraph: the headline beside the baselines, the tests and the verdict."""
    H, means = result["horizon"], result["mae_over_horizons"]
    what = "log returns" if result["target"] == "returns" else "values"
    lines = [f"walk-forward over {result['n']} origins, {H}-step forecasts of the {what} ({result['n_origins']}): "
             f"MSE {result['mse']:.4g} (random walk {result['random_walk_mse']:.4g}"
             + (f", mean return {result['mean_return_mse']:.4g}" if "mean_return_mse" in result else "")
             + f"), MAE {result['mae']:.4g} (random walk {result['random_walk_mae']:.4g}); Diebold-Mariano "
             f"{result['dm_stat'] if result['dm_stat'] is None else round(result['dm_stat'], 3)}; direction right "
             f"{100 * result['directional_accuracy']:.1f}% (binomial p = {result['directional_pvalue']:.2g})"]
    if H > 1:
        lines.append(f"MAE over the {H} steps: " + ", ".join(f"{name} {v:.4g}" for name, v in means.items()))
    return "; ".join(lines) + f". Verdict: {verdict(result)}."


def plot_walk_forward(series: Series, curves: dict, result: dict, path: Path) -> Path:
    """The H-step forecasts of the test part against the truth, with the interval band and the random walk."""
    from ..plots import plt, save

    f: Forecasts = curves["forecasts"]
    H = result["horizon"]
    keep = ~np.isnan(f.actual[:, H - 1])
    index = (f.origins + H - 1)[keep]
    x = [series.times[i] for i in index] if series.times is not None else index
    fig, ax = plt.subplots(figsize=(10, 4.5))
    band = f"{100 * result['interval_level']:.0f}% interval (coverage {result['coverage']:.2f})"
    ax.fill_between(x, f.lower[keep, H - 1], f.upper[keep, H - 1], color="tab:blue", alpha=0.2, label=band)
    ax.plot(x, f.actual[keep, H - 1], color="black", lw=0.8, label="actual")
    ax.plot(x, f.point[keep, H - 1], color="tab:blue", lw=1, label=f"rnnkit (MSE {result['mse']:.4g})")
    if result["target"] == "levels":
        ax.plot(x, curves["baselines"]["random_walk"][keep, H - 1], color="tab:orange", lw=0.8, ls="--",
                label=f"random walk (MSE {result['random_walk_mse']:.4g})")
    what = "log return" if result["target"] == "returns" else series.columns[0]
    ax.set_title(f"{series.source}: {H}-step walk-forward forecasts of the {what}; the model {verdict(result)}",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return save(fig, path)


def plot_long_or_flat(series: Series, curves: dict, path: Path) -> Path:
    """Returns only: the cumulative return of holding the asset on the days the model's one-step forecast is
    positive (else cash at 0) beside buy-and-hold: exp(sum_t s_t r_t) - 1, s_t = 1[rhat_t > 0]."""
    from ..plots import plt, save

    f: Forecasts = curves["forecasts"]
    r, rhat = f.actual[:, 0], f.point[:, 0]
    index = f.origins
    x = [series.times[i] for i in index] if series.times is not None else index
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(x, np.expm1(np.cumsum(r)), color="black", lw=1, label="buy and hold")
    ax.plot(x, np.expm1(np.cumsum((rhat > 0) * r)), color="tab:blue", lw=1,
            label=f"long when the forecast is > 0, else flat ({100 * np.mean(rhat > 0):.0f}% of days long)")
    ax.set_title("An illustration of the test, not advice: no costs, no slippage, no interest on cash", fontsize=9)
    ax.set_ylabel("cumulative return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return save(fig, path)
