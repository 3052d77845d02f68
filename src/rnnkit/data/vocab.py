r"""Character- and word-level vocabularies: text <-> token ids.

    >>> from rnnkit.data import Vocab
    >>> v = Vocab.build("hello world\n", level="char")
    >>> v.tokens
    ['\n', ' ', 'd', 'e', 'h', 'l', 'o', 'r', 'w']
    >>> v.decode(v.encode("hello")) == "hello"
    True

Character level: the tokens are the sorted set of the text's characters; ``decode``
inverts ``encode`` exactly, and a character outside the vocabulary is an error.

Word level: ``WORD_PATTERN`` (``\w+|[^\w\s]|\n``, case kept) splits text into words,
single punctuation characters and newlines; other whitespace is dropped. Token 0 is
``<unk>``, the id of every word outside the vocabulary. ``decode`` is lossy about
spacing: tokens are joined by one space, except none before a newline or punctuation
other than ``( [ {``, and none after a newline or one of ``( [ { ' -`` (so ``'Tis``,
``to-night``, ``Who's`` and ``(c)`` come back whole, ``soldiers' music`` as
``soldiers'music``, ``word -- word`` as ``word--word``). Encoding the
decoded text gives the same ids again, as long as they hold no ``<unk>``.
"""

from __future__ import annotations

import collections
import operator
import re
from collections.abc import Iterable, Sequence

import torch

WORD_PATTERN = re.compile(r"\w+|[^\w\s]|\n")
"""Word-level tokens: runs of word characters, single punctuation characters, newlines."""

UNK = "<unk>"
FORMAT = 1  # the ``"format"`` of ``to_json``; bump when the layout changes
LEVELS = ("char", "word")

_GLUE_AFTER = frozenset("\n([{'-")  # word-level decode puts no space after these
_OPENING = frozenset("([{")  # ... and a space before these, as before words
_WORD_START = re.compile(r"\w")


class Vocab:
    """An ordered list of tokens at one ``level`` (``"char"`` or ``"word"``); ids are list positions.

    Build one from text with ``Vocab.build``; save it with ``to_json`` and load it with
    ``from_json``. ``Vocab(tokens, level)`` checks that the tokens are unique strings (single
    characters at char level, ``<unk>`` first at word level).
    """

    def __init__(self, tokens: Sequence[str], level: str = "char") -> None:
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        tokens = list(tokens)
        if not tokens:
            raise ValueError("tokens is empty; a vocabulary needs at least one token")
        for i, t in enumerate(tokens):
            if not isinstance(t, str):
                raise ValueError(f"tokens[{i}] must be a str, got {type(t).__name__} {t!r}")
            if level == "char" and len(t) != 1:
                raise ValueError(f"tokens[{i}] is {t!r}: a char-level vocabulary holds single characters")
        if level == "word" and tokens[0] != UNK:
            raise ValueError(f"tokens[0] must be {UNK!r} at word level, got {tokens[0]!r}")
        stoi = {t: i for i, t in enumerate(tokens)}
        if len(stoi) != len(tokens):
            dup = next(t for t, n in collections.Counter(tokens).items() if n > 1)
            raise ValueError(f"tokens must be unique, but {dup!r} appears more than once")
        self.level = level
        self._tokens = tokens
        self._stoi = stoi

    @classmethod
    def build(cls, text: str, level: str = "char", max_size: int | None = None) -> Vocab:
        """The vocabulary of ``text``.

        Char level: its distinct characters, sorted by code point. Word level: ``<unk>``,
        then its distinct ``WORD_PATTERN`` tokens sorted by code point; with ``max_size``
        (word level only, counting ``<unk>``) only the ``max_size - 1`` most frequent are kept,
        ties broken by code point.
        """
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        if not text:
            raise ValueError("text is empty; cannot build a vocabulary from it")
        if level == "char":
            if max_size is not None:
                raise ValueError(
                    f"max_size is for level='word' only (char level keeps every character), got {max_size}"
                )
            return cls(sorted(set(text)), "char")
        counts = collections.Counter(WORD_PATTERN.findall(text))
        if not counts:
            raise ValueError("text has no word-level tokens (only spaces or tabs); cannot build a vocabulary")
        words = sorted(counts)
        if max_size is not None:
            if max_size < 2:
                raise ValueError(f"max_size must be at least 2 (<unk> and one word), got {max_size}")
            words = sorted(sorted(words, key=lambda w: (-counts[w], w))[: max_size - 1])
        return cls([UNK, *words], "word")

    @property
    def tokens(self) -> list[str]:
        """The tokens in id order (a copy)."""
        return list(self._tokens)

    @property
    def unk_id(self) -> int | None:
        """The id of ``<unk>`` at word level (0); ``None`` at char level, which has none."""
        return 0 if self.level == "word" else None

    def __len__(self) -> int:
        return len(self._tokens)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return self.level == other.level and self._tokens == other._tokens

    def __repr__(self) -> str:
        return f"Vocab(level={self.level!r}, size={len(self)})"

    def tokenize(self, text: str) -> list[str]:
        """``text`` split into this level's tokens: characters, or ``WORD_PATTERN`` matches."""
        return list(text) if self.level == "char" else WORD_PATTERN.findall(text)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, length T (characters, or word-level tokens).

        Char level: a character outside the vocabulary raises ``ValueError`` naming it and its
        position. Word level: a word outside the vocabulary becomes ``<unk>`` (id 0).
        """
        stoi = self._stoi
        if self.level == "word":
            return [stoi.get(t, 0) for t in WORD_PATTERN.findall(text)]
        try:
            return [stoi[c] for c in text]
        except KeyError:
            pos, c = next((i, c) for i, c in enumerate(text) if c not in stoi)
            raise ValueError(
                f"character {c!r} at position {pos} of the text is not in the vocabulary "
                f"({len(self)} characters); build the vocabulary from text that contains it"
            ) from None

    def encode_tensor(self, text: str) -> torch.Tensor:
        """``encode(text)`` as a LongTensor, (T,)."""
        return torch.tensor(self.encode(text), dtype=torch.long)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """The text of token ids (a sequence of ints or a 1-D tensor); see the module notes on word spacing."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"ids must be a 1-D tensor (T,), got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        tokens = self._tokens
        n = len(tokens)
        pieces = []
        for pos, i in enumerate(ids):
            try:
                i = operator.index(i)  # ints, numpy integers, 0-d integer tensors
            except TypeError:
                raise ValueError(f"ids[{pos}] is {i!r}, but ids must be ints in [0, {n})") from None
            if not 0 <= i < n:
                raise ValueError(f"ids[{pos}] is {i}, but ids must be in [0, {n}) for this {n}-token vocabulary")
            pieces.append(tokens[i])
        if self.level == "char":
            return "".join(pieces)
        out: list[str] = []
        for t in pieces:
            # no space before a newline or punctuation (a token not starting with a word character),
            # except an opening bracket
            glue = (
                not out or out[-1][-1] in _GLUE_AFTER or (t != UNK and not _WORD_START.match(t) and t not in _OPENING)
            )
            out.append(t if glue else " " + t)
        return "".join(out)

    def to_json(self) -> dict:
        """A JSON-ready dict: ``{"format": 1, "level": ..., "tokens": [...]}``."""
        return {"format": FORMAT, "level": self.level, "tokens": list(self._tokens)}

    @classmethod
    def from_json(cls, data: dict) -> Vocab:
        """The vocabulary saved by ``to_json``; a malformed dict raises ``ValueError`` saying what is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"a saved Vocab must be a dict, got {type(data).__name__}")
        missing = [k for k in ("format", "level", "tokens") if k not in data]
        if missing:
            raise ValueError(f"saved Vocab is missing {', '.join(map(repr, missing))}; got keys {sorted(data)}")
        if data["format"] != FORMAT:
            raise ValueError(f"saved Vocab has format {data['format']!r}; this rnnkit reads format {FORMAT}")
        if not isinstance(data["tokens"], list):
            raise ValueError(f"saved Vocab 'tokens' must be a list of str, got {type(data['tokens']).__name__}")
        return cls(data["tokens"], data["level"])
