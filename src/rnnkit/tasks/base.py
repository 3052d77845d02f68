"""What every task does the same way: the training skeleton and the loading skeleton.

Training (each task's ``train()``)::

    config.validate()
    console, saved = begin(train_config, out, resume, console)            # seed; last/ when resuming
    ... the task's data, reusing saved.vocab / saved.config when resuming ...
    summary = fit(task, train_config, out, resume, console, progress, describe)  # Trainer, fit, best/ back
    ... score the test split ...                                           # SPLITS, check_split
    write_report(out, NAME, "test", result)                                # test.json
    console.print(f"test: ... {finished(summary, out)}")

Loading (``Trained.load``, which each task's trained object inherits)::

    path, ckpt, config = open_checkpoint(directory, Config, device, what="a classifier", task=NAME,
                                         needs=("labels",))                # it is the task's, with what it reads
    model, parts = cls.read(ckpt, config, path)                            # the task's own: model and parts
    return cls(load_weights(model.to(device), ckpt, path), config, path, **parts)

A task keeps only what is its own: its data, its one-line description, its scores.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar

from rich.console import Console
from torch import nn

from ..console import make_console
from ..train import checkpoint
from ..train.trainer import TrainConfig, Trainer, TrainingTask, seed_everything

ConfigT = TypeVar("ConfigT")
TrainedT = TypeVar("TrainedT", bound="Trained")
SPLITS = ("train", "dev", "test")  # the splits of a task's own data, which evaluate(split=) scores


# ---------------------------------------------------------------------- training


def begin(train_config: TrainConfig, out: str | Path, resume: bool, console: Console | None
          ) -> tuple[Console, checkpoint.Checkpoint | None]:
    """The start of every ``train()`` (after the task's ``config.validate()``): seed every generator with
    ``train_config.seed`` before any data is drawn.

    Returns the console (``console``, or a new one) and, when resuming a run whose ``last/`` exists,
    that checkpoint: what the data must reuse (a vocabulary, the labels) so the weights still fit.
    Without ``last/`` the Trainer says that there is nothing to resume.
    """
    console = console or make_console()
    seed_everything(train_config.seed)
    last = Path(out) / "last"
    return console, checkpoint.load(last) if resume and last.exists() else None


def fit(task: TrainingTask, train_config: TrainConfig, out: str | Path, resume: bool, console: Console,
        progress: bool, describe: Callable[[int], str], reload_best: bool = True,
        on_start: Callable[[], None] | None = None) -> dict:
    """Build the Trainer over ``task``, print ``describe(number of parameters)``, train, and load ``best/``
    back into ``task.model`` (the checkpoint the task's dev metric chose), so the test split that follows is
    scored by it. Returns the Trainer's summary.

    ``on_start`` runs once the Trainer has claimed the run directory (it refuses one that holds a run unless
    resuming), before the first step: where a task writes a file of its own there.
    """
    trainer = Trainer(task, train_config, out, resume=resume, console=console, progress=progress)
    console.print(describe(sum(p.numel() for p in task.model.parameters())), highlight=False)
    if on_start is not None:
        on_start()
    summary = trainer.fit()
    best = Path(out) / "best"
    if reload_best and best.exists():
        task.model.load_state_dict(checkpoint.load(best).model)
    return summary


def write_report(out: str | Path, task: str, split: str, *results: dict, file: str | None = None) -> Path:
    """``file`` (default ``{split}.json``) in the run directory: one JSON line ``{"task", "split", **result}`` per
    result (one per decoder where a task scores several)."""
    path = Path(out) / (file or f"{split}.json")
    path.write_text("".join(json.dumps({"task": task, "split": split, **r}) + "\n" for r in results))
    return path


def finished(summary: dict, out: str | Path) -> str:
    """The end of every ``train()``'s last line: how long it trained and where the run directory is."""
    return f"after {summary['step']} steps, {summary['elapsed_s'] / 60:.1f} min; run directory {out}"


def check_split(split: str) -> None:
    """Raise ValueError unless ``split`` is one of SPLITS."""
    if split not in SPLITS:
        raise ValueError(f"split must be train, dev or test, got {split!r}")


def scores_training_split(data: str | Path | None, split: str, trained_on: str | Path | None) -> bool:
    """Whether ``evaluate(data, split)`` scores ``split`` of the data the run trained on (``trained_on``, None
    for the bundled data): no file given, or that same file. False: ``data`` is another file, scored whole.
    A ``split`` not in SPLITS is a ValueError either way."""
    check_split(split)
    return data is None or (trained_on is not None and Path(data).resolve() == Path(trained_on).resolve())


# ---------------------------------------------------------------------- loading


class Opened(NamedTuple):
    path: Path  # the checkpoint directory (a run directory resolved to best/, else last/)
    ckpt: checkpoint.Checkpoint
    config: Any  # the task's Config, from config.json


def config_from(saved: dict, config_class: type[ConfigT]) -> ConfigT:
    """The task's Config from a saved config.json: its own fields only (the file also holds the task name, the
    labels, the versions, the Trainer's config); a field the run predates takes its default."""
    names = {f.name for f in fields(config_class)}
    return config_class(**{k: v for k, v in saved.items() if k in names})


def open_checkpoint(directory: str | Path, config_class: type, device: str = "cpu", *, what: str,
                    task: str | None = None, needs: Sequence[str] = (), vocab: Sequence[str] | None = None) -> Opened:
    """Read a task's checkpoint (``directory``: a checkpoint or a run directory) and check it is the task's and
    holds what the task needs before anything is built from it.

    ``what`` names the model for messages ("a classifier"); ``task``: the name config.json's "task" must have
    (None: not checked); ``needs``: the config.json keys the task reads; ``vocab``: the vocab.json keys it
    reads (``()``: vocab.json must exist; None: it is not read).
    """
    path = checkpoint.resolve(directory)
    ckpt = checkpoint.load(path, map_location=device)
    if task is not None and ckpt.config.get("task") != task:
        raise checkpoint.CheckpointError(f"{path}: config.json names task {ckpt.config.get('task')!r}, not "
                                         f"{task!r}")
    if any(key not in ckpt.config for key in needs):
        raise checkpoint.CheckpointError(f"{path}: config.json lacks the {' or '.join(needs)} of {what}")
    if vocab is not None and (ckpt.vocab is None or not set(vocab) <= set(ckpt.vocab)):
        held = f" with the {', '.join(vocab)}" if vocab else ""
        raise checkpoint.CheckpointError(f"{path} lacks vocab.json{held} of {what}")
    return Opened(path, ckpt, config_from(ckpt.config, config_class))


def load_weights(model: nn.Module, ckpt: checkpoint.Checkpoint, path: Path) -> nn.Module:
    """``model`` (built from the checkpoint's config) with the checkpoint's weights; weights that do not fit it
    are a CheckpointError that names the tensors whose shape differs, the missing and the unexpected ones."""
    expected = model.state_dict()
    mismatched = [k for k, v in ckpt.model.items() if k in expected and v.shape != expected[k].shape]
    missing, unexpected = sorted(set(expected) - set(ckpt.model)), sorted(set(ckpt.model) - set(expected))
    if mismatched or missing or unexpected:
        described = "config.json and vocab.json describe" if ckpt.vocab is not None else "config.json describes"
        raise checkpoint.CheckpointError(f"{path}: the weights do not fit the model its {described} (shape "
                                         f"differs: {mismatched[:3]}, missing: {missing[:3]}, unexpected: "
                                         f"{unexpected[:3]})")
    model.load_state_dict(ckpt.model)
    return model


# eq=False, repr=False: a model and a vocabulary compared or printed field by field would mean every weight
@dataclass(eq=False, repr=False)
class Trained:
    """A trained task model, loaded from a checkpoint by ``load``: the loading skeleton of every task.

    Each task's trained object is a dataclass that subclasses this one: its own fields, after these three, are
    what the task reads back from the run besides the Config and the weights (a vocabulary, the labels, a
    baseline's answer); its class attributes say what ``load`` opens; ``read`` builds the untrained model and
    those fields from the checkpoint::

        @dataclass(eq=False, repr=False)
        class TrainedLM(Trained):
            task, config_class, what, vocab_keys = NAME, LMConfig, "a language model", ()

            vocab: Vocab

            @classmethod
            def read(cls, ckpt, config, path):
                vocab = Vocab.from_json(ckpt.vocab)
                return LanguageModel(len(vocab), config), {"vocab": vocab}
    """

    model: nn.Module  # put in eval mode
    config: Any  # the task's Config, from config.json
    path: Path  # the checkpoint directory it was loaded from

    task: ClassVar[str]  # the task's name: config.json's "task" must be it
    config_class: ClassVar[type]  # the task's Config dataclass
    what: ClassVar[str]  # the model in messages: "a classifier"
    needs: ClassVar[Sequence[str]] = ()  # config.json keys read besides the Config's fields
    vocab_keys: ClassVar[Sequence[str] | None] = None  # vocab.json keys read (``()``: only that it exists; None: none)

    def __post_init__(self) -> None:
        self.model.eval()

    @classmethod
    def read(cls, ckpt: checkpoint.Checkpoint, config: Any, path: Path) -> tuple[nn.Module, dict[str, Any]]:
        """The untrained model the checkpoint's config.json (and vocab.json) describe, and the subclass's own
        fields, by name, from the same files; ``path`` (the checkpoint directory) for messages."""
        raise NotImplementedError(f"{cls.__name__} must say how to build its model from a checkpoint (read)")

    @classmethod
    def load(cls: type[TrainedT], directory: str | Path, device: str = "cpu") -> TrainedT:
        """The trained model in ``directory`` (a checkpoint, or a run directory: best/, else last/) on ``device``.
        A checkpoint of another task, or one that lacks what the task reads, is a CheckpointError."""
        path, ckpt, config = open_checkpoint(directory, cls.config_class, device, what=cls.what, task=cls.task,
                                             needs=cls.needs, vocab=cls.vocab_keys)
        model, parts = cls.read(ckpt, config, path)
        return cls(load_weights(model.to(device), ckpt, path), config, path, **parts)
