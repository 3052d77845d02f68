"""Build ``src/rnnkit/data/bible_en_es.tsv.gz``, the bundled sentence pairs of ``rnnkit translate``.

The pairs are aligned verses of two public-domain Bibles as Debian packages them for the
SWORD library: the King James Version (``sword-text-kjv`` 14.3-1, module ``engKJV2006eb``)
and the Spanish Reina-Valera 1909 (``sword-text-sparv`` 2.60-1, module ``spaRV1909eb``).
Both modules use the KJV versification, so the n-th entry of one module's verse index is
the same verse as the n-th of the other's. See ``src/rnnkit/data/SOURCES.md``.

Rebuild::

    cd /tmp && apt-get download sword-text-kjv sword-text-sparv
    for f in sword-text-*.deb; do dpkg-deb -x "$f" sword; done
    python scripts/build_bible_pairs.py /tmp/sword/usr/share/sword

The zText format (SWORD's compressed Bible module, ``CompressType=ZIP``, ``BlockType=BOOK``),
per testament (``ot``, ``nt``), three files, all little-endian:

- ``.bzs`` block index: 12 bytes per block, ``uint32 offset, uint32 compressed size,
  uint32 uncompressed size`` into ``.bzz``;
- ``.bzv`` verse index: 10 bytes per entry, ``uint32 block, uint32 offset, uint16 size``
  into the block's uncompressed bytes; size 0 is an empty entry;
- ``.bzz``: the blocks, each a zlib stream.

The entries are the versification's slots in order: the module and testament headings,
then per book a book heading, and per chapter a chapter heading and the verses. Headings
hold only markup (``<chapter .../>``, ``<div type="book" .../>``, titles).

What it does (all deterministic):

1. read both modules' entries (strict UTF-8);
2. clean each entry: footnotes (``<note>...</note>``) and headings (``<title>...</title>``,
   which include the psalms' superscriptions) are dropped with their text, every other tag
   is dropped and its text kept (``<w lemma=...>word</w>``, ``<transChange>``, ...), the
   pilcrow ``¶`` and a stray USFM marker ``\\nd`` (two KJV verses) are dropped, whitespace collapsed,
   no space before ``, . ; : ? ! )``;
3. keep the slots where both sides have text and no chapter or book heading, each side
   at most ``MAX_TOKENS`` tokens of ``rnnkit.data.WORD_PATTERN`` (words and single
   punctuation characters);
4. drop every pair whose English or whose Spanish side was already seen (the formulaic
   verses repeat: "And the LORD spake unto Moses, saying,"), so a held-out pair never has
   its source or target in training;
5. written as ``english<TAB>spanish`` lines in canonical order, ``\\n`` line ends, gzip
   ``mtime=0`` and ``compresslevel=9``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import re
import struct
import sys
import zlib
from pathlib import Path

WORD_PATTERN = re.compile(r"\w+|[^\w\s]|\n")  # rnnkit.data.WORD_PATTERN, repeated so the script runs alone
MAX_TOKENS = 20  # per side: short pairs, so a small model learns in minutes on a CPU
MODULES = ("engKJV2006eb", "spaRV1909eb")  # English (source column), Spanish (target column)
TESTAMENTS = ("ot", "nt")
EXPECTED_SLOTS = {"ot": 24_115, "nt": 8_246}  # the KJV versification's index entries
OUT = Path(__file__).resolve().parent.parent / "src" / "rnnkit" / "data" / "bible_en_es.tsv.gz"

NOTE = re.compile(r"<note\b.*?</note>", re.S)
TITLE = re.compile(r"<title\b.*?</title>", re.S)
TAG = re.compile(r"<[^>]*>")
USFM = re.compile(r"\\nd\*?")  # a USFM "divine name" marker left in two KJV verses
HEADING = re.compile(r"<chapter\b|<div\b[^>]*\bsID=\"[^\"]*\"[^>]*type=\"book\"|<div\b[^>]*type=\"book\"[^>]*\bsID=")
SPACE_BEFORE = re.compile(r"\s+([,.;:?!)])")


def read_ztext(directory: Path, testament: str) -> list[str]:
    """Every slot of one testament of a zText module, as text with its OSIS markup ('' for an empty slot)."""
    stem = directory / testament
    bzs, bzv, bzz = (stem.with_suffix(s).read_bytes() for s in (".bzs", ".bzv", ".bzz"))
    blocks = [struct.unpack_from("<III", bzs, i) for i in range(0, len(bzs), 12)]
    cache: dict[int, bytes] = {}
    slots = []
    for i in range(0, len(bzv), 10):
        block, offset, size = struct.unpack_from("<IIH", bzv, i)
        if size == 0:
            slots.append("")
            continue
        if block not in cache:
            start, compressed, uncompressed = blocks[block]
            cache[block] = zlib.decompress(bzz[start : start + compressed])
            if len(cache[block]) != uncompressed:
                raise ValueError(f"{stem}.bzz block {block}: {len(cache[block])} bytes, index says {uncompressed}")
        slots.append(cache[block][offset : offset + size].decode("utf-8"))
    if len(slots) != EXPECTED_SLOTS[testament]:
        raise ValueError(f"{stem}.bzv has {len(slots)} entries, expected {EXPECTED_SLOTS[testament]} (KJV "
                         "versification)")
    return slots


def clean(osis: str) -> str:
    """A verse's plain text: notes and titles dropped with their text, other tags dropped, text kept."""
    text = TITLE.sub(" ", NOTE.sub(" ", osis))
    text = USFM.sub("", TAG.sub("", text)).replace("¶", " ")
    text = " ".join(text.split())
    return SPACE_BEFORE.sub(r"\1", text)


def build(root: Path) -> tuple[list[tuple[str, str]], int]:
    """The (english, spanish) pairs and the number of verse slots both modules fill."""
    pairs, verses = [], 0
    seen_en, seen_es = set(), set()
    for testament in TESTAMENTS:
        sides = [read_ztext(root / "modules" / "texts" / "ztext" / m, testament) for m in MODULES]
        for en_osis, es_osis in zip(*sides):
            if HEADING.search(en_osis) or HEADING.search(es_osis):
                continue
            en, es = clean(en_osis), clean(es_osis)
            if not en or not es:
                continue
            verses += 1
            if len(WORD_PATTERN.findall(en)) > MAX_TOKENS or len(WORD_PATTERN.findall(es)) > MAX_TOKENS:
                continue
            if en in seen_en or es in seen_es:
                continue
            seen_en.add(en)
            seen_es.add(es)
            pairs.append((en, es))
    return pairs, verses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sword", type=Path, help="the SWORD root of the unpacked packages (…/usr/share/sword)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    pairs, verses = build(args.sword)
    for en, es in pairs:
        if "\t" in en + es or "\n" in en + es:
            raise ValueError(f"a TAB or newline inside a verse: {en!r} / {es!r}")
    tsv = "".join(f"{en}\t{es}\n" for en, es in pairs)
    data = tsv.encode("utf-8")
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9, mtime=0, filename="") as f:
        f.write(data)
    packed = buffer.getvalue()
    args.out.write_bytes(packed)
    tokens = [sum(len(WORD_PATTERN.findall(p[side])) for p in pairs) for side in (0, 1)]
    print(f"verses with text on both sides {verses:,}; pairs kept {len(pairs):,} (at most {MAX_TOKENS} tokens per "
          f"side, no repeated side); tokens {tokens[0]:,} English, {tokens[1]:,} Spanish")
    print(f"tsv {len(data):,} bytes, gz {len(packed):,} bytes -> {args.out}")
    print(f"sha256 tsv {hashlib.sha256(data).hexdigest()}")
    print(f"sha256 gz  {hashlib.sha256(packed).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
