"""Every ``rnnkit`` command shown in README.md still parses: its ``--help`` exits 0, and its flags are all known.

Issue 29 rebuilds the CLI from a task registry; the README's commands are the promise it keeps. The
commands are read from the README's fenced code blocks: lines that start with ``rnnkit `` and the
``-m rnnkit ...`` part of torchrun lines (backslash continuations joined, ``#`` comments dropped).
Everything runs in-process through ``rnnkit.cli``, so nothing trains and the test takes about a second.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from rnnkit.cli import build_parser, main

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_commands(text: str) -> list[list[str]]:
    """The argv (after ``rnnkit``) of every rnnkit command in the fenced code blocks of ``text``."""
    commands, fenced, pending = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            fenced, pending = not fenced, ""
            continue
        if not fenced:
            continue
        line = pending + line.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not (line.startswith("rnnkit ") or " -m rnnkit " in line):
            continue  # other code in the block (python, make, output) is not ours to parse
        words = shlex.split(line, comments=True)
        if words[:1] == ["rnnkit"]:
            commands.append(words[1:])
        elif "-m" in words and words[words.index("-m") + 1:][:1] == ["rnnkit"]:  # torchrun ... -m rnnkit ...
            commands.append(words[words.index("-m") + 2:])
    return commands


COMMANDS = readme_commands(README.read_text())


def command_id(argv: list[str]) -> str:
    return re.sub(r"[^\w.-]+", "_", " ".join(argv))[:80]


def test_the_readme_shows_commands_of_every_kind():
    """The parser found them: a README reformatted so that none is read would make the tests below vacuous."""
    assert len(COMMANDS) >= 40
    firsts = {argv[0] for argv in COMMANDS}
    assert {"lm", "classify", "forecast", "translate", "caption", "nextframe", "video", "asr", "lab", "gradients",
            "export"} <= firsts


def test_the_reader_joins_continuations_and_drops_comments():
    text = "```sh\nrnnkit lm train --steps 3   # a comment\ntorchrun --nnodes 2 \\\n    -m rnnkit lab adding\n```\n" \
           "rnnkit outside a block\n"
    assert readme_commands(text) == [["lm", "train", "--steps", "3"], ["lab", "adding"]]


@pytest.mark.parametrize("argv", COMMANDS, ids=command_id)
def test_readme_command_help_exits_0(argv):
    """``rnnkit ARGV --help``: the command and its verb exist; --help exits 0 before anything runs."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        main([*argv, "--help"])
    assert stop.value.code == 0, f"rnnkit {' '.join(argv)} --help exited with {stop.value.code}"
    assert out.getvalue().startswith("usage: rnnkit")


@pytest.mark.parametrize("argv", COMMANDS, ids=command_id)
def test_readme_command_flags_parse(argv):
    """``rnnkit ARGV`` parses (every flag known, every value of its type) without running: --help alone stops at
    the first --help and would let a renamed flag through."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            build_parser().parse_args(argv)
    except SystemExit as stop:
        pytest.fail(f"rnnkit {' '.join(argv)} does not parse (exit {stop.code}): {err.getvalue().strip()}")
