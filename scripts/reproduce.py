"""Every headline result of the README, reproduced by one command (issue 31): ``make results``.

Each result (a ``Row`` of ``ROWS``) is one ``rnnkit`` command with the shipped defaults, run for seeds 0, 1 and 2
with ``OMP_NUM_THREADS`` fixed (``--threads``, 1 by default) and named in the table. Per row and seed it keeps
``results/<row>-seed<N>.json`` (the command, the metrics it printed, the steps, the wall time, the CPU, the
threads); a result whose JSON exists is not run again, and a run killed midway continues from its ``last/``
checkpoint (``--resume``), so the command can be stopped and started as often as needed. The run directories
go to ``runs/reproduce/`` (not committed; ``--runs``). At the end it writes the headline table of docs/results.md
between its markers: per row the mean and min-max over the seeds, the baseline, the target and in how many seeds
it holds, the steps, the wall time (of the last process, for a resumed run), the CPU and the thread count.

    python scripts/reproduce.py                    # every row, seeds 0 1 2 (hours on 2 cores)
    python scripts/reproduce.py --only video       # the rows of one task (or one row: --only video-convlstm)
    python scripts/reproduce.py --quick            # one seed, QUICK_STEPS steps: a smoke test (results/quick/)
    python scripts/reproduce.py --fsdd DIR         # also the full FSDD rows (DIR from scripts/build_fsdd.py)

Adding a result is one ``Row`` in ``ROWS``. A row whose task or flag this rnnkit does not have yet (the markets
and live-ASR rows) prints "skipped: task/flag not available" and stays out of the table until it exists.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 2)
QUICK_STEPS = 20  # --quick: enough steps to run every part of a row (training, evaluation, the JSON), no more
BEGIN, END = "<!-- headline table: written by scripts/reproduce.py -->", "<!-- end of headline table -->"
OPERATORS = {">=": float.__ge__, "<=": float.__le__, "<": float.__lt__, ">": float.__gt__}


@dataclass(frozen=True)
class Target:
    """``metric OP value`` (times the row's ``relative_to`` metric where given, e.g. 0.6 x copy-last MSE)."""

    op: str
    value: float
    relative_to: str | None = None

    def holds(self, metrics: dict) -> bool:
        bound = self.value * (lookup(metrics, self.relative_to) if self.relative_to else 1.0)
        return OPERATORS[self.op](float(metrics["__value__"]), float(bound))

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}" + (f" x {self.relative_to}" if self.relative_to else "")


def lookup(metrics: dict, key: str):
    """``metrics[key]``, where a dotted key reads a nested dict (``mae_over_horizons.model``); None if absent."""
    value = metrics
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


@dataclass(frozen=True)
class Row:
    """One headline result: ``rnnkit <train...>``, then ``rnnkit <evaluate...> --checkpoint RUN --json`` (by default
    the task's ``evaluate``; for lab, whose commands train by problem, the train command itself); ``run`` names the
    training a row shares with others (translate greedy and beam)."""

    name: str
    train: tuple[str, ...]
    metric: str
    baseline: str | None = None
    target: Target | None = None
    evaluate: tuple[str, ...] | None = None
    run: str | None = None
    needs_fsdd: bool = False  # its data come from --fsdd DIR (paths with {fsdd})


ROWS = (
    Row("lm", ("lm", "train"), "nats_per_char", "unigram_nats_per_char"),
    Row("classify", ("classify", "train"), "accuracy", "majority_accuracy", Target(">=", 0.75)),
    Row("tag", ("tag", "train"), "entity_f1", "baseline_entity_f1"),
    Row("speech-vowels", ("speech", "train"), "accuracy", "majority_accuracy", Target(">=", 0.95)),
    Row("speech-basicmotions", ("speech", "train", "--data", "basicmotions"), "accuracy", "majority_accuracy",
        Target(">=", 0.9)),
    Row("translate-greedy", ("translate", "train"), "bleu", "copy_bleu", run="translate",
        evaluate=("translate", "evaluate", "--decoder", "greedy")),
    Row("translate-beam", ("translate", "train"), "bleu", "copy_bleu", run="translate",
        evaluate=("translate", "evaluate", "--decoder", "beam")),
    Row("forecast-air", ("forecast", "train"), "mase", "seasonal_naive_mase", Target("<", 1.0, "ets_mase")),
    Row("forecast-sunspots", ("forecast", "train", "--series", "sunspots"), "mase", "seasonal_naive_mase"),
    Row("forecast-temps", ("forecast", "train", "--series", "seattle_temps"), "mase", "seasonal_naive_mase"),
    # daily returns, walked forward: the model's MSE beside the random walk's, no target (issue 32: whatever they show)
    Row("forecast-sp500", ("forecast", "train", "--series", "sp500"), "mse", "random_walk_mse"),
    Row("forecast-nasdaq", ("forecast", "train", "--series", "nasdaq"), "mse", "random_walk_mse"),
    # daily maximum temperature 1-7 days ahead: MAE over the horizons, below climatology's (and persistence's)
    Row("forecast-seattle-daily", ("forecast", "train", "--series", "seattle_daily"), "mae_over_horizons.model",
        "mae_over_horizons.random_walk", Target("<", 1.0, "mae_over_horizons.climatology")),
    Row("lab-adding-lstm", ("lab", "adding", "--cell", "lstm", "--length", "100"), "value", "baseline",
        Target("<", 0.01)),
    Row("lab-adding-gru", ("lab", "adding", "--cell", "gru", "--length", "100"), "value", "baseline",
        Target("<", 0.01)),
    Row("lab-adding-rnn_tanh", ("lab", "adding", "--cell", "rnn_tanh", "--length", "100"), "value", "baseline"),
    Row("lab-order-lstm", ("lab", "order", "--cell", "lstm", "--length", "100"), "value", "baseline",
        Target(">=", 0.99)),
    Row("lab-copy-gru", ("lab", "copy", "--cell", "gru", "--length", "20"), "accuracy", "baseline_accuracy",
        Target(">=", 0.99)),
    Row("asr-digits", ("asr", "train"), "wer", "most_frequent_wer"),
    Row("asr-streaming", ("asr", "train", "--streaming"), "wer", "most_frequent_wer"),
    Row("asr-fsdd-official", ("asr", "train", "--data", "{fsdd}/official_train.jsonl", "--test-data",
                              "{fsdd}/official_test.jsonl"), "wer", "most_frequent_wer", needs_fsdd=True),
    Row("asr-fsdd-theo", ("asr", "train", "--data", "{fsdd}/theo_train.jsonl", "--test-data",
                          "{fsdd}/theo_test.jsonl"), "wer", "most_frequent_wer", needs_fsdd=True),
    Row("video-cnn-lstm", ("video", "train", "--model", "cnn-lstm"), "accuracy", "chance_accuracy", Target(">=", 0.95)),
    Row("video-convlstm", ("video", "train", "--model", "convlstm"), "accuracy", "chance_accuracy",
        Target(">=", 0.95)),
    Row("video-mean-frame", ("video", "train", "--model", "mean-frame"), "accuracy", "chance_accuracy"),
    Row("caption", ("caption", "train"), "exact_match", None, Target(">=", 0.5)),
    Row("nextframe", ("nextframe", "train"), "mse", "copy_last_mse", Target("<=", 0.6, "copy_last_mse")),
)


def available(argv: list[str]) -> bool:
    """This rnnkit accepts ``argv``: its command line parses it (task, flags) and the task's Config takes the values
    (a bundled series' name); nothing runs."""
    sys.path.insert(0, str(ROOT / "src"))
    from rnnkit.cli import build_parser, config_from

    with contextlib.redirect_stderr(io.StringIO()):
        try:
            parsed = build_parser().parse_args(argv)
            config = config_from(parsed, parsed.spec.config)
            config.validate(*([parsed.variant] if parsed.variant else []))  # lab's checks take its problem
        except (SystemExit, ValueError):
            return False
    return True


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_kernels() -> str:
    """The CPU kernels torch dispatches in this environment (ATEN_CPU_CAPABILITY, else the best the CPU has)."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def rnnkit(argv: list[str], threads: int) -> tuple[str, float, float]:
    """Run ``python -m rnnkit argv`` in the repository root with OMP_NUM_THREADS=threads: what it printed, the wall
    time and the CPU time (user + system) of the process. CPU time near threads x wall means the run had its cores
    to itself; a wall time well above CPU / threads means something else ran beside it."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT / "src")}
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, "-m", "rnnkit", *argv], env=env, stdout=out, stderr=err,
                                   text=True, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0), err.seek(0)
        printed, errors = out.read(), err.read()
    if process.returncode != 0:
        raise RuntimeError(f"rnnkit {' '.join(argv)} failed (status {process.returncode}):\n{errors[-3000:]}")
    return printed, wall, usage.ru_utime + usage.ru_stime


def train_argv(row: Row, fsdd: str | None) -> list[str]:
    """The row's training command after ``rnnkit``, with the --fsdd folder in its paths."""
    return [word.format(fsdd=fsdd) for word in row.train]


def run_row(row: Row, seed: int, args: argparse.Namespace, results: Path) -> dict | None:
    """The row's result for ``seed``: read from its JSON if it exists, else run (resuming a killed run)."""
    path = results / f"{row.name}-seed{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    out = args.runs / f"{row.run or row.name}-seed{seed}"
    if out.resolve().is_relative_to(ROOT):  # the commands in the JSON name no path of this machine
        out = out.resolve().relative_to(ROOT)
    train = [*train_argv(row, args.fsdd), "--seed", str(seed), "--out", str(out), "--no-progress"]
    if args.quick:
        train += ["--steps", str(QUICK_STEPS)]
    trained_path = ROOT / out / "reproduce-train.json"  # the training's wall time, shared by the rows of one run
    if trained_path.exists():
        trained = json.loads(trained_path.read_text())
    else:
        resume = ["--resume"] if (ROOT / out / "last").exists() else []
        _, wall, cpu_s = rnnkit(train + resume, args.threads)
        trained = {"wall_s": round(wall, 1), "cpu_s": round(cpu_s, 1), "resumed": bool(resume)}
        trained_path.write_text(json.dumps(trained, indent=1))
    by_problem = row.train[1] != "train"  # lab: `rnnkit lab adding --checkpoint RUN` evaluates
    evaluate = [*(row.evaluate or (row.train if by_problem else (row.train[0], "evaluate"))), "--checkpoint",
                str(out), "--json"]
    printed, _, _ = rnnkit(evaluate, args.threads)
    metrics = json.loads(printed.strip().splitlines()[-1])
    recorded = train_argv(row, "FSDD_DIR") + train[len(train_argv(row, args.fsdd)):]  # no --fsdd path of this machine
    command = f"rnnkit {' '.join(recorded)} && rnnkit {' '.join(evaluate)}"
    steps = json.loads((ROOT / out / "last" / "trainer.json").read_text())["step"]
    kernels = os.environ.get("ATEN_CPU_CAPABILITY")
    exports = f"export OMP_NUM_THREADS={args.threads}" + (f" ATEN_CPU_CAPABILITY={kernels}" if kernels else "")
    if lookup(metrics, row.metric) is None:
        raise SystemExit(f"{row.name}: `{' '.join(evaluate)}` printed no {row.metric!r} (keys: {', '.join(metrics)})")
    result = {"row": row.name, "seed": seed, "command": f"{exports}; {command}",
              "metric": row.metric, "value": lookup(metrics, row.metric),
              "baseline": lookup(metrics, row.baseline) if row.baseline else None, "metrics": metrics, "steps": steps,
              "wall_s": trained["wall_s"], "cpu_s": trained.get("cpu_s"), "resumed": trained["resumed"],
              "threads": args.threads,
              "cpu": cpu_model(), "cpu_capability": cpu_kernels(),
              "quick": args.quick}
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def spread(values: list[float]) -> tuple[str, str]:
    """The mean and the min-max of ``values``, to 4 significant digits."""
    mean = statistics.fmean(values)
    return f"{mean:.4g}", (f"{min(values):.4g}-{max(values):.4g}" if len(values) > 1 else "-")


def cpu_seconds(results: list[dict]) -> str:
    """The mean CPU time of the trainings, or "-" where a result predates its recording."""
    times = [r["cpu_s"] for r in results if r.get("cpu_s") is not None]
    return f"{statistics.fmean(times):.0f}" if len(times) == len(results) else "-"


def table(rows: list[Row], found: dict[str, list[dict]]) -> str:
    """The headline table in Markdown: one line per row that has results."""
    lines = ["| result | metric | mean | min-max | seeds | baseline | target | holds | steps | wall s | CPU s | CPU | "
             "threads |", "|---|---|---:|---:|---|---:|---|---|---:|---:|---:|---|---:|"]
    for row in rows:
        results = found.get(row.name)
        if not results:
            continue
        mean, minmax = spread([r["value"] for r in results])
        baselines = [r["baseline"] for r in results if r["baseline"] is not None]
        holds = "-"
        if row.target is not None:
            hits = sum(row.target.holds({**r["metrics"], "__value__": r["value"]}) for r in results)
            holds = f"{hits} of {len(results)}"
        first = results[0]
        lines.append(
            f"| {row.name} | {row.metric} | {mean} | {minmax} | {','.join(str(r['seed']) for r in results)} | "
            f"{spread(baselines)[0] if baselines else '-'} | {row.target or '-'} | {holds} | "
            f"{'/'.join(sorted({str(r['steps']) for r in results}))} | "
            f"{statistics.fmean(r['wall_s'] for r in results):.0f} | {cpu_seconds(results)} | "
            f"{first['cpu']} ({first['cpu_capability']}) | "
            f"{first['threads']} |")
    return "\n".join(lines)


def write_table(path: Path, text: str) -> None:
    """Put ``text`` between the markers of ``path`` (a new file holds only the markers and the table)."""
    block = f"{BEGIN}\n{text}\n{END}"
    if not path.exists():
        path.write_text(block + "\n")
        return
    doc = path.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{path} has no headline-table markers ({BEGIN} ... {END}): add them where the table goes")
    path.write_text(doc[:doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):])


def selected(only: list[str] | None) -> list[Row]:
    if not only:
        return list(ROWS)
    rows = [row for name in only for row in ROWS if name in (row.name, row.train[0])]  # in the order named
    rows = [row for i, row in enumerate(rows) if row not in rows[:i]]
    unknown = [name for name in only if not any(name in (row.name, row.train[0]) for row in ROWS)]
    if unknown:
        raise SystemExit(f"--only: no row or task {', '.join(unknown)}; rows: {', '.join(r.name for r in ROWS)}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="TASK",
                        help="only these tasks or rows, run in this order (e.g. video lm)")
    parser.add_argument("--quick", action="store_true", help=f"seed 0 only, {QUICK_STEPS} steps: a smoke test")
    parser.add_argument("--seeds", type=int, nargs="+", help=f"these seeds (default: {' '.join(map(str, SEEDS))}; "
                                                             "--quick: 0)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every run (default: 1: the "
                        "same numbers on any machine, whatever its core count)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, each with --threads threads (default: 2; "
                        "jobs x threads at most the cores, or the wall times measure the crowding)")
    parser.add_argument("--fsdd", help="the folder of scripts/build_fsdd.py's manifests: adds the full FSDD rows")
    parser.add_argument("--results", type=Path, help="where the JSON goes (default: results/, or results/quick/)")
    parser.add_argument("--runs", type=Path, help="where the run directories go (default: runs/reproduce/, or "
                                                  "runs/reproduce-quick/ with --quick)")
    parser.add_argument("--doc", type=Path, help="the file whose headline table is written (default: "
                                                 "docs/results.md, or RESULTS/table.md with --quick)")
    parser.add_argument("--table", action="store_true", help="only write the table from the JSON already in "
                        "RESULTS (the selected rows that have results); run nothing")
    args = parser.parse_args(argv)
    results = args.results or ROOT / ("results/quick" if args.quick else "results")
    args.runs = args.runs or ROOT / "runs" / ("reproduce-quick" if args.quick else "reproduce")
    doc = args.doc or (results / "table.md" if args.quick else ROOT / "docs" / "results.md")
    results.mkdir(parents=True, exist_ok=True)
    seeds = args.seeds or (SEEDS[:1] if args.quick else SEEDS)
    runnable = []
    for row in [] if args.table else selected(args.only):
        if row.needs_fsdd and not args.fsdd:
            print(f"{row.name}: skipped: needs --fsdd DIR (python scripts/build_fsdd.py manifests DIR)", flush=True)
        elif not available(train_argv(row, args.fsdd)):
            print(f"{row.name}: skipped: task/flag not available ({' '.join(row.train)})", flush=True)
        else:
            runnable.append(row)
    # one unit per training (rows sharing a run, translate greedy and beam, are one unit), row by row, seed by seed
    units: dict[tuple[str, int], list[Row]] = {}
    for row in runnable:
        for seed in seeds:
            units.setdefault((row.run or row.name, seed), []).append(row)

    failed = []

    def run_unit(rows: list[Row], seed: int) -> list[tuple[Row, dict]]:
        done = []
        for row in rows:
            try:
                result = run_row(row, seed, args, results)
            except RuntimeError as error:  # a failed run: the others go on, the exit status says so
                print(f"{row.name} seed {seed}: FAILED: {error}", flush=True)
                failed.append(f"{row.name} seed {seed}")
                return done
            print(f"{row.name} seed {seed}: {row.metric} {result['value']:.4g} ({result['steps']} steps, "
                  f"{result['wall_s']:.0f} s)", flush=True)
            done.append((row, result))
        return done

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_unit, rows, seed) for (_, seed), rows in units.items()]
        finished = [pair for future in futures for pair in future.result()]
    found: dict[str, list[dict]] = {}
    for row, result in sorted(finished, key=lambda pair: (ROWS.index(pair[0]), pair[1]["seed"])):
        found.setdefault(row.name, []).append(result)
    # the table holds every row with results on disk, also those of earlier calls with another --only
    for row in ROWS:
        if row.name not in found:
            on_disk = [json.loads(p.read_text()) for p in sorted(results.glob(f"{row.name}-seed*.json"))]
            if on_disk:
                found[row.name] = [r for r in on_disk if r["seed"] in seeds]
    write_table(doc, table(list(ROWS), found))
    print(f"wrote the headline table to {doc}")
    if failed:
        print(f"failed: {', '.join(failed)} (rerun to retry them)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
