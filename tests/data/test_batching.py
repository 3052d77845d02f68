"""The one batch stream, padding and split of rnnkit.data.batching."""

from __future__ import annotations

import random

import pytest
import torch

from rnnkit.data.batching import BatchStream, hold_out, pad, seeded_parts, split_indices


def collect(examples, labels=None):
    return (examples, labels)


def test_the_stream_resumes_exactly():
    examples, labels = [[i] for i in range(10)], [i % 2 for i in range(10)]
    stream = BatchStream(examples, batch_size=4, seed=3, collate=collect, labels=labels)
    seen = [stream.next()[0] for _ in range(3)]
    firsts = [e[0] for b in seen[:2] for e in b]
    assert stream.epoch == 1 and len(set(firsts)) == 8  # no repeats within a pass
    meta, tensors = stream.state()
    again = BatchStream(examples, 4, seed=0, collate=collect, labels=labels)
    again.load_state(meta, tensors)
    for _ in range(4):
        assert again.next() == stream.next()


def test_labels_go_with_their_examples_and_only_when_given():
    examples = [[i, i] for i in range(7)]
    labelled = BatchStream(examples, 3, seed=1, collate=collect, labels=[10 * i for i in range(7)])
    chosen, labels = labelled.next()
    assert labels == [10 * e[0] for e in chosen]
    unlabelled = BatchStream(examples, 3, seed=1, collate=lambda chosen: chosen)
    assert unlabelled.next() == chosen  # the same order, and collate called with the examples alone
    with pytest.raises(ValueError, match="labels has 2 entries but there are 7 examples"):
        BatchStream(examples, 3, seed=1, collate=collect, labels=[0, 1])


def test_steps_done_counts_batches_across_epochs():
    stream = BatchStream(list(range(10)), 4, seed=0, collate=lambda chosen: chosen)  # 2 full batches a pass
    for _ in range(5):
        stream.next()
    assert stream.steps_done() == 5


def test_pad_is_time_major_with_lengths_and_the_fill_value():
    ids, lengths = pad([[1, 2, 3], [4]], value=-1)
    assert ids.tolist() == [[1, 4], [2, -1], [3, -1]] and lengths.tolist() == [3, 1]
    frames, lengths = pad([torch.ones(2, 3), torch.full((4, 3), 2.0)])
    assert frames.shape == (4, 2, 3) and lengths.tolist() == [2, 4]
    assert frames[2:, 0].abs().sum() == 0 and frames[:, 1].eq(2).all()


def test_split_indices_cuts_80_10_10_disjoint_and_sorted():
    parts = split_indices(25, seed=0)
    assert [len(parts[s]) for s in ("train", "dev", "test")] == [21, 2, 2]
    assert sorted(parts["train"] + parts["dev"] + parts["test"]) == list(range(25))
    assert all(p == sorted(p) for p in parts.values())
    assert split_indices(25, seed=0) == parts and split_indices(25, seed=1) != parts


def permutation(n, seed):
    """The permutation every seeded split of the tasks cut before seeded_parts (written out in each)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


@pytest.mark.parametrize("n,seed", [(0, 0), (1, 3), (25, 0), (97, 13)])
def test_seeded_parts_cut_the_same_permutation_the_tasks_cut_before(n, seed):
    """The splits of run directories written before seeded_parts existed stay the same: a resumed run scores the
    same dev examples. A cut from the end, another shuffle, or parts in permutation order fail here."""
    order = permutation(n, seed)
    # split_indices: test, dev, train; classify: round(0.8 n) train, then dev up to round(0.9 n); the dev hold-out
    # of asr, speech and video: the first round(f n)
    assert list(split_indices(n, seed).values()) == [sorted(order[: n // 10]), sorted(order[n // 10 : 2 * (n // 10)]),
                                                     sorted(order[2 * (n // 10) :])]
    a, b = round(0.8 * n), round(0.9 * n)
    assert seeded_parts(n, (a, b - a), seed) == [sorted(order[:a]), sorted(order[a:b]), sorted(order[b:])]
    for fraction in (0.0, 0.1, 0.15):
        held = round(fraction * n)
        assert hold_out(n, fraction, seed, "examples") == (sorted(order[held:]), sorted(order[:held]))


def test_hold_out_refuses_to_hold_out_every_example_and_seeded_parts_checks_its_sizes():
    with pytest.raises(ValueError, match=r"dev_fraction 0.99 holds out all 8 clip\(s\) of DIR, leaving none"):
        hold_out(8, 0.99, 0, "clip(s) of DIR")
    with pytest.raises(ValueError, match=r"sizes must be >= 0 with a sum of at most n=4, got \[3, 2\]"):
        seeded_parts(4, (3, 2), 0)
    assert hold_out(0, 0.5, 0, "examples") == ([], [])  # nothing to hold out is no error
