"""The one batch stream, padding and split of rnnkit.data.batching."""

from __future__ import annotations

import pytest
import torch

from rnnkit.data.batching import BatchStream, pad, split_indices


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
