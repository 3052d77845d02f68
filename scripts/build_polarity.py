"""Build ``src/rnnkit/data/polarity.tsv.gz``, the bundled sentence-polarity data of ``rnnkit classify``.

The sentences are the 10,605 movie-review snippets that ship in the vaderSentiment 3.3.2
sdist (``additional_resources/hutto_ICWSM_2014.tar.gz`` ->
``hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt``, MIT), each with the mean of
human sentiment ratings. See ``src/rnnkit/data/SOURCES.md``.

Rebuild::

    cd /tmp && pip download --no-deps --no-binary :all: vadersentiment==3.3.2
    tar xzf vaderSentiment-3.3.2.tar.gz
    python scripts/build_polarity.py /tmp/vaderSentiment-3.3.2

What it does (all deterministic):

1. read the ground-truth file from the inner tarball (no extraction to disk);
2. decode as strict UTF-8 (the file is valid UTF-8: its 152 non-ASCII characters are
   accents such as ``é`` and the dash ``–``, none double-encoded), ``\\r\\n`` records;
3. each record is ``id<TAB>score<TAB>text``; the label is the sign of the score,
   ``pos`` or ``neg``; the 37 records with score 0 are dropped;
4. a shuffle of the records (in file order) by ``random.Random(SEED)``, then the first 80%
   train, the next 10% dev, the rest test;
5. written as TSV with the header ``split<TAB>label<TAB>text``, ``\\n`` line ends, gzip
   ``mtime=0`` and ``compresslevel=9`` (same input, same bytes with the same zlib).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import io
import random
import sys
import tarfile
from pathlib import Path

SEED = 20140601  # ICWSM 2014, the paper that published the ratings
MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
EXPECTED_RECORDS = 10_605
FRACTIONS = (("train", 0.8), ("dev", 0.1), ("test", 0.1))
OUT = Path(__file__).resolve().parent.parent / "src" / "rnnkit" / "data" / "polarity.tsv.gz"


def read_records(sdist: Path) -> list[tuple[str, float, str]]:
    """(id, score, text) of every record of the ground-truth file, in file order."""
    inner = sdist / "additional_resources" / "hutto_ICWSM_2014.tar.gz"
    with tarfile.open(inner) as tar:
        raw = tar.extractfile(MEMBER).read()
    text = raw.decode("utf-8")  # strict: a bad byte stops the build
    records = []
    for number, line in enumerate(text.split("\r\n"), 1):
        parts = line.split("\t")
        if len(parts) != 3 or "\n" in line or "\r" in line:
            raise ValueError(f"{MEMBER} line {number}: expected id<TAB>score<TAB>text, got {line[:80]!r}")
        records.append((parts[0], float(parts[1]), parts[2].strip()))
    if len(records) != EXPECTED_RECORDS:
        raise ValueError(f"{MEMBER} has {len(records)} records, expected {EXPECTED_RECORDS}")
    return records


def build(records: list[tuple[str, float, str]]) -> list[tuple[str, str, str]]:
    """(split, label, text) rows: zero scores dropped, a seeded shuffle, 80/10/10."""
    labelled = [("pos" if score > 0 else "neg", text) for _, score, text in records if score != 0]
    random.Random(SEED).shuffle(labelled)
    rows, start = [], 0
    for i, (split, fraction) in enumerate(FRACTIONS):
        end = len(labelled) if i == len(FRACTIONS) - 1 else start + round(fraction * len(labelled))
        rows += [(split, label, text) for label, text in labelled[start:end]]
        start = end
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sdist", type=Path, help="the unpacked vaderSentiment-3.3.2 directory")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows = build(read_records(args.sdist))
    tsv = "split\tlabel\ttext\n" + "".join(f"{s}\t{label}\t{text}\n" for s, label, text in rows)
    data = tsv.encode("utf-8")
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9, mtime=0, filename="") as f:
        f.write(data)
    packed = buffer.getvalue()
    args.out.write_bytes(packed)
    counts = collections.Counter((s, label) for s, label, _ in rows)
    for split, _ in FRACTIONS:
        n = sum(v for (s, _), v in counts.items() if s == split)
        print(f"{split}: {n} ({counts[split, 'pos']} pos, {counts[split, 'neg']} neg)")
    print(f"rows {len(rows)}, tsv {len(data):,} bytes, gz {len(packed):,} bytes -> {args.out}")
    print(f"sha256 tsv {hashlib.sha256(data).hexdigest()}")
    print(f"sha256 gz  {hashlib.sha256(packed).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
