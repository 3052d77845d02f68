"""CTC decoding (rnnkit.ctc): greedy, prefix beam search against brute force, word lists, LM fusion."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rnnkit import ctc

ALPHABET = ["a", "b"]  # class 1 = "a", class 2 = "b", class 0 = blank


def collapse(path) -> str:
    out, previous = [], 0
    for c in path:
        if c != previous and c != 0:
            out.append(ALPHABET[c - 1])
        previous = c
    return "".join(out)


def brute_force(log_probs: torch.Tensor) -> dict[str, float]:
    """P(text) summed over every frame path, for a tiny (T, C)."""
    totals: dict[str, float] = {}
    T, C = log_probs.shape
    for path in itertools.product(range(C), repeat=T):
        text = collapse(path)
        totals[text] = totals.get(text, 0.0) + math.exp(sum(float(log_probs[t, c]) for t, c in enumerate(path)))
    return totals


def test_greedy_merges_repeats_then_drops_blanks():
    path = torch.tensor([1, 1, 0, 1, 2, 2, 0, 0, 2])
    log_probs = torch.nn.functional.one_hot(path, 3).float().log()
    assert ctc.greedy(log_probs) == [1, 1, 2, 2]
    assert ctc.greedy(log_probs, length=4) == [1, 1]


@pytest.mark.parametrize("seed", range(6))
def test_prefix_beam_search_with_a_wide_beam_finds_the_most_probable_text(seed):
    log_probs = torch.randn(5, 3, generator=torch.Generator().manual_seed(seed)).mul(2).log_softmax(-1)
    totals = brute_force(log_probs)
    best = max(totals, key=totals.get)
    assert ctc.prefix_beam_search(log_probs, ALPHABET, beam=200, prune=3) == best


def test_beam_search_can_beat_the_greedy_path():
    # greedy takes the blank every frame (""), but "a" over the paths that spell it is more probable
    p = torch.tensor([[0.4, 0.3, 0.3], [0.4, 0.3, 0.3]])
    log_probs = p.log()
    assert ctc.greedy(log_probs) == []
    totals = brute_force(log_probs)
    assert totals["a"] > totals[""]
    assert ctc.prefix_beam_search(log_probs, ALPHABET, beam=8, prune=2) in ("a", "b")


def test_lexicon_keeps_only_listed_words():
    lexicon = ctc.Lexicon(["ab", "ba"])
    assert lexicon.allows("") and lexicon.allows("a") and lexicon.allows("ab") and lexicon.allows("ab b")
    assert not lexicon.allows("aa") and not lexicon.allows(" ") and not lexicon.allows("ab  ")
    assert lexicon.allows("ab ba", final=True) and not lexicon.allows("ab b", final=True)
    assert not lexicon.allows("ab ", final=True)
    with pytest.raises(ValueError, match="no words"):
        ctc.Lexicon([])


def test_the_word_list_turns_a_misspelling_into_a_word():
    # frame-wise: "a" then "a" again after a blank -> greedy "aa"; the list has only "ab" and "b"
    p = torch.tensor([[0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.1, 0.5, 0.4]])
    log_probs = p.log()
    assert "".join(ALPHABET[c - 1] for c in ctc.greedy(log_probs)) == "aa"
    assert ctc.prefix_beam_search(log_probs, ALPHABET, beam=8, lexicon=ctc.Lexicon(["ab", "b"])) == "ab"


class BigramLM(torch.nn.Module):
    """A stand-in for rnnkit's LanguageModel: the next token's logits depend on the last token only."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(table)  # (V, V) logits of the next token after each token

    def step(self, token, state):
        return self.table[token], None


def test_char_lm_scores_and_fusion_changes_the_choice():
    tokens = ["\n", "a", "b"]
    table = torch.tensor([[-9.0, 0.0, 3.0], [3.0, 0.0, 0.0], [3.0, 0.0, 0.0]])  # after a line break "b" is likely
    lm = ctc.CharLM(BigramLM(table), tokens)
    assert lm.log_prob("", "b") == pytest.approx(float(table[0].log_softmax(-1)[2]))
    assert lm.log_prob("ab", "\n") == pytest.approx(float(table[2].log_softmax(-1)[0]))
    log_probs = torch.tensor([[0.1, 0.5, 0.4]]).log()  # acoustically "a" slightly ahead of "b"
    assert ctc.prefix_beam_search(log_probs, ALPHABET, beam=4) == "a"
    assert ctc.prefix_beam_search(log_probs, ALPHABET, beam=4, lm=lm, lm_weight=1.0) == "b"
    with pytest.raises(ValueError, match="never seen"):
        lm.check_alphabet(["a", "c"])
    with pytest.raises(ValueError, match="no line break"):
        ctc.CharLM(BigramLM(table), ["x", "a", "b"])
