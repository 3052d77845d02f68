"""Series read at run time from other installed packages, never copied into rnnkit: stock indices and daily weather.

Each reader returns the series as CSV text (a header, one row per time step, ISO dates, in time order), which
``rnnkit.tasks.series.read_series`` parses as it parses a user's file, so its checks and messages apply:

- ``sp500``, ``nasdaq``: daily S&P 500 and NASDAQ Composite, 1999-01-04 .. 2018-12-31, 5,031 trading days each,
  from the ``arch`` wheel (``arch/data/sp500/sp500.csv.gz``, ``arch/data/nasdaq/nasdaq.csv.gz``; NCSA licence).
  Columns ``date, open, high, low, close, adj_close, volume`` as in the file (its ``M/D/YYYY`` dates written as
  ISO), plus ``log_range`` = log(high / low), the day's high-low range.
- ``stocks``: monthly prices of four stocks, 2000-01-01 .. 2010-03-01, 123 months, vega_datasets'
  ``_data/stocks.csv`` (MIT; its long table ``symbol, date, price`` made wide: ``date, MSFT, AMZN, IBM, AAPL``;
  GOOG, listed from 2004-08 only, is left out so that every row is complete).
- ``seattle_daily``: daily weather at Seattle, 2012-01-01 .. 2015-12-31, 1,461 days, vega_datasets'
  ``_data/seattle-weather.csv`` (MIT; public-domain NOAA data). Columns ``date, temp_max, precipitation,
  temp_min, wind`` (degrees C, mm, degrees C, m/s) and the text column ``weather`` one-hot as
  ``weather_drizzle, weather_fog, weather_rain, weather_snow, weather_sun`` (1.0 on the day's kind, else 0.0).

Sources and licences: ``SOURCES.md``. arch and vega_datasets are in the ``tasks`` extra.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import math
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

WEATHER_KINDS = ("drizzle", "fog", "rain", "snow", "sun")  # the values of seattle-weather.csv's weather column
STOCKS = ("MSFT", "AMZN", "IBM", "AAPL")  # the symbols of stocks.csv with a price every month (not GOOG)


def package_file(package: str, relative: str, pip: str) -> Path:
    """The file ``relative`` inside the installed ``package`` (found without importing it)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"this series is read from the {package} package, which is not installed: "
                                  f"pip install '{pip}' (in the rnnkit[tasks] extra)")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{package} is installed but has no {relative} (looked at {path})")
    return path


def _table(text: str, source: str, header: list[str]) -> list[list[str]]:
    """The rows of a CSV text whose header must be ``header``."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0] != header:
        raise ValueError(f"{source}: expected the header {','.join(header)}, got {','.join(rows[0]) if rows else ''}")
    return [row for row in rows[1:] if row]


def _csv(header: list[str], rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def market_csv(name: str) -> str:
    """``name`` (sp500 or nasdaq) from the arch wheel: date, open, high, low, close, adj_close, volume, log_range."""
    path = package_file("arch", f"data/{name}/{name}.csv.gz", "arch>=8.0")
    rows = _table(gzip.decompress(path.read_bytes()).decode("utf-8"), str(path),
                  ["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"])
    out = []
    for row in rows:
        date = datetime.strptime(row[0], "%m/%d/%Y").date().isoformat()  # the file's 1/4/1999
        high, low = float(row[2]), float(row[3])
        out.append([date, *row[1:], repr(math.log(high / low))])
    return _csv(["date", "open", "high", "low", "close", "adj_close", "volume", "log_range"], out)


def seattle_weather_csv() -> str:
    """vega_datasets' daily Seattle weather: date, temp_max, precipitation, temp_min, wind, weather one-hot."""
    path = package_file("vega_datasets", "_data/seattle-weather.csv", "vega_datasets>=0.9")
    rows = _table(path.read_text("utf-8"), str(path), ["date", "precipitation", "temp_max", "temp_min", "wind",
                                                        "weather"])
    out = []
    for line, (date, precipitation, temp_max, temp_min, wind, weather) in enumerate(rows, start=2):
        if weather not in WEATHER_KINDS:
            raise ValueError(f"{path} line {line}: weather {weather!r} is none of {', '.join(WEATHER_KINDS)}")
        iso = datetime.strptime(date, "%Y/%m/%d").date().isoformat()
        out.append([iso, temp_max, precipitation, temp_min, wind, *("1.0" if weather == k else "0.0"
                                                                     for k in WEATHER_KINDS)])
    return _csv(["date", "temp_max", "precipitation", "temp_min", "wind", *(f"weather_{k}" for k in WEATHER_KINDS)],
                out)


def stocks_csv() -> str:
    """vega_datasets' monthly stock prices, wide: date, MSFT, AMZN, IBM, AAPL."""
    path = package_file("vega_datasets", "_data/stocks.csv", "vega_datasets>=0.9")
    prices: dict[str, dict[str, str]] = {}  # date -> symbol -> price
    for symbol, date, price in _table(path.read_text("utf-8"), str(path), ["symbol", "date", "price"]):
        if symbol in STOCKS:
            iso = datetime.strptime(date, "%b %d %Y").date().isoformat()  # the file's Jan 1 2000
            prices.setdefault(iso, {})[symbol] = price
    missing = [date for date, row in prices.items() if len(row) != len(STOCKS)]
    if missing:
        lacking = ", ".join(sorted(set(STOCKS) - set(prices[missing[0]])))
        raise ValueError(f"{path}: the month {missing[0]} lacks a price of {lacking}")
    return _csv(["date", *STOCKS], [[date, *(prices[date][s] for s in STOCKS)] for date in sorted(prices)])


# name -> the reader of its CSV text
READERS: dict[str, Callable[[], str]] = {
    "sp500": lambda: market_csv("sp500"),
    "nasdaq": lambda: market_csv("nasdaq"),
    "stocks": stocks_csv,
    "seattle_daily": seattle_weather_csv,
}
