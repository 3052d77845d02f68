"""The command line and the README's example."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import rnnkit
from rnnkit.backends.fused import extension
from rnnkit.cli import main
from rnnkit.demo import DemoConfig, run_demo

ROOT = Path(__file__).resolve().parents[1]


def test_version_flag(capsys):
    try:
        main(["--version"])
    except SystemExit as stop:
        assert stop.code == 0
    assert capsys.readouterr().out.strip() == f"rnnkit {rnnkit.__version__}"


def test_python_dash_m_is_the_same_cli():
    done = subprocess.run([sys.executable, "-m", "rnnkit", "cells"], capture_output=True, text=True, check=True)
    assert done.stdout.split() == rnnkit.cells()


def test_demo_trains_reports_and_samples(tmp_path):
    from rich.console import Console

    console = Console(record=True, width=200)
    result = run_demo(DemoConfig(steps=3, out=str(tmp_path / "demo"), progress=False, sample_length=30), console)
    shown = console.export_text()
    assert "unigram baseline" in shown and "A sample" in shown
    assert result["sample"].startswith("ROMEO.") and len(result["sample"]) == len("ROMEO.") + 30
    assert (tmp_path / "demo" / "last" / "model.safetensors").exists()


def test_readme_example_runs(capsys):
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "torch.Size([3, 5, 32]) torch.Size([4, 3, 16]) fused" in printed


def test_bench_prints_a_ratio_table(capsys):
    assert main(["bench", "--shape", "2,4,3,5", "--rounds", "1", "--min-run-time", "0.001",
                 "--cells", "lstm,peephole_lstm", "--mode", "training", "--markdown"]) == 0
    printed = capsys.readouterr().out
    assert "| cell | backend | loops | mode |" in printed
    # which loops the fused LSTM family ran: the C++ ones with their variant and GEMM (batch 2: rnnkit's gemv), or
    # the Python ones; auto runs lstm's own loop at this batch where the C++ loops load, else torch's
    loops = "Python" if extension.load() is None else f"C++ {extension.loaded_variant()} gemv"
    lstm = "| lstm | native |  | training |" if extension.load() is None else f"| lstm | fused | {loops} | training |"
    for name in ("nn.LSTM", "nn.GRU", "GEMM floor", lstm, f"| peephole_lstm | fused | {loops} | training |"):
        assert name in printed


def test_every_command_has_help(capsys):
    for argv in (["--help"], ["demo", "--help"], ["lm", "--help"], ["lm", "train", "--help"],
                 ["lm", "generate", "--help"], ["lm", "evaluate", "--help"], ["bench", "--help"]):
        try:
            main(argv)
        except SystemExit as stop:
            assert stop.code == 0, argv
    assert "--max-minutes" in capsys.readouterr().out


RUNS = ROOT / "tests" / "data" / "runs"  # tiny committed runs of every task (tests/test_reference_runs.py)


def test_verbs_with_their_own_printing_run_through_the_registry(tmp_path, capsys):
    """The verbs whose spec names a run function: what they print, and the error of a wrong call. Catches a verb
    wired to the wrong method, a positional argument that lost its place, or flags not reaching the method."""
    run = str(RUNS / "classify")
    assert main(["classify", "predict", "--checkpoint", run, "a fine film"]) == 0
    label, probability = capsys.readouterr().out.strip().split("\t")
    assert label == rnnkit.load(run).predict("a fine film")[0].label and 0 < float(probability) <= 1
    texts = tmp_path / "texts.txt"
    texts.write_text("one\n\ntwo\n")
    assert main(["classify", "predict", "--checkpoint", run, "--file", str(texts)]) == 0
    assert [line.split("\t")[2] for line in capsys.readouterr().out.splitlines()] == ["one", "two"]
    assert main(["classify", "predict", "--checkpoint", run]) == 2
    assert "give either a text or --file FILE" in capsys.readouterr().err

    lab = str(RUNS / "lab")
    assert main(["lab", "adding", "--checkpoint", lab, "--json", "--test-size", "8"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["problem"], result["n"]) == ("adding", 8)
    assert main(["lab", "copy", "--checkpoint", lab]) == 2
    assert "holds a 'adding' run, not 'copy'" in capsys.readouterr().err

    forecast = str(RUNS / "forecast")
    assert main(["forecast", "predict", "--checkpoint", forecast, "--steps", "2", "--json"]) == 0
    assert [row["step"] for row in json.loads(capsys.readouterr().out)] == [1, 2]
    assert main(["classify", "evaluate", "--checkpoint", run, "--split", "dev", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == rnnkit.load(run).evaluate(split="dev")
