"""Sequence classification: ``rnnkit classify train | evaluate | predict``, word or character level.

Model: token embedding (E) -> ``rnnkit.Recurrent`` (any cell, stacked, optionally
bidirectional, with the regularizers of ``rnnkit.regularize``) over a padded batch with its
lengths -> pooling over the valid steps -> dropout -> linear head over the C labels.

Pooling (D directions, R = H features each):

- ``last``: the final state of the top layer, both directions concatenated, (B, D*R); the
  forward direction's state after each sequence's own last token, the reverse one's after
  its first;
- ``mean`` / ``max``: over the valid steps of the top layer's output only;
- ``attention``: a learned query scores every valid step, a softmax over them weights the
  outputs (padding gets no weight).

Padding never changes a prediction: an example alone scores as it does padded in a batch.

Data: ``--data FILE`` (CSV, TSV or JSONL; the format from the extension, ``--format``
overrides) with ``--text-column`` and ``--label-column``, or the bundled movie-review
polarity sentences (``rnnkit.data``, SOURCES.md). A ``split`` column (train, dev, test)
gives the split; a file without one is split 80/10/10 by a shuffle seeded with
``SPLIT_SEED``, the same on every machine. The labels are the training split's; a dev or
test label never seen in training is an error. Metrics: accuracy and macro-F1 beside the
majority-class baseline (the most frequent training label); dev accuracy picks the best
checkpoint, and ``train`` ends by scoring ``best/`` on the test split.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import torch
from rich.console import Console
from torch import Tensor, nn

from ..data import Vocab, read_text
from ..data.batching import seeded_parts
from ..data.text import json_lines
from ..recurrent import Recurrent
from ..train import checkpoint
from ..train.trainer import TrainConfig
from .base import SPLITS, begin, finished, fit, scores_training_split, write_report
from .fields import (
    ExampleFields,
    LayerFields,
    RegularizerFields,
    TaskConfig,
    TokenFields,
    check_fractions,
    check_ints,
    with_defaults,
)
from .registry import SplitArgs, TaskSpec, Verb
from .sequence_classification import (
    PooledClassifier,
    PoolingFields,
    Prediction,
    SequenceClassificationTask,
    TrainedSequenceClassifier,
)

NAME = "classify"
BUNDLED_FILE = "polarity.tsv.gz"  # in rnnkit/data; see SOURCES.md
SPLIT_ALIASES = {"validation": "dev", "valid": "dev", "val": "dev"}
SPLIT_COLUMN = "split"
SPLIT_SEED = 0  # the 80/10/10 split of a user's file without a split column
FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
UNK_CHAR = "\x00"  # char level: the id of every character not seen in training
DEFAULT_STEPS = 2100  # with neither --steps nor --max-minutes: the 2,097 steps the 5-minute run of
# docs/results.md ("Sentence polarity", 2 cores) fitted, evaluations included
CLASSIFY_TRAIN_DEFAULTS = {"steps": DEFAULT_STEPS, "lr": 3e-3, "eval_every": 100, "checkpoint_every": 100,
                           "warmup_steps": 50, "weight_decay": 0.05}


@dataclass
@with_defaults(level="word", batch_size=32)
class ClassifyConfig(TaskConfig, ExampleFields, TokenFields, RegularizerFields, PoolingFields, LayerFields):
    """The classifier and its data; defaults tuned for the bundled polarity data on 2 CPU cores."""

    unit, units = "text", "texts"

    data: str | None = field(default=None, metadata={"help": "CSV, TSV or JSONL to train on (default: bundled "
                                                             "movie-review polarity sentences)"})
    text_column: str = field(default="text", metadata={"help": "the column (or JSON key) holding the text"})
    label_column: str = field(default="label", metadata={"help": "the column (or JSON key) holding the label"})
    format: str | None = field(default=None, metadata={"help": "csv, tsv or jsonl (default: from the extension)"})
    lowercase: bool = field(default=True, metadata={"help": "lowercase the text first (word level: fewer, "
                                                            "better-trained embeddings on small data)"})
    max_length: int = field(default=400, metadata={"help": "keep the first N tokens of each text"})
    # the recurrent regularizers (RegularizerFields) are off by default: plain dropout on the embeddings and the pooled
    # features regularizes as well here and leaves the layer on torch's fast native path
    embedding_dropout: float = field(default=0.3, metadata={"help": "dropout on the token embeddings"})

    def validate(self) -> None:
        self.check_level()
        self.check_pooling()
        if self.format is not None and self.format not in ("csv", "tsv", "jsonl"):
            raise ValueError(f"format must be csv, tsv or jsonl, got {self.format!r}")
        check_ints(self, ("max_vocab", "max_length", "hidden_size", "num_layers", "embedding_size", "batch_size"))
        check_fractions(self, ("embedding_dropout",))


# ---------------------------------------------------------------------- the model


class Classifier(PooledClassifier):
    """Embedding -> Recurrent (with lengths) -> pooling -> Linear.

    forward(ids (T, B), lengths (B,)) -> logits (B, C)
    """

    def __init__(self, vocab_size: int, num_labels: int, config: ClassifyConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, config.embedding_size)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.rnn = Recurrent(
            config.cell, config.embedding_size, config.hidden_size, config.num_layers, dropout=config.dropout,
            bidirectional=config.bidirectional,
            **config.regularizers(),
        )
        self.build_head(config.hidden_size * self.rnn.num_directions, num_labels, config)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        out, state = self.rnn(self.embedding_dropout(self.embedding(ids)), lengths=lengths)  # (T, B, D*H)
        return self.classify(out, state, lengths)  # (B, C)


# ---------------------------------------------------------------------- data


class Table(NamedTuple):
    """A labelled dataset: texts and labels by split ("train", "dev", "test")."""

    texts: dict[str, list[str]]
    labels: dict[str, list[str]]
    source: str  # for messages: the file, or "bundled polarity data"
    has_split: bool = False  # the splits came from a split column, not the seeded shuffle


def data_format(path: str, format: str | None) -> str:
    if format is not None:
        return format
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot tell the format of {path} from its extension {suffix or '(none)'!r}; "
                         "pass --format csv, tsv or jsonl")
    return FORMATS[suffix]


def read_rows(text: str, format: str, source: str) -> list[dict]:
    """The rows of a CSV/TSV (with a header) or JSONL text as dicts; blank JSONL lines are skipped."""
    if format == "jsonl":
        rows = [row for _, row in json_lines(text, source)]
        if not rows:
            raise ValueError(f"{source} holds no JSON lines; expected one object per line")
        return rows
    reader = csv.DictReader(io.StringIO(text), delimiter="," if format == "csv" else "\t")
    rows = list(reader)
    if not rows:
        raise ValueError(f"{source} has a header but no rows")
    for number, row in enumerate(rows, 2):
        if None in row:
            raise ValueError(f"{source} line {number} has more fields than the header ({len(reader.fieldnames)})")
    return rows


def load_table(path: str | None, text_column: str, label_column: str, format: str | None = None) -> Table:
    """The labelled examples of ``path`` (or the bundled data) by split; see the module notes."""
    if path is None:
        packed = resources.files("rnnkit.data").joinpath(BUNDLED_FILE).read_bytes()
        source, text, format, text_column, label_column = ("bundled polarity data", gzip.decompress(packed)
                                                           .decode("utf-8"), "tsv", "text", "label")
    else:
        source, text = str(path), read_text(path)
        format = data_format(source, format)
    rows = read_rows(text, format, source)
    present = set().union(*(row.keys() for row in rows)) if format == "jsonl" else set(rows[0])
    for flag, column in (("--text-column", text_column), ("--label-column", label_column)):
        if column not in present:
            raise ValueError(f"{source} has no column {column!r} (it has: {', '.join(sorted(map(str, present)))}); "
                             f"name the right one with {flag}")
    texts: dict[str, list[str]] = {s: [] for s in SPLITS}
    labels: dict[str, list[str]] = {s: [] for s in SPLITS}
    if SPLIT_COLUMN in present:
        assigned = []
        for number, row in enumerate(rows, 1):
            value = str(row.get(SPLIT_COLUMN, "")).strip().lower()
            split = SPLIT_ALIASES.get(value, value)
            if split not in SPLITS:
                raise ValueError(f"{source} row {number}: split {row.get(SPLIT_COLUMN)!r} is not train, dev or test")
            assigned.append(split)
    else:
        cut_train, cut_dev = round(0.8 * len(rows)), round(0.9 * len(rows))  # a seeded 80/10/10
        assigned = [""] * len(rows)
        for split, part in zip(SPLITS, seeded_parts(len(rows), (cut_train, cut_dev - cut_train), SPLIT_SEED)):
            for i in part:
                assigned[i] = split
    for number, (row, split) in enumerate(zip(rows, assigned), 1):
        text_value, label_value = row.get(text_column), row.get(label_column)
        if label_value is None or str(label_value).strip() == "":
            raise ValueError(f"{source} row {number} has no {label_column!r} label")
        if text_value is None:
            text_value = ""
        if not isinstance(text_value, str):
            raise ValueError(f"{source} row {number}: {text_column!r} must be text, got {type(text_value).__name__}")
        texts[split].append(text_value)
        labels[split].append(str(label_value).strip())
    if not texts["train"]:
        raise ValueError(f"{source} has no training rows")
    return Table(texts, labels, source, SPLIT_COLUMN in present)


def check_labels(table: Table, known: Sequence[str], splits: Sequence[str]) -> None:
    """A label in ``splits`` that is not in ``known`` (the training labels) is an error naming it."""
    known_set = set(known)
    for split in splits:
        unseen = sorted(set(table.labels[split]) - known_set)
        if unseen:
            row = table.labels[split].index(unseen[0])
            raise ValueError(f"{table.source}: the {split} split has label(s) never seen in training: "
                             f"{', '.join(map(repr, unseen[:5]))} (first at its row {row + 1}); the model knows "
                             f"{', '.join(map(repr, known))}")


def prepare(text: str, config: ClassifyConfig) -> str:
    return text.lower() if config.lowercase else text


def build_vocab(texts: Sequence[str], config: ClassifyConfig) -> Vocab:
    """The training texts' vocabulary; id 0 is the unknown token at both levels."""
    joined = "\n".join(prepare(t, config) for t in texts)
    if config.level == "word":
        if not Vocab.build(joined + " .", level="word").tokens[1:]:
            raise ValueError("the training texts hold no words")
        return Vocab.build(joined + " .", level="word", max_size=config.max_vocab)
    return Vocab([UNK_CHAR, *sorted(set(joined) - {UNK_CHAR})], level="char")


class Encoder:
    """Text -> token ids (unknown tokens -> 0, at most ``max_length``, at least one token)."""

    def __init__(self, vocab: Vocab, config: ClassifyConfig) -> None:
        self.vocab, self.config = vocab, config
        self.stoi = {t: i for i, t in enumerate(vocab.tokens)}

    def __call__(self, text: str) -> list[int]:
        tokens = self.vocab.tokenize(prepare(text, self.config))[: self.config.max_length]
        return [self.stoi.get(t, 0) for t in tokens] or [0]  # an empty text reads as one unknown token


# ---------------------------------------------------------------------- metrics


# ---------------------------------------------------------------------- training


class ClassifyTask(SequenceClassificationTask):
    """The Trainer's view of the classifier: sequences of token ids."""

    name = NAME

    def __init__(self, config: ClassifyConfig, table: Table, vocab: Vocab, labels: list[str], seed: int,
                 device: torch.device) -> None:
        self.config, self.table, self.vocab = config, table, vocab
        self.encode = Encoder(vocab, config)
        self.set_data({s: [self.encode(t) for t in table.texts[s]] for s in SPLITS}, table.labels, labels)
        self.model = Classifier(len(vocab), len(labels), config).to(device)
        self.stream = self.shuffled_stream(config.batch_size, seed, device)

    def describe(self) -> tuple[dict, dict]:
        return {**self.config.model_settings(), "labels": self.labels, "majority": self.labels[self.majority]}, \
            self.vocab.to_json()


def train(config: ClassifyConfig, train_config: TrainConfig, out: str | Path, resume: bool = False,
          console: Console | None = None, progress: bool = True) -> dict:
    """Train a classifier into the run directory ``out``; returns the Trainer's summary plus ``test``."""
    from ..plots import confusion_matrix

    config.validate()
    console, saved = begin(train_config, out, resume, console)
    table = load_table(config.data, config.text_column, config.label_column, config.format)
    vocab, labels = None, sorted(set(table.labels["train"]))
    if saved is not None and saved.vocab is not None:
        vocab, labels = Vocab.from_json(saved.vocab), saved.config["labels"]
    if len(labels) < 2:
        raise ValueError(f"{table.source}: the training split has a single label ({labels[0]!r}); "
                         "a classifier needs at least two")
    check_labels(table, labels, ("dev", "test"))
    vocab = vocab or build_vocab(table.texts["train"], config)
    task = ClassifyTask(config, table, vocab, labels, train_config.seed, torch.device(train_config.device))
    sizes = ", ".join(f"{len(table.texts[s]):,} {s}" for s in SPLITS)
    summary = fit(task, train_config, out, resume, console, progress, lambda params: (
        f"classify: {'bi' if config.bidirectional else ''}{config.cell} {config.num_layers}x{config.hidden_size}, "
        f"{config.pooling} pooling, {params:,} parameters, vocabulary {len(vocab):,} ({config.level}), labels "
        f"{', '.join(labels)}; {sizes} examples from {table.source}"))
    # the test split scored by the best checkpoint (dev accuracy chose it)
    split = "test" if task.data["test"][0] else task.eval_split
    result, matrix = task.score(split)
    confusion_matrix(matrix.tolist(), labels, Path(out) / "plots" / f"confusion_{split}.png",
                     title=f"classify: {split} split, accuracy {result['accuracy']:.3f}")
    write_report(out, NAME, split, result)
    console.print(f"{split}: accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f} "
                  f"(majority class {result['majority_accuracy']:.4f}), n {result['n']}, {finished(summary, out)}",
                  highlight=False)
    return {**summary, "test": {"split": split, **result}}


# ---------------------------------------------------------------------- a trained model


@dataclass(eq=False, repr=False)
class TrainedClassifier(TrainedSequenceClassifier):
    """A trained classifier loaded from a checkpoint: ``predict`` and ``evaluate``."""

    task, config_class, what, needs, vocab_keys = NAME, ClassifyConfig, "a classifier", ("labels",), ()

    vocab: Vocab
    encode: Encoder = field(init=False)  # text -> token ids, as in training

    def __post_init__(self) -> None:
        super().__post_init__()
        self.encode = Encoder(self.vocab, self.config)

    @classmethod
    def read(cls, ckpt: checkpoint.Checkpoint, config: ClassifyConfig, path: Path) -> tuple[Classifier, dict]:
        vocab, labels = Vocab.from_json(ckpt.vocab), list(ckpt.config["labels"])
        return Classifier(len(vocab), len(labels), config), {
            "vocab": vocab, "labels": labels, "majority": ckpt.config.get("majority", labels[0])}

    def predict(self, texts: str | Sequence[str]) -> list[Prediction]:
        """The most likely label of each text with its probability (a single str counts as one text)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.predict_sequences([self.encode(t) for t in texts])

    def evaluate(self, data: str | None = None, split: str = "test", *, format: str | None = None,
                 text_column: str | None = None, label_column: str | None = None) -> dict:
        """Metrics on ``split`` of the training data, or of ``data``; a file without a split column that is
        not the training file is scored whole."""
        return self.score(data, split, format, text_column, label_column)[0]

    def score(self, data: str | None = None, split: str = "test", format: str | None = None,
              text_column: str | None = None, label_column: str | None = None) -> tuple[dict, Tensor]:
        """``evaluate``'s metrics and the (C, C) confusion matrix (row = true label, column = predicted)."""
        split = SPLIT_ALIASES.get(split, split)
        same = scores_training_split(data, split, self.config.data)
        path = self.config.data if data is None else data
        text_column = text_column or self.config.text_column
        label_column = label_column or self.config.label_column
        table = load_table(path, text_column, label_column, format or (self.config.format if same else None))
        whole = not same and not table.has_split
        if whole:
            texts = [t for s in SPLITS for t in table.texts[s]]
            gold = [y for s in SPLITS for y in table.labels[s]]
            name = str(data)
        else:
            texts, gold, name = table.texts[split], table.labels[split], split
        if not texts:
            raise ValueError(f"{table.source} has no {split} rows to score")
        check_labels(Table({name: texts}, {name: gold}, table.source), self.labels, [name])
        result, matrix = self.score_sequences([self.encode(t) for t in texts], gold)
        return {"task": NAME, "split": name, **result}, matrix


# ---------------------------------------------------------------------- the task's SPEC (rnnkit.tasks.registry)

@dataclass
class EvaluateArgs(SplitArgs):
    data: str | None = field(default=None, metadata={"help": "a CSV, TSV or JSONL file (default: the training "
                                                             "data); without a split column, a file other than the "
                                                             "training data is scored whole"})
    format: str | None = field(default=None, metadata={"help": "csv, tsv or jsonl (default: from the extension)"})
    text_column: str | None = field(default=None, metadata={"help": "default: the training run's"})
    label_column: str | None = field(default=None, metadata={"help": "default: the training run's"})


@dataclass
class PredictArgs:
    text: str | None = field(default=None, metadata={"help": "the text to classify", "nargs": "?"})
    file: str | None = field(default=None, metadata={"help": "a UTF-8 text file: one text per line (blank lines "
                                                             "are skipped)"})


def text_lines(text: str | None, file: str | None) -> list[str]:
    """The texts of a predict verb: ``text``, or the non-blank lines of ``file`` (exactly one of them given)."""
    if (text is None) == (file is None):
        raise ValueError("give either a text or --file FILE, not both or neither")
    if text is not None:
        return [text]
    lines = [line for line in read_text(file).split("\n") if line.strip()]
    if not lines:
        raise ValueError(f"{file} has no text lines")
    return lines


def run_predict(trained: TrainedClassifier, args: PredictArgs, as_json: bool) -> None:
    """``rnnkit classify predict``: label and probability, one line per text (the text after it for --file)."""
    lines = text_lines(args.text, args.file)
    for line, prediction in zip(lines, trained.predict(lines)):
        print(f"{prediction.label}\t{prediction.probability:.4f}" + (f"\t{line}" if args.file else ""))


def export_spec(model, trained: TrainedClassifier, what: str):
    """``rnnkit export``: (ids, lengths) -> logits."""
    from ..export import Flat, Port, Spec, random_ids, swap_layers

    call = lambda m, ids, lengths: (m(ids, lengths),)  # noqa: E731
    inputs = [Port("ids", ("time", "batch"), torch.int64), Port("lengths", ("batch",), torch.int64)]
    outputs = [Port("logits", ("batch", str(len(trained.labels))))]
    return Spec(Flat(swap_layers(model, lengths=True), call), Flat(model, call),
                random_ids(model.embedding.num_embeddings), inputs, outputs, what,
                notes=[f"labels in logit order: {', '.join(trained.labels)}",
                       "ids: the checkpoint's vocab.json; lengths: tokens per text"])


SPEC = TaskSpec(NAME, "text classification: train, evaluate, predict", ClassifyConfig, train,
                TrainedClassifier.load, train_help="train a text classifier (default: movie-review polarity)",
                train_defaults=CLASSIFY_TRAIN_DEFAULTS, export=export_spec,
                verbs={"evaluate": Verb("accuracy and macro-F1 beside the majority-class baseline", EvaluateArgs),
                       "predict": Verb("the label and its probability for a text, or for every line of a file",
                                       PredictArgs, run_predict, json=None)})
