"""scripts/reproduce.py (``make results``): the headline table from the runs' JSON, resumable, guarded rows.

The fast tests feed the table made-up results; the slow one runs one row with ``--quick`` end to end, twice.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("reproduce", ROOT / "scripts" / "reproduce.py")
reproduce = importlib.util.module_from_spec(_spec)
sys.modules["reproduce"] = reproduce  # its dataclasses look their module up
_spec.loader.exec_module(reproduce)


def result(seed: int, value: float, **metrics) -> dict:
    return {"row": "toy", "seed": seed, "value": value, "baseline": 0.5, "steps": 100, "wall_s": 10.0 + seed,
            "threads": 2, "cpu": "CPU", "cpu_capability": "default", "metrics": metrics}


def test_the_table_gives_the_mean_the_spread_and_in_how_many_seeds_the_target_holds():
    row = reproduce.Row("toy", ("toy", "train"), "accuracy", "majority", reproduce.Target(">=", 0.9))
    lines = reproduce.table([row], {"toy": [result(0, 0.877), result(1, 0.986), result(2, 0.989)]}).splitlines()
    assert lines[2] == "| toy | accuracy | 0.9507 | 0.877-0.989 | 0,1,2 | 0.5 | >= 0.9 | 2 of 3 | 100 | 11 | - | CPU " \
                       "(default) | 2 |"


def test_rows_that_share_a_run_train_it_once_per_seed_while_two_jobs_run_at_once(tmp_path, monkeypatch):
    calls = []

    def fake_rnnkit(argv: list[str], threads: int) -> tuple[str, float, float]:
        calls.append(argv)
        if "train" in argv:  # translate train ... --out RUN: leave the step count where reproduce reads it
            out = Path(argv[argv.index("--out") + 1])
            (reproduce.ROOT / out / "last").mkdir(parents=True)
            (reproduce.ROOT / out / "last" / "trainer.json").write_text('{"step": 7}')
            return "", 2.0, 3.0
        return json.dumps({"bleu": 5.0 if "greedy" in argv else 6.0, "copy_bleu": 0.3}), 1.0, 1.0

    monkeypatch.setattr(reproduce, "rnnkit", fake_rnnkit)
    argv = ["--only", "translate", "--seeds", "0", "1", "--jobs", "2", "--results", str(tmp_path / "results"),
            "--runs", str(tmp_path / "runs"), "--doc", str(tmp_path / "table.md")]
    assert reproduce.main(argv) == 0
    trainings = sorted(argv[argv.index("--seed") + 1] for argv in calls if "train" in argv)
    assert trainings == ["0", "1"]  # greedy and beam share one training per seed
    assert sum("evaluate" in argv for argv in calls) == 4
    saved = json.loads((tmp_path / "results" / "translate-beam-seed1.json").read_text())
    assert (saved["value"], saved["steps"], saved["wall_s"], saved["cpu_s"], saved["threads"]) == (6.0, 7, 2.0, 3.0, 1)
    table = (tmp_path / "table.md").read_text()
    assert "| translate-greedy | bleu | 5 | 5-5 | 0,1 |" in table
    assert "| translate-beam | bleu | 6 | 6-6 | 0,1 |" in table


def test_table_writes_the_table_from_the_json_on_disk_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "rnnkit", lambda argv, threads: pytest.fail(f"ran rnnkit {argv}"))
    (tmp_path / "results").mkdir()
    for seed, value in ((0, 0.9), (1, 0.8)):
        saved = {**result(seed, value), "row": "classify", "metrics": {"accuracy": value}}
        (tmp_path / "results" / f"classify-seed{seed}.json").write_text(json.dumps(saved))
    argv = ["--table", "--results", str(tmp_path / "results"), "--doc", str(tmp_path / "table.md")]
    assert reproduce.main(argv) == 0
    table = (tmp_path / "table.md").read_text()
    assert "| classify | accuracy | 0.85 | 0.8-0.9 | 0,1 |" in table and "| lm |" not in table


def test_only_runs_the_rows_named_in_the_order_named_each_once():
    names = [row.name for row in reproduce.selected(["video-convlstm", "lab", "video"])]
    assert names[:2] == ["video-convlstm", "lab-adding-lstm"] and names[-2:] == ["video-cnn-lstm", "video-mean-frame"]
    assert len(names) == len(set(names)) == 8


def test_a_relative_target_reads_the_other_metric_of_the_same_run():
    target = reproduce.Target("<=", 0.6, "copy_last_mse")
    assert target.holds({"__value__": 0.5, "copy_last_mse": 1.0})
    assert not target.holds({"__value__": 0.5, "copy_last_mse": 0.8})
    assert str(target) == "<= 0.6 x copy_last_mse"


def test_a_dotted_metric_reads_a_nested_result_and_a_missing_one_is_none():
    metrics = {"mae_over_horizons": {"model": 2.9, "climatology": 3.15}, "mse": 1.0}
    assert reproduce.lookup(metrics, "mae_over_horizons.model") == 2.9
    assert reproduce.lookup(metrics, "mse") == 1.0
    assert reproduce.lookup(metrics, "mae_over_horizons.ets") is None
    assert reproduce.lookup(metrics, "mse.model") is None
    target = reproduce.Target("<", 1.0, "mae_over_horizons.climatology")
    assert target.holds({**metrics, "__value__": 2.9}) and not target.holds({**metrics, "__value__": 3.2})


def test_the_table_replaces_only_what_is_between_its_markers(tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text(f"# Results\nbefore\n{reproduce.BEGIN}\nold table\n{reproduce.END}\nafter\n")
    reproduce.write_table(doc, "| new |")
    assert doc.read_text() == f"# Results\nbefore\n{reproduce.BEGIN}\n| new |\n{reproduce.END}\nafter\n"
    doc.write_text("# Results\n")
    with pytest.raises(SystemExit, match="no headline-table markers"):
        reproduce.write_table(doc, "| new |")


def test_a_row_whose_task_or_flag_does_not_exist_is_not_available():
    assert reproduce.available(["forecast", "train", "--series", "seattle_temps"])
    assert not reproduce.available(["forecast", "train", "--series", "no_such_series"])  # the Config refuses it
    assert not reproduce.available(["asr", "train", "--no-such-flag"])  # the parser refuses it
    assert not reproduce.available(["no_such_task", "train"])


def test_docs_results_md_has_the_markers():
    text = (ROOT / "docs" / "results.md").read_text()
    assert text.count(reproduce.BEGIN) == 1 and text.count(reproduce.END) == 1


@pytest.mark.slow
def test_quick_runs_a_row_writes_its_json_and_table_and_a_second_call_does_not_run_it_again(tmp_path, capsys):
    argv = ["--quick", "--only", "speech-vowels", "forecast-sp500", "--results", str(tmp_path / "results"),
            "--runs", str(tmp_path / "runs"), "--doc", str(tmp_path / "table.md")]
    assert reproduce.main(argv) == 0
    saved = tmp_path / "results" / "speech-vowels-seed0.json"
    first = json.loads(saved.read_text())
    assert (first["steps"], first["threads"], first["metric"]) == (reproduce.QUICK_STEPS, 1, "accuracy")
    assert first["command"].startswith("export OMP_NUM_THREADS=1; rnnkit speech train --seed 0")
    assert 0 <= first["value"] <= 1 and first["baseline"] == pytest.approx(0.0784, abs=1e-4)
    printed = capsys.readouterr().out
    if not reproduce.available(["forecast", "train", "--series", "sp500"]):
        assert "forecast-sp500: skipped: task/flag not available" in printed
    saved.write_text(json.dumps({**first, "value": 0.123}))  # a kept result is read, not run again
    assert reproduce.main(argv) == 0
    assert "| speech-vowels | accuracy | 0.123 | - | 0 |" in (tmp_path / "table.md").read_text()
