"""Token-by-token generation cost: ``rnnkit`` ``layer.step`` against stepping torch.nn and the GEMV floor.

Run as ``.venv/bin/python benchmarks/generation.py`` (about 50 s on 2 quiet cores).

Batch 1, a 2-layer stack, fp32, inference (``torch.no_grad``, eval mode); one "token" is one
step through both layers with the state carried from the previous step:

  rnnkit    ``y, state = layer.step(x_t, state)`` (the inference stepper, ``rnnkit.stepper``; lstm and
            peephole_lstm step both layers in one C++ call where the C++ loops load: the header says)
  torch.nn  ``out, state = nn_layer(x_t[None], state)``: torch.nn.LSTM / GRU called with T = 1
  floor     per layer ``torch.mv(W_ih, x)`` and ``torch.mv(W_hh, h)`` on the layer's own weights:
            the matrix-vector products alone, the bare minimum any step must pay
  floor T   the same products on the weights stored transposed and contiguous, (in, out), as
            ``torch.mv(W_ih_t.t(), x)``: the layout rnnkit's stepper arranges, which MKL streams
            faster for batch 1, so "x floor" can fall below 1

Columns: microseconds per token for each; "x floor" = rnnkit / floor (the target is at most
1.3 for the LSTM); "x floor T" = rnnkit / floor T; "speed-up" = torch.nn / rnnkit (the target
is at least 2.5); tokens per second of rnnkit; "others", the cores other processes kept busy
while the row was timed (well above 0 means noise: torch.nn's step, like torch.tanh, then
stalls for milliseconds per call, see ``rnnkit/stepper.py``). Ratios are medians of per-round
ratios; the four are timed in interleaved rounds (``--rounds``, at least 3) in a rotating
order, each with ``torch.utils.benchmark.Timer(..., num_threads=torch.get_num_threads())
.blocked_autorange`` after a warm-up. Where rnnkit computes torch.nn's function (lstm, gru) it
is loaded with torch.nn's weights and checked against it before timing. On a shared machine
the ratios hold better than absolute times: the GEMVs stream 12-16 MB of weights through a
32 MB L3 shared with other tenants, and the floor moved between 0.3 and 1.3 ms from run to run.

    .venv/bin/python benchmarks/generation.py --markdown
    .venv/bin/python benchmarks/generation.py --quick        # lstm rows only, shorter runs
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.benchmark import Timer

import rnnkit
from rnnkit.backends.fused import extension
from rnnkit.bench import cpu_model_and_flags

NUM_LAYERS = 2


@dataclass(frozen=True)
class Row:
    cell: str
    input_size: int
    hidden_size: int
    baseline: str  # "nn.LSTM" or "nn.GRU"


ROWS = [
    Row("lstm", 512, 512, "nn.LSTM"),
    Row("lstm", 64, 512, "nn.LSTM"),
    Row("peephole_lstm", 512, 512, "nn.LSTM"),
    Row("gru", 512, 512, "nn.GRU"),
    Row("cho_gru", 512, 512, "nn.GRU"),
]
SAME_FUNCTION = {("lstm", "nn.LSTM"), ("gru", "nn.GRU")}
BASELINES = {"nn.LSTM": nn.LSTM, "nn.GRU": nn.GRU}


def cpu_model() -> str:
    return cpu_model_and_flags()[0]


def busy_seconds() -> tuple[float, float, float] | None:
    """(wall, machine busy, this process's CPU) seconds from /proc/stat; None off Linux."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    own = os.times()
    return time.perf_counter(), (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"), own.user + own.system


def other_cores(start: tuple[float, float, float] | None) -> float | None:
    """Cores that other processes kept busy since ``start`` (the noise in the numbers)."""
    end = busy_seconds()
    if start is None or end is None or end[0] <= start[0]:
        return None
    return max(0.0, (end[1] - start[1]) - (end[2] - start[2])) / (end[0] - start[0])


def stepper(layer: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One rnnkit token: layer.step with the state carried over."""
    state = None

    def run() -> None:
        nonlocal state
        with torch.no_grad():
            _, state = layer.step(x, state)

    return run


def nn_stepper(layer: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One torch.nn token: the layer over a sequence of length 1, state carried over."""
    x1 = x.unsqueeze(0)  # (1, B, I)
    state = None

    def run() -> None:
        nonlocal state
        with torch.no_grad():
            _, state = layer(x1, state)

    return run


def floor(layer: rnnkit.Recurrent, x: torch.Tensor, transposed: bool = False) -> Callable[[], None]:
    """The GEMVs alone: two torch.mv per layer on the layer's own weights, (out, in) as stored,
    or (transposed) on copies stored (in, out) and multiplied through their ``.t()`` view."""
    pairs = []
    for k in range(layer.num_layers):
        w = layer.weights(k, 0)
        w_ih, w_hh = w["weight_ih"].detach().contiguous(), w["weight_hh"].detach().contiguous()
        if transposed:
            w_ih, w_hh = w_ih.t().contiguous().t(), w_hh.t().contiguous().t()
        pairs.append((w_ih, w_hh, torch.randn(w_ih.shape[1]), torch.randn(w_hh.shape[1])))

    def run() -> None:
        for w_ih, w_hh, x_k, h_k in pairs:
            torch.mv(w_ih, x_k)
            torch.mv(w_hh, h_k)

    return run


def check_same_function(candidate: rnnkit.Recurrent, baseline: nn.Module, x: torch.Tensor, row: Row) -> None:
    """With torch.nn's weights, 5 rnnkit steps give torch.nn's outputs (fp32 tolerance)."""
    candidate.load_state_dict(baseline.state_dict())
    xs = torch.randn(5, *x.shape)
    with torch.no_grad():
        expected, _ = baseline(xs)
        state, got = None, []
        for x_t in xs:
            y, state = candidate.step(x_t, state)
            got.append(y)
    worst = float((expected - torch.stack(got)).abs().max())
    if worst > 1e-5:
        raise SystemExit(f"{row.cell}: layer.step differs from {row.baseline} by {worst:.2e}; refusing to time it")


def measure(fn: Callable[[], None], min_run_time: float) -> float:
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


@dataclass
class Result:
    row: Row
    times: dict[str, float]  # median seconds per token: rnnkit, nn, floor, floor T
    x_floor: float  # median over rounds of rnnkit / floor
    x_floor_t: float  # median over rounds of rnnkit / floor T
    speedup: float  # median over rounds of nn / rnnkit
    speedup_range: tuple[float, float]
    other_cores: float | None  # cores other processes kept busy while this row was timed


def compare(row: Row, args: argparse.Namespace) -> Result:
    load = busy_seconds()
    torch.manual_seed(0)
    I, H = row.input_size, row.hidden_size
    baseline = BASELINES[row.baseline](I, H, NUM_LAYERS).eval()
    candidate = rnnkit.Recurrent(row.cell, I, H, num_layers=NUM_LAYERS).eval()
    x = torch.randn(1, I)  # (B=1, I)
    if (row.cell, row.baseline) in SAME_FUNCTION:
        check_same_function(candidate, baseline, x, row)
    fns = {"rnnkit": stepper(candidate, x), "nn": nn_stepper(baseline, x), "floor": floor(candidate, x),
           "floor T": floor(candidate, x, transposed=True)}
    for fn in fns.values():
        fn()  # warm-up: first-call allocations and, for rnnkit, arranging the weights
    times: dict[str, list[float]] = {who: [] for who in fns}
    order = list(fns)
    for r in range(args.rounds):
        for who in order[r % len(order) :] + order[: r % len(order)]:
            times[who].append(measure(fns[who], args.min_run_time))
    median = statistics.median
    speedups = [n / c for n, c in zip(times["nn"], times["rnnkit"])]
    return Result(row, {who: median(t) for who, t in times.items()},
                  median([c / f for c, f in zip(times["rnnkit"], times["floor"])]),
                  median([c / f for c, f in zip(times["rnnkit"], times["floor T"])]),
                  median(speedups), (min(speedups), max(speedups)), other_cores(load))


COLUMNS = ["cell", "I", "H", "baseline", "rnnkit us/token", "nn us/token", "floor us/token",
           "floor T us/token", "x floor", "x floor T", "speed-up", "speed-up range", "tokens/s", "others"]


def cells_of(r: Result) -> list[str]:
    return [r.row.cell, str(r.row.input_size), str(r.row.hidden_size), r.row.baseline,
            f"{r.times['rnnkit'] * 1e6:.0f}", f"{r.times['nn'] * 1e6:.0f}", f"{r.times['floor'] * 1e6:.0f}",
            f"{r.times['floor T'] * 1e6:.0f}", f"{r.x_floor:.2f}", f"{r.x_floor_t:.2f}", f"{r.speedup:.2f}",
            f"{r.speedup_range[0]:.2f}-{r.speedup_range[1]:.2f}",
            f"{1 / r.times['rnnkit']:.0f}", "?" if r.other_cores is None else f"{r.other_cores:.2f}"]


def table(results: list[Result], markdown: bool) -> str:
    body = [cells_of(r) for r in results]
    text = {"cell", "baseline"}
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |",
                 "|" + "|".join("---" if c in text else "---:" for c in COLUMNS) + "|"]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])
    widths = [max(len(c), *(len(cells[i]) for cells in body)) for i, c in enumerate(COLUMNS)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(v.ljust(w) if c in text else v.rjust(w) for c, v, w in zip(COLUMNS, cells, widths))

    return "\n".join([fmt(COLUMNS), fmt(["-" * w for w in widths]), *(fmt(cells) for cells in body)])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for the run (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds, at least 3 (default 5)")
    parser.add_argument("--min-run-time", type=float, default=None,
                        help="seconds per measurement (default 0.5, 0.2 with --quick)")
    parser.add_argument("--quick", action="store_true", help="the lstm rows only, shorter measurements")
    parser.add_argument("--cells", default=None, help="comma-separated cells to run (default: every row)")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = parser.parse_args(argv)
    if args.rounds < 3:
        parser.error(f"--rounds must be at least 3, got {args.rounds}")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.min_run_time is None:
        args.min_run_time = 0.2 if args.quick else 0.5
    if args.min_run_time <= 0:
        parser.error(f"--min-run-time must be positive, got {args.min_run_time}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [r for r in ROWS if r.cell == "lstm"] if args.quick else ROWS
    if args.cells:
        wanted = args.cells.split(",")
        unknown = sorted(set(wanted) - {r.cell for r in ROWS})
        if unknown:
            raise SystemExit(f"--cells: no rows for {', '.join(unknown)}; "
                             f"choose from {', '.join(dict.fromkeys(r.cell for r in ROWS))}")
        rows = [r for r in rows if r.cell in wanted]
    print(f"torch {torch.__version__} | CPU: {cpu_model()} | capability: "
          f"{torch.backends.cpu.get_cpu_capability()} | threads: {torch.get_num_threads()} | "
          f"rounds: {args.rounds} | min_run_time: {args.min_run_time:g} s | fp32, batch 1, "
          f"{NUM_LAYERS} layers", flush=True)
    print(f"C++ loops (layer.step of the LSTM family): {extension.status()}", flush=True)
    if args.markdown:
        print()
    start, load = time.perf_counter(), busy_seconds()
    results = []
    for row in rows:
        results.append(compare(row, args))
        print("  " + " ".join(cells_of(results[-1])), file=sys.stderr, flush=True)
    print(table(results, args.markdown))
    print()
    cores = other_cores(load)
    busy = "" if cores is None else f" Other processes kept {cores:.2f} cores busy on average."
    print(f"Run time {time.perf_counter() - start:.0f} s.{busy}")


if __name__ == "__main__":
    main()
