"""What the task Configs share: ``model_settings``, the checks their ``validate`` repeats, and field groups.

Every task's Config is a dataclass whose fields become CLI flags (the ``help`` in each field's metadata) and
whose ``model_settings()`` is what ``config.json`` records. The checks below give every task the same error
message for the same mistake (``hidden_size must be a positive int, got 0``). A field group is a dataclass base
that declares fields with the same name, meaning and help in every task that has them (``LayerFields``:
``--cell``, ``--hidden-size``, ...); a task lists the groups as bases of its Config and sets its own defaults
for their fields with ``with_defaults``:

    @dataclass
    @with_defaults(cell="gru", hidden_size=64)
    class SpeechConfig(TaskConfig, LayerFields): ...

A group's fields come first in the Config's field order (so in ``--help`` and ``config.json``), as
dataclasses order inherited fields; Configs are built by keyword, never by position.

Where a field's help names the task's examples ("clips per step", "read each sentence in both directions"), the
group's help is a template, ``"{units} per step"``, and the Config names its examples once, as the class
attributes ``unit`` and ``units``; ``with_defaults`` fills the templates in, so the Config's fields (and so
``--help``) carry the task's words:

    @dataclass
    @with_defaults(batch_size=16)
    class TagConfig(TaskConfig, ExampleFields, LayerFields):
        unit, units = "sentence", "sentences"   # --batch-size: "sentences per step"
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import ClassVar


class TaskConfig:
    """The base of every task's Config dataclass."""

    # one of the task's examples and several ("clip", "clips"): the words its groups' help templates name
    unit: ClassVar[str | None] = None
    units: ClassVar[str | None] = None

    def model_settings(self) -> dict:
        """What config.json records and a resumed run must match: every field."""
        return asdict(self)


def check_choice(name: str, value, choices: Iterable[str]) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def check_ints(config, names: Iterable[str], minimum: int = 1) -> None:
    """Raise ValueError unless each named field is an int (not a bool) >= ``minimum`` (1: a positive int)."""
    wanted = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be {wanted}, got {value!r}")


def check_fractions(config, names: Iterable[str]) -> None:
    """Raise ValueError unless each named field is in [0, 1), a dropout probability or a held-out share."""
    for name in names:
        value = getattr(config, name)
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def with_defaults(**defaults):
    """A class decorator, written below ``@dataclass``: the task's own version of the fields its groups declare,
    with the task's defaults and with help templates filled in with the task's ``unit`` and ``units``.

    Each named field, and each field whose help is a template (``"{units} per step"``), is declared again in the
    class, with the group's type, its metadata (the help, filled in) and the given default (else the group's),
    before ``@dataclass`` reads the class; so ``__init__``, ``dataclasses.fields`` and the CLI all see the task's
    default and words, and the field keeps the group's place in the field order. A name that no group of the
    class declares, or that the class declares itself, is a TypeError (a task's own field takes its default
    where it is written); so is a template naming a word the class does not set, and the decorator above
    ``@dataclass``, where it would change nothing.
    """

    def apply(cls):
        if "__dataclass_fields__" in cls.__dict__:
            raise TypeError(f"with_defaults on {cls.__name__}: write it below @dataclass, not above")
        own = cls.__dict__.get("__annotations__", {})
        inherited = {f.name: f for base in cls.__bases__ if is_dataclass(base) for f in fields(base)}
        for name in defaults:
            if name in own or name not in inherited:
                where = "declares it itself" if name in own else f"has no group with it ({', '.join(inherited)})"
                raise TypeError(f"with_defaults({name}=...) on {cls.__name__}: the class {where}")
        templated = [name for name, f in inherited.items() if "{" in f.metadata.get("help", "") and name not in own]
        redeclared = {name: defaults.get(name, inherited[name].default) for name in (*templated, *defaults)}
        cls.__annotations__ = {**own, **{name: inherited[name].type for name in redeclared}}
        for name, value in redeclared.items():
            metadata = inherited[name].metadata
            if name in templated:
                metadata = {**metadata, "help": fill(metadata["help"], cls, name)}
            setattr(cls, name, field(default=value, metadata=metadata))
        return cls

    return apply


def fill(template: str, cls: type, name: str) -> str:
    """A group's help ``template`` with ``cls``'s ``unit`` and ``units``; a TypeError when a word it names is unset."""
    words = {word: getattr(cls, word) for word in ("unit", "units") if getattr(cls, word, None) is not None}
    try:
        return template.format_map(words)
    except KeyError as missing:
        raise TypeError(f"{cls.__name__} sets no {missing.args[0]}, which the help of its field {name} names "
                        f"({template!r}): give the class unit and units") from None


@dataclass
class LayerFields:
    """The recurrent layer as ``Recurrent`` takes it: cell, size, depth, dropout between layers."""

    cell: str = field(default="lstm", metadata={"help": "any cell of `rnnkit cells`"})
    hidden_size: int = field(default=128, metadata={"help": "H of every layer and direction"})
    num_layers: int = field(default=1, metadata={"help": "stacked layers"})
    dropout: float = field(default=0.0, metadata={"help": "dropout between layers (torch's)"})


DEV_SEED = 1_000_003  # generated dev clips: train glyphs, a seed no training stream uses (streams use the run's seed)
TEST_SEED = 0  # generated test clips: test glyphs


@dataclass
class GeneratedSplitFields:
    """The held-out clips of a task on generated moving digits (caption, nextframe): dev clips drawn with the
    training glyphs, test clips with glyphs never seen in training."""

    dev_size: int = field(default=300, metadata={"help": "dev clips (train glyphs) that pick the best checkpoint"})
    test_size: int = field(default=1000, metadata={"help": "test clips (unseen glyphs) scored at the end"})

    def held_out(self, split: str, n: int | None = None) -> tuple[int, int, str]:
        """How the fixed clips of ``split`` are drawn: (how many: ``n``, else ``dev_size`` or ``test_size``; the
        seed, ``DEV_SEED`` or ``TEST_SEED``; the glyphs, ``train`` or ``test``). Another split is a ValueError."""
        if split not in ("dev", "test"):
            raise ValueError(f"split must be dev or test, got {split!r}")
        seed, glyphs = (DEV_SEED, "train") if split == "dev" else (TEST_SEED, "test")
        return n or getattr(self, f"{split}_size"), seed, glyphs


@dataclass
class RegularizerFields:
    """The recurrent regularizers of ``rnnkit.regularize``, as ``Recurrent`` takes them; all off by default."""

    input_dropout: float = field(default=0.0, metadata={"help": "locked dropout on every layer's input"})
    hidden_dropout: float = field(default=0.0, metadata={"help": "locked dropout on h in the recurrent products"})
    output_dropout: float = field(default=0.0, metadata={"help": "locked dropout on the last layer's output"})
    zoneout: float = field(default=0.0, metadata={"help": "zoneout probability of the state"})
    weight_drop: float = field(default=0.0, metadata={"help": "DropConnect on W_hh"})

    def regularizers(self) -> dict:
        """These fields as ``Recurrent``'s keyword arguments."""
        return {"input_dropout": self.input_dropout, "hidden_dropout": self.hidden_dropout,
                "output_dropout": self.output_dropout, "zoneout": self.zoneout, "weight_drop": self.weight_drop}


@dataclass
class BatchFields:
    """How many of the task's examples one optimizer step reads."""

    batch_size: int = field(default=32, metadata={"help": "{units} per step"})


@dataclass
class ExampleFields(BatchFields):
    """The task's examples as its recurrent layer reads them: a batch of them per step, each forward or in both
    directions (``Recurrent``'s ``bidirectional``)."""

    bidirectional: bool = field(default=True, metadata={"help": "read each {unit} in both directions"})


@dataclass
class TokenFields:
    """Text read as tokens, characters or words, each embedded: the input of the language model and the classifier."""

    level: str = field(default="char", metadata={"help": "char or word tokens"})
    max_vocab: int = field(default=20000, metadata={"help": "word level: keep the most frequent training tokens"})
    embedding_size: int = field(default=128, metadata={"help": "token embedding size E"})

    def check_level(self) -> None:
        """Raise ValueError unless ``level`` is char or word."""
        if self.level not in ("char", "word"):
            raise ValueError(f"level must be 'char' or 'word', got {self.level!r}")
