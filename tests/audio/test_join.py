"""rnnkit.audio.join: utterances joined by pauses into examples that sound like a live stream."""

from __future__ import annotations

import collections

import pytest
import torch

from rnnkit.audio.join import Joining, join_utterances

RATE = 8000


def utterances(n: int = 30, seed: int = 0) -> tuple[list[torch.Tensor], list[str]]:
    """n "utterances" of 0.1-0.5 s whose samples are never 0 and all differ (so a span that is off by one
    sample, or a clip copied into another's place, does not match), each with its own text."""
    generator = torch.Generator().manual_seed(seed)
    waves = []
    for i in range(n):
        length = int(torch.randint(800, 4000, (), generator=generator))
        waves.append(0.5 + 0.4 * torch.rand(length, generator=generator) * (1 if i % 2 else -1))
    return waves, [f"w{i}" for i in range(n)]


def test_every_utterance_is_in_one_example_its_samples_where_its_span_says_and_the_text_in_that_order():
    """Catches a dropped or repeated utterance, a span off by a sample or misplaced (a gap counted twice or
    not at all), a transcript joined in another order than the audio, or samples changed on the way."""
    waves, texts = utterances()
    examples = join_utterances(waves, texts, RATE, seed=0)
    members = [i for e in examples for i in e.members]
    assert sorted(members) == list(range(len(waves)))
    for e in examples:
        assert e.text == " ".join(texts[i] for i in e.members)
        assert len(e.spans) == len(e.members)
        for i, (start, end) in zip(e.members, e.spans):
            assert torch.equal(e.wave[start:end], waves[i])
        assert all(a[1] < b[0] for a, b in zip(e.spans, e.spans[1:])), "utterances overlap or touch"


def test_the_silences_have_their_lengths_and_levels():
    """Lead and tail within edge_ms, every gap within gap_ms (in samples); the silences digital zeros or
    white noise at an RMS level in noise_dbfs, both kinds drawn. Catches ranges in seconds instead of ms,
    at the wrong rate, a missing lead or tail, noise at the wrong scale or over the speech."""
    joining = Joining(max_utterances=3, gap_ms=(100.0, 800.0), edge_ms=(50.0, 400.0), noise_dbfs=(-60.0, -40.0),
                      digital_silence=0.5)
    waves, texts = utterances(60)
    examples = join_utterances(waves, texts, RATE, seed=1, joining=joining)
    samples = RATE / 1000  # per ms
    kinds = collections.Counter()
    for e in examples:
        lead, tail = e.spans[0][0], len(e.wave) - e.spans[-1][1]
        gaps = [b[0] - a[1] for a, b in zip(e.spans, e.spans[1:])]
        assert 50 * samples - 1 <= lead <= 400 * samples + 1 and 50 * samples - 1 <= tail <= 400 * samples + 1
        assert all(100 * samples - 1 <= g <= 800 * samples + 1 for g in gaps), gaps
        cuts = [0, *(x for span in e.spans for x in span), len(e.wave)]
        silence = torch.cat([e.wave[a:b] for a, b in zip(cuts[::2], cuts[1::2])])
        assert len(silence) == len(e.wave) - sum(b - a for a, b in e.spans)
        if torch.all(silence == 0):
            kinds["zeros"] += 1
        else:
            db = 20 * torch.log10(silence.square().mean().sqrt())
            assert -61 <= float(db) <= -39, f"noise at {float(db):.1f} dBFS"
            kinds["noise"] += 1
    assert kinds["zeros"] > 3 and kinds["noise"] > 3, kinds


def test_group_sizes_are_one_to_max_and_one_keeps_each_utterance_alone():
    waves, texts = utterances(60)
    sizes = collections.Counter(len(e.members) for e in join_utterances(waves, texts, RATE, seed=2))
    assert set(sizes) == {1, 2, 3}, sizes
    alone = join_utterances(waves, texts, RATE, seed=2, joining=Joining(max_utterances=1, edge_ms=(0.0, 0.0)))
    assert sorted(e.members for e in alone) == [(i,) for i in range(60)]
    assert all(torch.equal(e.wave, waves[e.members[0]]) and e.text == texts[e.members[0]] for e in alone)


def test_the_same_seed_gives_the_same_examples_and_another_seed_others():
    waves, texts = utterances(20)
    a, b, c = (join_utterances(waves, texts, RATE, seed=s) for s in (5, 5, 6))
    assert [e.members for e in a] == [e.members for e in b]
    assert all(torch.equal(x.wave, y.wave) for x, y in zip(a, b))
    assert [e.members for e in a] != [e.members for e in c]


@pytest.mark.parametrize("joining,message", [
    (Joining(max_utterances=0), "max_utterances must be a positive int"),
    (Joining(gap_ms=(800.0, 100.0)), "gap_ms must be a range"),
    (Joining(edge_ms=(-1.0, 10.0)), "edge_ms must be a range"),
    (Joining(digital_silence=1.5), "digital_silence must be a probability"),
])
def test_bad_settings_are_refused(joining, message):
    waves, texts = utterances(3)
    with pytest.raises(ValueError, match=message):
        join_utterances(waves, texts, RATE, seed=0, joining=joining)


def test_bad_utterances_are_refused():
    waves, texts = utterances(3)
    with pytest.raises(ValueError, match="waves and texts must pair up, got 3 waves and 2 texts"):
        join_utterances(waves, texts[:2], RATE, seed=0)
    with pytest.raises(ValueError, match=r"waves\[1\] must be 1-D samples, got shape \(2, 5\)"):
        join_utterances([waves[0], torch.ones(2, 5), waves[2]], texts, RATE, seed=0)
