"""The applications, one module per task; each is ``rnnkit <task> <verb>`` and a Python call.

Each task module ends with its ``SPEC`` (``registry.TaskSpec``); ``rnnkit.load(DIR)`` reads a
checkpoint's ``config.json``, finds its task in the registry and returns the trained model with the
task's methods (``evaluate``, ``predict``, ``generate``, ...), whose shape ``registry`` describes.
"""

from __future__ import annotations

from pathlib import Path

from ..train import checkpoint


def load(directory: str | Path, device: str = "cpu"):
    """The trained task model in ``directory`` (a checkpoint directory, or a run directory: best/, else last/)."""
    from .registry import specs

    path = checkpoint.resolve(directory)
    task = checkpoint.load(path).config.get("task")
    known = specs()
    if task not in known:
        raise checkpoint.CheckpointError(f"{path}: config.json names task {task!r}, which this rnnkit cannot load "
                                         f"(it knows: {', '.join(known)})")
    return known[task].load(path, device)
