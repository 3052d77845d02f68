"""Training examples that sound like a live stream: utterances joined by pauses, silence before and after.

A live pipe carries words separated by pauses, with silence before the first and after the last, read from
one recurrent state until an endpoint resets it. A model trained only on single trimmed clips, each from
the zero state, never hears a pause nor a second word in one state, and in a stream it merges or drops
words. ``join_utterances`` makes the training set sound like the stream: a seeded permutation of the
utterances is cut into groups of ``U{1..max_utterances}`` consecutive ones (every utterance used once; the
last group takes what is left), and each group becomes one example

    lead | utterance 1 | gap | utterance 2 | gap | ... | utterance n | tail          (samples)
    text = " ".join(texts of utterances 1..n)                                      (the CTC target)

with ``lead, tail ~ U(edge_ms)`` and every ``gap ~ U(gap_ms)``, in milliseconds, rounded to samples. The
silences of an example are digital zeros (a file piped in) with probability ``digital_silence``, else
white noise at an RMS level ``~ U(noise_dbfs)`` dB relative to full scale (a microphone in a quiet room).
The utterances' samples are copied unchanged, so ``wave[start:end]`` of each span is its utterance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor


@dataclass(frozen=True)
class Joining:
    """How ``join_utterances`` lays utterances out; the defaults cover the live benchmark's 300 ms pauses."""

    max_utterances: int = 3  # utterances per example, drawn uniformly from 1..max_utterances
    gap_ms: tuple[float, float] = (100.0, 800.0)  # pause between two utterances, uniform in this range
    edge_ms: tuple[float, float] = (0.0, 400.0)  # silence before the first and after the last utterance
    noise_dbfs: tuple[float, float] = (-70.0, -45.0)  # RMS of the noise in the silences, dB re full scale
    digital_silence: float = 0.5  # share of examples whose silences are exact zeros

    def validate(self) -> None:
        if isinstance(self.max_utterances, bool) or not isinstance(self.max_utterances, int) \
                or self.max_utterances < 1:
            raise ValueError(f"max_utterances must be a positive int, got {self.max_utterances!r}")
        for name in ("gap_ms", "edge_ms", "noise_dbfs"):
            low, high = getattr(self, name)
            if not low <= high or (name != "noise_dbfs" and low < 0):
                raise ValueError(f"{name} must be a range (low, high) with {'' if name == 'noise_dbfs' else '0 <= '}"
                                 f"low <= high, got {getattr(self, name)!r}")
        if not 0 <= self.digital_silence <= 1:
            raise ValueError(f"digital_silence must be a probability in [0, 1], got {self.digital_silence!r}")


class Joined(NamedTuple):
    """One joined example."""

    wave: Tensor  # (N,) samples
    text: str  # the utterances' texts joined by single spaces
    members: tuple[int, ...]  # the utterances' indices, in the order they are spoken
    spans: tuple[tuple[int, int], ...]  # each utterance's [start, end) in ``wave``, in samples


def join_utterances(waves: Sequence[Tensor], texts: Sequence[str], sample_rate: int, seed: int,
                    joining: Joining = Joining()) -> list[Joined]:
    """Every utterance (``waves[i]`` (N_i,) at ``sample_rate``, transcript ``texts[i]``) in exactly one joined
    example, laid out as the module docstring says; the same ``seed`` gives the same examples."""
    joining.validate()
    if len(waves) != len(texts):
        raise ValueError(f"waves and texts must pair up, got {len(waves)} waves and {len(texts)} texts")
    for i, wave in enumerate(waves):
        if wave.dim() != 1 or len(wave) == 0:
            raise ValueError(f"waves[{i}] must be 1-D samples, got shape {tuple(wave.shape)}")
    generator = torch.Generator().manual_seed(seed)

    def uniform(low_high: tuple[float, float]) -> float:
        low, high = low_high
        return low + (high - low) * float(torch.rand((), generator=generator))

    def silence(ms: float, noise_rms: float | None) -> Tensor:
        n = round(ms * sample_rate / 1000)
        if noise_rms is None:
            return torch.zeros(n)
        return noise_rms * torch.randn(n, generator=generator)

    order = torch.randperm(len(waves), generator=generator).tolist()
    examples, position = [], 0
    while position < len(order):
        size = int(torch.randint(1, joining.max_utterances + 1, (), generator=generator))
        members = tuple(order[position : position + size])
        position += len(members)
        noise_rms = (None if float(torch.rand((), generator=generator)) < joining.digital_silence
                     else 10 ** (uniform(joining.noise_dbfs) / 20))
        pieces, spans = [silence(uniform(joining.edge_ms), noise_rms)], []
        length = len(pieces[0])  # samples laid out so far
        for number, i in enumerate(members):
            if number:
                pieces.append(silence(uniform(joining.gap_ms), noise_rms))
                length += len(pieces[-1])
            pieces.append(waves[i].float())
            spans.append((length, length + len(waves[i])))
            length += len(waves[i])
        pieces.append(silence(uniform(joining.edge_ms), noise_rms))
        examples.append(Joined(torch.cat(pieces), " ".join(texts[i] for i in members), members, tuple(spans)))
    return examples

