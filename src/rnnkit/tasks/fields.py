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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, is_dataclass


class TaskConfig:
    """The base of every task's Config dataclass."""

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
    """A class decorator, written below ``@dataclass``: the task's defaults for fields that its groups declare.

    Each named field is declared again in the class, with the group's type and metadata (the help) and the
    given default, before ``@dataclass`` reads the class; so ``__init__``, ``dataclasses.fields`` and the CLI
    all see the task's default, and the field keeps the group's place in the field order. A name that no
    group of the class declares, or that the class declares itself, is a TypeError (a task's own field takes
    its default where it is written); so is the decorator above ``@dataclass``, where it would change nothing.
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
        cls.__annotations__ = {**own, **{name: inherited[name].type for name in defaults}}
        for name, value in defaults.items():
            setattr(cls, name, field(default=value, metadata=inherited[name].metadata))
        return cls

    return apply


@dataclass
class LayerFields:
    """The recurrent layer as ``Recurrent`` takes it: cell, size, depth, dropout between layers."""

    cell: str = field(default="lstm", metadata={"help": "any cell of `rnnkit cells`"})
    hidden_size: int = field(default=128, metadata={"help": "H of every layer and direction"})
    num_layers: int = field(default=1, metadata={"help": "stacked layers"})
    dropout: float = field(default=0.0, metadata={"help": "dropout between layers (torch's)"})


@dataclass
class GeneratedSplitFields:
    """The held-out clips of a task on generated moving digits (caption, nextframe): dev clips drawn with the
    training glyphs, test clips with glyphs never seen in training."""

    dev_size: int = field(default=300, metadata={"help": "dev clips (train glyphs) that pick the best checkpoint"})
    test_size: int = field(default=1000, metadata={"help": "test clips (unseen glyphs) scored at the end"})


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
