"""rnnkit layers against torch.nn in the same run: inference and training, as ratios.

Run by ``make bench`` (``.venv/bin/python benchmarks/layers.py``). Follows design section 7:
the thread count is fixed (``--threads``, 2 by default), every function is called once before
it is timed, each measurement is ``torch.utils.benchmark.Timer(..., num_threads=...)
.blocked_autorange(min_run_time=...)``, and candidate and baseline alternate in interleaved
rounds (``--rounds``, 5 by default, at least 3), candidate first in even rounds and baseline
first in odd ones. A row's ratio is the median of its per-round ratios, candidate / baseline:
below 1 the rnnkit layer is faster than torch.nn; "ratio range" is the lowest and highest
per-round ratio. The times are medians over rounds of each round's median; on a shared
machine the ratio holds, the absolute time does not. The last line says how many cores
other processes kept busy meanwhile (from /proc/stat): well above 0 means noisy numbers.

Rows, per shape (B, T, I, H), time-major input, one layer, one direction, fp32:
  lstm  native     rnnkit.LSTM                        vs nn.LSTM
  gru   native     rnnkit.GRU                         vs nn.GRU
  lstm  reference  rnnkit.Recurrent("lstm")           vs nn.LSTM
  each cell torch lacks, reference backend            vs nn.LSTM (same B, T, I, H)

"inference" is a forward under ``torch.no_grad`` in eval mode; "training" is forward plus
``out.sum().backward()`` with the input requiring grad (as inside a deeper network), the
gradients set to None before each call. Where the candidate computes the same function as
its baseline (the first three rows), the script loads the baseline's weights and checks the
outputs agree before timing.

    .venv/bin/python benchmarks/layers.py              # the full run, about 4 minutes on 2 quiet cores
    .venv/bin/python benchmarks/layers.py --quick      # one small shape, about 30 s
    .venv/bin/python benchmarks/layers.py --markdown   # the table as markdown, for docs/results.md
    .venv/bin/python benchmarks/layers.py --cells lstm,gru --shape 1,1000,256,256   # a subset
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.benchmark import Timer

import rnnkit

SHAPES = [(32, 100, 128, 256), (64, 50, 256, 512)]  # (B, T, I, H)
QUICK_SHAPES = [(16, 50, 64, 128)]
MIN_RUN_TIME = 0.3  # seconds per measurement: the default run takes about 4 minutes on 2 quiet cores
QUICK_MIN_RUN_TIME = 0.1
# cells torch.nn has no layer for: timed on the reference backend against nn.LSTM
CELLS_TORCH_LACKS = ["peephole_lstm", "layernorm_lstm", "cifg_lstm", "cho_gru", "mingru", "minlstm", "indrnn"]


@dataclass(frozen=True)
class Row:
    """One comparison: how to build the candidate and its torch.nn baseline at a shape."""

    cell: str
    backend: str
    baseline: str  # "nn.LSTM" or "nn.GRU"
    make: Callable[[int, int], nn.Module]  # (input_size, hidden_size) -> candidate
    same_function: bool  # the candidate computes the baseline's function: check before timing


BASELINES: dict[str, Callable[[int, int], nn.Module]] = {"nn.LSTM": nn.LSTM, "nn.GRU": nn.GRU}


def rows() -> list[Row]:
    out = [
        Row("lstm", "native", "nn.LSTM", lambda i, h: rnnkit.LSTM(i, h, backend="native"), True),
        Row("gru", "native", "nn.GRU", lambda i, h: rnnkit.GRU(i, h, backend="native"), True),
        Row("lstm", "reference", "nn.LSTM",
            lambda i, h: rnnkit.Recurrent("lstm", i, h, backend="reference"), True),
    ]
    for cell in CELLS_TORCH_LACKS:
        out.append(Row(cell, "reference", "nn.LSTM",
                       lambda i, h, cell=cell: rnnkit.Recurrent(cell, i, h, backend="reference"), False))
    return out


def cpu_model() -> str:
    """The CPU's "model name" from /proc/cpuinfo, else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def header(args: argparse.Namespace) -> str:
    return (f"torch {torch.__version__} | CPU: {cpu_model()} | capability: "
            f"{torch.backends.cpu.get_cpu_capability()} | threads: {torch.get_num_threads()} | "
            f"rounds: {args.rounds} | min_run_time: {args.min_run_time:g} s | fp32")


def workload(module: nn.Module, x: Tensor, mode: str) -> Callable[[], None]:
    """The function to time: a no-grad forward, or forward + backward of out.sum()."""
    if mode == "inference":
        module.eval()

        def infer() -> None:
            with torch.no_grad():
                module(x)

        return infer

    module.train()
    x = x.detach().requires_grad_()
    params = list(module.parameters())

    def train() -> None:
        x.grad = None
        for p in params:
            p.grad = None
        out, _ = module(x)
        out.sum().backward()

    return train


def measure(fn: Callable[[], None], min_run_time: float) -> float:
    """Median seconds per call of fn, with every thread the run was given."""
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def check_same_output(candidate: nn.Module, baseline: nn.Module, x: Tensor, row: Row) -> None:
    """The candidate with the baseline's weights gives the baseline's output (fp32 tolerance)."""
    candidate.load_state_dict(baseline.state_dict())
    with torch.no_grad():
        expected, got = baseline(x)[0], candidate(x)[0]
    worst = float((expected - got).abs().max())
    if worst > 1e-4:
        raise SystemExit(f"{row.cell} ({row.backend}) differs from {row.baseline} by {worst:.2e} "
                         "before timing; refusing to report its speed")


class OtherLoad:
    """How many cores other processes kept busy since this object was made.

    The machine's busy time from /proc/stat minus this process's own CPU time, over the wall
    time: on a shared machine it says how much the numbers were disturbed. None without
    /proc/stat (not Linux).
    """

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                ticks = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        except (OSError, ValueError):
            return None
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
        own = os.times()
        return time.perf_counter(), busy, own.user + own.system

    def cores(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return None
        (wall0, busy0, own0), (wall1, busy1, own1) = self.start, end
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0)


@dataclass
class Result:
    row: Row
    mode: str
    shape: tuple[int, int, int, int]
    candidate_s: float
    baseline_s: float
    ratio: float
    ratio_min: float
    ratio_max: float
    other_cores: float | None  # cores other processes kept busy while this row was timed


def compare(row: Row, shape: tuple[int, int, int, int], mode: str, args: argparse.Namespace) -> Result:
    B, T, I, H = shape
    load = OtherLoad()
    torch.manual_seed(0)
    baseline = BASELINES[row.baseline](I, H)
    candidate = row.make(I, H)
    x = torch.randn(T, B, I)  # (T, B, I)
    if row.same_function:
        check_same_output(candidate, baseline, x, row)
    fns = {"candidate": workload(candidate, x, mode), "baseline": workload(baseline, x, mode)}
    for fn in fns.values():  # warm-up: first-call allocations, oneDNN primitive creation
        fn()
    if candidate.last_backend != row.backend:
        raise SystemExit(f"{row.cell}: asked for backend {row.backend!r}, ran {candidate.last_backend!r}")

    times: dict[str, list[float]] = {"candidate": [], "baseline": []}
    for r in range(args.rounds):
        order = ["candidate", "baseline"] if r % 2 == 0 else ["baseline", "candidate"]
        for who in order:
            times[who].append(measure(fns[who], args.min_run_time))
    ratios = [c / b for c, b in zip(times["candidate"], times["baseline"])]
    median = statistics.median
    return Result(row, mode, shape, median(times["candidate"]), median(times["baseline"]),
                  median(ratios), min(ratios), max(ratios), load.cores())


COLUMNS = ["cell", "backend", "baseline", "mode", "B,T,I,H", "candidate ms", "nn ms", "ratio", "ratio range"]


def cells_of(result: Result) -> list[str]:
    return [result.row.cell, result.row.backend, result.row.baseline, result.mode,
            ",".join(map(str, result.shape)), f"{result.candidate_s * 1e3:.2f}",
            f"{result.baseline_s * 1e3:.2f}", f"{result.ratio:.2f}",
            f"{result.ratio_min:.2f}-{result.ratio_max:.2f}"]


def table(results: list[Result], markdown: bool) -> str:
    body = [cells_of(r) for r in results]
    numeric = {"candidate ms", "nn ms", "ratio", "ratio range"}
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |",
                 "|" + "|".join("---:" if c in numeric else "---" for c in COLUMNS) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(c), *(len(cells[i]) for cells in body)) for i, c in enumerate(COLUMNS)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(v.rjust(w) if c in numeric else v.ljust(w) for c, v, w in zip(COLUMNS, cells, widths))

    return "\n".join([fmt(COLUMNS), fmt(["-" * w for w in widths]), *(fmt(cells) for cells in body)])


def parse_shape(text: str) -> tuple[int, int, int, int]:
    try:
        B, T, I, H = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is four positive ints B,T,I,H, got {text!r}") from None
    if min(B, T, I, H) < 1:
        raise argparse.ArgumentTypeError(f"a shape is four positive ints B,T,I,H, got {text!r}")
    return B, T, I, H


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for the whole run (default 2)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved candidate/baseline rounds, at least 3 (default 5)")
    parser.add_argument("--quick", action="store_true",
                        help=f"one small shape {QUICK_SHAPES[0]} and min_run_time {QUICK_MIN_RUN_TIME} s")
    parser.add_argument("--min-run-time", type=float, default=None,
                        help=f"seconds per measurement (default {MIN_RUN_TIME}, {QUICK_MIN_RUN_TIME} with --quick)")
    parser.add_argument("--cells", default=None,
                        help="comma-separated cell names to run (default: every row)")
    parser.add_argument("--shape", action="append", type=parse_shape, default=None, metavar="B,T,I,H",
                        help="a shape to run instead of the defaults; repeat for several")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = parser.parse_args(argv)
    if args.rounds < 3:
        parser.error(f"--rounds must be at least 3, got {args.rounds}")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.min_run_time is None:
        args.min_run_time = QUICK_MIN_RUN_TIME if args.quick else MIN_RUN_TIME
    if args.min_run_time <= 0:
        parser.error(f"--min-run-time must be positive, got {args.min_run_time}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    selected = rows()
    if args.cells:
        wanted = args.cells.split(",")
        unknown = sorted(set(wanted) - {r.cell for r in selected})
        if unknown:
            raise SystemExit(f"--cells: no rows for {', '.join(unknown)}; "
                             f"choose from {', '.join(dict.fromkeys(r.cell for r in selected))}")
        selected = [r for r in selected if r.cell in wanted]
    shapes = args.shape or (QUICK_SHAPES if args.quick else SHAPES)

    print(header(args), flush=True)
    if args.markdown:
        print()
    start, load = time.perf_counter(), OtherLoad()
    results = []
    for shape in shapes:
        for row in selected:
            for mode in ("inference", "training"):
                result = compare(row, shape, mode, args)
                results.append(result)
                others = "" if result.other_cores is None else f"  (others: {result.other_cores:.2f} cores)"
                print(f"  {' '.join(cells_of(result))}{others}", file=sys.stderr, flush=True)
    print(table(results, args.markdown))
    print()
    print(footer(time.perf_counter() - start, load.cores(), results))


def footer(seconds: float, other_cores: float | None, results: list[Result]) -> str:
    """Run time, and how busy other processes kept the machine (the noise in these numbers)."""
    text = f"Run time {seconds:.0f} s."
    if other_cores is not None:
        worst = max((r.other_cores or 0.0 for r in results), default=0.0)
        text += (f" Other processes kept {other_cores:.2f} cores busy on average during the run "
                 f"(at most {worst:.2f} during one row).")
    return text


if __name__ == "__main__":
    main()
