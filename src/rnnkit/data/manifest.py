"""Speech manifests: which audio file says what.

A manifest is a CSV, TSV or JSONL file (the format from the extension) with, per utterance, the
audio file's path and its transcript: columns or keys ``path`` and ``text``, or NeMo's
``audio_filepath`` and ``text`` (with an optional ``duration``). A relative path is relative to
the manifest's folder. Every error names the manifest and the line.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import NamedTuple

from .text import json_lines, read_text

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
PATH_KEYS = ("path", "audio_filepath")


class Utterance(NamedTuple):
    path: Path  # absolute, or relative to the working directory where the manifest's was
    text: str
    line: int  # the manifest line it came from, for error messages


def read_manifest(manifest: str | Path, check_files: bool = True) -> list[Utterance]:
    """The utterances listed in ``manifest``; with ``check_files`` every audio file must exist."""
    manifest = Path(manifest)
    kind = FORMATS.get(manifest.suffix.lower())
    if kind is None:
        raise ValueError(f"{manifest}: a manifest is .csv, .tsv or .jsonl, got {manifest.suffix or 'no extension'!r}")
    text = read_text(manifest)
    if not text.strip():
        raise ValueError(f"{manifest}: the manifest is empty")
    rows: list[tuple[int, dict]] = []
    if kind == "jsonl":
        rows = json_lines(text, str(manifest))
    else:
        reader = csv.DictReader(io.StringIO(text), delimiter="," if kind == "csv" else "\t")
        if reader.fieldnames is None:
            raise ValueError(f"{manifest}: no header line")
        rows = [(number, row) for number, row in enumerate(reader, 2)]
    utterances = []
    for number, row in rows:
        key = next((k for k in PATH_KEYS if k in row), None)
        if key is None or "text" not in row:
            raise ValueError(f"{manifest}:{number}: needs the columns 'path' (or 'audio_filepath') and 'text', "
                             f"got {', '.join(map(repr, row)) or 'none'}")
        if not isinstance(row[key], str) or not row[key].strip():
            raise ValueError(f"{manifest}:{number}: the path is empty")
        if not isinstance(row["text"], str):
            raise ValueError(f"{manifest}:{number}: the text must be a string, got {row['text']!r}")
        path = Path(row[key])
        if not path.is_absolute():
            path = manifest.parent / path
        if check_files and not path.is_file():
            raise ValueError(f"{manifest}:{number}: no such audio file {path}")
        utterances.append(Utterance(path, row["text"], number))
    if not utterances:
        raise ValueError(f"{manifest}: the manifest lists no utterances")
    return utterances
