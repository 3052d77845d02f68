"""Multivariate sequence classification: ``rnnkit speech train | evaluate | predict``, shown on JapaneseVowels.

Not only speech: any multivariate series with a label per case (spoken vowels' cepstra, a smartwatch's
accelerometer and gyroscope, a user's UEA ``.ts`` set). The command keeps the name ``speech`` because
run directories record it as their task and the README's commands use it (docs/architecture.md).

Data (``--data``): ``japanese_vowels`` (the default), ``basicmotions``, or a user's
``NAME_TRAIN.ts`` (or ``.ts.gz``) file whose test split ``NAME_TEST.ts`` (``.ts.gz``) sits
beside it, as the UEA/UCR archive names them.

The default: the UCI JapaneseVowels set (Kudo, Toyama & Shimbo 1999; CC BY 4.0), bundled from the aeon
1.6.0 wheel (``rnnkit.data``, SOURCES.md): nine male speakers each utter the vowels /ae/; a case
is 7-29 frames of 12 LPC cepstrum coefficients, the label the speaker. The standard split:
270 training cases, 370 test cases. A seeded ``dev_fraction`` of the training cases is held
out to pick the best checkpoint; the test split is scored once, at the end.

``basicmotions``: the UEA archive's BasicMotions (Bagnall et al. 2018), also from the aeon
1.6.0 wheel: four students wore a smartwatch while standing, walking, running and playing
badminton; a case is 100 steps (10 s at 10 Hz) of 6 channels (3-axis accelerometer and
gyroscope), the label the activity; 40 training and 40 test cases, 10 per activity each.

Model: per-feature standardization (mean and std of the training frames, stored in the
checkpoint) -> ``rnnkit.Recurrent`` over a padded batch with its lengths -> pooling over the
valid steps (the classify task's ``last`` / ``mean`` / ``max`` / ``attention``) -> dropout ->
linear head over the C labels. Metrics, pooling and the resumable batch stream are the
classify task's (``rnnkit.tasks.classify``).

The files are sktime ``.ts`` text: header lines starting with ``@`` (``@data`` ends the
header), then one case per line: the dimensions separated by ``:``, each a comma-separated
series, the class label last.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import torch
from rich.console import Console
from torch import Tensor

from ..data.batching import hold_out
from ..data.text import numbered_lines
from ..recurrent import Recurrent
from ..train import checkpoint
from ..train.trainer import TrainConfig
from .base import SPLITS, begin, check_split, finished, fit, write_report
from .fields import ExampleFields, LayerFields, TaskConfig, check_fractions, check_ints, with_defaults
from .registry import SplitArgs, TaskSpec, Verb
from .sequence_classification import (
    PooledClassifier,
    PoolingFields,
    Prediction,
    SequenceClassificationTask,
    TrainedSequenceClassifier,
)

NAME = "speech"
# name -> (the set's own name, its train and test files in rnnkit.data); see SOURCES.md
BUNDLED = {"japanese_vowels": ("JapaneseVowels", {"train": "japanese_vowels_train.ts.gz",
                                                  "test": "japanese_vowels_test.ts.gz"}),
           "basicmotions": ("BasicMotions", {"train": "basic_motions_train.ts.gz",
                                             "test": "basic_motions_test.ts.gz"})}
BUNDLED_FILES = BUNDLED["japanese_vowels"][1]
# The dev share by set when --dev-fraction is not given: BasicMotions' 40 training cases leave a 6-case dev split
# that cannot tell checkpoints apart (it sat at 5/6 from step 100 on, and the test accuracy of the checkpoint it
# picked ranged 0.825-0.95 over three seeds, against 0.975 in all three when no case is held out and the training
# cases pick it: docs/results.md). A user's own files get USER_DEV_FRACTION.
DEV_FRACTION = {"japanese_vowels": 0.15, "basicmotions": 0.0}
USER_DEV_FRACTION = 0.15
SPEECH_TRAIN_DEFAULTS = {"lr": 3e-3, "eval_every": 50, "checkpoint_every": 50, "warmup_steps": 30,
                         "weight_decay": 0.05, "steps": 600}


@dataclass
@with_defaults(cell="gru", hidden_size=64, pooling="mean", head_dropout=0.3, batch_size=32)
class SpeechConfig(TaskConfig, ExampleFields, PoolingFields, LayerFields):
    """The sequence classifier; defaults tuned for JapaneseVowels on 2 CPU cores."""

    unit, units = "case", "cases"

    data: str | None = field(default=None, metadata={"help": "a bundled set, japanese_vowels (the default) or "
                                                             "basicmotions, or a NAME_TRAIN.ts file with its "
                                                             "NAME_TEST.ts beside it"})
    dev_fraction: float | None = field(default=None, metadata={"help": "the seeded share of the training cases "
                                                                       "held out to pick the best checkpoint "
                                                                       "(default: the set's DEV_FRACTION, 0.15 for "
                                                                       "your own files)"})
    input_noise: float = field(default=0.1, metadata={"help": "std of Gaussian noise on the standardized frames "
                                                              "in training (270 cases overfit fast)"})

    def validate(self) -> None:
        check_data(self.data)
        self.check_pooling()
        check_ints(self, ("hidden_size", "num_layers", "batch_size"))
        if self.dev_fraction is not None:
            check_fractions(self, ("dev_fraction",))
        if self.input_noise < 0:
            raise ValueError(f"input_noise must be >= 0, got {self.input_noise!r}")


# ---------------------------------------------------------------------- data


class Cases(NamedTuple):
    """The cases of one .ts file: each a (T, F) float tensor, with its label."""

    series: list[Tensor]  # each (T_i, F)
    labels: list[str]
    source: str


def parse_ts(text: str, source: str) -> Cases:
    """The cases of an sktime ``.ts`` text (see the module notes); a malformed line is an error naming it."""
    series: list[Tensor] = []
    labels: list[str] = []
    in_data = False
    dims = None
    for number, raw in numbered_lines(text):
        line = raw.strip()
        if line.startswith("#"):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise ValueError(f"{source} line {number}: expected a header line starting with '@' before @data")
            if line.lower() == "@data":
                in_data = True
            continue
        *parts, label = line.split(":")
        label = label.strip()
        if not parts or not label:
            raise ValueError(f"{source} line {number}: expected dimensions separated by ':' and a class label last")
        if dims is not None and len(parts) != dims:
            raise ValueError(f"{source} line {number}: {len(parts)} dimensions, the lines before have {dims}")
        dims = len(parts)
        try:
            values = [[float(v) for v in part.split(",")] for part in parts]
        except ValueError as error:
            raise ValueError(f"{source} line {number}: not a number ({error})") from None
        lengths = {len(v) for v in values}
        if len(lengths) != 1:
            raise ValueError(f"{source} line {number}: its dimensions differ in length ({sorted(lengths)})")
        frames = torch.tensor(values, dtype=torch.float32).t()  # (T, F)
        if not torch.isfinite(frames).all():
            raise ValueError(f"{source} line {number}: missing or non-finite values")
        series.append(frames)
        labels.append(label)
    if not series:
        raise ValueError(f"{source} has no cases (no @data line, or nothing after it)")
    return Cases(series, labels, source)


def check_data(data: str | None) -> None:
    """``data`` names a bundled set or a ``NAME_TRAIN.ts[.gz]`` file (not checked for existence here)."""
    if data is None or data in BUNDLED:
        return
    if not isinstance(data, str) or not (data.endswith("_TRAIN.ts") or data.endswith("_TRAIN.ts.gz")):
        raise ValueError(f"data must be a bundled set ({', '.join(BUNDLED)}) or a NAME_TRAIN.ts file with its "
                         f"NAME_TEST.ts beside it, got {data!r}")


def data_name(data: str | None) -> str:
    """What the console calls the data: JapaneseVowels, BasicMotions, or the file's NAME."""
    if data is None or data in BUNDLED:
        return BUNDLED[data or "japanese_vowels"][0]
    return Path(data).name.rsplit("_TRAIN.ts", 1)[0]


def load_bundled(split: str, name: str = "japanese_vowels") -> Cases:
    """A bundled set's ``train`` or ``test`` split: JapaneseVowels 270 / 370 cases, BasicMotions 40 / 40."""
    if name not in BUNDLED:
        raise ValueError(f"name must be one of {', '.join(BUNDLED)}, got {name!r}")
    title, files = BUNDLED[name]
    packed = resources.files("rnnkit.data").joinpath(files[split]).read_bytes()
    return parse_ts(gzip.decompress(packed).decode("utf-8"), f"bundled {title} {split}")


def load_file(path: str | Path) -> Cases:
    """The cases of a ``.ts`` or gzipped ``.ts.gz`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such .ts file: {path}")
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path} is not a complete gzip file ({e}); expected a gzipped .ts file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start}); a .ts file is "
                         "text: re-save it as UTF-8") from None
    return parse_ts(text, str(path))


def load_data(data: str | None, split: str) -> Cases:
    """The ``train`` or ``test`` cases of ``data`` (see :func:`check_data`); NAME_TEST.ts sits beside NAME_TRAIN.ts."""
    check_data(data)
    if data is None or data in BUNDLED:
        return load_bundled(split, data or "japanese_vowels")
    return load_file(data if split == "train" else "_TEST.ts".join(data.rsplit("_TRAIN.ts", 1)))


def load_splits(dev_fraction: float, seed: int = 0, data: str | None = None) -> dict[str, Cases]:
    """train, dev (a seeded ``dev_fraction`` of the training cases) and test of ``data`` (default JapaneseVowels)."""
    train, test = load_data(data, "train"), load_data(data, "test")
    dims = {s.shape[1] for s in train.series + test.series}
    if len(dims) != 1:
        raise ValueError(f"{train.source} and {test.source} differ in their number of dimensions ({sorted(dims)})")
    kept, held = hold_out(len(train.series), dev_fraction, seed, f"case(s) of {train.source}")
    pick = lambda indices: Cases([train.series[i] for i in indices], [train.labels[i] for i in indices],  # noqa: E731
                                 train.source)
    return {"train": pick(kept), "dev": pick(held), "test": test}


# ---------------------------------------------------------------------- the model


class SequenceClassifier(PooledClassifier):
    """Standardize -> Recurrent (with lengths) -> pooling -> Linear.

    forward(x (T, B, F) raw frames, lengths (B,)) -> logits (B, C)
    """

    def __init__(self, num_features: int, num_labels: int, config: SpeechConfig) -> None:
        super().__init__()
        self.input_noise = config.input_noise
        # buffers, so the training split's statistics travel in the checkpoint's weights
        self.register_buffer("mean", torch.zeros(num_features))  # (F,)
        self.register_buffer("std", torch.ones(num_features))  # (F,)
        self.rnn = Recurrent(config.cell, num_features, config.hidden_size, config.num_layers,
                             dropout=config.dropout, bidirectional=config.bidirectional)
        self.build_head(config.hidden_size * self.rnn.num_directions, num_labels, config)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        T = x.shape[0]
        valid = torch.arange(T, device=x.device)[:, None] < lengths.to(x.device)[None, :]  # (T, B)
        x = (x - self.mean) / self.std  # (T, B, F)
        if self.training and self.input_noise > 0:
            x = x + self.input_noise * torch.randn_like(x)
        x = x * valid[..., None]  # padding stays zero
        out, state = self.rnn(x, lengths=lengths)  # (T, B, D*H)
        return self.classify(out, state, lengths)  # (B, C)


def check_labels(cases: Cases, known: Sequence[str]) -> None:
    unseen = sorted(set(cases.labels) - set(known))
    if unseen:
        raise ValueError(f"{cases.source} has label(s) never seen in training: {', '.join(map(repr, unseen[:5]))} "
                         f"(first at case {cases.labels.index(unseen[0]) + 1})")


# ---------------------------------------------------------------------- training


class SpeechTask(SequenceClassificationTask):
    """The Trainer's view of the speech classifier: sequences of feature frames."""

    name = NAME

    def __init__(self, config: SpeechConfig, splits: dict[str, Cases], labels: list[str], seed: int,
                 device: torch.device) -> None:
        self.config, self.splits = config, splits
        self.set_data({s: c.series for s, c in splits.items()}, {s: c.labels for s, c in splits.items()}, labels)
        frames = torch.cat(splits["train"].series)  # (sum T, F)
        self.model = SequenceClassifier(frames.shape[1], len(labels), config).to(device)
        self.model.mean.copy_(frames.mean(0))
        self.model.std.copy_(frames.std(0).clamp(min=1e-6))
        self.stream = self.shuffled_stream(config.batch_size, seed, device)

    def describe(self) -> tuple[dict, None]:
        return {**self.config.model_settings(), "labels": self.labels, "majority": self.labels[self.majority],
                "num_features": int(self.model.mean.numel())}, None


def train(config: SpeechConfig, train_config: TrainConfig, out: str | Path, resume: bool = False,
          console: Console | None = None, progress: bool = True) -> dict:
    """Train on ``config.data`` (default the bundled JapaneseVowels) into the run directory ``out``; returns the
    Trainer's summary plus ``test`` (the best checkpoint, chosen on dev, scored on the test split)."""
    config.validate()
    if config.dev_fraction is None:  # config.json records the share used
        config = replace(config, dev_fraction=DEV_FRACTION.get(config.data or "japanese_vowels", USER_DEV_FRACTION))
    console, saved = begin(train_config, out, resume, console)
    splits = load_splits(config.dev_fraction, data=config.data)
    labels = sorted(set(splits["train"].labels), key=lambda y: (len(y), y))
    if saved is not None:
        labels = saved.config.get("labels", labels)
    for s in ("dev", "test"):
        check_labels(splits[s], labels)
    task = SpeechTask(config, splits, labels, train_config.seed, torch.device(train_config.device))
    sizes = ", ".join(f"{len(splits[s].series):,} {s}" for s in SPLITS)
    summary = fit(task, train_config, out, resume, console, progress, lambda params: (
        f"speech: {'bi' if config.bidirectional else ''}{config.cell} {config.num_layers}x{config.hidden_size}, "
        f"{config.pooling} pooling, {params:,} parameters, {len(labels)} labels; {sizes} cases of "
        f"{data_name(config.data)}"))
    result, _ = task.score("test")
    write_report(out, NAME, "test", result)
    console.print(f"test: accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f} (majority class "
                  f"{result['majority_accuracy']:.4f}), n {result['n']}, {finished(summary, out)}", highlight=False)
    return {**summary, "test": {"split": "test", **result}}


# ---------------------------------------------------------------------- a trained model


@dataclass(eq=False, repr=False)
class TrainedSpeech(TrainedSequenceClassifier):
    """A trained sequence classifier loaded from a checkpoint: ``predict`` and ``evaluate``."""

    task, config_class, what, needs = NAME, SpeechConfig, "a speech model", ("labels", "num_features")

    @classmethod
    def read(cls, ckpt: checkpoint.Checkpoint, config: SpeechConfig, path: Path) -> tuple[SequenceClassifier, dict]:
        labels = list(ckpt.config["labels"])
        return SequenceClassifier(int(ckpt.config["num_features"]), len(labels), config), {
            "labels": labels, "majority": ckpt.config.get("majority", labels[0])}

    def predict(self, series: Sequence[Tensor]) -> list[Prediction]:
        """The most likely label of each (T, F) sequence of raw frames, with its probability and every label's."""
        series = list(series)
        features = int(self.model.mean.numel())
        for i, s in enumerate(series):
            if s.dim() != 2 or s.shape[1] != features:
                raise ValueError(f"series[{i}] must be (T, {features}) frames, got shape {tuple(s.shape)}")
        return self.predict_sequences(series)

    def evaluate(self, data: str | None = None, split: str = "test") -> dict:
        """accuracy, macro_f1, majority_accuracy and n on ``split`` (train, dev or test) of ``data``, by default
        the data the model was trained on."""
        check_split(split)
        cases = load_splits(self.config.dev_fraction, data=data if data is not None else self.config.data)[split]
        check_labels(cases, self.labels)
        features = int(self.model.mean.numel())
        if cases.series[0].shape[1] != features:
            raise ValueError(f"{cases.source} has {cases.series[0].shape[1]} dimensions, the model was trained on "
                             f"{features}")
        return {"task": NAME, "split": split, **self.score_sequences(cases.series, cases.labels)[0]}


# ---------------------------------------------------------------------- the task's SPEC (rnnkit.tasks.registry)

@dataclass
class EvaluateArgs(SplitArgs):
    data: str | None = field(default=None, metadata={"help": "japanese_vowels, basicmotions or a NAME_TRAIN.ts file "
                                                             "(default: the data the model was trained on)"})


@dataclass
class PredictArgs:
    file: str = field(default="", metadata={"help": "a .ts or .ts.gz file (sktime format, a label last on each line "
                                                    "as the archive writes it; it is printed beside the prediction)",
                                            "nargs": None, "metavar": "FILE"})


def run_predict(trained: TrainedSpeech, args: PredictArgs, as_json: bool) -> None:
    """``rnnkit speech predict FILE``: label and probability, one line per case, then the file's own label."""
    cases = load_file(args.file)
    for given, prediction in zip(cases.labels, trained.predict(cases.series)):
        print(f"{prediction.label}\t{prediction.probability:.4f}\t{given}")


def export_spec(model, trained: TrainedSpeech, what: str):
    """``rnnkit export``: (x, lengths) -> logits, x the raw frames."""
    from ..export import Flat, Port, Spec, random_features, swap_layers

    call = lambda m, x, lengths: (m(x, lengths),)  # noqa: E731
    F = model.mean.shape[0]
    inputs = [Port("x", ("time", "batch", str(F))), Port("lengths", ("batch",), torch.int64)]
    outputs = [Port("logits", ("batch", str(len(trained.labels))))]
    return Spec(Flat(swap_layers(model, lengths=True), call), Flat(model, call), random_features(F, True),
                inputs, outputs, what, notes=[f"labels in logit order: {', '.join(trained.labels)}",
                             "x: raw frames (the model standardizes them with the training statistics)"])


SPEC = TaskSpec(NAME, "multivariate sequence classification (spoken vowels, accelerometer motions, any UEA .ts "
                "set): train, evaluate, predict", SpeechConfig, train, TrainedSpeech.load,
                train_help="train a multivariate sequence classifier (default: the bundled JapaneseVowels; "
                "--data basicmotions: accelerometer and gyroscope)",
                train_defaults=SPEECH_TRAIN_DEFAULTS, export=export_spec,
                verbs={"evaluate": Verb("accuracy and macro-F1 beside the majority-class baseline", EvaluateArgs),
                       "predict": Verb("the label and its probability for every case of a .ts file", PredictArgs,
                                       run_predict, json=None)})
