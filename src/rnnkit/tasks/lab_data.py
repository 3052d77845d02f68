"""Generators of the long-range dependency lab: the adding problem, copy memory, temporal order.

Every generator is a pure function of a ``torch.Generator``: the same seed gives the same
examples on every machine. Tensors are time-major, as ``rnnkit.Recurrent`` takes them.

Symbols: T the problem's length (``--length``), N examples, S the sequence length
(adding: T; copy: T + 20; order: each example's own length in [T, 1.1 T]).

- ``adding`` (Le, Jaitly & Hinton 2015, after Hochreiter & Schmidhuber 1997): x_t = (u_t, m_t)
  with u_t ~ U[0, 1] and a marker m_t that is 1 at two positions, one drawn in the first half
  [0, T/2) and one in the second half [T/2, T), 0 elsewhere; the target is the sum of the two
  marked values. Always predicting 1 scores MSE Var(u_a + u_b) = 2/12 = 0.1667.
- ``copy`` (Arjovsky, Shah & Bengio 2016): symbols 0 (blank), 1-8 (data), 9 (delimiter); the
  input is 10 data symbols drawn uniformly, T - 1 blanks, the delimiter, then 10 blanks; the
  target is T + 10 blanks, then the 10 data symbols. A memoryless model that predicts blanks,
  then a uniform guess over the 8 data symbols, scores a cross-entropy (per step, over all
  T + 20 steps) of 10 ln 8 / (T + 20), and 1/8 accuracy on the recalled symbols.
- ``order`` (Hochreiter & Schmidhuber 1997, experiment 6a, "temporal order"): symbols
  a, b, c, d (distractors), B, E (begin, end), X, Y. A sequence of length S ~ U{T, ..., 1.1 T}
  starts with B and ends with E; between them distractors, except at t1 ~ U{0.1 T, ..., 0.2 T}
  and t2 ~ U{0.5 T, ..., 0.6 T} which hold X or Y. The class is the pair (XX, XY, YX, YY) = (0,
  1, 2, 3), to be told at the last step; chance is 1/4 (cross-entropy ln 4). T = 100 is the
  paper's setting (lengths 100-110, t1 in 10-20, t2 in 50-60).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

PROBLEMS = ("adding", "copy", "order")

COPY_SYMBOLS = 10  # 0 blank, 1-8 data, 9 delimiter
COPY_DATA = 8  # data symbols a memoryless model must guess among
COPY_RECALL = 10  # symbols to remember
COPY_BLANK, COPY_DELIMITER = 0, 9

ORDER_SYMBOLS = ("a", "b", "c", "d", "B", "E", "X", "Y")  # one-hot index = position here
ORDER_CLASSES = 4  # XX, XY, YX, YY
ORDER_EXTRA_FRACTION = 0.1  # lengths span [T, T + 0.1 T], as 100-110 in the paper
ORDER_T1 = (0.1, 0.2)  # t1 in [0.1 T, 0.2 T]
ORDER_T2 = (0.5, 0.6)  # t2 in [0.5 T, 0.6 T]


class LabBatch(NamedTuple):
    """A batch of one problem; ``lengths`` is None where every sequence has all S steps."""

    x: Tensor  # (S, N, input_size) float
    y: Tensor  # adding: (N,) float; copy: (S, N) long symbols; order: (N,) long classes
    lengths: Tensor | None  # (N,) int64 (order only), or None


def input_size(problem: str) -> int:
    """Features per step: adding 2 (value, marker); copy 10 and order 8 (one-hot symbols)."""
    return {"adding": 2, "copy": COPY_SYMBOLS, "order": len(ORDER_SYMBOLS)}[check_problem(problem)]


def check_problem(problem: str) -> str:
    if problem not in PROBLEMS:
        raise ValueError(f"problem must be one of {', '.join(PROBLEMS)}, got {problem!r}")
    return problem


def check_length(problem: str, length: int) -> None:
    """The shortest T each problem is defined for (both markers, or both of order's positions, distinct)."""
    shortest = {"adding": 2, "copy": 1, "order": 10}[check_problem(problem)]
    if isinstance(length, bool) or not isinstance(length, int) or length < shortest:
        raise ValueError(f"length of the {problem} problem must be an int >= {shortest}, got {length!r}")


def longest(problem: str, length: int) -> int:
    """S, the most steps an example of ``problem`` at T = ``length`` has: adding T, copy T + 20, order 1.1 T."""
    check_length(problem, length)
    return {"adding": length, "copy": length + 2 * COPY_RECALL,
            "order": length + math.floor(ORDER_EXTRA_FRACTION * length)}[problem]


def adding(length: int, n: int, generator: torch.Generator) -> LabBatch:
    """N adding-problem examples of T = ``length`` steps: x (T, N, 2), y (N,) the sum of the marked values."""
    check_length("adding", length)
    T = length
    values = torch.rand(T, n, generator=generator)  # (T, N) ~ U[0, 1]
    first = torch.randint(0, T // 2, (n,), generator=generator)  # (N,) in [0, T/2)
    second = torch.randint(T // 2, T, (n,), generator=generator)  # (N,) in [T/2, T)
    markers = torch.zeros(T, n)
    columns = torch.arange(n)
    markers[first, columns] = 1.0
    markers[second, columns] = 1.0
    y = values[first, columns] + values[second, columns]  # (N,)
    return LabBatch(torch.stack([values, markers], dim=-1), y, None)


def copy(length: int, n: int, generator: torch.Generator) -> LabBatch:
    """N copy-memory examples with delay T = ``length``: x (T + 20, N, 10) one-hot, y (T + 20, N) symbols."""
    check_length("copy", length)
    S = length + 2 * COPY_RECALL
    data = torch.randint(1, COPY_DATA + 1, (COPY_RECALL, n), generator=generator)  # (10, N) in 1..8
    inputs = torch.full((S, n), COPY_BLANK, dtype=torch.long)
    inputs[:COPY_RECALL] = data
    inputs[length + COPY_RECALL - 1] = COPY_DELIMITER  # after T - 1 blanks
    targets = torch.full((S, n), COPY_BLANK, dtype=torch.long)
    targets[-COPY_RECALL:] = data
    x = torch.nn.functional.one_hot(inputs, COPY_SYMBOLS).float()  # (S, N, 10)
    return LabBatch(x, targets, None)


def order(length: int, n: int, generator: torch.Generator) -> LabBatch:
    """N temporal-order examples (experiment 6a at T = 100): x (S_max, N, 8) one-hot, padded with zeros
    past each example's length; y (N,) the class of the (t1, t2) pair; lengths (N,)."""
    check_length("order", length)
    T = length
    extra = math.floor(ORDER_EXTRA_FRACTION * T)
    lengths = torch.randint(T, T + extra + 1, (n,), generator=generator)  # (N,) in [T, 1.1 T]
    t1 = torch.randint(math.floor(ORDER_T1[0] * T), math.floor(ORDER_T1[1] * T) + 1, (n,), generator=generator)
    t2 = torch.randint(math.floor(ORDER_T2[0] * T), math.floor(ORDER_T2[1] * T) + 1, (n,), generator=generator)
    first_y = torch.randint(0, 2, (n,), generator=generator)  # (N,) 0: X, 1: Y at t1
    second_y = torch.randint(0, 2, (n,), generator=generator)  # (N,) at t2
    S = T + extra
    symbols = torch.randint(0, 4, (S, n), generator=generator)  # (S, N) distractors a-d
    columns = torch.arange(n)
    symbols[0] = ORDER_SYMBOLS.index("B")
    symbols[lengths - 1, columns] = ORDER_SYMBOLS.index("E")
    x_index, y_index = ORDER_SYMBOLS.index("X"), ORDER_SYMBOLS.index("Y")
    symbols[t1, columns] = torch.where(first_y == 0, x_index, y_index)
    symbols[t2, columns] = torch.where(second_y == 0, x_index, y_index)
    x = torch.nn.functional.one_hot(symbols, len(ORDER_SYMBOLS)).float()  # (S, N, 8)
    x = x * (torch.arange(S)[:, None] < lengths[None, :])[..., None]  # zeros past each length
    return LabBatch(x, 2 * first_y + second_y, lengths)


GENERATORS = {"adding": adding, "copy": copy, "order": order}


def make_batch(problem: str, length: int, n: int, seed: int) -> LabBatch:
    """N examples of ``problem`` drawn from a generator seeded with ``seed``: the same on every machine."""
    return GENERATORS[check_problem(problem)](length, n, torch.Generator().manual_seed(seed))


def baseline(problem: str, length: int) -> dict[str, float]:
    """What a model that ignores the long-range dependency scores (see the module notes).

    adding: {"mse": 1/6}; copy: {"cross_entropy": 10 ln 8 / (T + 20), "accuracy": 1/8};
    order: {"accuracy": 1/4, "cross_entropy": ln 4}.
    """
    check_length(problem, length)
    if problem == "adding":
        return {"mse": 2 / 12}  # Var(u_a + u_b) of two independent U[0, 1]
    if problem == "copy":
        return {"cross_entropy": COPY_RECALL * math.log(COPY_DATA) / (length + 2 * COPY_RECALL),
                "accuracy": 1 / COPY_DATA}
    return {"accuracy": 1 / ORDER_CLASSES, "cross_entropy": math.log(ORDER_CLASSES)}
