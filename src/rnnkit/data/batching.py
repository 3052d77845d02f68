"""Batches for the tasks: one shuffled, resumable batch stream, one of generated batches, padding with lengths,
one split.

Every task that trains on a fixed set of examples (classify, speech, tag, translate,
forecast's windows, asr's utterances, a user's video clips) reads its batches from one
:class:`BatchStream`; the task says only how the chosen examples become a batch
(``collate``). Labels go with the examples only where a task has them.

    >>> stream = BatchStream(examples, batch_size=32, seed=0, collate=partial(collate, device=device),
    ...                      labels=labels)
    >>> batch = stream.next()        # collate(32 shuffled examples, their 32 labels)

A task whose training examples are generated (caption's and nextframe's moving digits, lab's problems) reads
:class:`GeneratedStream`; the task says how batch i of a seed is drawn (``draw(seed, i)``).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

SPLIT_ORDER = ("test", "dev", "train")  # the order split_indices cuts a permutation in


class BatchStream:
    """Shuffled batches of ``examples``, endlessly; a partial last batch is dropped.

    Epoch e reads a permutation drawn from a generator seeded by (seed, e), so (epoch,
    position, seed) is the stream's whole state and a resumed run reads the same batches.

    ``collate(chosen_examples)`` makes a batch; with ``labels`` it is called as
    ``collate(chosen_examples, chosen_labels)``. A batch size larger than the examples is
    cut to their number.
    """

    def __init__(self, examples: Sequence, batch_size: int, seed: int, collate: Callable[..., Any],
                 labels: Sequence | None = None) -> None:
        if labels is not None and len(labels) != len(examples):
            raise ValueError(f"labels has {len(labels)} entries but there are {len(examples)} examples")
        if not examples:
            raise ValueError("a batch stream needs at least one example, got none")
        self.examples, self.labels, self.collate = examples, labels, collate
        self.batch_size = min(batch_size, len(examples))
        self.seed = seed
        self.epoch, self.pos = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.examples), generator=generator).tolist()

    def next(self) -> Any:
        if self.pos + self.batch_size > len(self.examples):
            self.epoch += 1
            self.pos = 0
            self._order = self._permutation(self.epoch)
        chosen = self._order[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        examples = [self.examples[i] for i in chosen]
        if self.labels is None:
            return self.collate(examples)
        return self.collate(examples, [self.labels[i] for i in chosen])

    def steps_done(self) -> int:
        """Batches handed out so far (the Trainer takes one per step)."""
        return self.epoch * (len(self.examples) // self.batch_size) + self.pos // self.batch_size

    def state(self) -> tuple[dict, dict[str, Tensor]]:
        return {"epoch": self.epoch, "pos": self.pos, "seed": self.seed}, {}

    def load_state(self, meta: dict, tensors: dict[str, Tensor]) -> None:
        self.epoch, self.pos, self.seed = int(meta["epoch"]), int(meta["pos"]), int(meta["seed"])
        self._order = self._permutation(self.epoch)


def pad(sequences: Sequence[Tensor | Sequence[int]], value: float = 0, dtype: torch.dtype | None = None
        ) -> tuple[Tensor, Tensor]:
    """Sequences of different lengths as one time-major tensor and their lengths.

    ``sequences``: B tensors (T_b, *F) or B lists of ids; returns (T, B, *F) with T the longest
    T_b and ``value`` past each length, and lengths (B,).
    """
    rows = [s if isinstance(s, Tensor) else torch.tensor(s, dtype=dtype or torch.long) for s in sequences]
    lengths = torch.tensor([len(r) for r in rows])
    out = torch.full((int(lengths.max()), len(rows), *rows[0].shape[1:]), value,
                     dtype=dtype or rows[0].dtype)  # (T, B, *F)
    for j, r in enumerate(rows):
        out[: len(r), j] = r
    return out, lengths


class GeneratedStream:
    """Endless batches of generated examples: batch i is ``draw(seed, i)``, a function of the seed and i alone, so
    (seed, position) is the stream's whole state and a resumed run reads the same batches."""

    def __init__(self, seed: int, draw: Callable[[int, int], Any]) -> None:
        self.seed, self.draw = seed, draw
        self.position = 0  # batches read

    def next(self) -> Any:
        batch = self.draw(self.seed, self.position)
        self.position += 1
        return batch

    def state(self) -> tuple[dict, dict[str, Tensor]]:
        return {"position": self.position, "seed": self.seed}, {}

    def load_state(self, meta: dict, tensors: dict[str, Tensor]) -> None:
        self.position, self.seed = int(meta["position"]), int(meta["seed"])


def seeded_parts(n: int, sizes: Sequence[int], seed: int) -> list[list[int]]:
    """The indices 0..n-1 permuted by ``random.Random(seed).shuffle`` and cut into consecutive parts of ``sizes``
    and a last part of the rest, each part in the examples' own order: every seeded split of the tasks."""
    if any(size < 0 for size in sizes) or sum(sizes) > n:
        raise ValueError(f"sizes must be >= 0 with a sum of at most n={n}, got {list(sizes)}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    bounds = [0, *itertools.accumulate(sizes), n]
    return [sorted(order[start:end]) for start, end in zip(bounds, bounds[1:])]


def split_indices(n: int, seed: int) -> dict[str, list[int]]:
    """train, dev and test indices of n examples: a seeded permutation cut into test, dev and train
    (``SPLIT_ORDER``), dev and test n // 10 each, train the rest, each split in the examples' own order."""
    return dict(zip(SPLIT_ORDER, seeded_parts(n, (n // 10, n // 10), seed)))


def hold_out(n: int, fraction: float, seed: int, examples: str) -> tuple[list[int], list[int]]:
    """(kept, held): ``round(fraction * n)`` of n examples held out by a seeded permutation (``seeded_parts``),
    each part in the examples' own order. Holding out all of them is a ValueError that names the examples
    (``examples``: what they are, e.g. "clip(s) of DIR")."""
    held, kept = seeded_parts(n, (round(fraction * n),), seed)
    if held and not kept:
        raise ValueError(f"dev_fraction {fraction} holds out all {n} {examples}, leaving none to train on: lower "
                         "--dev-fraction or add examples")
    return kept, held
