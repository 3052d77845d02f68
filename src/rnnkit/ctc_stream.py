"""Incremental CTC decoding of a live stream: the text so far after every frame, and where an utterance ends.

``StreamingDecoder`` takes one frame of CTC log-probabilities (C,) at a time and keeps the text decoded so
far: greedy (the argmax path with repeats merged and blanks dropped, ``ctc.greedy`` one frame at a time) or
the prefix beam search with its word list and character-LM fusion (``ctc.PrefixBeam``), so the final text
of a stream equals decoding all its frames at once with the same decoder.

Endpointing: a stream that never ends is cut into utterances where the model hears nothing. When the
argmax has been the blank for ``silence_steps`` frames in a row after some text, ``push`` returns the
utterance's final text and the decoder starts a new utterance (the caller resets the model's state);
``silence_steps=0`` never cuts. The blank is what a CTC model emits between characters and in silence, so a
pause counts, not a quiet stretch the model still reads as speech. Silence before any text cuts nothing: a
unidirectional model emits a word's first label late in the word, so a reset there could fall inside it.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from .ctc import BLANK, CharLM, Lexicon, PrefixBeam


class StreamingDecoder:
    """Greedy (``beam=None``) or prefix beam search over frames pushed one by one; see the module docstring."""

    def __init__(self, alphabet: Sequence[str], silence_steps: int, beam: int | None = None,
                 lm: CharLM | None = None, lm_weight: float = 0.5, insertion_bonus: float = 0.0,
                 lexicon: Lexicon | None = None) -> None:
        if silence_steps < 0:
            raise ValueError(f"silence_steps must be >= 0 (0: never end an utterance early), got {silence_steps}")
        if beam is None and (lm is not None or lexicon is not None):
            raise ValueError("a language model or word list needs the beam decoder (--decoder beam)")
        self.alphabet, self.silence_steps = list(alphabet), silence_steps
        self.search = None if beam is None else PrefixBeam(alphabet, beam, lm, lm_weight, insertion_bonus, lexicon)
        self.reset()

    def reset(self) -> None:
        """Start a new utterance."""
        self.labels: list[int] = []  # greedy: the labels so far
        self.previous = BLANK  # greedy: the last frame's argmax
        self.blanks = 0  # frames in a row whose argmax is the blank
        if self.search is not None:
            self.search.reset()

    def text(self) -> str:
        """The best text of the utterance so far."""
        if self.search is not None:
            return self.search.best()
        return "".join(self.alphabet[c - 1] for c in self.labels)

    def push(self, log_probs: Tensor) -> str | None:
        """Decode one frame (C,); returns the utterance's final text when this frame ends it, else None."""
        label = int(log_probs.argmax())
        if self.search is not None:
            self.search.step(log_probs)
        elif label != self.previous and label != BLANK:
            self.labels.append(label)
        self.previous = label
        self.blanks = self.blanks + 1 if label == BLANK else 0
        if self.silence_steps and self.blanks >= self.silence_steps and self.text():
            return self.finish()
        return None

    def finish(self) -> str:
        """The utterance's final text (the beam's best with the LM's end of line and whole words); then a new one."""
        text = self.text() if self.search is None else self.search.final()
        self.reset()
        return text
