"""Sequence classification, the shape classify, speech and video share.

A padded batch of sequences (token ids (T, B), frames (T, B, F) or clips (T, B, C, S, S)) with
their lengths goes in, one label per sequence comes out; the loss is cross-entropy, the
metrics accuracy and macro-F1 beside the majority class, from a confusion matrix. A task
says how it reads its data and builds its model; the batches, the scoring and the Trainer's
view are here once.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batching import BatchStream, pad
from ..train.distributed import split_batch
from .base import Trained
from .fields import check_choice, check_fractions

POOLINGS = ("last", "mean", "max", "attention")


@dataclass
class PoolingFields:
    """The Config fields of the pooled classifier head (classify, speech), a field group of
    ``rnnkit.tasks.fields``: how ``pool`` reads the layer's outputs, and the dropout before the head."""

    pooling: str = field(default="max", metadata={"help": "last, mean, max or attention over the valid steps"})
    head_dropout: float = field(default=0.5, metadata={"help": "dropout on the pooled features before the head"})

    def check_pooling(self) -> None:
        """ValueError unless pooling is one of POOLINGS and head_dropout is in [0, 1)."""
        check_choice("pooling", self.pooling, POOLINGS)
        check_fractions(self, ("head_dropout",))


class Batch(NamedTuple):
    x: Tensor  # (T, B, *F) the sequences, 0 past each length
    lengths: Tensor  # (B,)
    labels: Tensor  # (B,) label ids


def collate(sequences: Sequence[Tensor | list[int]], labels: Sequence[int], device: torch.device) -> Batch:
    x, lengths = pad(sequences)  # (T, B, *F), (B,)
    return Batch(x.to(device), lengths.to(device), torch.tensor(list(labels)).to(device))


class Prediction(NamedTuple):
    """One sequence's most likely label, its probability, and every label's (``predict`` of classify and speech)."""

    label: str
    probability: float  # of ``label``
    probabilities: dict[str, float]  # every label's


def predictions(probs: Tensor, labels: Sequence[str]) -> list[Prediction]:
    """A ``Prediction`` per row of ``probs`` (N, C), whose columns are ``labels``."""
    return [Prediction(labels[int(p.argmax())], float(p.max()), {label: float(q) for label, q in zip(labels, p)})
            for p in probs]


@torch.no_grad()
def predict_probs(model: nn.Module, sequences: Sequence[Tensor | list[int]], batch_size: int = 256) -> Tensor:
    """Label probabilities (N, C) of ``model(x (T, B, *F), lengths (B,)) -> logits (B, C)``, in the order of
    ``sequences``; batched by length (less padding), in eval mode, the model's mode restored after."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    probs = torch.empty(len(sequences), model.head.out_features)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        x, lengths = pad([sequences[i] for i in chosen])  # (T, b, *F), (b,)
        probs[chosen] = model(x.to(device), lengths.to(device)).float().softmax(-1).cpu()
    model.train(was_training)
    return probs


def pool(pooling: str, out: Tensor, state, lengths: Tensor, num_directions: int, query: nn.Module | None) -> Tensor:
    """The features (B, D*R) of a recurrent layer's output over each sequence's valid steps.

    ``out`` (T, B, D*R) and ``state`` (h, or a tuple whose ``h``, (L*D, B, R)) come from ``Recurrent``
    with ``lengths``. ``last``: the top layer's final states, both directions (the forward one's after
    the sequence's own last step, the reverse one's after its first); ``mean`` / ``max``: over the valid
    steps; ``attention``: ``query`` (Linear(D*R, 1)) scores every valid step and a softmax over them
    weights the outputs. Padding never changes the result.
    """
    T = out.shape[0]
    valid = torch.arange(T, device=out.device)[:, None] < lengths.to(out.device)[None, :]  # (T, B)
    if pooling == "last":
        h = state.h if isinstance(state, tuple) else state  # (L*D, B, R), layer-major as torch
        return h[-num_directions:].transpose(0, 1).reshape(h.shape[1], -1)  # (B, D*R): the top layer's directions
    if pooling == "mean":
        return (out * valid[..., None]).sum(0) / lengths.to(out.device, out.dtype)[:, None]  # (B, D*R)
    if pooling == "max":
        return out.masked_fill(~valid[..., None], float("-inf")).amax(0)  # (B, D*R)
    if pooling == "attention":
        scores_t = query(out).squeeze(-1).masked_fill(~valid, float("-inf"))  # (T, B)
        weights = scores_t.float().softmax(0).to(out.dtype)  # (T, B), zero on padding
        return (weights[..., None] * out).sum(0)  # (B, D*R)
    raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")


class PooledClassifier(nn.Module):
    """A recurrent sequence classifier's head: ``pool`` over the layer's valid steps -> dropout -> Linear.

    A subclass builds its ``rnn`` (a ``Recurrent``), calls :meth:`build_head`, and ends ``forward`` with
    :meth:`classify`. The head's modules are the model's own attributes (``query``, ``head``): the names
    in its checkpoints.
    """

    def build_head(self, features: int, num_labels: int, config: PoolingFields) -> None:
        """``query`` (attention pooling's learned q, score_t = q . y_t), ``head_dropout`` and ``head``
        Linear(features, C), features = D*H of the layer's outputs."""
        self.pooling = config.pooling
        self.query = nn.Linear(features, 1, bias=False) if config.pooling == "attention" else None
        self.head_dropout = nn.Dropout(config.head_dropout)
        self.head = nn.Linear(features, num_labels)

    def classify(self, out: Tensor, state, lengths: Tensor) -> Tensor:
        """Logits (B, C) from the layer's ``out`` (T, B, D*H) and final ``state`` over each sequence's length."""
        pooled = pool(self.pooling, out, state, lengths, self.rnn.num_directions, self.query)  # (B, D*H)
        return self.head(self.head_dropout(pooled))  # (B, C)


def confusion(targets: Tensor, predictions: Tensor, num_labels: int) -> Tensor:
    """(C, C) counts: row = true label, column = predicted."""
    return torch.bincount(targets * num_labels + predictions, minlength=num_labels**2).view(num_labels, num_labels)


def scores(matrix: Tensor, majority: int) -> dict:
    """accuracy, macro-F1 (over every training label; 0 for a label never predicted nor present) and the
    majority-class baseline's accuracy, from a confusion matrix."""
    matrix = matrix.double()
    n = matrix.sum()
    tp = matrix.diag()
    f1 = 2 * tp / (matrix.sum(0) + matrix.sum(1)).clamp(min=1)
    return {"accuracy": float(tp.sum() / n), "macro_f1": float(f1.mean()),
            "majority_accuracy": float(matrix[majority].sum() / n), "n": int(n)}


def majority(targets: Sequence[int]) -> int:
    """The most frequent label id (the smallest of a tie): the majority-class baseline's prediction."""
    counts = collections.Counter(targets)
    return min(counts, key=lambda i: (-counts[i], i))


class SequenceClassificationTask:
    """The Trainer's view of a sequence classifier (``rnnkit.train.trainer.TrainingTask``).

    A subclass's ``__init__`` calls :meth:`set_data`, and sets ``self.model`` (``model(x, lengths) -> logits``, with
    a ``head`` Linear) and ``self.stream`` (most often :meth:`shuffled_stream`).
    """

    metric = "accuracy"
    higher_is_better = True
    predict_batch_size = 256  # sequences per forward pass when scoring

    def set_data(self, sequences: dict[str, Sequence], labels_by_split: dict[str, Sequence[str]],
                 labels: list[str]) -> None:
        """Every split's sequences with their label ids (``labels``: the training labels, in id order), the split
        the Trainer evaluates (dev, else train) and ``majority``, the id of the most frequent training label (the
        baseline's prediction), where there is a train split (video's generated clips have none: it sets its own)."""
        self.labels = labels
        index = {label: i for i, label in enumerate(labels)}
        self.data = {s: (sequences[s], [index[y] for y in labels_by_split[s]]) for s in sequences}
        self.eval_split = "dev" if self.data["dev"][0] else "train"
        if "train" in self.data:
            self.majority = majority(self.data["train"][1])

    def shuffled_stream(self, batch_size: int, seed: int, device: torch.device) -> BatchStream:
        """Shuffled, padded batches of the training split with their labels."""
        sequences, targets = self.data["train"]
        return BatchStream(sequences, batch_size, seed, partial(collate, device=device), targets)

    def shard(self, batch: Batch, rank: int, world_size: int) -> Batch:
        """This rank's sequences of a batch under torchrun (the padding stays: lengths mark it)."""
        return Batch(*(split_batch(t, rank, world_size, dim) for t, dim in zip(batch, (1, 0, 0))))

    def loss(self, batch: Batch, carry):
        logits = self.model(batch.x, batch.lengths)  # (B, C)
        return F.cross_entropy(logits.float(), batch.labels), None, int(batch.lengths.sum())

    def predict(self, split: str) -> Tensor:
        """Label probabilities (N, C) of the split's sequences."""
        return predict_probs(self.model, self.data[split][0], self.predict_batch_size)

    def score(self, split: str) -> tuple[dict, Tensor]:
        """``scores`` of the split and its (C, C) confusion matrix."""
        matrix = confusion(torch.tensor(self.data[split][1]), self.predict(split).argmax(-1), len(self.labels))
        return scores(matrix, self.majority), matrix

    def evaluate(self) -> dict:
        return self.score(self.eval_split)[0]


@dataclass(eq=False, repr=False)
class TrainedSequenceClassifier(Trained):
    """What a trained classify or speech model shares besides ``Trained``'s: the training labels in logit order,
    the majority label; predicting and scoring a list of sequences (each what the model reads, token ids or
    (T, F) frames)."""

    labels: list[str]  # the training labels, in logit order
    majority: str  # the most frequent training label: the baseline's prediction

    def predict_sequences(self, sequences: Sequence[Tensor | list[int]]) -> list[Prediction]:
        """The most likely label of each sequence, with its probability and every label's."""
        return predictions(predict_probs(self.model, sequences), self.labels)

    def score_sequences(self, sequences: Sequence[Tensor | list[int]], gold: Sequence[str]) -> tuple[dict, Tensor]:
        """``scores`` (accuracy, macro_f1, majority_accuracy, n) and the (C, C) confusion matrix (row = true label,
        column = predicted) of ``sequences`` whose true labels are ``gold``, each one of ``labels``."""
        index = {label: i for i, label in enumerate(self.labels)}
        predicted = predict_probs(self.model, sequences).argmax(-1)  # (N,)
        matrix = confusion(torch.tensor([index[y] for y in gold]), predicted, len(self.labels))
        return scores(matrix, index[self.majority]), matrix
