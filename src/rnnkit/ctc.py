"""Decoding CTC outputs: greedy, and prefix beam search with a character LM and a word list.

A CTC model emits, per frame t, log-probabilities ``log_probs[t, c]`` over C classes, class 0
the blank. A path of frame labels maps to text by merging repeats and then dropping blanks
(``a a - b`` -> ``ab``). Greedy decoding maps the frame-wise argmax path.

Prefix beam search (Hannun et al. 2014) keeps, for each candidate text prefix ``l``, the
probability of all paths that give ``l`` and end in a blank, ``p_b(l)``, or in its last label,
``p_nb(l)``. Per frame, for a label ``c`` with probability ``y_c``:

    p_b'(l)    += (p_b(l) + p_nb(l)) y_blank
    p_nb'(l)   += p_nb(l) y_c                       if c is l's last label (a repeat merges)
    p_nb'(l+c) += p_b(l) y_c                        if c is l's last label (blank between)
    p_nb'(l+c) += (p_b(l) + p_nb(l)) y_c            otherwise

and the ``beam`` prefixes of highest score survive, where (shallow fusion)

    score(l) = log(p_b(l) + p_nb(l)) + lm_weight * log P_lm(l) + insertion_bonus * |l|

``log P_lm(l)`` sums a character language model's log-probabilities of each character given
the ones before (``CharLM``); at the end the LM's probability of ending the line is added. A
word list (``Lexicon``) keeps only prefixes whose words, and whose last partial word, are in
the list or begin a word of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

BLANK = 0
NEG_INF = float("-inf")


def greedy(log_probs: Tensor, length: int | None = None) -> list[int]:
    """The labels (class ids, no blanks) of the frame-wise argmax path of ``log_probs`` (T, C)."""
    path = log_probs[: length if length is not None else log_probs.shape[0]].argmax(-1).tolist()
    labels, previous = [], BLANK
    for c in path:
        if c != previous and c != BLANK:
            labels.append(c)
        previous = c
    return labels


class Lexicon:
    """A word list: which prefixes may still become words, and which are whole words."""

    def __init__(self, words: Sequence[str]) -> None:
        self.words = {w for w in words if w}
        if not self.words:
            raise ValueError("the word list has no words")
        self.prefixes = {w[:i] for w in self.words for i in range(len(w) + 1)}

    def allows(self, text: str, final: bool = False) -> bool:
        """Whether ``text`` can be continued to a sequence of listed words (is one, if ``final``)."""
        *whole, partial = text.split(" ")
        if any(w not in self.words for w in whole):  # an empty word (two spaces, a leading space) fails too
            return False
        return partial in self.words or (not final and partial in self.prefixes) or (final and partial == "" and
                                                                                      not whole)


class CharLM:
    """A character language model for shallow fusion: ``log P(char | text so far)``, cached per prefix.

    ``model`` is an ``rnnkit.tasks.lm.LanguageModel`` (``step(token (B,), state) -> logits (B, V)``)
    and ``tokens`` its vocabulary; the text starts as after a line break and ends with one.
    """

    def __init__(self, model, tokens: Sequence[str]) -> None:
        self.model = model.eval()
        self.index = {t: i for i, t in enumerate(tokens)}
        if "\n" not in self.index:
            raise ValueError("the language model's vocabulary has no line break, which marks where a transcript "
                             "starts and ends: train it on a text of one transcript per line")
        self.device = next(model.parameters()).device
        self._cache: dict[str, tuple[Tensor, object]] = {}

    def check_alphabet(self, alphabet: Sequence[str]) -> None:
        missing = [c for c in alphabet if c not in self.index]
        if missing:
            raise ValueError(f"the language model has never seen the character(s) {missing!r} of the recognizer's "
                             "alphabet; train it on text that contains them")

    @torch.no_grad()
    def _next(self, text: str) -> tuple[Tensor, object]:
        """log P(. | text) (V,) and the LM state after ``text``."""
        if text not in self._cache:
            if text == "":
                token, state = self.index["\n"], None
            else:
                _, state = self._next(text[:-1])
                token = self.index[text[-1]]
            logits, new_state = self.model.step(torch.tensor([token], device=self.device), state)
            self._cache[text] = (logits[0].float().log_softmax(-1).cpu(), new_state)
        return self._cache[text]

    def log_prob(self, text: str, char: str) -> float:
        """log P(char | text); ``char = "\\n"`` is the end of the transcript."""
        return float(self._next(text)[0][self.index[char]])

    def reset(self) -> None:
        self._cache.clear()


def _logadd(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    top = max(a, b)
    return top + math.log1p(math.exp(-abs(a - b)))


def _add(grown: dict[str, list[float]], text: str, which: int, value: float) -> None:
    """grown[text][which] += exp(value), in log space (which: 0 = ends in blank, 1 = in a label)."""
    entry = grown.setdefault(text, [NEG_INF, NEG_INF])
    entry[which] = _logadd(entry[which], value)


class PrefixBeam:
    """The prefix beam search of the module docstring, one frame at a time: ``step(frame)`` with each frame's
    log-probabilities (C,) (class c >= 1 is ``alphabet[c - 1]``), ``best()`` the best prefix so far, ``final()``
    the best text once the frames are over (with the LM's end of line and the word list's whole words);
    ``reset()`` starts a new utterance. ``prefix_beam_search`` is this over a whole (T, C) tensor, so a stream
    decoded frame by frame gives the same text."""

    def __init__(self, alphabet: Sequence[str], beam: int = 16, lm: CharLM | None = None, lm_weight: float = 0.5,
                 insertion_bonus: float = 0.0, lexicon: Lexicon | None = None, prune: int = 8) -> None:
        if beam < 1:
            raise ValueError(f"beam must be >= 1, got {beam}")
        self.alphabet, self.beam, self.lm, self.lm_weight = list(alphabet), beam, lm, lm_weight
        self.insertion_bonus, self.lexicon, self.prune = insertion_bonus, lexicon, prune
        self.reset()

    def reset(self) -> None:
        if self.lm is not None:
            self.lm.reset()
        self.lm_score: dict[str, float] = {"": 0.0}
        self.beams: dict[str, tuple[float, float]] = {"": (0.0, NEG_INF)}  # best first

    def lm_total(self, text: str) -> float:
        """log P_lm(text), summed over its characters."""
        if text not in self.lm_score:
            self.lm_score[text] = self.lm_total(text[:-1]) + self.lm.log_prob(text[:-1], text[-1])
        return self.lm_score[text]

    def score(self, text: str, pb: float, pnb: float) -> float:
        s = _logadd(pb, pnb) + self.insertion_bonus * len(text)
        return s + self.lm_weight * self.lm_total(text) if self.lm is not None else s

    def step(self, frame: Tensor) -> None:
        frame = frame.float().cpu()
        labels = [int(c) for c in frame[1:].topk(min(self.prune, frame.shape[0] - 1)).indices + 1]
        blank = float(frame[BLANK])
        grown: dict[str, list[float]] = {}  # text -> [log p_b, log p_nb] after this frame
        for text, (pb, pnb) in self.beams.items():
            _add(grown, text, 0, _logadd(pb, pnb) + blank)
            for c in labels:
                y, char = float(frame[c]), self.alphabet[c - 1]
                extended = text + char
                if text and text[-1] == char:
                    _add(grown, text, 1, pnb + y)
                    via = pb + y
                else:
                    via = _logadd(pb, pnb) + y
                if via == NEG_INF or (self.lexicon is not None and not self.lexicon.allows(extended)):
                    continue
                _add(grown, extended, 1, via)
        ranked = sorted(grown.items(), key=lambda item: self.score(item[0], *item[1]), reverse=True)
        self.beams = {text: (pb, pnb) for text, (pb, pnb) in ranked[: self.beam]}

    def best(self) -> str:
        return next(iter(self.beams))

    def final(self) -> str:
        def total(item) -> float:
            text, (pb, pnb) = item
            s = self.score(text, pb, pnb)
            if self.lm is not None:
                s += self.lm_weight * self.lm.log_prob(text, "\n")
            return s

        finished = [item for item in self.beams.items()
                    if self.lexicon is None or self.lexicon.allows(item[0], final=True)]
        if not finished:  # no beam ends on a listed word: the best unconstrained one
            finished = list(self.beams.items())
        return max(finished, key=total)[0]


def prefix_beam_search(log_probs: Tensor, alphabet: Sequence[str], beam: int = 16, lm: CharLM | None = None,
                       lm_weight: float = 0.5, insertion_bonus: float = 0.0, lexicon: Lexicon | None = None,
                       prune: int = 8, length: int | None = None) -> str:
    """The best text for ``log_probs`` (T, C) (class c >= 1 is ``alphabet[c - 1]``), by the module's rule."""
    search = PrefixBeam(alphabet, beam, lm, lm_weight, insertion_bonus, lexicon, prune)
    for frame in log_probs[: length if length is not None else log_probs.shape[0]].float().cpu():
        search.step(frame)
    return search.final()
