"""Forecast skill: the baselines a walk-forward forecast must beat, and the tests that say whether it does.

Notation: a series y_1..y_n (levels, or log returns r_t = log(p_t / p_{t-1})), an origin o (the forecaster has
seen y_1..y_o), a forecast yhat_{o+h} h steps ahead, its error e = y_{o+h} - yhat_{o+h}; T forecasts in all.

Baselines, each using only the data up to its origin (the ETS and climatology parameters only the training part):

- random walk: yhat_{o+h} = y_o for levels (persistence: the last value); rhat_{o+h} = 0 for log returns (a price
  that follows a random walk has returns of mean zero);
- historical mean return: rhat_{o+h} = (1/o) sum_{t<=o} r_t, the prevailing mean (Goyal & Welch 2008);
- climatology: yhat = the mean of the training values whose day of the year is within 7 days of the target day's
  (a 15-day centred window, circular over the year; day-of-year distances modulo 365);
- ETS without a season: statsmodels' ETSModel fit once on the training part (additive error, trend none, additive
  or damped by AIC), then its filter run with those parameters over the whole series, so the level l_o and trend
  b_o at origin o use y_1..y_o only: yhat_{o+h} = l_o + (phi + phi^2 + ... + phi^h) b_o (phi = 1 undamped).

Diebold-Mariano test of equal accuracy (Diebold & Mariano 1995) under squared-error loss, with the small-sample
correction of Harvey, Leybourne & Newbold (1997), as R's ``forecast::dm.test(e1, e2, "less", h, power = 2)``:

    d_t = e1_t^2 - e2_t^2,   dbar = (1/T) sum_t d_t
    gamma_k = (1/T) sum_{t=k+1}^{T} (d_t - dbar)(d_{t-k} - dbar)
    V = (gamma_0 + 2 sum_{k=1}^{h-1} (1 - k/h) gamma_k) / T
    DM = dbar / sqrt(V),   DM* = DM sqrt((T + 1 - 2h + h(h - 1) / T) / T)
    p = F_{t(T-1)}(DM*)    (one-sided: small when forecast 1, the model, has the smaller squared errors)

For h = 1 this is R's statistic exactly. For h > 1 the lags get Newey-West's (Bartlett) weights 1 - k/h, whose V
cannot be negative; R's default weighs them 1 and can give V < 0.

Directional accuracy: of the n forecasts whose actual change is not 0 (levels: y_{o+h} - y_o; returns: r), k
have the actual's sign; p = P(X >= k), X ~ Binomial(n, 1/2), the one-sided test against a coin.
"""

from __future__ import annotations

import math
import warnings
from datetime import datetime

import numpy as np

from ..extras import require
from .series import ETS_TRENDS, ETSSpec, best_ets

CLIMATOLOGY_HALF_WINDOW = 7  # days either side of the target's day of the year: a 15-day centred mean


def diebold_mariano(e1: np.ndarray, e2: np.ndarray, horizon: int) -> tuple[float, float]:
    """(DM*, one-sided p) for H0 equal squared-error accuracy against H1 forecast 1 is more accurate; e1, e2 (T,).

    Identical losses (V = 0) leave the test undefined: DM* NaN and p = 1, no evidence of a difference.
    """
    e1, e2 = np.asarray(e1, dtype=float), np.asarray(e2, dtype=float)
    if e1.shape != e2.shape or e1.ndim != 1:
        raise ValueError(f"e1 and e2 must be 1-D arrays of the same length, got shapes {e1.shape} and {e2.shape}")
    T = len(e1)
    if not 1 <= horizon < T:
        raise ValueError(f"horizon must be in 1..{T - 1} (below the {T} forecasts), got {horizon}")
    d = e1**2 - e2**2  # (T,)
    dev = d - d.mean()
    gamma = [float(dev[k:] @ dev[: T - k]) / T for k in range(horizon)]  # gamma_0 .. gamma_{h-1}
    variance = (gamma[0] + 2 * sum((1 - k / horizon) * gamma[k] for k in range(1, horizon))) / T
    if variance <= 0:
        return math.nan, 1.0
    correction = math.sqrt((T + 1 - 2 * horizon + horizon * (horizon - 1) / T) / T)
    statistic = float(d.mean() / math.sqrt(variance) * correction)
    t = require("scipy.stats", "the Diebold-Mariano test of rnnkit forecast", "scipy").t
    return statistic, float(t.cdf(statistic, T - 1))


def directional_test(forecast_change: np.ndarray, actual_change: np.ndarray) -> tuple[float, float]:
    """(accuracy, one-sided binomial p) of the forecast's sign over the changes whose actual is not 0."""
    keep = actual_change != 0
    n = int(keep.sum())
    if n == 0:
        raise ValueError("directional accuracy needs at least one actual change that is not 0")
    hits = int((np.sign(forecast_change[keep]) == np.sign(actual_change[keep])).sum())
    binomtest = require("scipy.stats", "the directional test of rnnkit forecast", "scipy").binomtest
    return hits / n, float(binomtest(hits, n, 0.5, alternative="greater").pvalue)


def prevailing_mean(returns: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """(1/o) sum_{t<=o} r_t for each origin o (the number of returns seen); returns (N,), origins (K,)."""
    sums = np.concatenate([[0.0], np.cumsum(returns)])  # sums[o] = r_1 + ... + r_o
    return sums[origins] / origins


def climatology(train: np.ndarray, train_times: list[datetime], target_times: list[datetime],
                half_window: int = CLIMATOLOGY_HALF_WINDOW) -> np.ndarray:
    """The mean of ``train`` (n,) over the training days within ``half_window`` days of each target's day of the
    year (circular); (len(target_times),)."""
    seen = np.array([t.timetuple().tm_yday for t in train_times])  # (n,)
    wanted = np.array([t.timetuple().tm_yday for t in target_times])  # (m,)
    gap = np.abs(wanted[:, None] - seen[None, :]) % 365  # (m, n)
    near = np.minimum(gap, 365 - gap) <= half_window
    if not near.any(1).all():
        raise ValueError("climatology: a target day has no training day within "
                         f"{half_window} days of its day of the year")
    return (near * train[None, :]).sum(1) / near.sum(1)


def ets_walk_forward(y: np.ndarray, n_train: int, origins: np.ndarray, horizon: int
                     ) -> tuple[np.ndarray | None, ETSSpec | None]:
    """ETS without a season, fit on y[:n_train] and filtered over all of y: (K, horizon) forecasts from the origins
    (each the number of points seen), or (None, None) if no form fits."""
    best, form = best_ets(y[:n_train], 1, [ETSSpec("add", trend, damped, None) for trend, damped in ETS_TRENDS])
    if best is None:
        return None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = type(best.model)(y, error="add", trend=form.trend, damped_trend=form.damped)  # the same form
        full = model.smooth(best.params)  # with the training fit's parameters, over all of y
    level = np.asarray(full.level)  # (n,) l_t after seeing y_t
    steps = np.arange(1, horizon + 1)
    if form.trend is None:
        return np.repeat(level[origins - 1, None], horizon, 1), form
    slope = np.asarray(full.slope)  # (n,)
    phi = float(best.params[list(best.param_names).index("damping_trend")]) if form.damped else 1.0
    ramp = np.cumsum(phi**steps)  # (H,) phi + ... + phi^h
    return level[origins - 1, None] + ramp[None, :] * slope[origins - 1, None], form
