"""Speech recognition: ``rnnkit asr train | evaluate | transcribe``, a bidirectional RNN with CTC.

Audio -> log-mel features (``rnnkit.audio``: 25 ms windows every 10 ms, 80 bands) ->
normalization (per utterance, or by the training set's statistics for streaming) ->
SpecAugment masks in training -> ``frame_stack`` consecutive frames stacked into one step
(30 ms) -> ``rnnkit.Recurrent`` (any cell, stacked, bidirectional by default) -> a linear
layer over the alphabet plus the CTC blank (class 0) -> ``torch.nn.functional.ctc_loss``.

    features (T, B, M) --stack k--> (T/k, B, k M) --rnn--> (T/k, B, D H) --head--> (T/k, B, 1 + |alphabet|)

Decoding (``rnnkit.ctc``): greedy, or prefix beam search with shallow fusion of a character
language model trained by ``rnnkit lm train`` (``--lm DIR``, ``--lm-weight``,
``--insertion-bonus``) and/or a word list (``--words FILE``). A model trained with ``--streaming``
(unidirectional, ``normalize="global"``) transcribes live audio with ``layer.step``
(``transcribe --stream -``): ``rnnkit.audio.PCMReader`` reads the pipe in chunks, the resampler, features,
steps (``StreamingSteps``) and the decoder (``rnnkit.ctc_stream``, greedy or beam + words + LM, with
endpointing at silence) run as the audio arrives, and ``TrainedASR.live`` wires them; without an endpoint
the final text is the whole file's (``stream_log_probs`` equals the whole file's within float32 rounding).

Data: ``--data MANIFEST`` (``rnnkit.data.manifest``: CSV/TSV/JSONL with ``path`` and ``text``)
with ``--test-data MANIFEST``; ``--data synth``: the synthesized corpus (``rnnkit.data.synth_speech``,
espeak-ng voices, the test split spoken by voices never heard in training), generated into a
cache on first use, with ``--noise`` added to the training audio as it is loaded (``--augment``: speed,
band-limiting, gain and noise, ``rnnkit.audio.WaveAugment``, on any data); or without
them a subset of the Free Spoken Digit Dataset bundled in the package (CC BY-SA 4.0, SOURCES.md).
A seeded ``dev_fraction`` of the training utterances picks the best checkpoint (lowest CER, greedy).
``--join N`` (3 with ``--streaming``) trains on examples that sound like a live stream: 1 to N utterances
joined by 100-800 ms pauses, with silence before and after, their texts joined by spaces
(``rnnkit.audio.join``); the dev split is joined the same way, the test split stays one utterance per file.
The alphabet is the training transcripts' characters; a test transcript with another character is
an error naming it.
Metrics: CER and WER (jiwer) beside the empty output's WER (1.0) and the most frequent training
transcript's.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import math
import random
import sys
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from itertools import chain
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor, nn

from .. import ctc
from ..audio import (
    LogMel,
    PCMReader,
    StreamingLogMel,
    StreamingResampler,
    WaveAugment,
    band_limit,
    read_audio,
    spec_augment,
)
from ..audio.join import Joining, join_utterances
from ..audio.read import AudioError
from ..ctc_stream import StreamingDecoder
from ..data.batching import BatchStream, hold_out, pad
from ..data.manifest import read_manifest
from ..extras import require
from ..recurrent import Recurrent
from ..train import checkpoint
from ..train.trainer import TrainConfig
from .base import SPLITS, Trained, begin, check_split, finished, fit, write_report
from .fields import ExampleFields, LayerFields, TaskConfig, check_choice, check_ints, with_defaults
from .registry import SplitArgs, TaskSpec, Verb

NAME = "asr"
BUNDLED_FILE = "fsdd_subset.tar"  # in rnnkit/data: FLAC files and manifest.tsv with a split column; SOURCES.md
NORMALIZATIONS = ("utterance", "global")
ASR_TRAIN_DEFAULTS = {"lr": 2e-3, "eval_every": 250, "checkpoint_every": 250, "warmup_steps": 100,
                      "weight_decay": 0.01, "steps": 2000}


@dataclass
@with_defaults(num_layers=2, dropout=0.1, batch_size=32)
class ASRConfig(TaskConfig, ExampleFields, LayerFields):
    """The recognizer and its front end; defaults for spoken digits and short sentences on 2 CPU cores."""

    unit, units = "utterance", "utterances"

    data: str | None = field(default=None, metadata={"help": "training manifest (.csv/.tsv/.jsonl with path and "
                                                             "text), or 'synth' for the synthesized corpus (needs "
                                                             "rnnkit[synth]); default: the bundled spoken-digit "
                                                             "subset"})
    test_data: str | None = field(default=None, metadata={"help": "test manifest; default: the bundled test split, "
                                                                  "or with --data a seeded 10%% of it"})
    dev_fraction: float = field(default=0.1, metadata={"help": "the seeded share of the training utterances held "
                                                               "out to pick the best checkpoint"})
    sample_rate: int = field(default=16000, metadata={"help": "audio is resampled to this rate (Hz)"})
    n_mels: int = field(default=80, metadata={"help": "mel bands"})
    frame_stack: int = field(default=3, metadata={"help": "consecutive 10 ms frames stacked into one RNN step"})
    normalize: str = field(default="utterance", metadata={"help": "utterance (each band to mean 0, std 1 per "
                                                                  "utterance) or global (training-set statistics; "
                                                                  "needed for --stream)"})
    streaming: bool = field(default=False, metadata={"help": "train a model that transcribes as audio arrives "
                                                             "(transcribe --stream): sets bidirectional off and "
                                                             "normalize to global, whatever those flags say"})
    noise: bool = field(default=False, metadata={"help": "add white or pink noise at 10-40 dB SNR to every "
                                                         "training utterance as it is loaded (seeded)"})
    augment: bool = field(default=False, metadata={"help": "perturb every training utterance as it is loaded "
                                                           "(seeded): speed 0.9/1/1.1, band-limited to 3, 4 or "
                                                           "5.5 kHz (half), gain +-10 dB, noise (half) "
                                                           "(rnnkit.audio.WaveAugment)"})
    join: int | None = field(default=None, metadata={"help": "train on examples of 1 to N utterances joined by "
                                                             "100-800 ms pauses, with silence before and after, as "
                                                             "a live stream sounds (rnnkit.audio.join; the dev "
                                                             "split too); default 3 with --streaming, else 1 "
                                                             "(each utterance alone)"})
    spec_augment: bool = field(default=True, metadata={"help": "SpecAugment time and frequency masks in training"})
    freq_masks: int = field(default=2, metadata={"help": "frequency masks per utterance"})
    freq_width: int = field(default=15, metadata={"help": "widest frequency mask, in bands"})
    time_masks: int = field(default=2, metadata={"help": "time masks per utterance"})
    time_width: int = field(default=10, metadata={"help": "longest time mask, in 10 ms frames (at most 20%% of "
                                                          "the utterance)"})

    def __post_init__(self) -> None:
        if self.streaming:  # the two settings a stream needs: no backward pass, no statistics of the whole utterance
            self.bidirectional, self.normalize = False, "global"
        if self.join is None:
            self.join = 3 if self.streaming else 1

    def validate(self) -> None:
        check_choice("normalize", self.normalize, NORMALIZATIONS)
        check_ints(self, ("sample_rate", "n_mels", "frame_stack", "hidden_size", "num_layers", "batch_size", "join"))
        check_ints(self, ("freq_masks", "freq_width", "time_masks", "time_width"), minimum=0)
        if not 0 <= self.dev_fraction < 1:
            raise ValueError(f"dev_fraction must be in [0, 1), got {self.dev_fraction}")
        if self.test_data is not None and self.data is None:
            raise ValueError("--test-data needs --data: the bundled set has its own test split")


# ---------------------------------------------------------------------- data


class Utterances(NamedTuple):
    """Log-mel features and transcripts of one split."""

    features: list[Tensor]  # each (T_i, n_mels), raw log-mel
    texts: list[str]
    names: list[str]  # "manifest:line" or the bundled file's name, for error messages
    source: str


def front_end(config: ASRConfig) -> LogMel:
    return LogMel(config.sample_rate, config.n_mels)


class Samples:
    """A front end that keeps the samples: ``load_splits`` reads the utterances to join with it, and
    computes their features once they are joined (``joined``)."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate

    def __call__(self, wave: Tensor) -> Tensor:
        return wave


def _featurize(sources: Iterable[tuple[object, str, str]], logmel: LogMel | Samples, source: str,
               perturb: Callable[[Tensor], Tensor] | None = None) -> Utterances:
    """Features of every utterance, computed with one intra-op thread: per utterance the ops are small,
    and a second OpenMP thread made them 15-20x slower on a busy 2-core machine (53 ms against 3 ms for
    resampling one second of audio)."""
    features, texts, names = [], [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for audio, text, name in sources:
            if isinstance(audio, Tensor):  # samples already read (``joined``)
                wave = audio
            else:
                try:
                    wave, _ = read_audio(audio, logmel.sample_rate)
                except ValueError as e:
                    raise ValueError(f"{name}: {e}") from None
            if perturb is not None:
                wave = perturb(wave)
            features.append(logmel(wave))
            texts.append(text)
            names.append(name)
    finally:
        torch.set_num_threads(threads)
    return Utterances(features, texts, names, source)


def load_manifest(path: str | Path, logmel: LogMel | Samples, perturb: Callable[[Tensor], Tensor] | None = None,
                  limit: int | None = None) -> Utterances:
    """The manifest's utterances (with ``limit``: its first ``limit``), featurized."""
    utterances = read_manifest(path)[:limit]
    return _featurize(((u.path, u.text, f"{path}:{u.line}") for u in utterances), logmel, str(path), perturb)


def training_perturbation(config: ASRConfig, seed: int) -> Callable[[Tensor], Tensor] | None:
    """What ``--noise`` and ``--augment`` do to each training waveform (seeded), or None."""
    generator = torch.Generator().manual_seed(seed)
    steps = []
    if config.augment:
        steps.append(partial(WaveAugment(), sample_rate=config.sample_rate, generator=generator))
    if config.noise:
        from ..data.synth_speech import add_random_noise

        steps.append(partial(add_random_noise, generator=generator))
    if not steps:
        return None

    def perturb(wave: Tensor) -> Tensor:
        for step in steps:
            wave = step(wave)
        return wave

    return perturb


SYNTH = "synth"  # --data synth: the synthesized corpus of rnnkit.data.synth_speech, generated on first use


def synth_manifests() -> tuple[Path, Path]:
    """(train.jsonl, test.jsonl) of the default synthesized corpus, generating it on first use."""
    from ..data.synth_speech import generate

    folder = generate()
    return folder / "train.jsonl", folder / "test.jsonl"


def load_bundled(logmel: LogMel | Samples, perturb: Callable[[Tensor], Tensor] | None = None) -> dict[str, Utterances]:
    """The bundled spoken-digit subset: {"train": ..., "test": ...}; ``perturb`` changes the training audio."""
    data = resources.files("rnnkit.data").joinpath(BUNDLED_FILE).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        rows = [line.split("\t") for line in tar.extractfile("manifest.tsv").read().decode().splitlines()[1:]]
        files = {name: tar.extractfile(name).read() for name, _, _ in rows}
    return {split: _featurize(((io.BytesIO(files[name]), text, name) for name, text, s in rows if s == split),
                              logmel, f"bundled {BUNDLED_FILE} ({split})", perturb if split == "train" else None)
            for split in ("train", "test")}


def split_dev(utterances: Utterances, fraction: float, seed: int) -> tuple[Utterances, Utterances]:
    """(train, dev): a seeded ``fraction`` of the utterances held out (``batching.hold_out``)."""
    kept, held = hold_out(len(utterances.texts), fraction, seed, f"utterance(s) of {utterances.source}")

    def pick(indices):
        return Utterances([utterances.features[i] for i in indices], [utterances.texts[i] for i in indices],
                          [utterances.names[i] for i in indices], utterances.source)

    return pick(kept), pick(held)


def joined(utterances: Utterances, logmel: LogMel, max_utterances: int, seed: int) -> Utterances:
    """Utterances of samples (read with ``Samples``) -> the features of ``rnnkit.audio.join_utterances``'s
    examples of 1 to ``max_utterances`` of them (each utterance in one example), named "name+name"."""
    if max_utterances == 1:  # each utterance alone, as it was read: nothing joined, no silence added
        examples = [(wave, text, name) for wave, text, name in zip(*utterances[:3])]
    else:
        examples = [(e.wave, e.text, "+".join(utterances.names[i] for i in e.members))
                    for e in join_utterances(utterances.features, utterances.texts, logmel.sample_rate, seed,
                                             Joining(max_utterances))]
    return _featurize(examples, logmel, utterances.source)


def load_splits(config: ASRConfig, seed: int = 0) -> dict[str, Utterances]:
    """{"train", "dev", "test"}: features and texts; with ``config.join > 1`` the training and dev examples are
    utterances joined by pauses (``joined``), the test split's utterances stay alone."""
    logmel = front_end(config)
    front = logmel if config.join == 1 else Samples(config.sample_rate)  # samples: joined, then featurized
    if config.data is None:
        if config.noise:
            raise ValueError("--noise applies to --data: the bundled digits are loaded without it")
        bundled = load_bundled(front, training_perturbation(config, seed))
        train, test = bundled["train"], bundled["test"]
    else:
        data, test_data = (synth_manifests() if config.data == SYNTH and config.test_data is None
                           else (config.data, config.test_data))
        train = load_manifest(data, front, training_perturbation(config, seed))
        if test_data is not None:
            test = load_manifest(test_data, front)
        else:
            train, test = split_dev(train, 0.1, seed)
    train, dev = split_dev(train, config.dev_fraction, seed)
    if config.join > 1:
        train, dev = joined(train, logmel, config.join, seed), joined(dev, logmel, config.join, seed + 1)
        test = joined(test, logmel, 1, seed)
    return {"train": train, "dev": dev, "test": test}


def alphabet_of(texts: Sequence[str]) -> list[str]:
    return sorted(set("".join(texts)))


def encode(utterances: Utterances, alphabet: Sequence[str]) -> list[list[int]]:
    """Class ids (1 + index in the alphabet) of every transcript; an unknown character is an error."""
    index = {c: i + 1 for i, c in enumerate(alphabet)}
    encoded = []
    for text, name in zip(utterances.texts, utterances.names):
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise ValueError(f"{name}: the transcript {text!r} has character(s) {unknown!r} outside the alphabet "
                             f"of the training transcripts ({''.join(alphabet)!r})")
        encoded.append([index[c] for c in text])
    return encoded


class Batch(NamedTuple):
    x: Tensor  # (T, B, n_mels) raw log-mel, 0 past each length
    lengths: Tensor  # (B,) frames
    targets: Tensor  # (sum of target lengths,) class ids, concatenated
    target_lengths: Tensor  # (B,)


def collate(features: Sequence[Tensor], targets: Sequence[list[int]], device: torch.device) -> Batch:
    x, lengths = pad(features)  # (T, B, M), (B,)
    flat = torch.tensor([c for t in targets for c in t], dtype=torch.long)
    return Batch(x.to(device), lengths.to(device), flat.to(device), torch.tensor([len(t) for t in targets]).to(device))


# ---------------------------------------------------------------------- the model


class SpeechRecognizer(nn.Module):
    """Normalize -> SpecAugment (training) -> stack frames -> Recurrent -> Linear -> log-softmax.

    forward(x (T, B, M) raw log-mel, lengths (B,)) -> log_probs (T', B, 1 + A), lengths' (B,)
    with T' = ceil(T / k), k = frame_stack.
    """

    def __init__(self, alphabet_size: int, config: ASRConfig) -> None:
        super().__init__()
        self.config = config
        self.stack = config.frame_stack
        M = config.n_mels
        self.register_buffer("mean", torch.zeros(M))  # (M,) training-set statistics, used with normalize="global"
        self.register_buffer("std", torch.ones(M))
        self.rnn = Recurrent(config.cell, M * self.stack, config.hidden_size, config.num_layers,
                             dropout=config.dropout, bidirectional=config.bidirectional)
        self.head = nn.Linear(config.hidden_size * self.rnn.num_directions, alphabet_size + 1)

    def normalized(self, x: Tensor, valid: Tensor) -> Tensor:
        """x (T, B, M) with valid (T, B): per-utterance or global normalization, 0 on padding."""
        if self.config.normalize == "global":
            return (x - self.mean) / self.std * valid[..., None]
        w = valid[..., None].to(x.dtype)  # (T, B, 1)
        count = w.sum(0).clamp(min=1)  # (B, 1)
        mean = (x * w).sum(0) / count  # (B, M)
        var = ((x - mean) ** 2 * w).sum(0) / count
        return (x - mean) / (var.sqrt() + 1e-5) * w

    def stacked(self, x: Tensor) -> Tensor:
        """(T, B, M) -> (ceil(T / k), B, k M), zero frames appended to fill the last step."""
        T, B, M = x.shape
        pad = (-T) % self.stack
        if pad:
            x = torch.cat([x, x.new_zeros(pad, B, M)])
        return x.view(-1, self.stack, B, M).permute(0, 2, 1, 3).reshape(-1, B, self.stack * M)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        T = x.shape[0]
        valid = torch.arange(T, device=x.device)[:, None] < lengths.to(x.device)[None, :]  # (T, B)
        x = self.normalized(x, valid)
        c = self.config
        if self.training and c.spec_augment:
            x = torch.stack([torch.cat([spec_augment(x[: int(n), b], c.freq_masks, c.freq_width, c.time_masks,
                                                     c.time_width), x[int(n):, b]])
                             for b, n in enumerate(lengths.tolist())], dim=1)
        steps = (lengths + self.stack - 1) // self.stack  # (B,)
        out, _ = self.rnn(self.stacked(x), lengths=steps)  # (T', B, D*H)
        return self.log_probs(out), steps

    def log_probs(self, out: Tensor) -> Tensor:
        """The recurrent outputs (..., D*H) -> CTC log-probabilities (..., 1 + A) in float32; ``forward`` and
        ``TrainedASR.stream_log_probs`` both end here, so streamed and whole-file log-probabilities compare."""
        return self.head(out).float().log_softmax(-1)


@torch.no_grad()
def frame_log_probs(model: SpeechRecognizer, features: Sequence[Tensor], batch_size: int = 64) -> list[Tensor]:
    """Per utterance, its CTC log-probabilities (T'_i, 1 + A) on the CPU, in the order given."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(features)), key=lambda i: len(features[i]))
    result: list[Tensor | None] = [None] * len(features)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        batch = collate([features[i] for i in chosen], [[]] * len(chosen), device)
        log_probs, steps = model(batch.x, batch.lengths)
        for j, i in enumerate(chosen):
            result[i] = log_probs[: int(steps[j]), j].cpu()
    model.train(was_training)
    return result  # type: ignore[return-value]


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """CER and WER (jiwer), with empty references skipped as jiwer requires."""
    jiwer = require("jiwer", "scoring the asr task")
    pairs = [(r, h) for r, h in zip(references, hypotheses) if r.strip()]
    if not pairs:
        raise ValueError("every reference transcript is empty: nothing to score")
    refs, hyps = zip(*pairs)
    return {"cer": float(jiwer.cer(list(refs), list(hyps))), "wer": float(jiwer.wer(list(refs), list(hyps)))}


class Decoder:
    """Greedy or beam decoding of CTC log-probabilities into text, with an optional LM and word list."""

    def __init__(self, alphabet: Sequence[str], kind: str = "greedy", beam: int = 16, lm: ctc.CharLM | None = None,
                 lm_weight: float = 0.5, insertion_bonus: float = 0.0, lexicon: ctc.Lexicon | None = None) -> None:
        if kind not in ("greedy", "beam"):
            raise ValueError(f"decoder must be greedy or beam, got {kind!r}")
        if kind == "greedy" and (lm is not None or lexicon is not None):
            raise ValueError("a language model or word list needs the beam decoder (--decoder beam)")
        if lm is not None:
            lm.check_alphabet(alphabet)
        self.alphabet, self.kind, self.beam = list(alphabet), kind, beam
        self.lm, self.lm_weight, self.insertion_bonus, self.lexicon = lm, lm_weight, insertion_bonus, lexicon

    def __call__(self, log_probs: Tensor) -> str:
        if self.kind == "greedy":
            return "".join(self.alphabet[c - 1] for c in ctc.greedy(log_probs))
        return ctc.prefix_beam_search(log_probs, self.alphabet, self.beam, self.lm, self.lm_weight,
                                      self.insertion_bonus, self.lexicon)

    def streaming(self, silence_steps: int) -> StreamingDecoder:
        """The same decoder, one frame at a time, ending an utterance after ``silence_steps`` blank frames."""
        return StreamingDecoder(self.alphabet, silence_steps, None if self.kind == "greedy" else self.beam, self.lm,
                                self.lm_weight, self.insertion_bonus, self.lexicon)


# ---------------------------------------------------------------------- training


class ASRTask:
    """The Trainer's view of the recognizer (``rnnkit.train.trainer.TrainingTask``)."""

    name = NAME
    metric = "cer"
    higher_is_better = False

    def __init__(self, config: ASRConfig, splits: dict[str, Utterances], alphabet: list[str], seed: int,
                 device: torch.device) -> None:
        self.config, self.splits, self.alphabet = config, splits, alphabet
        self.targets = {s: encode(u, alphabet) for s, u in splits.items()}
        self.model = SpeechRecognizer(len(alphabet), config).to(device)
        frames = torch.cat(splits["train"].features)  # (sum T, M)
        self.model.mean.copy_(frames.mean(0))
        self.model.std.copy_(frames.std(0).clamp(min=1e-3))
        self.stream = BatchStream(splits["train"].features, config.batch_size, seed, partial(collate, device=device),
                                  self.targets["train"])
        self.eval_split = "dev" if splits["dev"].texts else "train"
        counts = collections.Counter(splits["train"].texts)
        self.most_frequent = min(counts, key=lambda t: (-counts[t], t))

    def loss(self, batch: Batch, carry):
        log_probs, steps = self.model(batch.x, batch.lengths)
        loss = F.ctc_loss(log_probs, batch.targets, steps, batch.target_lengths, blank=ctc.BLANK,
                          zero_infinity=True)
        return loss, None, int(batch.lengths.sum())

    def score(self, split: str, decoder: Decoder | None = None) -> dict:
        utterances = self.splits[split]
        return score(self.model, utterances, decoder or Decoder(self.alphabet), self.alphabet, self.most_frequent)

    def evaluate(self) -> dict:
        result = self.score(self.eval_split)
        return {"cer": result["cer"], "wer": result["wer"]}

    def describe(self) -> tuple[dict, None]:
        return {**self.config.model_settings(), "alphabet": "".join(self.alphabet),
                "most_frequent": self.most_frequent}, None


def score(model: SpeechRecognizer, utterances: Utterances, decoder: Decoder, alphabet: Sequence[str],
          most_frequent: str) -> dict:
    """cer, wer, greedy_cer, greedy_wer, empty_wer, most_frequent_wer, n and decoder on ``utterances``."""
    encode(utterances, alphabet)  # an unknown character is an error, before any work
    log_probs = frame_log_probs(model, utterances.features)
    greedy = Decoder(alphabet)
    greedy_texts = [greedy(lp) for lp in log_probs]
    texts = greedy_texts if decoder.kind == "greedy" else [decoder(lp) for lp in log_probs]
    refs = utterances.texts
    rates, greedy_rates = error_rates(refs, texts), error_rates(refs, greedy_texts)
    return {"n": len(refs), "cer": rates["cer"], "wer": rates["wer"], "greedy_cer": greedy_rates["cer"],
            "greedy_wer": greedy_rates["wer"], "empty_wer": error_rates(refs, [""] * len(refs))["wer"],
            "most_frequent_wer": error_rates(refs, [most_frequent] * len(refs))["wer"], "decoder": decoder.kind}


def train(config: ASRConfig, train_config: TrainConfig, out: str | Path, resume: bool = False,
          console: Console | None = None, progress: bool = True) -> dict:
    """Train into the run directory ``out``; returns the Trainer's summary plus ``test`` (best/ on the test
    split, greedy). Writes ``transcripts.txt`` (the training transcripts, one per line in a seeded
    random order: a text for ``rnnkit lm train`` or a word list) and ``plots/alignment.png``."""
    config.validate()
    console, saved = begin(train_config, out, resume, console)
    splits = load_splits(config, train_config.seed)
    alphabet = alphabet_of(splits["train"].texts)
    if saved is not None:
        alphabet = list(saved.config.get("alphabet", alphabet))
    task = ASRTask(config, splits, alphabet, train_config.seed, torch.device(train_config.device))
    sizes = ", ".join(f"{len(splits[s].texts):,} {s}" for s in SPLITS)
    unit = "utterances" if config.join == 1 else f"examples (train, dev: 1-{config.join} utterances joined)"
    lines = list(splits["train"].texts)
    random.Random(train_config.seed).shuffle(lines)  # an LM's validation split is the file's tail: mix it
    summary = fit(task, train_config, out, resume, console, progress, lambda params: (
        f"asr: {'bi' if config.bidirectional else ''}{config.cell} {config.num_layers}x{config.hidden_size}, "
        f"{config.n_mels} mel bands x {config.frame_stack} frames, {params:,} parameters, alphabet "
        f"{''.join(alphabet)!r}; {sizes} {unit}"),
        on_start=lambda: (Path(out) / "transcripts.txt").write_text("\n".join(lines) + "\n", encoding="utf-8"))
    result = task.score("test")
    write_report(out, NAME, "test", result)
    if splits["test"].texts:
        from ..plots import ctc_alignment

        lp = frame_log_probs(task.model, splits["test"].features[:1])[0]
        ctc_alignment(splits["test"].features[0], lp, alphabet, config.frame_stack, Path(out) / "plots" /
                      "alignment.png", title=f"{splits['test'].names[0]}: {splits['test'].texts[0]!r}")
    console.print(f"test: CER {result['cer']:.4f}, WER {result['wer']:.4f} (greedy; empty output WER "
                  f"{result['empty_wer']:.2f}, most frequent transcript WER {result['most_frequent_wer']:.4f}), "
                  f"n {result['n']}, {finished(summary, out)}", highlight=False)
    return {**summary, "test": {"split": "test", **result}}


# ---------------------------------------------------------------------- a trained model


def read_words(path: str | Path) -> ctc.Lexicon:
    """A word list: the whitespace-separated words of a text file (a transcripts.txt works)."""
    from ..data import read_text

    return ctc.Lexicon(read_text(path).split())


def load_lm(directory: str | Path, device: str = "cpu") -> ctc.CharLM:
    from .lm import TrainedLM

    trained = TrainedLM.load(directory, device)
    if trained.vocab.level != "char":
        raise ValueError(f"{directory}: shallow fusion needs a character language model, this one is "
                         f"{trained.vocab.level}-level")
    return ctc.CharLM(trained.model, trained.vocab.tokens)


class Update(NamedTuple):
    """What live transcription reports: the utterance's text after ``t_audio`` seconds of input audio;
    ``final`` once the utterance has ended."""

    t_audio: float
    text: str
    final: bool


class StreamingSteps:
    """The recognizer over audio that arrives in chunks (1-D samples at ``sample_rate``): ``push(chunk)`` yields
    the CTC log-probabilities (1 + A,) of every step now complete, ``finish()`` the rest; ``reset_state()``
    starts the recurrent state afresh for the steps still to come (a new utterance). The features run on
    (``StreamingLogMel``), normalized by the training set's statistics, ``frame_stack`` frames to a step of
    ``layer.step``."""

    def __init__(self, trained: TrainedASR) -> None:
        model = trained.model
        if model.rnn.bidirectional or trained.config.normalize != "global":
            raise ValueError("streaming needs a unidirectional model trained with normalize='global' (train one "
                             "with `rnnkit asr train --streaming`); this one is "
                             f"{'bidirectional' if model.rnn.bidirectional else 'unidirectional'} with "
                             f"normalize={trained.config.normalize!r}")
        self.model, self.n_mels = model, trained.config.n_mels
        self.features = StreamingLogMel(trained.logmel)
        self.device = next(model.parameters()).device
        self.mean, self.std = model.mean.cpu(), model.std.cpu()
        self.pending = torch.zeros(0, self.n_mels)  # normalized frames not yet stacked
        self.state = None

    def reset_state(self) -> None:
        self.state = None

    def push(self, chunk: Tensor) -> Iterator[Tensor]:
        return self._steps(self.features.push(chunk), final=False)

    def finish(self) -> Iterator[Tensor]:
        return self._steps(self.features.finish(), final=True)

    @torch.no_grad()
    def _steps(self, frames: Tensor, final: bool) -> Iterator[Tensor]:
        k = self.model.stack
        self.pending = torch.cat([self.pending, (frames - self.mean) / self.std])
        if final and len(self.pending) % k:  # as ``SpeechRecognizer.stacked``: zero frames fill the last step
            self.pending = torch.cat([self.pending, self.pending.new_zeros(k - len(self.pending) % k, self.n_mels)])
        while len(self.pending) >= k:
            x = self.pending[:k].reshape(1, k * self.n_mels).to(self.device)  # (1, k M)
            self.pending = self.pending[k:]
            y, self.state = self.model.rnn.step(x, self.state)  # (1, H)
            yield self.model.log_probs(y)[0].cpu()  # (1 + A,)


@dataclass(eq=False, repr=False)
class TrainedASR(Trained):
    """A trained recognizer loaded from a checkpoint: ``transcribe``, ``stream`` and ``evaluate``."""

    task, config_class, what, needs = NAME, ASRConfig, "a speech recognizer", ("alphabet",)

    alphabet: list[str]  # the characters, in the logits' order after the blank
    most_frequent: str  # the most frequent training transcript: the baseline's answer
    logmel: LogMel = field(init=False)  # the front end the model was trained behind

    def __post_init__(self) -> None:
        super().__post_init__()
        self.logmel = front_end(self.config)

    @classmethod
    def read(cls, ckpt: checkpoint.Checkpoint, config: ASRConfig, path: Path) -> tuple[SpeechRecognizer, dict]:
        alphabet = list(ckpt.config["alphabet"])
        return SpeechRecognizer(len(alphabet), config), {"alphabet": alphabet,
                                                         "most_frequent": ckpt.config.get("most_frequent", "")}

    def decoder(self, decoder: str = "greedy", beam: int = 16, lm: str | None = None, lm_weight: float = 0.5,
                insertion_bonus: float = 0.0, words: str | None = None) -> Decoder:
        device = str(next(self.model.parameters()).device)
        return Decoder(self.alphabet, decoder, beam, None if lm is None else load_lm(lm, device), lm_weight,
                       insertion_bonus, None if words is None else read_words(words))

    def log_probs(self, audio: str | Path) -> tuple[Tensor, Tensor]:
        """(features (T, M), CTC log-probabilities (T', 1 + A)) of one audio file."""
        wave, _ = read_audio(audio, self.config.sample_rate)
        features = self.logmel(wave)
        return features, frame_log_probs(self.model, [features])[0]

    def transcribe(self, audio: str | Path, decoder: Decoder | None = None) -> str:
        return (decoder or Decoder(self.alphabet))(self.log_probs(audio)[1])

    def stream_log_probs(self, chunks: Iterable[Tensor]) -> Iterator[Tensor]:
        """CTC log-probabilities (1 + A,) of each step, as soon as the audio of its ``frame_stack`` frames has
        arrived: ``chunks`` are 1-D sample tensors at ``sample_rate``, of any sizes. Concatenated they equal
        ``log_probs`` of the whole file (the same frames, normalization, steps of ``layer.step`` and head)."""
        steps = StreamingSteps(self)
        for chunk in chunks:
            yield from steps.push(chunk)
        yield from steps.finish()

    def stream(self, chunks: Iterable[Tensor]) -> Iterator[str]:
        """Greedy text pieces as the audio arrives: ``chunks`` are 1-D sample tensors at ``sample_rate``."""
        previous = ctc.BLANK
        for log_probs in self.stream_log_probs(chunks):
            label = int(log_probs.argmax())
            if label != previous and label != ctc.BLANK:
                yield self.alphabet[label - 1]
            previous = label

    def live(self, chunks: Iterable[Tensor], input_rate: int, decoder: Decoder | None = None,
             silence_ms: float = 800.0) -> Iterator[Update]:
        """Live transcription: ``chunks`` of 1-D samples at ``input_rate`` (resampled to ``sample_rate`` as they
        come) -> an ``Update`` whenever the utterance's text changes, and a final one when an utterance ends:
        after ``silence_ms`` in which the model emits only blanks (``rnnkit.ctc_stream``; 0: never) and at the
        end of the chunks. Features, steps and decoding are incremental; without an endpoint the final text is
        ``decoder`` on the whole audio's log-probabilities."""
        if silence_ms < 0:
            raise ValueError(f"silence_ms must be >= 0 (0: end utterances only at the end of the stream), got "
                             f"{silence_ms:g}")
        steps = StreamingSteps(self)
        step_ms = 1000 * self.logmel.hop_length * self.model.stack / self.config.sample_rate
        text = (decoder or Decoder(self.alphabet)).streaming(math.ceil(silence_ms / step_ms))
        resampler = None if input_rate == self.config.sample_rate else StreamingResampler(input_rate,
                                                                                          self.config.sample_rate)
        shown, consumed = "", 0  # the text last reported, input samples read

        def decode(step_log_probs: Iterable[Tensor]) -> Iterator[Update]:
            nonlocal shown
            t = consumed / input_rate
            for log_probs in step_log_probs:
                final = text.push(log_probs)
                if final is not None:  # an endpoint: a new utterance starts from the zero state
                    steps.reset_state()
                    yield Update(t, final, True)
                    shown = ""
            if text.text() != shown:
                shown = text.text()
                yield Update(t, shown, False)

        for chunk in chunks:
            consumed += len(chunk)
            yield from decode(steps.push(chunk if resampler is None else resampler.push(chunk)))
        tail = torch.zeros(0) if resampler is None else resampler.finish()
        yield from decode(chain(steps.push(tail), steps.finish()))
        final = text.finish()
        if final or shown:
            yield Update(consumed / input_rate, final, True)

    def evaluate(self, data: str | None = None, split: str = "test", *, decoder: Decoder | None = None,
                 band_rate: int | None = None, tail_ms: float = 0.0, limit: int | None = None) -> dict:
        """cer, wer, greedy_wer, empty_wer, most_frequent_wer and n on a manifest, or on a split of the
        training data (train, dev or test); with ``band_rate`` the audio is first resampled to that rate and
        back, which keeps only what is below ``band_rate / 2`` (8000: the telephone band); with ``tail_ms``
        that much digital silence is appended to every utterance (what a live stream has after a word: a
        unidirectional model may spell a word's last letters only once it has heard the word end); with
        ``limit`` only the first ``limit`` utterances (in the manifest's order) are scored."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be a number of utterances >= 1, got {limit}")
        if tail_ms < 0:
            raise ValueError(f"tail_ms must be >= 0, got {tail_ms:g}")
        steps: list[Callable[[Tensor], Tensor]] = []
        if band_rate is not None:
            steps.append(partial(band_limit, sample_rate=self.config.sample_rate, band_rate=band_rate))
        if tail_ms:
            silence = torch.zeros(round(tail_ms * self.config.sample_rate / 1000))
            steps.append(lambda wave: torch.cat([wave, silence]))
        if steps and data is None and not (split == "test" and (self.config.test_data or self.config.data == SYNTH)):
            raise ValueError(f"{'band_rate' if band_rate is not None else 'tail_ms'} needs the audio of a manifest: "
                             "give --data, or score the test split of a run trained with --test-data or --data synth")

        def perturb(wave: Tensor) -> Tensor:
            for step in steps:
                wave = step(wave)
            return wave
        if data is not None:
            utterances = load_manifest(data, self.logmel, perturb if steps else None, limit)
            split = str(data)
        else:
            check_split(split)
            if split == "test" and self.config.data is not None and (self.config.test_data or
                                                                     self.config.data == SYNTH):
                test_data = self.config.test_data or synth_manifests()[1]  # no need to load the training audio
                utterances = load_manifest(test_data, self.logmel, perturb if steps else None, limit)
            else:
                whole = load_splits(self.config, self._seed())[split]
                utterances = Utterances(whole.features[:limit], whole.texts[:limit], whole.names[:limit], whole.source)
        result = score(self.model, utterances, decoder or Decoder(self.alphabet), self.alphabet, self.most_frequent)
        return {"task": NAME, "split": split, **result}

    def _seed(self) -> int:
        train = checkpoint.load(self.path).config.get("train") or {}
        return int(train.get("seed", 0))


# ---------------------------------------------------------------------- the task's SPEC (rnnkit.tasks.registry)

@dataclass
class DecoderArgs:
    decoder: str | None = field(default=None, metadata={"help": "greedy, or CTC prefix beam search (default: beam "
                                                                "when --lm or --words is given)",
                                                        "choices": ("greedy", "beam")})
    beam: int = field(default=16, metadata={"help": "beam width"})
    lm: str | None = field(default=None, metadata={"help": "a character language model's run or checkpoint "
                                                           "directory (rnnkit lm train) for shallow fusion"})
    lm_weight: float = field(default=0.5, metadata={"help": "weight of the LM's log-probability"})
    insertion_bonus: float = field(default=0.0, metadata={"help": "added to the score per character, against the "
                                                                  "LM's bias to short texts"})
    words: str | None = field(default=None, metadata={"help": "a word list (whitespace-separated words; a run's "
                                                              "transcripts.txt works): only its words are spelled"})

    def build(self, trained: TrainedASR) -> Decoder:
        kind = self.decoder or ("beam" if self.lm or self.words else "greedy")
        return trained.decoder(kind, self.beam, self.lm, self.lm_weight, self.insertion_bonus, self.words)


@dataclass
class EvaluateArgs(DecoderArgs, SplitArgs):
    data: str | None = field(default=None, metadata={"help": "a manifest to score (default: --split of the training "
                                                             "data)"})
    band_rate: int | None = field(default=None, metadata={"help": "resample the audio to this rate and back before "
                                                                  "scoring (8000: the 4 kHz telephone band)"})
    tail_ms: float = field(default=0.0, metadata={"help": "append this many milliseconds of silence to every "
                                                          "utterance before scoring (what a live stream has after a "
                                                          "word)"})
    limit: int | None = field(default=None, metadata={"help": "score only the first N utterances (default: all)",
                                                      "metavar": "N"})


@dataclass
class TranscribeArgs(DecoderArgs):
    audio: list | None = field(default=None, metadata={"help": "audio files (WAV, FLAC, OGG)", "nargs": "*"})
    stream: str | None = field(default=None, metadata={
        "help": "transcribe live from this pipe ('-': standard input) or FIFO as the audio arrives: 16-bit "
                "little-endian mono PCM, raw or with a WAV header (a unidirectional model, `asr train --streaming`)",
        "metavar": "SOURCE"})
    input_rate: int | None = field(default=None, metadata={"help": "sample rate of raw PCM with --stream (default: "
                                                                   "the model's; a WAV header gives its own)"})
    chunk_ms: float = field(default=100.0, metadata={"help": "with --stream, read and decode the audio in chunks "
                                                             "of this many milliseconds"})
    silence_ms: float = field(default=800.0, metadata={"help": "with --stream, end an utterance (print it, start "
                                                               "afresh) after this many milliseconds in which the "
                                                               "model hears no speech (only CTC blanks); 0: never"})
    alignment: str | None = field(default=None, metadata={"help": "write a PNG of the first file's spectrogram and "
                                                                  "CTC alignment here"})


def run_evaluate(trained: TrainedASR, args: EvaluateArgs, as_json: bool) -> dict:
    """``rnnkit asr evaluate``: ``evaluate`` with the decoder the flags build."""
    return trained.evaluate(args.data, args.split, decoder=args.build(trained), band_rate=args.band_rate,
                            tail_ms=args.tail_ms, limit=args.limit)


def run_transcribe(trained: TrainedASR, args: TranscribeArgs, as_json: bool) -> None:
    """``rnnkit asr transcribe``: path and text, one line per file (one JSON object with --json); with
    ``--stream SOURCE`` the live text of a pipe (``print_live``)."""
    if (args.stream is None) == (not args.audio):
        raise ValueError("give audio files or --stream SOURCE (a pipe, '-' for standard input), not "
                         f"{'both' if args.audio else 'neither'}")
    if args.stream is None and args.input_rate is not None:
        raise ValueError("--input-rate is the rate of raw PCM read with --stream; a file gives its own")
    if args.stream is not None and args.alignment:
        raise ValueError("--alignment plots a file's alignment: give audio files, not --stream")
    decoder = args.build(trained)
    if args.stream is not None:
        return stream_source(trained, args, decoder, as_json)
    for number, path in enumerate(args.audio):
        features, log_probs = trained.log_probs(path)
        text = decoder(log_probs)
        print(json.dumps({"path": str(path), "text": text}) if as_json else f"{path}\t{text}")
        if number == 0 and args.alignment:
            from ..plots import ctc_alignment

            plot = ctc_alignment(features, log_probs, trained.alphabet, trained.model.stack, args.alignment)
            print(f"alignment: {plot}", file=sys.stderr)


def stream_source(trained: TrainedASR, args: TranscribeArgs, decoder: Decoder, as_json: bool) -> None:
    """Reads ``args.stream`` as it arrives and prints ``TrainedASR.live``'s updates (``print_live``)."""
    StreamingSteps(trained)  # a model that cannot stream is refused before anything is read
    if args.stream != "-" and not Path(args.stream).exists():
        raise AudioError(f"{args.stream}: no such pipe or file to stream from")
    start = time.monotonic()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per step the ops are tiny: a second thread only waits (see _featurize)
    try:
        with (open(args.stream, "rb") if args.stream != "-" else contextlib.nullcontext(sys.stdin.buffer)) as source:
            reader = PCMReader(source, args.input_rate, trained.config.sample_rate,
                               "standard input" if args.stream == "-" else args.stream)
            chunk = max(1, round(reader.rate * args.chunk_ms / 1000))
            print_live(trained.live(reader.chunks(chunk), reader.rate, decoder, args.silence_ms), as_json,
                       sys.stdout.isatty(), start)
    except KeyboardInterrupt:  # Ctrl-C is how a live microphone stream ends: the line shown stays, no traceback
        print(file=sys.stderr)
    finally:
        torch.set_num_threads(threads)


def print_live(updates: Iterable[Update], as_json: bool, terminal: bool, start: float) -> None:
    """With ``as_json`` one JSON line per update: ``{"t_audio", "t_wall" (seconds since ``start``), "text",
    "final"}``; on a terminal one line rewritten as the text changes, ended by the final text; else (a pipe
    or file) the final texts only, one line per utterance."""
    for update in updates:
        if as_json:
            print(json.dumps({"t_audio": round(update.t_audio, 3), "t_wall": round(time.monotonic() - start, 3),
                              "text": update.text, "final": update.final}), flush=True)
        elif terminal:
            print(f"\r\x1b[K{update.text}", end="\n" if update.final else "", flush=True)
        elif update.final:
            print(update.text, flush=True)


SPEC = TaskSpec(NAME, "speech recognition with a bidirectional RNN and CTC: train, evaluate, transcribe", ASRConfig,
                train, TrainedASR.load, train_help="train a recognizer (default: the bundled spoken-digit subset)",
                train_defaults=ASR_TRAIN_DEFAULTS,
                export="its frame stacking pads the time axis by an amount computed in Python from T, which a file "
                       "traced at one length would keep",
                verbs={"evaluate": Verb("CER and WER beside the empty-output and most-frequent-transcript baselines",
                                        EvaluateArgs, run_evaluate),
                       "transcribe": Verb("the text of audio files, or live from a pipe (--stream -)", TranscribeArgs,
                                          run_transcribe, json="print one JSON object per file; with --stream, "
                                          "one per change of the text and one per finished utterance")})
