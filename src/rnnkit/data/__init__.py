"""Data for the language-model tasks: text files, bundled corpora, vocabularies.

    >>> from rnnkit.data import Vocab, bundled_text
    >>> text = bundled_text()                     # Shakespeare, eight plays, ~1.0 MB
    >>> vocab = Vocab.build(text)                 # 75 characters
    >>> ids = vocab.encode_tensor(text)           # (T,) LongTensor

The bundled corpora, where they come from and their licenses: ``SOURCES.md`` here.
"""

from .text import BUNDLED, bundled_text, read_text
from .vocab import WORD_PATTERN, Vocab

__all__ = ["BUNDLED", "WORD_PATTERN", "Vocab", "bundled_text", "read_text"]
