"""What a training run shows and records: a rich progress bar, ``metrics.jsonl``, TensorBoard.

``metrics.jsonl`` holds one JSON object per line: ``{"step", "loss", "lr", "grad_norm",
"tokens_per_s", "elapsed_s"}`` at each log step and ``{"step", "eval": {...}}`` after each
evaluation, plus ``{"step", "event", "message"}`` for skipped steps and stops. Each line is
flushed as it is written, so a crash loses nothing already logged; a resumed run first drops
the lines past the step it resumes from, so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class MetricsLog:
    """Appends JSON lines to ``path``; ``truncate_after(step)`` drops the lines of steps > step."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = None

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            line_step = _step_of(line)
            if line_step is not None and line_step <= step:
                kept.append(line)
        tmp = self.path.with_name(f".{self.path.name}.tmp")  # replaced atomically: a kill here keeps the old file
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)

    def write(self, record: dict) -> None:
        if self._file is None:
            self._file = self.path.open("a")
        self._file.write(json.dumps(record, allow_nan=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_metrics(path: Path) -> list[dict]:
    """Every record of a ``metrics.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _step_of(line: str) -> int | None:
    """The step of a record; None for a line cut short by a crash mid-write (dropped on resume)."""
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return None

class ProgressBar:
    """A rich progress bar with loss, tokens/s and ETA; plain lines when the console is not a terminal."""

    def __init__(self, console: Console, total: int | None, start: int, enabled: bool = True) -> None:
        self.console = console
        self.live = enabled and console.is_terminal
        self._progress = Progress(
            TextColumn("[bold]step {task.completed}/{task.fields[total_text]}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not self.live,
        )
        self._task = self._progress.add_task("train", total=total, completed=start, loss="-", speed="-",
                                             total_text=_total_text(total))

    def __enter__(self) -> ProgressBar:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def set_total(self, total: int) -> None:
        self._progress.update(self._task, total=total, total_text=_total_text(total))

    def update(self, step: int, loss: float | None = None, tokens_per_s: float | None = None) -> None:
        fields = {}
        if loss is not None:
            fields["loss"] = f"{loss:.4f}"
        if tokens_per_s is not None:
            fields["speed"] = f"{tokens_per_s:,.0f} tok/s"
        self._progress.update(self._task, completed=step, **fields)

    def print(self, text: str) -> None:
        """A line above the bar (or on its own when there is no bar)."""
        (self._progress.console if self.live else self.console).print(text, highlight=False)


def _total_text(total: int | None) -> str:
    return "?" if total is None else str(total)


class TensorBoard:
    """Scalars to TensorBoard under ``directory`` (needs the ``tensorboard`` package)."""

    def __init__(self, directory: Path) -> None:
        self.require()
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(directory))

    @staticmethod
    def require() -> None:
        """Raise a clear ImportError where the tensorboard package is missing."""
        try:
            import tensorboard  # noqa: F401
        except ImportError as error:
            raise ImportError("--tensorboard needs the tensorboard package: pip install tensorboard") from error

    def scalars(self, step: int, values: dict, prefix: str) -> None:
        """Each finite number of ``values`` as ``prefix/name`` at ``step`` (the record's own "step" is the x axis,
        not a scalar; nested dicts and text are left to metrics.jsonl)."""
        for name, value in values.items():
            if name == "step" or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(f"{prefix}/{name}", value, step)

    def close(self) -> None:
        self._writer.close()
