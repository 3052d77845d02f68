"""The Free Spoken Digit Dataset for ``rnnkit asr``: manifests of the full set, and the bundled subset.

FSDD (Jakobovski et al., CC BY-SA 4.0; ../shared/datasets/fsdd/README.md): 3,000 recordings
``{digit}_{speaker}_{index}.flac``, 6 speakers, 8 kHz. The transcript of a recording is its
digit as an English word. The official split: index 0-4 test, 5-49 train.

    python scripts/build_fsdd.py manifests runs/fsdd      # official_{train,test}.jsonl, theo_{train,test}.jsonl
    python scripts/build_fsdd.py subset                   # src/rnnkit/data/fsdd_subset.tar

The subset keeps index 0-7 of every digit and speaker (480 recordings): 0-1 test, 2-7 train,
the FLAC files as they are plus ``manifest.tsv`` (name, text, split), in an uncompressed tar
(FLAC is compressed already).
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DEFAULT_FSDD = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "fsdd"
SUBSET = Path(__file__).resolve().parents[1] / "src" / "rnnkit" / "data" / "fsdd_subset.tar"
SUBSET_INDICES, SUBSET_TEST = range(8), range(2)
HELD_OUT_SPEAKER = "theo"


def recordings(fsdd: Path) -> list[tuple[Path, str, str, int]]:
    """(file, transcript, speaker, index) of every recording, sorted by name."""
    found = []
    for path in sorted((fsdd / "recordings").glob("*.flac")):
        digit, speaker, index = path.stem.split("_")
        found.append((path.resolve(), WORDS[int(digit)], speaker, int(index)))
    if len(found) != 3000:
        raise SystemExit(f"{fsdd}/recordings: expected 3,000 FLAC files, found {len(found)}")
    return found


def write_jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps({"path": str(p), "text": t}) + "\n" for p, t, _, _ in rows))
    print(f"{path}: {len(rows)} utterances")


def manifests(fsdd: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = recordings(fsdd)
    write_jsonl(out / "official_train.jsonl", [r for r in rows if r[3] >= 5])
    write_jsonl(out / "official_test.jsonl", [r for r in rows if r[3] < 5])
    write_jsonl(out / f"{HELD_OUT_SPEAKER}_train.jsonl", [r for r in rows if r[2] != HELD_OUT_SPEAKER])
    write_jsonl(out / f"{HELD_OUT_SPEAKER}_test.jsonl", [r for r in rows if r[2] == HELD_OUT_SPEAKER])


def subset(fsdd: Path) -> None:
    rows = [r for r in recordings(fsdd) if r[3] in SUBSET_INDICES]
    lines = ["name\ttext\tsplit"] + [f"{p.name}\t{t}\t{'test' if i in SUBSET_TEST else 'train'}" for p, t, _, i in rows]
    with tarfile.open(SUBSET, "w", format=tarfile.USTAR_FORMAT) as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644  # reproducible: no dates, no owners
            tar.addfile(info, io.BytesIO(data))

        add("manifest.tsv", ("\n".join(lines) + "\n").encode())
        for path, _, _, _ in rows:
            add(path.name, path.read_bytes())
    print(f"{SUBSET}: {len(rows)} recordings, {SUBSET.stat().st_size / 1e6:.2f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["manifests", "subset"])
    parser.add_argument("out", nargs="?", type=Path, help="manifests: the folder to write them to")
    parser.add_argument("--fsdd", type=Path, default=DEFAULT_FSDD, help="the FSDD folder (default ../shared/...)")
    args = parser.parse_args()
    if args.what == "manifests":
        if args.out is None:
            parser.error("manifests needs the output folder")
        manifests(args.fsdd, args.out)
    else:
        subset(args.fsdd)


if __name__ == "__main__":
    main()
