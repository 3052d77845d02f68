"""Tiny run directories of today's rnnkit, one per task that trains, and the golden metrics of their runs.

Issue 29 restructures the task layer (cli.py, tasks/*, export.py). Its promise is that run
directories written before the change still load and resume, and that a seeded short run gives
the same metrics.jsonl before and after. This script records that evidence from the code as it
is; ``tests/test_reference_runs.py`` checks it.

Command (from the repository root; it replaces what it writes):

    .venv/bin/python scripts/make_reference_runs.py            # every task
    .venv/bin/python scripts/make_reference_runs.py lm lab     # some tasks

For each task it runs ``rnnkit <task> train <TINY flags> --out DIR`` in-process on one thread
(bundled data only, so the run directory names no file of this machine) and writes

    tests/data/runs/<task>/                the run directory (last/, best/, metrics.jsonl, test.json, ...)
                                           less its plots/ (PNG, 580 KB of the 2 MB; loading and resuming
                                           never read them)
    tests/data/runs/<task>/expected.json   the argv, the commit it was made with, and what
                                           ``rnnkit.load(dir).evaluate()`` returned (its default split)
    tests/data/golden/<task>.jsonl         metrics.jsonl with only its deterministic keys (no speed, no time)

Made with rnnkit commit 4c15d0e (torch 2.13.0, CPU); expected.json names the commit of each run.
Do not regenerate them to make a failing test pass after a refactor: a difference is what they are for.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "tests" / "data" / "runs"
GOLDEN = ROOT / "tests" / "data" / "golden"

# Every run: a step budget (no time budget, so no speed calibration), a log line per step, an evaluation and a
# checkpoint half way and at the end, so best/ and last/ both exist.
COMMON = ["--steps", "4", "--eval-every", "2", "--checkpoint-every", "2", "--log-every", "1", "--warmup-steps", "1",
          "--seed", "0", "--no-progress"]

# task -> the argv of its tiny run before COMMON: the smallest sizes the task takes, on its bundled data.
TINY = {
    "lm": ["lm", "train", "--hidden-size", "8", "--embedding-size", "4", "--batch-size", "4", "--bptt", "8"],
    "classify": ["classify", "train", "--hidden-size", "4", "--embedding-size", "4", "--max-vocab", "100",
                 "--max-length", "16", "--batch-size", "4"],
    "tag": ["tag", "train", "--hidden-size", "4", "--embedding-size", "4", "--min-count", "20", "--no-char-features",
            "--batch-size", "4"],
    "translate": ["translate", "train", "--hidden-size", "4", "--embedding-size", "4", "--attention-size", "4",
                  "--min-count", "40", "--max-length", "8", "--beam-size", "2", "--batch-size", "4"],
    "forecast": ["forecast", "train", "--hidden-size", "4", "--ensemble", "1", "--rolling-origins", "1",
                 "--batch-size", "4"],
    "speech": ["speech", "train", "--hidden-size", "4", "--batch-size", "4"],
    "asr": ["asr", "train", "--hidden-size", "4", "--num-layers", "1", "--n-mels", "8", "--frame-stack", "3",
            "--batch-size", "4", "--dropout", "0"],
    "video": ["video", "train", "--model", "cnn-lstm", "--channels", "4", "--features", "4", "--hidden-size", "4",
              "--frame-size", "32", "--clip-length", "8", "--dev-clips", "4", "--test-clips", "4", "--batch-size", "4"],
    "caption": ["caption", "train", "--segment-length", "2", "--hidden-size", "4", "--cnn-channels", "4",
                "--frame-features", "4", "--embedding-size", "4", "--dev-size", "4", "--test-size", "4",
                "--pretrain-steps", "1", "--beam-size", "2", "--batch-size", "4"],
    "nextframe": ["nextframe", "train", "--hidden-channels", "2", "--channels", "4", "--length", "10", "--dev-size",
                  "2", "--test-size", "2", "--batch-size", "2"],
    "lab": ["lab", "adding", "--length", "8", "--hidden-size", "4", "--batch-size", "4", "--test-size", "16"],
}



def deterministic(record: dict) -> dict:
    """A metrics.jsonl (or test.json) record without the keys that measure the machine, not the model: speeds
    and times, which end in ``_s`` (``tokens_per_s``, ``elapsed_s``, ``train_s``) or ``_minutes``."""
    return {k: v for k, v in record.items() if not k.endswith(("_s", "_minutes"))}


def golden_lines(run_dir: Path) -> list[dict]:
    return [deterministic(json.loads(line)) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


def numbers(result: dict) -> dict:
    """The JSON-able part of an evaluate() result (floats, ints, strings, lists and dicts of them)."""
    return json.loads(json.dumps(result, default=lambda value: None, allow_nan=True))


def train(argv: list[str], out: Path) -> None:
    """``rnnkit`` in-process, its output swallowed; raises if the command fails."""
    from rnnkit.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main([*argv, "--out", str(out)])
    if code != 0:
        raise RuntimeError(f"rnnkit {' '.join(argv)} exited with {code}: {err.getvalue()}")


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True,
                           text=True).stdout
    return head.strip() + ("+uncommitted changes in src/" if dirty.strip() else "")


def make(task: str) -> dict:
    import rnnkit

    argv = TINY[task] + COMMON
    out = RUNS / task
    shutil.rmtree(out, ignore_errors=True)
    train(argv, out)
    shutil.rmtree(out / "plots")
    result = numbers(rnnkit.load(out).evaluate())
    expected = {"argv": argv, "commit": commit(), "torch": torch.__version__, "evaluate": result}
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    GOLDEN.mkdir(parents=True, exist_ok=True)
    lines = golden_lines(out)
    (GOLDEN / f"{task}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert all(not isinstance(v, float) or math.isfinite(v) for line in lines for v in line.values()), task
    return expected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="*", help=f"any of {', '.join(TINY)} (default: every task)")
    args = parser.parse_args()
    unknown = [task for task in args.tasks if task not in TINY]
    if unknown:
        parser.error(f"tasks must be among {', '.join(TINY)}, got {', '.join(unknown)}")
    torch.set_num_threads(1)  # as the tests run (tests/conftest.py)
    for task in args.tasks or TINY:
        expected = make(task)
        size = sum(f.stat().st_size for f in (RUNS / task).rglob("*") if f.is_file())
        print(f"{task}: {size / 1024:.0f} KiB, evaluate {expected['evaluate']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
