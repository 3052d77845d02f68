"""The language model: ``rnnkit lm train | generate | evaluate``, character level or word level.

Model: token embedding (E) -> ``rnnkit.Recurrent`` (any cell, stacked, with the regularizers
of ``rnnkit.regularize``) -> linear head over the vocabulary. Trained with truncated BPTT:
the training split is cut into ``batch_size`` contiguous streams read ``bptt`` tokens at a
time, the state carried from one window to the next (the Trainer detaches it). Each pass
over the data starts the windows at a fresh random offset below ``bptt`` and resets the
state, as the streams start over.

Data: ``--data FILE`` (UTF-8 text) or the bundled Shakespeare (``rnnkit.data``). The split is
contiguous: the first 90% trains, the last 10% validates. Metrics: nats and bits per
character (word level: nats per token and perplexity) beside a unigram model fit on the
training split, with add-one smoothing.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor, nn

from ..cells import State
from ..data import Vocab, bundled_text, read_text
from ..generate import check_sampling, sample
from ..recurrent import Recurrent
from ..train import checkpoint
from ..train.distributed import split_batch
from ..train.trainer import TrainConfig
from .base import Trained, begin, finished, fit
from .fields import LayerFields, RegularizerFields, TaskConfig, TokenFields, check_ints, with_defaults
from .registry import TaskSpec, Verb

NAME = "lm"
DEFAULT_STEPS = 3500  # with neither --steps nor --max-minutes: the 3,531 steps a quiet 2-core run planned for
# today's 5 minutes (79 ms/step, evaluations 2.7 s: docs/results.md, "Character language model")
# the lm task's own training defaults, where TrainConfig's general ones are not the best
# (AdamW's peak rate from a sweep in docs/results.md: 6e-3 beat 3e-3 and 1e-2 at this batch)
LM_TRAIN_DEFAULTS = {"steps": DEFAULT_STEPS, "lr": 6e-3, "eval_every": 1000}


@dataclass
@with_defaults(hidden_size=512)
class LMConfig(TaskConfig, TokenFields, RegularizerFields, LayerFields):
    """The language model and its data; defaults tuned for 5 minutes on 2 CPU cores (docs/results.md)."""

    data: str | None = field(default=None, metadata={"help": "UTF-8 text to train on (default: bundled Shakespeare)"})
    proj_size: int = field(default=0, metadata={"help": "LSTM family: project h to this size (0: none)"})
    # 16 x 64 tokens per step: in a 5-minute budget more, smaller steps beat fewer large ones
    # (docs/results.md: 1.70 vs 2.03 nats/char after 2 minutes for 64 x 128)
    batch_size: int = field(default=16, metadata={"help": "parallel streams of text"})
    bptt: int = field(default=64, metadata={"help": "tokens per truncated-BPTT window"})
    val_fraction: float = field(default=0.1, metadata={"help": "the last part of the text held out"})

    def validate(self) -> None:
        self.check_level()
        check_ints(self, ("max_vocab", "hidden_size", "num_layers", "embedding_size", "batch_size", "bptt"))
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")


class LanguageModel(nn.Module):
    """Embedding -> Recurrent -> Linear: next-token logits for every position.

    forward(ids (T, B), state) -> logits (T, B, V), state
    """

    def __init__(self, vocab_size: int, config: LMConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, config.embedding_size)
        self.rnn = Recurrent(
            config.cell, config.embedding_size, config.hidden_size, config.num_layers, dropout=config.dropout,
            proj_size=config.proj_size,
            **config.regularizers(),
        )
        self.head = nn.Linear(config.proj_size or config.hidden_size, vocab_size)

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        out, state = self.rnn(self.embedding(ids), state)  # (T, B, H)
        return self.head(out), state  # (T, B, V)

    @torch.no_grad()
    def step(self, token: Tensor, state: State | None) -> tuple[Tensor, State]:
        """One token per sequence (B,) -> next-token logits (B, V) and the new state, via ``rnn.step``."""
        y, state = self.rnn.step(self.embedding(token), state)  # (B, H)
        return self.head(y), state


# ---------------------------------------------------------------------- data


class Corpus(NamedTuple):
    vocab: Vocab
    train: Tensor  # (N_train,) token ids
    val: Tensor  # (N_val,)


def load_text(path: str | None) -> str:
    return bundled_text("shakespeare") if path is None else read_text(path)


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """Contiguous split: the first 1 - val_fraction trains, the rest validates."""
    cut = int(len(text) * (1 - val_fraction))
    return text[:cut], text[cut:]


def build_corpus(config: LMConfig, vocab: Vocab | None = None) -> Corpus:
    """The text of ``config.data`` (or the bundled corpus) as token ids, split."""
    text = load_text(config.data)
    train_text, val_text = split_text(text, config.val_fraction)
    if vocab is None:
        # char level: every character of the file (a character seen only in the held-out part still
        # needs an id); word level: the training part's words, the rest <unk>
        vocab = Vocab.build(text if config.level == "char" else train_text, level=config.level,
                            max_size=config.max_vocab if config.level == "word" else None)
    corpus = Corpus(vocab, vocab.encode_tensor(train_text), vocab.encode_tensor(val_text))
    needed = config.batch_size * (config.bptt + 1)
    if len(corpus.train) < needed:
        raise ValueError(f"the training part of the text has {len(corpus.train)} tokens, fewer than batch_size x "
                         f"(bptt + 1) = {needed}: use a longer text or smaller --batch-size / --bptt")
    if len(corpus.val) < 2:
        raise ValueError(f"the validation part of the text has {len(corpus.val)} tokens; it needs at least 2")
    return corpus


class LMBatch(NamedTuple):
    x: Tensor  # (T, B) input ids
    y: Tensor  # (T, B) next-token targets
    reset: bool  # the streams start over here: drop the carried state


class TextStream:
    """The training ids as ``batch_size`` contiguous streams, read ``bptt`` tokens at a time.

    Pass e (0, 1, ...) starts at offset 0 for e = 0 and at a random offset in [0, bptt) after,
    drawn from a generator seeded by (seed, e), so the position (pass, index) is its whole state.
    """

    def __init__(self, ids: Tensor, batch_size: int, bptt: int, seed: int, device: torch.device) -> None:
        n = len(ids) // batch_size
        self.data = ids[: n * batch_size].view(batch_size, n).t().contiguous().to(device)  # (n, B)
        self.bptt = bptt
        self.seed = seed
        self.epoch = 0
        self.pos = 0

    def _offset(self, epoch: int) -> int:
        if epoch == 0:
            return 0
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return int(torch.randint(self.bptt, (1,), generator=generator))

    def next(self) -> LMBatch:
        n = self.data.shape[0]
        if self.pos + self.bptt + 1 > n:
            self.epoch += 1
            self.pos = self._offset(self.epoch)
        reset = self.pos == self._offset(self.epoch)
        x = self.data[self.pos : self.pos + self.bptt]
        y = self.data[self.pos + 1 : self.pos + self.bptt + 1]
        self.pos += self.bptt
        return LMBatch(x, y, reset)

    def state(self) -> tuple[dict, dict[str, Tensor]]:
        return {"epoch": self.epoch, "pos": self.pos}, {}

    def load_state(self, meta: dict, tensors: dict[str, Tensor]) -> None:
        self.epoch, self.pos = int(meta["epoch"]), int(meta["pos"])


# ---------------------------------------------------------------------- metrics


@torch.no_grad()
def mean_nats(model: LanguageModel, ids: Tensor, streams: int = 16, window: int = 256) -> float:
    """Mean cross-entropy (nats per token) of predicting ids[1:] from what precedes them.

    The ids are cut into ``streams`` contiguous parts read in parallel with the state carried
    across windows; each part starts from a zero state (the first tokens of a part see no
    context: with parts of thousands of tokens this costs a negligible 0.0x nats).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    streams = max(1, min(streams, len(ids) - 1))
    n = (len(ids) - 1) // streams
    x_all = ids[: streams * n].view(streams, n).t().to(device)  # (n, S)
    y_all = ids[1 : streams * n + 1].view(streams, n).t().to(device)
    total, state = 0.0, None
    for start in range(0, n, window):
        logits, state = model(x_all[start : start + window], state)
        total += float(F.cross_entropy(logits.float().flatten(0, 1), y_all[start : start + window].flatten(),
                                       reduction="sum"))
    model.train(was_training)
    return total / (streams * n)


def unigram_nats(train: Tensor, ids: Tensor, vocab_size: int) -> float:
    """Cross-entropy of the add-one-smoothed unigram distribution of ``train`` on ids[1:]."""
    counts = torch.bincount(train, minlength=vocab_size).double() + 1
    log_p = (counts / counts.sum()).log()
    return float(-log_p[ids[1:]].mean())


def metrics(nats: float, unigram: float, level: str, n: int) -> dict:
    """evaluate --json's keys (design section 6), the model's beside the unigram baseline's."""
    if level == "char":
        return {"nats_per_char": nats, "bits_per_char": nats / math.log(2), "unigram_nats_per_char": unigram,
                "n": n}
    return {"nats_per_token": nats, "perplexity": math.exp(nats), "unigram_perplexity": math.exp(unigram), "n": n}


# ---------------------------------------------------------------------- training


class LMTask:
    """The Trainer's view of the language model (``rnnkit.train.trainer.TrainingTask``)."""

    name = NAME
    higher_is_better = False

    def __init__(self, config: LMConfig, corpus: Corpus, seed: int, device: torch.device) -> None:
        self.config = config
        self.corpus = corpus
        self.model = LanguageModel(len(corpus.vocab), config).to(device)
        self.stream = TextStream(corpus.train, config.batch_size, config.bptt, seed, device)
        self.metric = "nats_per_char" if config.level == "char" else "nats_per_token"
        self.unigram = unigram_nats(corpus.train, corpus.val, len(corpus.vocab))

    def shard(self, batch: LMBatch, rank: int, world_size: int) -> LMBatch:
        """This rank's columns of a batch under torchrun: each rank carries its own streams' state."""
        return LMBatch(split_batch(batch.x, rank, world_size, dim=1), split_batch(batch.y, rank, world_size, dim=1),
                       batch.reset)

    def loss(self, batch: LMBatch, carry):
        if batch.reset:
            carry = None
        logits, state = self.model(batch.x, carry)  # (T, B, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch.y.flatten())
        return loss, state, batch.y.numel()

    def evaluate(self) -> dict:
        nats = mean_nats(self.model, self.corpus.val)
        return metrics(nats, self.unigram, self.config.level, len(self.corpus.val) - 1)

    def describe(self) -> tuple[dict, dict]:
        return self.config.model_settings(), self.corpus.vocab.to_json()


def train(config: LMConfig, train_config: TrainConfig, out: str | Path, resume: bool = False,
          console: Console | None = None, progress: bool = True) -> dict:
    """Train a language model into the run directory ``out``; returns the Trainer's summary."""
    config.validate()
    console, saved = begin(train_config, out, resume, console)
    vocab = Vocab.from_json(saved.vocab) if saved is not None and saved.vocab is not None else None
    corpus = build_corpus(config, vocab)
    task = LMTask(config, corpus, train_config.seed, torch.device(train_config.device))
    # no test split: the validation numbers of the last evaluation are the report, and the model stays the last
    summary = fit(task, train_config, out, resume, console, progress, lambda params: (
        f"lm: {config.cell} {config.num_layers}x{config.hidden_size}, {params:,} parameters, vocabulary "
        f"{len(corpus.vocab)} ({config.level}), {len(corpus.train):,} training and {len(corpus.val):,} validation "
        f"tokens, data: {config.data or 'bundled Shakespeare'}"), reload_best=False)
    result = summary["eval"]
    unit = "char" if config.level == "char" else "token"
    console.print(f"validation: {result[task.metric]:.4f} nats/{unit} "
                  f"(unigram baseline {task.unigram:.4f}) {finished(summary, out)}", highlight=False)
    return summary


# ---------------------------------------------------------------------- a trained model


@dataclass(eq=False, repr=False)
class TrainedLM(Trained):
    """A trained language model loaded from a checkpoint: ``generate`` and ``evaluate``."""

    task, config_class, what, vocab_keys = NAME, LMConfig, "a language model", ()

    vocab: Vocab

    @classmethod
    def read(cls, ckpt: checkpoint.Checkpoint, config: LMConfig, path: Path) -> tuple[LanguageModel, dict]:
        vocab = Vocab.from_json(ckpt.vocab)
        return LanguageModel(len(vocab), config), {"vocab": vocab}

    def evaluate(self, data: str | None = None) -> dict:
        """Metrics on ``data`` (a text file), or on the validation split of the training text."""
        device = next(self.model.parameters()).device
        train_text, val_text = split_text(load_text(self.config.data), self.config.val_fraction)
        train_ids = self.vocab.encode_tensor(train_text)
        if data is None:
            text, split = val_text, "validation"
        else:
            text, split = read_text(data), str(data)
        try:
            ids = self.vocab.encode_tensor(text)
        except ValueError as error:
            raise ValueError(f"{split}: {error}") from None
        if len(ids) < 2:
            raise ValueError(f"{split} has {len(ids)} tokens; scoring needs at least 2")
        nats = mean_nats(self.model, ids.to(device))
        unigram = unigram_nats(train_ids, ids, len(self.vocab))
        return {"task": NAME, "split": split, **metrics(nats, unigram, self.config.level, len(ids) - 1)}

    def generate(self, prompt: str = "", length: int = 500, temperature: float = 0.8, top_k: int = 0,
                 top_p: float = 1.0, seed: int = 0) -> Iterator[str]:
        """Yield the generated text piece by piece (a character, or a word with its spacing)."""
        check_sampling(temperature, top_k, top_p)
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ValueError(f"length must be an int >= 0, got {length!r}")
        try:
            ids = self.vocab.encode(prompt) if prompt else []
        except ValueError as error:
            raise ValueError(f"the prompt cannot be encoded: {error}") from None
        if not ids:  # no prompt: start as after a line break (or the first token)
            ids = [self.vocab.tokens.index("\n")] if "\n" in self.vocab.tokens else [0]
        device = next(self.model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad():
            logits, state = self.model(torch.tensor(ids, device=device)[:, None])  # (T, 1, V)
            logits = logits[-1]  # (1, V)
            produced: list[int] = []
            for _ in range(length):
                token = sample(logits, temperature, top_k, top_p, generator)  # (1,)
                produced.append(int(token))
                if self.vocab.level == "char":
                    yield self.vocab.tokens[produced[-1]]
                else:
                    before = self.vocab.decode(produced[:-1])
                    yield self.vocab.decode(produced)[len(before):]
                logits, state = self.model.step(token, state)


# ---------------------------------------------------------------------- the task's SPEC (rnnkit.tasks.registry)

@dataclass
class EvaluateArgs:
    data: str | None = field(default=None, metadata={"help": "a UTF-8 text file (default: the validation split of "
                                                             "the training text)"})


@dataclass
class GenerateArgs:
    prompt: str = field(default="", metadata={"help": "text to continue"})
    length: int = field(default=500, metadata={"help": "tokens to generate"})
    temperature: float = field(default=0.8, metadata={"help": "0: always the most likely token"})
    top_k: int = field(default=0, metadata={"help": "sample among the k most likely (0: all)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass (1: all)"})
    seed: int = field(default=0, metadata={"help": "seed of the sampling"})


def run_generate(trained: TrainedLM, args: GenerateArgs, as_json: bool) -> None:
    """``rnnkit lm generate``: the prompt, then each piece as it is sampled."""
    sys.stdout.write(args.prompt)
    for piece in trained.generate(**asdict(args)):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


def export_spec(model, trained: TrainedLM, what: str):
    """``rnnkit export``: (ids, h0[, c0]) -> (logits, h_n[, c_n]), so a runtime can stream by feeding the state."""
    from ..cells import LSTMState
    from ..export import Flat, Port, Spec, state_outputs, swap_layers

    layer = model.rnn
    lstm = layer.cell.state_type is LSTMState
    L, R, H = layer.num_layers, layer.proj_size or layer.hidden_size, layer.hidden_size

    def call(m, ids, h0, *c0):
        logits, state = m(ids, LSTMState(h0, c0[0]) if lstm else h0)
        return (logits, *state_outputs(state))

    vocab = model.embedding.num_embeddings

    def make(B: int, T: int) -> tuple[Tensor, ...]:
        g = torch.Generator().manual_seed(B * 1000 + T)
        made = [torch.randint(0, vocab, (T, B), generator=g), torch.randn(L, B, R, generator=g) * 0.5]
        if lstm:
            made.append(torch.randn(L, B, H, generator=g) * 0.5)
        return tuple(made)

    inputs = [Port("ids", ("time", "batch"), torch.int64), Port("h0", (str(L), "batch", str(R)))]
    outputs = [Port("logits", ("time", "batch", str(vocab))), Port("h_n", (str(L), "batch", str(R)))]
    if lstm:
        inputs.append(Port("c0", (str(L), "batch", str(H))))
        outputs.append(Port("c_n", (str(L), "batch", str(H))))
    return Spec(Flat(swap_layers(model, initial_state=True), call), Flat(model, call), make, inputs, outputs, what,
                notes=["ids: the checkpoint's vocab.json; start from zero states and feed h_n/c_n back in to stream"])


SPEC = TaskSpec(NAME, "language model: train, generate, evaluate", LMConfig, train, TrainedLM.load,
                train_help="train a character (or word) language model", train_defaults=LM_TRAIN_DEFAULTS,
                export=export_spec,
                verbs={"generate": Verb("stream text from a trained model", GenerateArgs, run_generate, json=None),
                       "evaluate": Verb("nats and bits per character beside the unigram baseline", EvaluateArgs)})
