"""Incremental CTC decoding (rnnkit.ctc_stream): frame by frame equals the whole, and endpoints at silence."""

from __future__ import annotations

import pytest
import torch

from rnnkit import ctc
from rnnkit.ctc_stream import StreamingDecoder

from .test_ctc import ALPHABET, BigramLM


def random_log_probs(T: int, seed: int) -> torch.Tensor:
    return (3 * torch.randn(T, 3, generator=torch.Generator().manual_seed(seed))).log_softmax(-1)  # (T, C)


@pytest.mark.parametrize("seed", range(3))
def test_frame_by_frame_equals_decoding_every_frame_at_once(seed):
    """Greedy and beam with a word list and an LM: a decoder that kept only the last chunk's labels, or whose
    final step forgot the LM's end of line or the whole-word rule, would differ."""
    log_probs = random_log_probs(30, seed)
    lm = ctc.CharLM(BigramLM(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed))), ["\n", "a", "b"])
    lexicon = ctc.Lexicon(["ab", "ba", "b", "abba"])
    greedy = StreamingDecoder(ALPHABET, silence_steps=0)
    beam = StreamingDecoder(ALPHABET, 0, beam=4, lm=lm, lm_weight=0.7, lexicon=lexicon)
    partials = []
    for frame in log_probs:
        assert greedy.push(frame) is None and beam.push(frame) is None
        partials.append(greedy.text())
    expected = "".join(ALPHABET[c - 1] for c in ctc.greedy(log_probs))
    assert greedy.finish() == expected and partials[-1] == expected
    assert all(expected.startswith(p) for p in partials)
    assert beam.finish() == ctc.prefix_beam_search(log_probs, ALPHABET, beam=4, lm=lm, lm_weight=0.7, lexicon=lexicon)


def test_a_run_of_blanks_ends_the_utterance_and_starts_a_new_one():
    """An endpoint that fired on fewer blanks, kept the old labels, or never fired would fail."""
    def frames(labels):  # one confident frame per label, 0 = blank
        return [torch.full((3,), -9.0).index_fill(0, torch.tensor(c), 0.0) for c in labels]

    decoder = StreamingDecoder(ALPHABET, silence_steps=3)
    results = [decoder.push(f) for f in frames([1, 1, 0, 2, 0, 0, 0, 2, 0, 1])]
    assert results[:6] == [None] * 6 and results[6] == "ab"  # the third blank in a row ends "ab"
    assert results[7:] == [None] * 3 and decoder.finish() == "ba"
    beam = StreamingDecoder(ALPHABET, silence_steps=3, beam=4)
    results = [beam.push(f) for f in frames([2, 0, 0, 0, 0, 0, 0])]
    assert results == [None, None, None, "b", None, None, None]  # silence before any text ends nothing
    with pytest.raises(ValueError, match="silence_steps must be >= 0"):
        StreamingDecoder(ALPHABET, -1)
