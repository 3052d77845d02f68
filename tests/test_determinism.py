"""The same seed and thread count on the same machine train the same run (issue 31, item 5).

Two runs of a small task through the command line write the same metrics.jsonl except the fields that time the
run (``elapsed_s``, ``tokens_per_s``): every loss, learning rate, gradient norm and evaluation is equal to the bit.
How much the numbers move between thread counts and CPU kernels is measured in docs/results.md (not asserted:
that depends on the CPU).
"""

from __future__ import annotations

import json

from rnnkit.cli import main
from rnnkit.data import bundled_text

TIMING = {"elapsed_s", "tokens_per_s"}  # wall-clock readings: they differ between any two runs
TINY_LM = ["lm", "train", "--hidden-size", "8", "--embedding-size", "4", "--batch-size", "4", "--bptt", "8",
           "--steps", "6", "--eval-every", "3", "--log-every", "1", "--warmup-steps", "1", "--output-dropout", "0.1",
           "--seed", "3", "--no-progress"]


def records_without_timing(path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in path.read_text().splitlines()]


def test_two_runs_with_the_same_seed_log_the_same_metrics(tmp_path):
    text = tmp_path / "plays.txt"
    text.write_text(bundled_text()[:20_000])  # a short validation part: the evaluations stay cheap
    for name in ("a", "b"):
        assert main([*TINY_LM, "--data", str(text), "--out", str(tmp_path / name)]) == 0
    a, b = (records_without_timing(tmp_path / name / "metrics.jsonl") for name in ("a", "b"))
    assert len([r for r in a if "loss" in r]) == 6 and any("eval" in r for r in a)
    assert a == b
