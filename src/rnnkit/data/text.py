"""Text for the language-model tasks: a user's file, or a corpus bundled with rnnkit.

>>> from rnnkit.data import bundled_text, read_text
>>> text = bundled_text("shakespeare")        # eight plays, about 1.0 MB, see SOURCES.md
>>> mine = read_text("notes.txt")             # any UTF-8 text file
"""

from __future__ import annotations

import functools
import gzip
import json
import os
from collections.abc import Iterator
from importlib import resources

BUNDLED: dict[str, str] = {"shakespeare": "shakespeare.txt.gz"}
"""Bundled corpus name -> gzip file in this package (sources and licenses in SOURCES.md)."""

_BOM = b"\xef\xbb\xbf"
_CONTEXT = 8  # bytes shown on each side of a bad byte in error messages


def _around(raw: bytes, offset: int) -> str:
    """The bytes around ``offset`` for an error message: ``b'abc' b'\\xff' b'def'``."""
    before = raw[max(0, offset - _CONTEXT) : offset]
    after = raw[offset + 1 : offset + 1 + _CONTEXT]
    return f"{before!r} {raw[offset : offset + 1]!r} {after!r}"


def read_text(path: str | os.PathLike[str]) -> str:
    """Read a UTF-8 text file for training, with errors that say what is wrong with it.

    A UTF-8 byte-order mark is dropped, and ``\\r\\n`` (and a lone ``\\r``) become ``\\n``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is a directory, is empty, holds a NUL byte (a binary file, or
            UTF-16 text; the message gives the offset of the first NUL), or is not valid
            UTF-8 (the message gives the first bad byte, its offset, line and the bytes around it).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file; expected a UTF-8 text file")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory; expected a UTF-8 text file")
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    if not raw:
        raise ValueError(f"{path} is empty; expected UTF-8 text to train on")
    nul = raw.find(b"\0")
    if nul >= 0:
        raise ValueError(
            f"{path} looks like a binary file, not text: NUL byte at offset {nul} "
            f"(around {_around(raw, nul)}); expected UTF-8 text (UTF-16 text has NULs too: re-save it as UTF-8)"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ValueError(
            f"{path} is not UTF-8 text: byte {raw[e.start]:#04x} at offset {e.start} (line {line}), "
            f"around {_around(raw, e.start)}; re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    """The lines of ``text`` that are not blank (white space only), as written, each with its number (from 1).

    The numbers count the blank lines too, so an error about a line names the line an editor shows.
    """
    for number, line in enumerate(text.split("\n"), 1):
        if line.strip():
            yield number, line


def delimited_lines(text: str, source: str, *, separator: str | None, columns: int, expected: str,
                    what: str) -> list[tuple[int, list[str]]]:
    r"""The non-blank lines of a text of fixed columns, each cut into its ``columns`` parts, with its number.

    A line is cut as ``line.split(separator)`` (``None``: at runs of white space; a part keeps the white space
    around it otherwise). ``source`` names the text in errors: a line of another number of parts raises
    ``ValueError("{source} line {number}: expected {expected}, got {n} column(s): '...'")`` (the line's first 60
    characters), and a text with no non-blank line ``ValueError("{source} has no {what}")``.

    >>> delimited_lines("a\tb\n\nc\td\n", "pairs.tsv", separator="\t", columns=2, expected="two columns",
    ...                 what="pairs")
    [(1, ['a', 'b']), (3, ['c', 'd'])]
    """
    rows = []
    for number, line in numbered_lines(text):
        parts = line.split(separator)
        if len(parts) != columns:
            raise ValueError(f"{source} line {number}: expected {expected}, got {len(parts)} column(s): "
                             f"{line.strip()[:60]!r}")
        rows.append((number, parts))
    if not rows:
        raise ValueError(f"{source} has no {what}")
    return rows


def json_lines(text: str, source: str) -> list[tuple[int, dict]]:
    """The objects of a JSON Lines text, one per non-blank line, each with its line number (from 1).

    ``source`` names the text in errors: a line that is not JSON, or is JSON but not an object, raises
    ValueError with its number.
    """
    rows = []
    for number, line in numbered_lines(text):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source} line {number} is not JSON: {error.msg} (column {error.colno})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{source} line {number}: expected a JSON object, got {type(row).__name__}")
        rows.append((number, row))
    return rows


@functools.cache
def bundled_text(name: str = "shakespeare") -> str:
    """The text of a corpus shipped inside rnnkit (see ``BUNDLED`` and ``data/SOURCES.md``).

    ``"shakespeare"``: eight plays, 1,036,150 characters, 75 distinct, ``\\n`` line ends.
    """
    if name not in BUNDLED:
        raise ValueError(f"no bundled text named {name!r}; available: {', '.join(sorted(BUNDLED))}")
    packed = resources.files(__package__).joinpath(BUNDLED[name]).read_bytes()
    return gzip.decompress(packed).decode("utf-8")
