"""Libraries of the optional extras, imported where a task first needs them.

``require("sacrebleu", "the translate task")`` returns the module, or raises an ImportError that
says what needed it and which ``pip install`` brings it; ``import rnnkit`` never imports them.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, purpose: str, package: str | None = None, extra: str = "tasks") -> ModuleType:
    """The imported ``module`` (``package``: its name on PyPI, if another), for ``purpose`` (who needs it)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        name = package or module.split(".")[0]
        raise ImportError(f"{purpose} needs {name} ({error}); install it with pip install 'rnnkit[{extra}]' "
                          f"(or pip install {name})") from None
