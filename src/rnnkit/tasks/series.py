"""Time series for ``rnnkit forecast``: reading, the season, scaling, windows, metrics and baselines.

Symbols used throughout: N points of F columns (the first is the target), lookback L,
horizon H, season m; a series is an (N, F) float64 array in time order.

Metrics (on the target column, raw units), for a forecast yhat of the H values y after an
origin with the training values y_1..y_n before it:

.. math::
    \\text{MASE} = \\frac{\\frac1H \\sum_h |y_h - \\hat y_h|}{\\frac{1}{n-m} \\sum_{t=m+1}^{n} |y_t - y_{t-m}|}
    \\qquad
    \\text{sMAPE} = \\frac{100}{H} \\sum_h \\frac{2 |y_h - \\hat y_h|}{|y_h| + |\\hat y_h|}

(Hyndman & Koehler 2006; the M4 competition's sMAPE, a term with 0/0 counts 0). The MASE
scale is the in-sample MAE of the seasonal naive forecast on the training part, m = 12 for
monthly data, 24 for hourly, 1 otherwise (design section 6).

Baselines: the seasonal naive forecast yhat_{n+h} = y_{n+h-m(floor((h-1)/m)+1)}, and
statsmodels' ``ETSModel`` with the error / trend / damped / seasonal combination of the
lowest AIC (Hyndman et al. 2008), both fit on the same training part as the model.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import NamedTuple

import numpy as np

from ..data import read_text
from ..data.packaged_series import READERS
from ..extras import require

BUNDLED = {  # name -> (file in rnnkit/data, time column, value column); sources in SOURCES.md
    "air_passengers": ("air_passengers.csv.gz", "month", "passengers"),
    "sunspots": ("sunspots.csv.gz", "month", "sunspots"),
    "seattle_temps": ("seattle_temps.csv.gz", "time", "temp"),
}
# name -> (time column, the columns read by default: the target first); read at run time from an installed package
# (rnnkit.data.packaged_series), with the forecast settings that suit them (``Preset``)
PACKAGED = {
    "sp500": ("date", ["close"]),
    "nasdaq": ("date", ["close"]),
    "stocks": ("date", ["MSFT"]),  # monthly; --column AMZN, IBM or AAPL for another
    "seattle_daily": ("date", ["temp_max", "precipitation", "temp_min", "wind", "weather_drizzle", "weather_fog",
                               "weather_rain", "weather_snow", "weather_sun"]),
}
SERIES = (*BUNDLED, *PACKAGED)  # every name --series takes


class Preset(NamedTuple):
    """What ``rnnkit forecast`` does with a series unless told otherwise: ``target`` levels or returns, the
    ``horizon``, ``evaluation`` holdout or walk_forward and its number of ``origins``."""

    target: str
    horizon: int
    evaluation: str
    origins: int


LEVELS = Preset("levels", 24, "holdout", 4)  # a user's file and the classic bundled series
RETURNS = Preset("returns", 1, "walk_forward", 250)  # a user's file with --target returns, and sp500 / nasdaq
PRESETS = {"sp500": RETURNS, "nasdaq": RETURNS,
           # 122 monthly returns: the last 36 months (2007-04 .. 2010-03) walked forward
           "stocks": Preset("returns", 1, "walk_forward", 36),
           # forecast the maximum temperature 1-7 days ahead, walked forward over the last 365 days (2015)
           "seattle_daily": Preset("levels", 7, "walk_forward", 365)}
FORMATS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
TIME_FORMATS = ("%Y-%m", "%Y/%m", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M", "%Y/%m/%d", "%Y")  # besides ISO 8601
SEASON_MONTHLY, SEASON_HOURLY = 12, 24


@dataclass
class Series:
    """Columns of one file in time order: ``values`` (N, F), the first column the target."""

    values: np.ndarray  # (N, F) float64
    columns: list[str]
    times: list[datetime] | None  # N stamps, or None without a time column
    source: str  # for messages: the file, or "bundled air_passengers"

    @property
    def target(self) -> np.ndarray:
        return self.values[:, 0]  # (N,)


# ---------------------------------------------------------------------- reading


def parse_time(text: str) -> datetime:
    """A time stamp: ISO 8601 (``1949-01-01``, ``2010-01-01 00:00``), or ``1949-01``, ``2010/01/01 00:00``, ``1949``."""
    text = text.strip()
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    for pattern in TIME_FORMATS:
        try:
            return datetime.strptime(text, pattern)
        except ValueError:
            continue
    raise ValueError(f"{text!r} is not a time stamp (expected ISO 8601 such as 1949-01-31 or 2010-01-01 13:00, "
                     "or 1949-01)")


def split_columns(column: str | list[str] | None) -> list[str]:
    """``"a,b"`` or ``["a", "b,c"]`` -> ``["a", "b", "c"]`` (the first is the target)."""
    if column is None:
        return []
    parts = [column] if isinstance(column, str) else list(column)
    return [name.strip() for part in parts for name in part.split(",") if name.strip()]


def read_series(path: str | None, columns: list[str], time_column: str | None, bundled: str = "air_passengers",
                format: str | None = None) -> Series:
    """The columns of ``path`` (CSV or TSV with a header), or of the bundled or packaged series ``bundled``.

    Without ``columns`` a file must have exactly one column besides the time column. Errors name the
    file, the column and the row: a missing column, a value that is not a number, NaN or inf, an
    empty file, a time stamp that does not parse or goes backwards.
    """
    if path is None and bundled in PACKAGED:
        bundled_time, bundled_columns = PACKAGED[bundled]
        text = READERS[bundled]()
        source, delimiter = f"packaged {bundled}", ","
        columns, time_column = columns or bundled_columns, time_column or bundled_time
    elif path is None:
        if bundled not in BUNDLED:
            raise ValueError(f"no bundled series named {bundled!r}; available: {', '.join(SERIES)}")
        name, bundled_time, bundled_value = BUNDLED[bundled]
        text = gzip.decompress(resources.files("rnnkit.data").joinpath(name).read_bytes()).decode("utf-8")
        source, delimiter = f"bundled {bundled}", ","
        columns, time_column = columns or [bundled_value], time_column or bundled_time
    else:
        source, text = str(path), read_text(path)
        suffix = "." + source.rsplit(".", 1)[-1].lower() if "." in source else ""
        if format is not None:
            if format not in ("csv", "tsv"):
                raise ValueError(f"format must be csv or tsv, got {format!r}")
            delimiter = "," if format == "csv" else "\t"
        elif suffix in FORMATS:
            delimiter = FORMATS[suffix]
        else:
            raise ValueError(f"cannot tell the format of {source} from its extension {suffix or '(none)'!r}; "
                             "pass --format csv or tsv")
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    rows = [row for row in reader if any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"{source} is empty; expected a header line and one row per time step")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if not body:
        raise ValueError(f"{source} has a header but no rows")
    if not columns:
        rest = [h for h in header if h != time_column]
        if len(rest) != 1:
            raise ValueError(f"{source} has columns {', '.join(header)}: name the one to forecast with --column")
        columns = rest
    for flag, names in (("--column", columns), ("--time-column", [time_column] if time_column else [])):
        for name in names:
            if name not in header:
                raise ValueError(f"{source} has no column {name!r} (it has: {', '.join(header)}); "
                                 f"name the right one with {flag}")
    if len(set(columns)) != len(columns):
        raise ValueError(f"--column names a column twice: {', '.join(columns)}")
    index = [header.index(c) for c in columns]
    values = np.empty((len(body), len(columns)))  # (N, F)
    for r, row in enumerate(body):
        line = r + 2  # the header is line 1
        if len(row) != len(header):
            raise ValueError(f"{source} line {line} has {len(row)} fields, the header has {len(header)}")
        for f, (name, i) in enumerate(zip(columns, index)):
            cell = row[i].strip()
            try:
                value = float(cell)
            except ValueError:
                raise ValueError(f"{source} line {line}, column {name!r}: {cell!r} is not a number"
                                 + (" (a missing value: fill or drop it first)" if not cell else "")) from None
            if not math.isfinite(value):
                raise ValueError(f"{source} line {line}, column {name!r}: {cell!r} is not finite (NaN or inf); "
                                 "fill or drop it first")
            values[r, f] = value
    times = None
    if time_column:
        i = header.index(time_column)
        times = []
        for r, row in enumerate(body):
            try:
                times.append(parse_time(row[i]))
            except ValueError as error:
                raise ValueError(f"{source} line {r + 2}, column {time_column!r}: {error}") from None
        for r in range(1, len(times)):
            if times[r] <= times[r - 1]:
                raise ValueError(f"{source} line {r + 2}, column {time_column!r}: {times[r]} does not come after "
                                 f"{times[r - 1]}; sort the rows by time")
    return Series(values, list(columns), times, source)


def log_returns(series: Series) -> Series:
    """The series with its target column p replaced by its log returns r_t = log(p_t / p_{t-1}), t = 2..N; the other
    columns (inputs) are kept as they are from row 2 on. Every price must be > 0: the error names the row."""
    p = series.target
    bad = np.flatnonzero(p <= 0)
    if bad.size:
        price = float(p[bad[0]])
        raise ValueError(f"{series.source} line {bad[0] + 2}, column {series.columns[0]!r}: {price!r} is not a "
                         "positive price; --target returns takes the logarithm of prices > 0 (use --target levels for "
                         "a series that can be <= 0)")
    values = series.values[1:].copy()  # (N-1, F)
    values[:, 0] = np.diff(np.log(p))
    return Series(values, series.columns, None if series.times is None else series.times[1:], series.source)


def infer_season(times: list[datetime] | None) -> int:
    """m from the median spacing of the time stamps: 12 for monthly (28-31 days), 24 for hourly, 1 otherwise."""
    if times is None or len(times) < 2:
        return 1
    gaps = sorted((b - a).total_seconds() for a, b in zip(times, times[1:]))
    gap = timedelta(seconds=gaps[len(gaps) // 2])
    if timedelta(days=28) <= gap <= timedelta(days=31):
        return SEASON_MONTHLY
    if gap == timedelta(hours=1):
        return SEASON_HOURLY
    return 1


def next_times(times: list[datetime] | None, count: int) -> list[datetime] | None:
    """The ``count`` stamps after the last one: calendar months for monthly data, else the median spacing."""
    if times is None or len(times) < 2:
        return None
    if infer_season(times) == SEASON_MONTHLY:
        last = times[-1]
        return [last.replace(year=last.year + (last.month - 1 + k) // 12, month=(last.month - 1 + k) % 12 + 1,
                             day=min(last.day, 28)) for k in range(1, count + 1)]
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    gap = gaps[len(gaps) // 2]
    return [times[-1] + k * gap for k in range(1, count + 1)]


# ---------------------------------------------------------------------- scaling and windows


@dataclass
class Scaler:
    """z = (g(x) - mean) / std per column, g = log where ``log`` is set, else the identity.

    Fit on the training part only (``Scaler.fit(train)``): the held-out points never inform it.
    """

    log: np.ndarray  # (F,) bool
    mean: np.ndarray  # (F,)
    std: np.ndarray  # (F,)

    @classmethod
    def fit(cls, train: np.ndarray, transform: str) -> Scaler:
        """``transform``: "log", "none", or "auto" (log for a column whose training values are all > 0)."""
        positive = (train > 0).all(0)  # (F,)
        if transform == "log" and not positive.all():
            raise ValueError("transform 'log' needs positive values, but a training column has values <= 0; "
                             "use --transform none or auto")
        log = positive if transform == "auto" else np.full(train.shape[1], transform == "log")
        g = np.where(log, np.log(np.where(log, train, 1.0)), train)  # (N, F)
        std = g.std(0)
        return cls(log, g.mean(0), np.where(std > 0, std, 1.0))

    def forward(self, x: np.ndarray, source: str = "the series") -> np.ndarray:
        """(N, F) raw -> (N, F) scaled."""
        bad = self.log & (x <= 0).any(0)
        if bad.any():
            raise ValueError(f"{source}: column {int(np.argmax(bad)) + 1} has values <= 0, but the model was "
                             "trained on its logarithm (transform log)")
        g = np.where(self.log, np.log(np.where(self.log, x, 1.0)), x)
        return (g - self.mean) / self.std

    def inverse(self, z: np.ndarray, column: int = 0) -> np.ndarray:
        """Scaled values of one column (any shape) -> raw units."""
        g = z * self.std[column] + self.mean[column]
        return np.exp(g) if self.log[column] else g


def window_starts(n: int, lookback: int, horizon: int) -> np.ndarray:
    """The start s of every training window: inputs s..s+L-1, targets s+L..s+L+H-1, all inside n points."""
    count = n - lookback - horizon + 1
    if count < 1:
        raise ValueError(f"the training part has {n} points, fewer than lookback + horizon = "
                         f"{lookback} + {horizon}; lower --lookback or --horizon, or use a longer series")
    return np.arange(count)


# ---------------------------------------------------------------------- metrics


def mase_scale(train: np.ndarray, season: int) -> float:
    """The in-sample MAE of the seasonal naive forecast on ``train``: mean |y_t - y_{t-m}| over t > m."""
    m = season if len(train) > season else 1
    scale = float(np.mean(np.abs(train[m:] - train[:-m])))
    if scale == 0:
        raise ValueError("the training part is constant at lag m: the MASE scale is 0")
    return scale


def mase(actual: np.ndarray, forecast: np.ndarray, scale: float) -> float:
    return float(np.mean(np.abs(actual - forecast)) / scale)


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """In percent, 0..200; a term with |y| + |yhat| = 0 counts 0."""
    denominator = np.abs(actual) + np.abs(forecast)
    terms = np.where(denominator > 0, 2 * np.abs(actual - forecast) / np.where(denominator > 0, denominator, 1), 0)
    return float(100 * np.mean(terms))


def mape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """In percent; only where the actual value is not 0."""
    keep = actual != 0
    return float(100 * np.mean(np.abs(actual[keep] - forecast[keep]) / np.abs(actual[keep]))) if keep.any() \
        else float("nan")


def coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """The share of actual values inside [lower, upper]."""
    return float(np.mean((actual >= lower) & (actual <= upper)))


# ---------------------------------------------------------------------- baselines


def seasonal_naive(train: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """yhat_{n+h} = y_{n+h-m(floor((h-1)/m)+1)}: the last observed season repeated (m = 1: the last value)."""
    m = season if len(train) >= season else 1
    last = train[-m:]  # (m,)
    return np.array([last[h % m] for h in range(horizon)])


ETS_TRENDS = ((None, False), ("add", False), ("add", True))  # (trend, damped)


class ETSSpec(NamedTuple):
    """One ETS form: error, trend, damped, seasonal (statsmodels' ``ETSModel`` arguments)."""

    error: str
    trend: str | None
    damped: bool
    seasonal: str | None

    def name(self) -> str:
        """Hyndman's notation, e.g. ``ETS(M,Ad,M)``."""
        trend = "N" if self.trend is None else "A" + ("d" if self.damped else "")
        return f"ETS({self.error[0].upper()},{trend},{'N' if self.seasonal is None else self.seasonal[0].upper()})"


def ets_forms(train: np.ndarray, season: int) -> list[ETSSpec]:
    """error {add, mul} x trend {none, add, add damped} x seasonal {none, add, mul}; multiplicative parts only
    for positive data, seasonal parts only where ``train`` holds two full seasons."""
    positive = bool((train > 0).all())
    seasonals = [None] + (["add", "mul"] if season > 1 and len(train) >= 2 * season else [])
    return [ETSSpec(error, trend, damped, seasonal) for error in ("add", "mul") for trend, damped in ETS_TRENDS
            for seasonal in seasonals if positive or "mul" not in (error, seasonal)]


def _single_thread():
    """numpy's BLAS threads only spin on small ETS fits (2.2x slower on a loaded 2-core machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def best_ets(train: np.ndarray, season: int, forms: Sequence[ETSSpec]):
    """statsmodels' ``ETSModel`` of the lowest AIC among ``forms`` fit on ``train``: (its results, its form), or
    (None, None) if none fits."""
    ETSModel = require("statsmodels.tsa.exponential_smoothing.ets", "the ETS baseline of rnnkit forecast",
                       "statsmodels").ETSModel
    best, best_aic, best_form = None, math.inf, None
    with _single_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter of the optimizer
        for form in forms:
            try:
                fit = ETSModel(train, error=form.error, trend=form.trend, damped_trend=form.damped,
                               seasonal=form.seasonal, seasonal_periods=season if form.seasonal else None
                               ).fit(disp=False)
            except (ValueError, np.linalg.LinAlgError):
                continue
            if np.isfinite(fit.aic) and fit.aic < best_aic:
                best, best_aic, best_form = fit, fit.aic, form
    return best, best_form


def ets_forecast(train: np.ndarray, horizon: int, season: int,
                 forms: Sequence[ETSSpec] | None = None) -> tuple[np.ndarray | None, ETSSpec | None]:
    """The forecast of statsmodels' ``ETSModel`` of the lowest AIC among ``forms`` (default: all of
    ``ets_forms``) fit on ``train``, and its form; (None, None) if none fits or its forecast is not finite."""
    best, best_form = best_ets(train, season, ets_forms(train, season) if forms is None else forms)
    if best is None:
        return None, None
    forecast = np.asarray(best.forecast(horizon), dtype=float)
    return (forecast if np.isfinite(forecast).all() else None), best_form
