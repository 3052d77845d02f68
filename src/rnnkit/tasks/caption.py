r"""Video captioning: ``rnnkit caption train | evaluate | predict``, shown on moving digits.

Data (generated, ``rnnkit.data.moving_digits.caption_clips``): a clip is T = 2L frames of
32 x 32 (L = ``segment_length``); in each segment one handwritten digit moves in a straight
line, and the caption reads ``"the digit 3 moves left then the digit 7 moves down"``, four
*slots* (digit1, direction1, digit2, direction2) in a fixed template. Training reads a fresh
batch of clips every step (clips of the ``train`` glyphs, seeded by the run's seed and the
step); the dev clips that pick the best checkpoint come from the same glyphs with another
seed (``fields.DEV_SEED``); the test clips from the ``test`` glyphs, which no training clip shows.

Model (Venugopalan et al. 2015, "Sequence to Sequence -- Video to Text", with a smaller CNN)::

    clips (B, T, 32, 32) -> per frame FrameCNN                              (T, B, F)
      -> encoder: "recurrent": rnnkit.Recurrent (bidirectional by default)   memory (T, B, D*H)
                  "order-blind": the mean over the frames                    memory (1, B, F)
      -> rnnkit.tasks.seq2seq.Decoder (attention, input feeding)            the caption, word by word

``FrameCNN``: three 3x3 stride-2 convolutions (32 -> 16 -> 8 -> 4), each with batch normalization
and ReLU; its features are a linear map of the flattened 4 x 4 map (*where* things are) next to
the global max over it (*what* is there, wherever it is). Both the normalization and the global
pooling matter: without them (``rnnkit.tasks.video.FrameEncoder``) the per-frame digit loss sat at
ln 10 for the first 50-100 steps and digit accuracy on unseen glyphs was 0.14 after 100 steps,
against 0.67 with them (measured on the per-frame digit task alone, batch 32 clips).

Recipe (what makes it beat the 0.33-0.38 exact match of a captioner whose frame CNN was
pretrained and then fine-tuned): auxiliary losses on what each frame shows, added to the
caption's cross-entropy with weight ``aux_weight`` for the whole run:

- per frame, a linear head on the frame features predicts the digit it shows
  (``moving_digits.frame_digit_labels``); the first ``pretrain_steps`` steps train the CNN on that
  loss alone (Venugopalan et al. pretrain on ImageNet labels);
- per frame, a linear head on the recurrent encoder's output predicts the direction in which that
  frame's segment moves (recurrent encoder only: one frame alone has no direction).

The caption loss alone learns the directions but leaves the digits at chance after 700 steps (the
template's prior, then motion, are learnt first); the per-frame digit loss is what teaches the CNN
the digits, and the per-step direction loss puts the motion into every step of the memory, so the
decoder's attention only has to pick the segment. With the defaults (700 steps) this reaches 0.907
exact match on 1,000 clips of unseen glyphs (docs/results.md).

The order-blind encoder sees only the mean of the frame features: reversing one segment in time
keeps that mean and flips the segment's direction (``moving_digits`` notes), so its direction
slots cannot beat 0.5 (it may learn the axis, not the sign); it is the control for "the recurrent
encoder reads motion".

Metrics (``evaluate``): ``exact_match`` (the whole caption right), ``slot_accuracy`` (the mean over
the four slots; a caption off the template gets its slots wrong) and the four slots apart
(``slots``), then ``bleu`` (sacrebleu's corpus BLEU, its defaults) beside ``constant_bleu``, the BLEU
of one caption for every clip: each slot's most frequent value in the dev clips. On this template
the constant caption already scores about 28 BLEU, which is why exact match and the slots come first.

Needs the ``tasks`` extra: ``pip install 'rnnkit[tasks]'`` (sacrebleu, scikit-learn for the glyphs).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor, nn

from ..data import moving_digits as md
from ..data.batching import GeneratedStream
from ..extras import require
from ..recurrent import Recurrent
from ..train import checkpoint
from ..train.trainer import TrainConfig
from .base import Trained, begin, finished, fit, write_report
from .fields import BatchFields, GeneratedSplitFields, TaskConfig, check_choice, check_ints, with_defaults
from .registry import TaskSpec, Verb
from .seq2seq import ATTENTIONS, DECODERS, Decoder, EncoderDecoderFields, SearchArgs, beam_search, greedy

NAME = "caption"
ENCODERS = ("recurrent", "order-blind")
SLOTS = ("digit1", "direction1", "digit2", "direction2")
PAD, BOS, EOS = "<pad>", "<s>", "</s>"
PAD_ID, BOS_ID, EOS_ID = range(3)
# every word the template can write: the vocabulary is fixed, the same for every run
WORDS = (PAD, BOS, EOS, "the", "digit", "moves", "then", *(str(d) for d in range(10)), *md.DIRECTIONS)
CAPTION_TRAIN_DEFAULTS = {"lr": 2e-3, "eval_every": 100, "checkpoint_every": 100, "warmup_steps": 30,
                          "weight_decay": 0.01, "steps": 700}


def _require():
    """sacrebleu, or an ImportError that says how to install it."""
    return require("sacrebleu", "the caption task")


@dataclass
@with_defaults(beam_size=3, batch_size=32)
class CaptionConfig(TaskConfig, BatchFields, GeneratedSplitFields, EncoderDecoderFields):
    """The captioner and its generated data; defaults sized for a few minutes on 2 CPU cores."""

    unit, units = "clip", "clips"

    encoder: str = field(default="recurrent", metadata={"help": "recurrent (reads the frames in order) or "
                                                                "order-blind (the mean of the frame features)"})
    segment_length: int = field(default=10, metadata={"help": "L: frames per segment (a clip is 2L frames)"})
    # its own, not ExampleFields': the order-blind encoder has no direction
    bidirectional: bool = field(default=True, metadata={"help": "the recurrent encoder reads both directions"})
    cnn_channels: int = field(default=32, metadata={"help": "channels of the frame CNN's feature map"})
    frame_features: int = field(default=128, metadata={"help": "F: the frame CNN's output per frame"})
    embedding_size: int = field(default=32, metadata={"help": "word embedding width of the decoder"})
    aux_weight: float = field(default=1.0, metadata={"help": "weight of the per-frame digit and direction losses "
                                                             "added to the caption loss (0: off)"})
    pretrain_steps: int = field(default=50, metadata={"help": "first steps that train the frame CNN on the "
                                                              "per-frame digits alone"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on the frame features and in the decoder"})

    def validate(self) -> None:
        check_choice("encoder", self.encoder, ENCODERS)
        check_choice("attention", self.attention, ATTENTIONS)
        check_ints(self, ("hidden_size", "num_layers", "cnn_channels", "frame_features", "embedding_size", "beam_size",
                          "dev_size", "test_size", "batch_size"))
        if isinstance(self.segment_length, bool) or not isinstance(self.segment_length, int) or not (
                2 <= self.segment_length <= 11):
            raise ValueError(f"segment_length must be an int in [2, 11] (a digit moving 2 px a frame must stay on "
                             f"the canvas), got {self.segment_length!r}")
        if isinstance(self.pretrain_steps, bool) or not isinstance(self.pretrain_steps, int) or self.pretrain_steps < 0:
            raise ValueError(f"pretrain_steps must be an int >= 0, got {self.pretrain_steps!r}")
        if not self.aux_weight >= 0:
            raise ValueError(f"aux_weight must be >= 0, got {self.aux_weight!r}")
        if self.pretrain_steps and not self.aux_weight:
            raise ValueError("pretrain_steps trains on the per-frame digit loss, which aux_weight=0 turns off; "
                             "give aux_weight > 0 or pretrain_steps 0")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")


# ---------------------------------------------------------------------- words and metrics

INDEX = {w: i for i, w in enumerate(WORDS)}


def encode(text: str) -> list[int]:
    """The word ids of a caption (without ``</s>``); a word outside the template's is a ValueError."""
    unknown = [w for w in text.split() if w not in INDEX or w in (PAD, BOS, EOS)]
    if unknown:
        raise ValueError(f"caption {text!r} has word(s) outside the template's vocabulary: {', '.join(unknown)}")
    return [INDEX[w] for w in text.split()]


def decode(ids: Sequence[int]) -> str:
    return " ".join(WORDS[i] for i in ids)


def slots_of(text: str) -> tuple[int, int, int, int] | None:
    """The slots of a caption, or None when it is off the template."""
    try:
        return md.parse_caption(text)
    except ValueError:
        return None


def caption_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """n, exact_match, slot_accuracy (mean of the four), slots (each apart) and bleu of ``hypotheses``.

    A hypothesis off the template counts as wrong in every slot.
    """
    if len(hypotheses) != len(references) or not references:
        raise ValueError(f"need as many hypotheses as references (at least one), got {len(hypotheses)} and "
                         f"{len(references)}")
    sacrebleu = _require()
    right = [0] * len(SLOTS)
    for hyp, ref in zip(hypotheses, references):
        got, want = slots_of(hyp), md.parse_caption(ref)
        if got is not None:
            right = [r + (g == w) for r, g, w in zip(right, got, want)]
    per_slot = [r / len(references) for r in right]
    return {"n": len(references),
            "exact_match": sum(h == r for h, r in zip(hypotheses, references)) / len(references),
            "slot_accuracy": sum(per_slot) / len(SLOTS),
            "slots": dict(zip(SLOTS, per_slot)),
            "bleu": float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)}


def constant_caption(slots: Tensor) -> str:
    """The caption of each slot's most frequent value in ``slots`` (N, 4), ties to the smallest value."""
    modes = []
    for column in slots.T.tolist():
        counts = collections.Counter(column)
        modes.append(min(counts, key=lambda v: (-counts[v], v)))
    return md.caption(modes)


def constant_bleu(caption: str, references: Sequence[str]) -> float:
    sacrebleu = _require()
    return float(sacrebleu.corpus_bleu([caption] * len(references), [list(references)]).score)


# ---------------------------------------------------------------------- data


class Batch(NamedTuple):
    clips: Tensor  # (B, T, 32, 32) in [0, 1]
    target: Tensor  # (U, B) word ids, </s> last
    frame_digits: Tensor  # (B, T) the digit each frame shows
    frame_directions: Tensor  # (B, T) the direction in which each frame's segment moves


def frame_direction_labels(slots: Tensor, segment_length: int) -> Tensor:
    """The direction of each frame's segment: (n, 2L) long, r1 in segment 1 and r2 in segment 2."""
    if slots.dim() != 2 or slots.shape[1] != 4:
        raise ValueError(f"slots must be (n, 4): d1, r1, d2, r2, got shape {tuple(slots.shape)}")
    return slots[:, [1, 3]].long().repeat_interleave(segment_length, dim=1)  # (n, 2L)


def make_batch(clips: Tensor, captions: Sequence[str], slots: Tensor, segment_length: int,
               device: torch.device) -> Batch:
    rows = [encode(c) + [EOS_ID] for c in captions]
    target = torch.tensor(rows, dtype=torch.long).T.contiguous()  # (U, B): every caption has the same length
    return Batch(clips.to(device), target.to(device), md.frame_digit_labels(slots, segment_length).to(device),
                 frame_direction_labels(slots, segment_length).to(device))


def training_batch(seed: int, index: int, config: CaptionConfig, device: torch.device) -> Batch:
    """Training batch ``index`` (a ``GeneratedStream``'s draw): clips index*B .. (index+1)*B - 1 of (``train``
    glyphs, seed)."""
    B = config.batch_size
    clips, captions, slots = md.caption_clips(B, seed, "train", segment_length=config.segment_length, start=index * B)
    return make_batch(clips, captions, slots, config.segment_length, device)


def check_clips(clips, name: str = "clips") -> Tensor:
    """Clips as float32 (N, T, 32, 32) in [0, 1]; anything else is a ValueError that says what came."""
    if isinstance(clips, np.ndarray):
        clips = torch.from_numpy(clips)
    if not isinstance(clips, Tensor):
        raise ValueError(f"{name} must be a tensor or array (N, T, 32, 32), got {type(clips).__name__}")
    if clips.dim() == 3:
        clips = clips[None]  # one clip
    if clips.dim() != 4 or tuple(clips.shape[2:]) != (md.CANVAS, md.CANVAS) or clips.shape[1] < 1 or len(clips) < 1:
        raise ValueError(f"{name} must be (N, T, {md.CANVAS}, {md.CANVAS}) or one clip (T, {md.CANVAS}, "
                         f"{md.CANVAS}), got shape {tuple(clips.shape)}")
    if not (clips.dtype.is_floating_point or clips.dtype == torch.uint8):
        raise ValueError(f"{name} must be float in [0, 1] or uint8 in [0, 255], got dtype {clips.dtype}")
    clips = clips.float() / 255 if clips.dtype == torch.uint8 else clips.float()
    if not torch.isfinite(clips).all() or clips.min() < 0 or clips.max() > 1:
        raise ValueError(f"{name} must hold values in [0, 1] (or uint8 0-255), got min {float(clips.min())} and "
                         f"max {float(clips.max())}")
    return clips


def load_npy(path: str | Path) -> Tensor:
    """The clips of a .npy file (no pickles), checked by :func:`check_clips`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such .npy file: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes); expected a .npy array (N, T, 32, 32) or (T, 32, 32)")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as error:
        raise ValueError(f"{path} is not a .npy array of numbers ({error})") from None
    return check_clips(array, name=str(path))


# ---------------------------------------------------------------------- the model


class FrameCNN(nn.Module):
    r"""The per-frame CNN (module notes): (N, 1, 32, 32) -> (N, P + c), P = ``out_features``.

    .. code-block:: text

        x -> [conv 3x3 stride 2, BatchNorm, ReLU] x 3, channels c/2, c, c   (N, c, 4, 4)
          -> [ReLU(Linear(flatten)) (N, P) ; global max (N, c)]             (N, P + c)
    """

    def __init__(self, channels: int, out_features: int) -> None:
        super().__init__()
        layers, inputs = [], 1
        for outputs in (max(1, channels // 2), channels, channels):
            layers += [nn.Conv2d(inputs, outputs, 3, stride=2, padding=1), nn.BatchNorm2d(outputs), nn.ReLU()]
            inputs = outputs
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(channels * (md.CANVAS // 8) ** 2, out_features)
        self.out_features = out_features + channels

    def forward(self, x: Tensor) -> Tensor:
        f = self.body(x)  # (N, c, 4, 4)
        return torch.cat([torch.relu(self.proj(f.flatten(1))), f.amax((2, 3))], 1)  # (N, P + c)


class Captioner(nn.Module):
    """Frame CNN -> recurrent (or order-blind) encoder -> attention decoder (module notes).

    encode(clips (B, T, 32, 32)) -> memory (T', B, D), lengths (B,), digit logits (T, B, 10), direction logits
        (T, B, 4) (None for the order-blind encoder)
    forward(batch) -> caption logits (U, B, V), digit logits, direction logits
    """

    def __init__(self, config: CaptionConfig) -> None:
        super().__init__()
        self.config = config
        self.frames = FrameCNN(config.cnn_channels, config.frame_features)
        features = self.frames.out_features
        self.frame_dropout = nn.Dropout(config.dropout)
        self.digit_head = nn.Linear(features, 10)  # per frame: which digit it shows
        if config.encoder == "recurrent":
            self.rnn = Recurrent(config.cell, features, config.hidden_size, config.num_layers,
                                 bidirectional=config.bidirectional)
            memory_size = config.hidden_size * self.rnn.num_directions
            self.direction_head = nn.Linear(memory_size, len(md.DIRECTIONS))  # per step: its segment's direction
        else:
            self.rnn, self.direction_head = None, None
            memory_size = features
        self.decoder = Decoder(len(WORDS), memory_size, config.hidden_size, config.embedding_size, BOS_ID, EOS_ID,
                               config.cell, config.num_layers, config.attention, dropout=config.dropout)

    def frame_features(self, clips: Tensor) -> Tensor:
        B, T = clips.shape[:2]
        features = self.frames(clips.reshape(B * T, 1, md.CANVAS, md.CANVAS))  # (B*T, F)
        return features.view(B, T, -1).transpose(0, 1)  # (T, B, F)

    def encode(self, clips: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        B = clips.shape[0]
        features = self.frame_features(clips)  # (T, B, F)
        digit_logits = self.digit_head(features)  # (T, B, 10)
        features = self.frame_dropout(features)
        if self.rnn is None:
            memory, direction_logits = features.mean(0, keepdim=True), None  # (1, B, F): order-blind
        else:
            memory, _ = self.rnn(features)  # (T, B, D*H)
            direction_logits = self.direction_head(memory)  # (T, B, 4)
        lengths = torch.full((B,), memory.shape[0], dtype=torch.long, device=clips.device)
        return memory, lengths, digit_logits, direction_logits

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor | None]:
        memory, lengths, digit_logits, direction_logits = self.encode(batch.clips)
        logits, _ = self.decoder(memory, lengths, batch.target)  # (U, B, V)
        return logits, digit_logits, direction_logits


@torch.no_grad()
def describe_clips(model: Captioner, clips: Tensor, decoder: str, beam_size: int, batch_size: int = 200
                   ) -> list[str]:
    """The caption of each clip (N, T, 32, 32), greedy or beam search."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be greedy or beam, got {decoder!r}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    limit = len(md.CAPTION_TEMPLATE.split()) + 1  # the template's words and </s>
    out: list[str] = []
    for start in range(0, len(clips), batch_size):
        memory, lengths, _, _ = model.encode(clips[start : start + batch_size].to(device))
        if decoder == "greedy":
            found = greedy(model.decoder, memory, lengths, limit)
        else:
            found = beam_search(model.decoder, memory, lengths, beam_size, limit)
        out += [decode(t) for t in found.tokens]
    model.train(was_training)
    return out


# ---------------------------------------------------------------------- training


def generated_split(split: str, config: CaptionConfig, n: int | None = None) -> tuple[Tensor, list[str], Tensor]:
    """The fixed dev or test clips (``GeneratedSplitFields.held_out``) with their captions and slots."""
    size, seed, glyphs = config.held_out(split, n)
    return md.caption_clips(size, seed, glyphs, segment_length=config.segment_length)


class CaptionTask:
    """The Trainer's view of the captioner (``rnnkit.train.trainer.TrainingTask``)."""

    name = NAME
    metric = "exact_match"
    higher_is_better = True

    def __init__(self, config: CaptionConfig, seed: int, device: torch.device) -> None:
        self.config = config
        self.model = Captioner(config).to(device)
        self.stream = GeneratedStream(seed, partial(training_batch, config=config, device=device))
        self.dev = generated_split("dev", config)
        self.constant = constant_caption(self.dev[2])

    def loss(self, batch: Batch, carry):
        digits = batch.frame_digits.T.flatten()  # (T*B,), time-major as the logits
        pretraining = self.stream.position <= self.config.pretrain_steps  # the stream has read this step's batch
        if pretraining:
            digit_logits = self.model.digit_head(self.model.frame_features(batch.clips))  # (T, B, 10)
            return F.cross_entropy(digit_logits.float().flatten(0, 1), digits), None, digits.numel()
        logits, digit_logits, direction_logits = self.model(batch)
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch.target.flatten(), ignore_index=PAD_ID)
        if self.config.aux_weight:
            aux = F.cross_entropy(digit_logits.float().flatten(0, 1), digits)
            if direction_logits is not None:
                directions = batch.frame_directions.T.flatten()  # (T*B,)
                aux = aux + F.cross_entropy(direction_logits.float().flatten(0, 1), directions)
            loss = loss + self.config.aux_weight * aux
        return loss, None, int(batch.target.numel())

    def score(self, clips: Tensor, captions: Sequence[str], decoder: str) -> dict:
        hypotheses = describe_clips(self.model, clips, decoder, self.config.beam_size)
        return {**caption_scores(hypotheses, captions), "constant_bleu": constant_bleu(self.constant, captions),
                "decoder": decoder}

    def evaluate(self) -> dict:
        result = self.score(self.dev[0], self.dev[1], "greedy")
        return {k: v for k, v in result.items() if k not in ("decoder", "slots")} | {
            f"slot_{k}": v for k, v in result["slots"].items()}

    def describe(self) -> tuple[dict, dict]:
        return {**self.config.model_settings(), "constant_caption": self.constant}, {"words": list(WORDS)}


def train(config: CaptionConfig, train_config: TrainConfig, out: str | Path, resume: bool = False,
          console: Console | None = None, progress: bool = True) -> dict:
    """Train a captioner into the run directory ``out``; returns the Trainer's summary plus ``test`` (the best
    checkpoint, chosen by dev exact match with greedy search, scored on the test clips, greedy and beam)."""
    config.validate()
    _require()
    console, _ = begin(train_config, out, resume, console)
    task = CaptionTask(config, train_config.seed, torch.device(train_config.device))
    encoder = (f"{'bi' if config.bidirectional else ''}{config.cell} {config.num_layers}x{config.hidden_size}"
               if config.encoder == "recurrent" else "order-blind (mean of the frames)")
    summary = fit(task, train_config, out, resume, console, progress, lambda params: (
        f"caption: frame CNN ({config.cnn_channels} channels -> {config.frame_features}), {encoder} encoder, "
        f"{config.attention} attention decoder, {params:,} parameters; per-frame digit loss x{config.aux_weight}, "
        f"{config.pretrain_steps} pretraining steps; {config.dev_size} dev clips, {config.test_size} test clips "
        f"(unseen glyphs)"))
    clips, captions, _ = generated_split("test", config)
    results = {d: task.score(clips, captions, d) for d in DECODERS}
    write_report(out, NAME, "test", *results.values())
    results = {d: {"task": NAME, "split": "test", **r} for d, r in results.items()}
    task.model.train()
    for d, r in results.items():
        slots = ", ".join(f"{k} {v:.3f}" for k, v in r["slots"].items())
        console.print(f"test ({d}): exact match {r['exact_match']:.3f}, slots {slots}; BLEU {r['bleu']:.2f} "
                      f"(constant caption {r['constant_bleu']:.2f}), n {r['n']}", highlight=False)
    console.print(finished(summary, out), highlight=False)
    return {**summary, "test": results}


# ---------------------------------------------------------------------- a trained model


@dataclass(eq=False, repr=False)
class TrainedCaptioner(Trained):
    """A trained captioner loaded from a checkpoint: ``predict`` and ``evaluate``."""

    task, config_class, what, needs = NAME, CaptionConfig, "a caption model", ("constant_caption",)

    constant: str  # the constant caption, the baseline's answer

    @classmethod
    def read(cls, ckpt: checkpoint.Checkpoint, config: CaptionConfig, path: Path) -> tuple[Captioner, dict]:
        if ckpt.vocab is not None and list(ckpt.vocab.get("words", WORDS)) != list(WORDS):
            raise checkpoint.CheckpointError(f"{path}: vocab.json's words differ from this rnnkit's caption "
                                             "template")
        return Captioner(config), {"constant": ckpt.config["constant_caption"]}

    def _search(self, decoder: str | None, beam_size: int | None) -> tuple[str, int]:
        decoder = decoder or "beam"
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be greedy or beam, got {decoder!r}")
        config = replace(self.config, beam_size=self.config.beam_size if beam_size is None else beam_size)
        config.validate()
        return decoder, config.beam_size

    def predict(self, clips, *, decoder: str | None = None, beam_size: int | None = None) -> list[str]:
        """The caption of each clip: (N, T, 32, 32) or one (T, 32, 32), float in [0, 1] or uint8."""
        decoder, beam_size = self._search(decoder, beam_size)
        return describe_clips(self.model, check_clips(clips), decoder, beam_size)

    def predict_cli(self, files: Sequence[str], seed: int = 0, n: int = 5, decoder: str | None = None,
                    beam_size: int | None = None) -> list[tuple[str, str]]:
        """``rnnkit caption predict``: (name, caption) for every clip of the .npy ``files``, or, with no files,
        for ``n`` generated test clips of ``seed`` (their true caption added in brackets)."""
        if not files:
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"n must be a positive int, got {n!r}")
            clips, captions, _ = md.caption_clips(n, seed, "test", segment_length=self.config.segment_length)
            found = self.predict(clips, decoder=decoder, beam_size=beam_size)
            return [(f"test clip {seed}:{i}", f"{f}\t(true: {c})") for i, (f, c) in enumerate(zip(found, captions))]
        out = []
        for name in files:
            out += [(f"{name}:{i}", f) for i, f in enumerate(self.predict(load_npy(name), decoder=decoder,
                                                                                      beam_size=beam_size))]
        return out

    def evaluate(self, *, split: str = "test", n: int | None = None, decoder: str | None = None,
                 beam_size: int | None = None) -> dict:
        """task, split, n, exact_match, slot_accuracy, slots, bleu, constant_bleu and decoder on the generated
        ``test`` clips (unseen glyphs) or ``dev`` clips; ``n`` clips (default: the training run's size)."""
        decoder, beam_size = self._search(decoder, beam_size)
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"n must be a positive int, got {n!r}")
        clips, captions, _ = generated_split(split, self.config, n)
        hypotheses = describe_clips(self.model, clips, decoder, beam_size)
        return {"task": NAME, "split": split, **caption_scores(hypotheses, captions),
                "constant_bleu": constant_bleu(self.constant, captions), "decoder": decoder}


# ---------------------------------------------------------------------- the task's SPEC (rnnkit.tasks.registry)

@dataclass
class EvaluateArgs(SearchArgs):
    split: str = field(default="test", metadata={"help": "test (unseen glyphs) or dev (training glyphs)"})
    n: int | None = field(default=None, metadata={"help": "clips to score (default: the training run's test or dev "
                                                          "size)"})


@dataclass
class PredictArgs(SearchArgs):
    files: list | None = field(default=None, metadata={"help": ".npy files, each (N, T, 32, 32) or one clip "
                                                               "(T, 32, 32), float in [0, 1] or uint8", "nargs": "*"})
    seed: int = field(default=0, metadata={"help": "without files: the seed of the generated test clips"})
    n: int = field(default=5, metadata={"help": "without files: how many generated test clips"})


def run_predict(trained: TrainedCaptioner, args: PredictArgs, as_json: bool) -> None:
    """``rnnkit caption predict``: name and caption, one line per clip."""
    for name, text in trained.predict_cli(args.files or [], args.seed, args.n, args.decoder, args.beam_size):
        print(f"{name}\t{text}")


SPEC = TaskSpec(NAME, "video captioning (moving digits): train, evaluate, predict", CaptionConfig, train,
                TrainedCaptioner.load, train_help="train a captioner on generated moving-digit clips",
                train_defaults=CAPTION_TRAIN_DEFAULTS,
                export="its decoder runs a data-dependent loop of attention steps (greedy or beam search) in Python",
                verbs={"evaluate": Verb("exact match and slot accuracy, then BLEU beside a constant caption's",
                                        EvaluateArgs),
                       "predict": Verb("captions for generated test clips, or for the clips of .npy files",
                                       PredictArgs, run_predict, json=None)})
