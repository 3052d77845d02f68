"""Output that is not a terminal: one printed line stays one line, whatever its length, with no colour,
highlighting or progress-bar escape codes (``rnnkit.console.make_console``)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from rnnkit.console import make_console
from rnnkit.train.report import ProgressBar

ESC = "\x1b"  # every colour, cursor move and progress-bar redraw starts with it


def test_a_long_line_to_a_file_stays_one_line():
    """rich's own default wraps at 80 columns off a terminal and would split this line three times."""
    buffer = io.StringIO()
    console = make_console(file=buffer)
    line = "step 1000: " + ", ".join(f"metric_with_a_long_name_{i} {i / 7:.4f}" for i in range(12))
    assert len(line) > 300
    console.print(line)
    console.print(f"run directory /tmp/{'x' * 200}/run")
    assert buffer.getvalue() == f"{line}\nrun directory /tmp/{'x' * 200}/run\n"


def test_markup_is_dropped_and_nothing_is_decorated():
    """Tags in the code's messages ([bold], [yellow]) never show as text, and numbers, paths and reprs get no
    highlighting codes (rich highlights them by default where it colours)."""
    buffer = io.StringIO()
    console = make_console(file=buffer)
    console.print("[bold]A sample[/bold] of 0.5 at /tmp/run: {'lr': 0.003} :smile:")
    assert buffer.getvalue() == "A sample of 0.5 at /tmp/run: {'lr': 0.003} :smile:\n"
    assert not console.is_terminal


def test_no_progress_bar_off_a_terminal():
    buffer = io.StringIO()
    console = make_console(file=buffer)
    with ProgressBar(console, total=10, start=0) as bar:
        for step in range(1, 11):
            bar.update(step, loss=1.0 / step, tokens_per_s=1000.0)
        bar.print("step 10: loss 0.1000")
    assert buffer.getvalue() == "step 10: loss 0.1000\n"


def test_a_piped_cli_run_writes_one_line_per_message_and_no_escape_codes(tmp_path):
    """A real training run through the CLI, stdout and stderr pipes, the progress bar left on, a run directory
    far longer than the 40 columns that COLUMNS asks for: every message is one line, with no escape code."""
    out = tmp_path / ("x" * 150) / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    env["COLUMNS"] = "40"
    done = subprocess.run([sys.executable, "-m", "rnnkit", "lab", "adding", "--cell", "gru", "--length", "4",
                           "--hidden-size", "4", "--steps", "2", "--eval-every", "1", "--test-size", "8",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert ESC not in done.stdout and ESC not in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("lab adding: T=4, gru 1x4, ") and lines[0].endswith("test set 8")
    assert lines[1].startswith("step 1: mse ") and lines[2].startswith("step 2: mse ")
    assert lines[3].startswith("adding T=4 gru: test mse ") and lines[3].endswith(f"run directory {out}")
    assert len(lines) == 4
