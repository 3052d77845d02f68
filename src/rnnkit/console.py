"""The one place that makes rnnkit's consoles: decorated on a terminal, plain text everywhere else.

On a terminal, rich wraps long lines at the window's width, colours and highlights, and
draws progress bars. Written to a file or a pipe, rich would still wrap at 80 columns (so
a metric is split from its value, "unigram_nats_per_char \\n3.3473", and a long path is cut
in two), which breaks ``grep`` and log parsers. So where the output is not a terminal the
console writes every printed line as one line, whatever its length (``soft_wrap``), with no
colour, no highlighting and no emoji codes; markup tags such as ``[bold]`` are still read
and dropped, so they never show as text. Progress bars check ``console.is_terminal`` and
stay off (``rnnkit.train.report.ProgressBar``).

Whether the output is a terminal is rich's own test (``isatty``, and the ``FORCE_COLOR`` and
``TTY_COMPATIBLE`` variables that a user sets to ask for a terminal's output), made once,
when the console is made.
"""

from __future__ import annotations

from typing import IO

from rich.console import Console


def make_console(stderr: bool = False, *, file: IO[str] | None = None, quiet: bool = False) -> Console:
    """A console on stdout (``stderr=True``: stderr; ``file``: that file) that does not wrap or decorate
    unless it writes to a terminal; ``quiet=True`` prints nothing (the ranks > 0 under torchrun)."""
    console = Console(stderr=stderr, file=file, quiet=quiet)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, file=file, quiet=quiet, soft_wrap=True, color_system=None, highlight=False,
                   emoji=False)
