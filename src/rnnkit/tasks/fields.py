"""What the task Configs share: ``model_settings``, the checks their ``validate`` repeats, and field groups.

Every task's Config is a dataclass whose fields become CLI flags (the ``help`` in each field's metadata) and
whose ``model_settings()`` is what ``config.json`` records. The checks below give every task the same error
message for the same mistake (``hidden_size must be a positive int, got 0``); a field group is a set of fields
with the same name, default and help in every task that has them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field


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
