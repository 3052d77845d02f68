"""Translation with attention: ``rnnkit translate train | evaluate | predict``.

Model: source word embedding -> ``rnnkit.Recurrent`` (any cell, bidirectional by default) over
the padded source sentences with their lengths, whose outputs (T, B, D*H) are the memory of an
attention decoder (``rnnkit.tasks.seq2seq.Decoder``: additive or multiplicative attention,
``--attention``; input feeding; any cell) that writes the target sentence word by word.
Training minimizes the cross-entropy per target word (``</s>`` included) under teacher forcing,
optionally with scheduled sampling (``--sampling-prob``, reached linearly over
``--sampling-ramp-steps``). Decoding is greedy or beam search with length normalization
(``seq2seq`` module notes). Each ``<unk>`` of a translation is replaced by the source word that its
attention weighs most (``--replace-unk``, on by default; Jean et al. 2015): names and numbers, most of
them rarer than ``min_count``, pass through.

Data: a pair file, one ``source<TAB>target`` per line (UTF-8; blank lines skipped; a line with
one field or more than two, or an empty side, is an error naming its line), or the bundled
aligned verses of the King James Version and the Reina-Valera 1909 Bibles (7,545 pairs, at most
20 tokens per side, English -> Spanish; ``--reverse`` translates the other way; SOURCES.md).
Words are ``rnnkit.data.WORD_PATTERN`` tokens (words and single punctuation characters), case
kept; the vocabularies are the training split's words seen at least ``min_count`` times (the others
read as ``<unk>``). The pairs of a file are split 80/10/10 into train, dev and test by a
fixed seeded permutation (``SPLIT_SEED``); dev BLEU (greedy) picks the best checkpoint, test is
scored once at the end, greedy and beam.

Metrics (sacrebleu, its defaults: BLEU with the 13a tokenizer, chrF with n = 6, beta = 2) on the
detokenized output against the untouched reference text, beside the copy baseline, which
outputs the source sentence unchanged.

Needs the ``tasks`` extra: ``pip install 'rnnkit[tasks]'`` (sacrebleu).
"""

from __future__ import annotations

import collections
import gzip
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor, nn

from ..data import WORD_PATTERN, read_text
from ..data.batching import BatchStream, split_indices
from ..data.text import delimited_lines
from ..extras import require
from ..recurrent import Recurrent
from ..train import checkpoint
from ..train.trainer import TrainConfig
from . import seq2seq
from .base import SPLITS, Trained, begin, finished, fit, scores_training_split, write_report
from .classify import text_lines
from .fields import BatchFields, TaskConfig, check_choice, check_ints, with_defaults
from .registry import SplitArgs, TaskSpec, Verb
from .seq2seq import ATTENTIONS, DECODERS, Decoder, EncoderDecoderFields, beam_search, greedy, sequence_log_probs

NAME = "translate"
BUNDLED_FILE = "bible_en_es.tsv.gz"  # in rnnkit/data; see SOURCES.md
BUNDLED_NAME = "bundled KJV-RV1909 verses"
SPLIT_SEED = 0  # the fixed 80/10/10 split of the pairs of a file
UNK, PAD, BOS, EOS = "<unk>", "<pad>", "<s>", "</s>"
SPECIALS = (UNK, PAD, BOS, EOS)  # ids 0-3 of both vocabularies
UNK_ID, PAD_ID, BOS_ID, EOS_ID = range(4)
NO_SPACE_AFTER = frozenset("([{¿¡'’-")  # detokenize: opening marks glue to the next word
NO_SPACE_BEFORE_OPENING = frozenset("([{¿¡")  # ... and are the punctuation that keeps a space before it
# a translation is cut at OUTPUT_LENGTH_FACTOR * (source tokens) + OUTPUT_LENGTH_SLACK tokens (and at max_length):
# no real pair is that unbalanced, and a model that never says </s> stops early
OUTPUT_LENGTH_FACTOR, OUTPUT_LENGTH_SLACK = 2, 5
DEFAULT_STEPS = 2100  # with neither --steps nor --max-minutes: the 2,100 steps of the README's BLEU run
# (docs/results.md, "translate"): 0.3-0.6 s a step at load 5-8 on one thread, so about 10 min on 2 quiet cores
TRANSLATE_TRAIN_DEFAULTS = {"steps": DEFAULT_STEPS, "lr": 3e-3, "eval_every": 200, "checkpoint_every": 200,
                            "warmup_steps": 100, "weight_decay": 0.01}


def _require():
    """sacrebleu, or an ImportError that says how to install it."""
    return require("sacrebleu", "the translate task")


@dataclass
@with_defaults(batch_size=32)
class TranslateConfig(TaskConfig, BatchFields, EncoderDecoderFields):
    """The encoder-decoder and its data; defaults tuned for the bundled verse pairs on 2 CPU cores."""

    unit, units = "sentence pair", "sentence pairs"

    data: str | None = field(default=None, metadata={"help": "a pair file: source<TAB>target per line (default: "
                                                             "the bundled English-Spanish Bible verses)"})
    reverse: bool = field(default=False, metadata={"help": "translate the second column into the first"})
    min_count: int = field(default=3, metadata={"help": "words seen fewer times in training read as <unk>"})
    max_length: int = field(default=50, metadata={"help": "tokens kept per side in training; the most a "
                                                          "translation writes"})
    bidirectional: bool = field(default=True, metadata={"help": "read the source in both directions"})
    embedding_size: int = field(default=128, metadata={"help": "word embedding width, source and target"})
    attention_size: int = field(default=128, metadata={"help": "A of additive attention (multiplicative: "
                                                               "unused)"})
    dropout: float = field(default=0.3, metadata={"help": "dropout on the embeddings, the encoder outputs and "
                                                          "the attentional state"})
    sampling_prob: float = field(default=0.0, metadata={"help": "scheduled sampling: the probability of feeding "
                                                                "the model's own sample instead of the reference "
                                                                "(0: teacher forcing only)"})
    sampling_ramp_steps: int = field(default=2000, metadata={"help": "steps over which the sampling "
                                                                     "probability rises linearly from 0"})
    replace_unk: bool = field(default=True, metadata={"help": "replace each <unk> of a translation with the "
                                                              "source word it attends to most"})
    length_penalty: float = field(default=0.6, metadata={"help": "alpha of beam search's length normalization "
                                                                 "(0: none)"})

    def validate(self) -> None:
        check_choice("attention", self.attention, ATTENTIONS)
        check_ints(self, ("min_count", "max_length", "hidden_size", "num_layers", "embedding_size", "attention_size",
                          "sampling_ramp_steps", "beam_size", "batch_size"))
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0 <= self.sampling_prob <= 1:
            raise ValueError(f"sampling_prob must be in [0, 1], got {self.sampling_prob!r}")
        if self.length_penalty < 0:
            raise ValueError(f"length_penalty must be >= 0, got {self.length_penalty!r}")


# ---------------------------------------------------------------------- data


class Pairs(NamedTuple):
    """Sentence pairs: sources[i] translates to targets[i]."""

    sources: list[str]
    targets: list[str]
    source: str  # for messages: the file, or the bundled data's name


def parse_pairs(text: str, source: str) -> Pairs:
    """The pairs of ``source<TAB>target`` lines; blank lines are skipped, a malformed line is an error naming it."""
    sources, targets = [], []
    for number, (left, right) in delimited_lines(text, source, separator="\t", columns=2,
                                                 expected="source<TAB>target (2 tab-separated columns)",
                                                 what="sentence pairs; expected source<TAB>target lines"):
        left, right = left.strip(), right.strip()
        if not left or not right:
            side = "source" if not left else "target"  # the line holds only the other side: show it
            raise ValueError(f"{source} line {number}: the {side} side is empty: {(left or right)[:60]!r}")
        sources.append(left)
        targets.append(right)
    return Pairs(sources, targets, source)


def load_pairs(path: str | None, reverse: bool = False) -> Pairs:
    """A pair file, or the bundled verses when ``path`` is None; ``reverse`` swaps the columns."""
    if path is None:
        packed = resources.files("rnnkit.data").joinpath(BUNDLED_FILE).read_bytes()
        pairs = parse_pairs(gzip.decompress(packed).decode("utf-8"), BUNDLED_NAME)
    else:
        pairs = parse_pairs(read_text(path), str(path))
    return Pairs(pairs.targets, pairs.sources, pairs.source) if reverse else pairs


def split_pairs(pairs: Pairs) -> dict[str, Pairs]:
    """train, dev and test: 80/10/10 by a fixed permutation seeded with ``SPLIT_SEED``."""
    return {s: Pairs([pairs.sources[i] for i in idx], [pairs.targets[i] for i in idx], pairs.source)
            for s, idx in split_indices(len(pairs.sources), SPLIT_SEED).items()}


def tokenize(text: str) -> list[str]:
    """Words and single punctuation characters (``rnnkit.data.WORD_PATTERN``), case kept."""
    return [t for t in WORD_PATTERN.findall(text) if t != "\n"]


def detokenize(tokens: Sequence[str]) -> str:
    """Tokens joined by spaces, except none before punctuation (other than opening marks) and none after an
    opening mark (``( [ { ¿ ¡``), an apostrophe or a hyphen: ``['¿', 'Qué', '?']`` -> ``¿Qué?``."""
    out: list[str] = []
    for t in tokens:
        glue = not out or out[-1][-1] in NO_SPACE_AFTER or (
            t not in SPECIALS and not (t[0].isalnum() or t[0] == "_") and t not in NO_SPACE_BEFORE_OPENING)
        out.append(t if glue else " " + t)
    return "".join(out)


class Vocabulary:
    """One side's words: ``<unk> <pad> <s> </s>`` (ids 0-3), then the training words by frequency."""

    def __init__(self, words: list[str]) -> None:
        if list(words[: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError(f"a vocabulary starts with {', '.join(SPECIALS)}, got {words[:4]}")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, texts: Sequence[str], min_count: int) -> Vocabulary:
        counts = collections.Counter(t for text in texts for t in tokenize(text))
        kept = sorted((w for w, c in counts.items() if c >= min_count and w not in SPECIALS),
                      key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *kept])

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """Token ids (unknown words -> ``<unk>``), at most ``max_length``, at least one (``<unk>`` for no words)."""
        ids = [self.index.get(t, UNK_ID) for t in tokenize(text)][:max_length]
        return ids or [UNK_ID]


class Example(NamedTuple):
    source: list[int]
    target: list[int]  # without </s>


class Batch(NamedTuple):
    source: Tensor  # (T, B) source ids, <pad> past each length
    lengths: Tensor  # (B,)
    target: Tensor  # (U, B) target ids, </s> after the last word, <pad> after that


def collate(examples: Sequence[Example], device: torch.device) -> Batch:
    lengths = torch.tensor([len(e.source) for e in examples])
    T, U, B = int(lengths.max()), max(len(e.target) for e in examples) + 1, len(examples)
    source = torch.full((T, B), PAD_ID, dtype=torch.long)
    target = torch.full((U, B), PAD_ID, dtype=torch.long)
    for j, e in enumerate(examples):
        source[: len(e.source), j] = torch.tensor(e.source)
        target[: len(e.target) + 1, j] = torch.tensor([*e.target, EOS_ID])
    return Batch(source.to(device), lengths.to(device), target.to(device))


# ---------------------------------------------------------------------- the model


class Translator(nn.Module):
    """Source embedding -> Recurrent encoder (with lengths) -> memory -> attention ``Decoder``.

    forward(batch, sampling_prob) -> logits (U, B, V) predicting batch.target
    encode(source (T, B), lengths (B,)) -> memory (T, B, D*H)
    """

    def __init__(self, source_size: int, target_size: int, config: TranslateConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(source_size, config.embedding_size, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = Recurrent(config.cell, config.embedding_size, config.hidden_size, config.num_layers,
                                 dropout=config.dropout if config.num_layers > 1 else 0.0,
                                 bidirectional=config.bidirectional)
        memory_size = config.hidden_size * self.encoder.num_directions
        self.decoder = Decoder(target_size, memory_size, config.hidden_size, config.embedding_size, BOS_ID, EOS_ID,
                               cell=config.cell, num_layers=config.num_layers, attention=config.attention,
                               attention_size=config.attention_size, dropout=config.dropout)

    def encode(self, source: Tensor, lengths: Tensor) -> Tensor:
        memory, _ = self.encoder(self.dropout(self.embed(source)), lengths=lengths)  # (T, B, D*H)
        return self.dropout(memory)

    def forward(self, batch: Batch, sampling_prob: float = 0.0) -> Tensor:
        logits, _ = self.decoder(self.encode(batch.source, batch.lengths), batch.lengths, batch.target,
                                 sampling_prob)
        return logits  # (U, B, V)

    def loss(self, batch: Batch, sampling_prob: float = 0.0) -> Tensor:
        """Mean cross-entropy per target token (``</s>`` included, padding not)."""
        logits = self(batch, sampling_prob)
        return F.cross_entropy(logits.float().flatten(0, 1), batch.target.flatten(), ignore_index=PAD_ID)


class Translation(NamedTuple):
    tokens: list[int]  # output ids, without </s>
    focus: list[int]  # for each output token, the source position its attention weighs most


@torch.no_grad()
def translate_ids(model: Translator, sources: Sequence[list[int]], decoder: str, beam_size: int,
                  length_penalty: float, max_length: int, batch_size: int = 128) -> list[Translation]:
    """The translation of each source, in order; batched by source length for speed, each batch cut at
    ``OUTPUT_LENGTH_FACTOR`` times its longest source plus ``OUTPUT_LENGTH_SLACK`` tokens. The attention
    along the chosen output is recomputed by teacher forcing it (one more decoder pass)."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be greedy or beam, got {decoder!r}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    outputs: list[Translation] = [Translation([], []) for _ in sources]
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        batch = collate([Example(sources[i], []) for i in chosen], device)
        memory = model.encode(batch.source, batch.lengths)
        limit = min(max_length, OUTPUT_LENGTH_FACTOR * int(batch.lengths.max()) + OUTPUT_LENGTH_SLACK)
        if decoder == "greedy":
            found = greedy(model.decoder, memory, batch.lengths, limit)
        else:
            found = beam_search(model.decoder, memory, batch.lengths, beam_size, limit, length_penalty)
        _, weights = sequence_log_probs(model.decoder, memory, batch.lengths, found.tokens, PAD_ID)  # (U, T, B)
        focus = weights.argmax(1).T.tolist()  # (B, U)
        for j, (i, tokens) in enumerate(zip(chosen, found.tokens)):
            outputs[i] = Translation(tokens, focus[j][: len(tokens)])
    model.train(was_training)
    return outputs


def render(translation: Translation, source_text: str, target_vocab: Vocabulary, config: TranslateConfig) -> str:
    """A translation as text; with ``config.replace_unk``, each ``<unk>`` becomes the source word that its
    attention weighs most (Jean et al. 2015, "On Using Very Large Target Vocabulary for Neural Machine
    Translation", sec. 3.3; Luong et al. 2015, "Addressing the Rare Word Problem in NMT"): names, numbers
    and other rare words pass through unchanged."""
    words = [target_vocab.words[i] for i in translation.tokens]
    source_words = tokenize(source_text)[: config.max_length]
    if config.replace_unk and source_words:
        words = [source_words[min(f, len(source_words) - 1)] if w == UNK else w
                 for w, f in zip(words, translation.focus)]
    return detokenize(words)


def translate_texts(model: Translator, source_vocab: Vocabulary, target_vocab: Vocabulary, texts: Sequence[str],
                    config: TranslateConfig, decoder: str) -> list[str]:
    """The translations of ``texts`` with ``decoder`` (greedy or beam)."""
    found = translate_ids(model, [source_vocab.encode(t, config.max_length) for t in texts], decoder,
                          config.beam_size, config.length_penalty, config.max_length)
    return [render(f, t, target_vocab, config) for f, t in zip(found, texts)]


def corpus_scores(hypotheses: Sequence[str], pairs: Pairs) -> dict:
    """n, BLEU and chrF of ``hypotheses`` against ``pairs.targets``, beside the copy baseline's."""
    sacrebleu = _require()
    refs = [list(pairs.targets)]
    return {"n": len(pairs.targets), "bleu": float(sacrebleu.corpus_bleu(list(hypotheses), refs).score),
            "chrf": float(sacrebleu.corpus_chrf(list(hypotheses), refs).score),
            "copy_bleu": float(sacrebleu.corpus_bleu(list(pairs.sources), refs).score),
            "copy_chrf": float(sacrebleu.corpus_chrf(list(pairs.sources), refs).score)}


def score_pairs(model: Translator, source_vocab: Vocabulary, target_vocab: Vocabulary, pairs: Pairs,
                config: TranslateConfig, decoder: str) -> dict:
    """corpus_scores of the model's translations of ``pairs.sources`` with ``decoder``, plus ``decoder``."""
    hypotheses = translate_texts(model, source_vocab, target_vocab, pairs.sources, config, decoder)
    return {**corpus_scores(hypotheses, pairs), "decoder": decoder}


# ---------------------------------------------------------------------- plots


def plot_attention(weights: Sequence[Sequence[float]], source_tokens: Sequence[str], output_tokens: Sequence[str],
                   path: str | Path, title: str = "attention") -> Path:
    """A heat map of attention weights, (U, T): one row per output token, one column per source token."""
    from ..plots import plt, save  # matplotlib with the file-only backend

    U, T = len(output_tokens), len(source_tokens)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * T + 2), max(3.0, 0.4 * U + 1.5)))
    image = ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.04)
    ax.set_xticks(range(T), source_tokens, rotation=60, ha="right")
    ax.set_yticks(range(U), output_tokens)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    ax.set_title(title)
    return save(fig, path)


# ---------------------------------------------------------------------- training


class TranslateTask:
    """The Trainer's view of the translator (``rnnkit.train.trainer.TrainingTask``)."""

    name = NAME
    metric = "bleu"
    higher_is_better = True

    def __init__(self, config: TranslateConfig, splits: dict[str, Pairs], source_vocab: Vocabulary,
                 target_vocab: Vocabulary, seed: int, device: torch.device) -> None:
        self.config, self.splits = config, splits
        self.source_vocab, self.target_vocab = source_vocab, target_vocab
        train = splits["train"]
        examples = [Example(source_vocab.encode(s, config.max_length), target_vocab.encode(t, config.max_length))
                    for s, t in zip(train.sources, train.targets)]
        self.model = Translator(len(source_vocab), len(target_vocab), config).to(device)
        self.stream = BatchStream(examples, config.batch_size, seed, partial(collate, device=device))
        self.eval_split = "dev" if splits["dev"].sources else "train"

    def sampling_prob(self) -> float:
        """Scheduled sampling's probability at this step: linear from 0 to ``sampling_prob`` over the ramp."""
        ramp = min(1.0, self.stream.steps_done() / self.config.sampling_ramp_steps)
        return self.config.sampling_prob * ramp

    def loss(self, batch: Batch, carry):
        tokens = int((batch.target != PAD_ID).sum())
        return self.model.loss(batch, self.sampling_prob()), None, tokens

    def score(self, split: str, decoder: str) -> dict:
        return score_pairs(self.model, self.source_vocab, self.target_vocab, self.splits[split], self.config,
                           decoder)

    def evaluate(self) -> dict:
        result = self.score(self.eval_split, "greedy")
        return {k: v for k, v in result.items() if k != "decoder"}

    def describe(self) -> tuple[dict, dict]:
        return self.config.model_settings(), {"source": self.source_vocab.words, "target": self.target_vocab.words}


def train(config: TranslateConfig, train_config: TrainConfig, out: str | Path, resume: bool = False,
          console: Console | None = None, progress: bool = True) -> dict:
    """Train a translator into the run directory ``out``; returns the Trainer's summary plus ``test`` (the best
    checkpoint, chosen by dev BLEU, scored on the test split with greedy and with beam search) and writes
    ``plots/attention.png`` for the first test sentence."""
    config.validate()
    _require()
    console, saved = begin(train_config, out, resume, console)
    splits = split_pairs(load_pairs(config.data, config.reverse))
    if not splits["train"].sources:
        raise ValueError(f"{splits['train'].source}: too few sentence pairs for a training split")
    source_vocab = Vocabulary.build(splits["train"].sources, config.min_count)
    target_vocab = Vocabulary.build(splits["train"].targets, config.min_count)
    if saved is not None and saved.vocab is not None:
        source_vocab, target_vocab = Vocabulary(saved.vocab["source"]), Vocabulary(saved.vocab["target"])
    task = TranslateTask(config, splits, source_vocab, target_vocab, train_config.seed,
                         torch.device(train_config.device))
    sizes = ", ".join(f"{len(splits[s].sources):,} {s}" for s in SPLITS)
    summary = fit(task, train_config, out, resume, console, progress, lambda params: (
        f"translate: {'bi' if config.bidirectional else ''}{config.cell} {config.num_layers}x{config.hidden_size} "
        f"encoder, {config.attention} attention decoder, {params:,} parameters, vocabularies {len(source_vocab):,} "
        f"source / {len(target_vocab):,} target words; {sizes} pairs from {splits['train'].source}"))
    split = "test" if splits["test"].sources else task.eval_split
    results = {d: task.score(split, d) for d in DECODERS}
    write_report(out, NAME, split, *results.values())
    results = {d: {"task": NAME, "split": split, **r} for d, r in results.items()}
    trained = TrainedTranslator(task.model, config, Path(out), source_vocab, target_vocab)
    trained.plot_attention(splits[split].sources[0], Path(out) / "plots" / "attention.png")
    trained.model.train()
    for d, r in results.items():
        console.print(f"{split} ({d}): BLEU {r['bleu']:.2f}, chrF {r['chrf']:.2f} (copy the source: BLEU "
                      f"{r['copy_bleu']:.2f}, chrF {r['copy_chrf']:.2f}), n {r['n']}", highlight=False)
    console.print(finished(summary, out), highlight=False)
    return {**summary, "test": results}


# ---------------------------------------------------------------------- a trained model


class Alignment(NamedTuple):
    """A translation with the attention that produced it."""

    source_tokens: list[str]  # the source's words as written (the model reads those outside its vocabulary as <unk>)
    output_tokens: list[str]  # the translation's tokens (<unk> replaced as in ``render``), </s> last
    weights: list[list[float]]  # (U, T): weights[u][t], each row sums to 1


@dataclass(eq=False, repr=False)
class TrainedTranslator(Trained):
    """A trained translator loaded from a checkpoint: ``predict``, ``align``, ``plot_attention``, ``evaluate``."""

    task, config_class, what, vocab_keys = NAME, TranslateConfig, "a translator", ("source", "target")

    source_vocab: Vocabulary
    target_vocab: Vocabulary

    @classmethod
    def read(cls, ckpt: checkpoint.Checkpoint, config: TranslateConfig, path: Path) -> tuple[Translator, dict]:
        source_vocab, target_vocab = Vocabulary(ckpt.vocab["source"]), Vocabulary(ckpt.vocab["target"])
        return Translator(len(source_vocab), len(target_vocab), config), {"source_vocab": source_vocab,
                                                                          "target_vocab": target_vocab}

    def _decoder(self, decoder: str | None) -> str:
        decoder = decoder or "beam"
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be greedy or beam, got {decoder!r}")
        return decoder

    def _search_config(self, beam_size: int | None, length_penalty: float | None) -> TranslateConfig:
        """The training run's config with the search settings given here (None: the run's)."""
        config = replace(self.config, **{k: v for k, v in (("beam_size", beam_size),
                                                           ("length_penalty", length_penalty)) if v is not None})
        config.validate()
        return config

    def predict(self, texts: str | Sequence[str], *, decoder: str | None = None, beam_size: int | None = None,
                length_penalty: float | None = None) -> list[str]:
        """The translation of each text (a single str counts as one text); ``decoder``: beam (default) or greedy;
        ``beam_size`` and ``length_penalty`` default to the training run's."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return translate_texts(self.model, self.source_vocab, self.target_vocab, texts,
                               self._search_config(beam_size, length_penalty), self._decoder(decoder))

    def align(self, text: str, decoder: str | None = None, beam_size: int | None = None,
              length_penalty: float | None = None) -> Alignment:
        """The translation of ``text`` and its attention weights, recomputed along the chosen output."""
        config = self._search_config(beam_size, length_penalty)
        ids = self.source_vocab.encode(text, config.max_length)
        output = translate_ids(self.model, [ids], self._decoder(decoder), config.beam_size, config.length_penalty,
                               config.max_length)[0].tokens
        device = next(self.model.parameters()).device
        with torch.no_grad():
            batch = collate([Example(ids, [])], device)
            memory = self.model.encode(batch.source, batch.lengths)
            _, weights = sequence_log_probs(self.model.decoder, memory, batch.lengths, [output], PAD_ID)
        source_words = tokenize(text)[: config.max_length] or [UNK]  # an empty text reads as one <unk>
        focus = weights[:, :, 0].argmax(1).tolist()  # (U,)
        words = [self.target_vocab.words[i] for i in output]
        if config.replace_unk:
            words = [source_words[f] if w == UNK else w for w, f in zip(words, focus)]
        return Alignment(source_words, [*words, EOS], weights[:, :, 0].tolist())  # weights (U, T)

    def plot_attention(self, text: str, path: str | Path, decoder: str | None = None, beam_size: int | None = None,
                       length_penalty: float | None = None) -> Path:
        """Write the attention heat map of ``text``'s translation as a PNG; returns its path."""
        alignment = self.align(text, decoder, beam_size, length_penalty)
        return plot_attention(alignment.weights, alignment.source_tokens, alignment.output_tokens, path,
                              title=f"{self.config.attention} attention")

    def evaluate(self, data: str | None = None, split: str = "test", *, decoder: str | None = None,
                 beam_size: int | None = None, length_penalty: float | None = None) -> dict:
        """task, split, n (pairs), bleu, chrf, copy_bleu, copy_chrf and decoder on ``split`` of the training data,
        or on ``data``; a file other than the training data is scored whole, read as source<TAB>target in the
        model's direction (``reverse`` applies to the training data only)."""
        _require()
        same = scores_training_split(data, split, self.config.data)
        if same:
            pairs, name = split_pairs(load_pairs(self.config.data, self.config.reverse))[split], split
        else:
            pairs, name = load_pairs(data), str(data)
        if not pairs.sources:
            raise ValueError(f"{pairs.source} has no {split} pairs to score")
        config = self._search_config(beam_size, length_penalty)
        return {"task": NAME, "split": name, **score_pairs(self.model, self.source_vocab, self.target_vocab, pairs,
                                                           config, self._decoder(decoder))}


# ---------------------------------------------------------------------- the task's SPEC (rnnkit.tasks.registry)

@dataclass
class SearchArgs(seq2seq.SearchArgs):
    """The decoder's search flags, and the length penalty of translate's beam search."""

    length_penalty: float | None = field(default=None, metadata={"help": "alpha of the length normalization "
                                                                         "(default: the training run's)"})


@dataclass
class EvaluateArgs(SearchArgs, SplitArgs):
    data: str | None = field(default=None, metadata={"help": "a pair file, source<TAB>target per line (default: the "
                                                             "training data); a file other than the training data "
                                                             "is scored whole"})


@dataclass
class PredictArgs(SearchArgs):
    text: str | None = field(default=None, metadata={"help": "the text to translate", "nargs": "?"})
    file: str | None = field(default=None, metadata={"help": "a UTF-8 text file: one text per line (blank lines "
                                                             "are skipped)"})
    attention_plot: str | None = field(default=None, metadata={"help": "write the attention heat map of the text "
                                                                       "(with --file: of its first line) to this PNG",
                                                               "metavar": "PNG"})


def run_predict(trained: TrainedTranslator, args: PredictArgs, as_json: bool) -> None:
    """``rnnkit translate predict``: one translation a line; the attention heat map with --attention-plot."""
    lines = text_lines(args.text, args.file)
    for translation in trained.predict(lines, decoder=args.decoder, beam_size=args.beam_size,
                                         length_penalty=args.length_penalty):
        print(translation)
    if args.attention_plot:
        path = trained.plot_attention(lines[0], args.attention_plot, args.decoder, args.beam_size,
                                      args.length_penalty)
        print(f"attention heat map: {path}", file=sys.stderr)


SPEC = TaskSpec(NAME, "translation with an attention decoder: train, evaluate, predict", TranslateConfig, train,
                TrainedTranslator.load, train_help="train a translator (default: the bundled English-Spanish Bible "
                "verses)", train_defaults=TRANSLATE_TRAIN_DEFAULTS,
                export="its decoder runs a data-dependent loop of attention steps (greedy or beam search) in Python",
                verbs={"evaluate": Verb("BLEU and chrF (sacrebleu) beside the copy-the-source baseline",
                                        EvaluateArgs),
                       "predict": Verb("the translation of a text, or of every line of a file", PredictArgs,
                                       run_predict, json=None)})
