"""Build the bundled series of ``rnnkit forecast`` in ``src/rnnkit/data/``: three small gzip CSVs.

Sources (see ``src/rnnkit/data/SOURCES.md`` for versions, digests and licenses):

- ``air_passengers.csv.gz``: Box & Jenkins' airline passengers, monthly 1949-01 .. 1960-12, 144
  values, from ``pmdarima/datasets/airpassengers.py`` (the array in ``load_airpassengers``) in the
  pmdarima 2.1.1 wheel (MIT);
- ``sunspots.csv.gz``: monthly mean relative sunspot numbers 1749-01 .. 1983-12, 2,820 values,
  from ``pmdarima/datasets/data/sunspots.txt.gz`` (one year of 12 values per line) in the same wheel;
- ``seattle_temps.csv.gz``: hourly temperatures (degrees F) in Seattle in 2010, 8,759 rows, from
  ``vega_datasets/_data/seattle-temps.csv`` in the vega-datasets 0.9.0 wheel (MIT; NOAA data).

Rebuild::

    .venv/bin/pip download --no-deps pmdarima==2.1.1 -d /tmp/x
    .venv/bin/pip download --no-deps vega-datasets==0.9.0 -d /tmp/x
    cd /tmp/x && unzip -o -q 'pmdarima-2.1.1-*.whl' && unzip -o -q vega_datasets-0.9.0-py3-none-any.whl
    .venv/bin/python scripts/build_series.py /tmp/x

Every file is ``time,value`` CSV with a header, ``\\n`` line ends, gzip ``mtime=0`` and
``compresslevel=9`` (same input, same bytes with the same zlib). Values are written as in the
source (no rounding, no filling).
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
from datetime import datetime
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "src" / "rnnkit" / "data"


def air_passengers(root: Path) -> str:
    """The ``np.array([...])`` literal of ``load_airpassengers``, parsed without importing pmdarima."""
    source = (root / "pmdarima" / "datasets" / "airpassengers.py").read_text()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        # rslt = np.array([...]).astype(dtype): the list is the first argument of the inner call
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "array":
            values = ast.literal_eval(node.args[0])
            break
    else:
        raise SystemExit("no `rslt = np.array([...])` in airpassengers.py")
    if len(values) != 144:
        raise SystemExit(f"expected 144 monthly values, found {len(values)}")
    rows = [f"{1949 + i // 12}-{i % 12 + 1:02d},{v}" for i, v in enumerate(values)]
    return "month,passengers\n" + "\n".join(rows) + "\n"


def sunspots(root: Path) -> str:
    """One line per year 1749.. in ``sunspots.txt.gz``, 12 whitespace-separated monthly values each."""
    text = gzip.decompress((root / "pmdarima" / "datasets" / "data" / "sunspots.txt.gz").read_bytes()).decode()
    years = [line.split() for line in text.split("\n") if line.strip()]
    if any(len(y) != 12 for y in years):
        raise SystemExit("sunspots.txt.gz: a line without 12 values")
    rows = [f"{1749 + i}-{m + 1:02d},{v}" for i, year in enumerate(years) for m, v in enumerate(year)]
    return "month,sunspots\n" + "\n".join(rows) + "\n"


def seattle_temps(root: Path) -> str:
    """``date,temp`` with dates ``2010/01/01 00:00``, rewritten as ISO ``2010-01-01 00:00``."""
    lines = (root / "vega_datasets" / "_data" / "seattle-temps.csv").read_text().strip().split("\n")
    if lines[0] != "date,temp":
        raise SystemExit(f"seattle-temps.csv: unexpected header {lines[0]!r}")
    rows = []
    for line in lines[1:]:
        date, temp = line.split(",")
        stamp = datetime.strptime(date, "%Y/%m/%d %H:%M")
        rows.append(f"{stamp:%Y-%m-%d %H:%M},{temp}")
    return "time,temp\n" + "\n".join(rows) + "\n"


def write(name: str, text: str, out: Path) -> None:
    raw = text.encode("utf-8")
    path = out / name
    with open(path, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as g:
        g.write(raw)
    packed = path.read_bytes()
    print(f"{name}: {text.count(chr(10)) - 1} rows, csv sha256 {hashlib.sha256(raw).hexdigest()}, "
          f"{len(packed):,} bytes gz sha256 {hashlib.sha256(packed).hexdigest()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="the folder where the two wheels were unzipped")
    parser.add_argument("--out", type=Path, default=OUT, help="where the .csv.gz files go")
    args = parser.parse_args()
    write("air_passengers.csv.gz", air_passengers(args.root), args.out)
    write("sunspots.csv.gz", sunspots(args.root), args.out)
    write("seattle_temps.csv.gz", seattle_temps(args.root), args.out)


if __name__ == "__main__":
    main()
