"""``rnnkit bench``: every cell against torch.nn in the same run, as ratios (design section 7).

Per shape (B, T, I, H) and mode (training = forward + backward of ``out.sum()``, inference =
forward under ``no_grad``), one round times, back to back: nn.LSTM, nn.GRU, the GEMM floor (the
matrix products an LSTM of that shape cannot avoid, nothing else), and each cell as
``rnnkit.Recurrent(cell, ..., backend=...)`` (``auto`` unless ``--backend`` says otherwise).
Rounds repeat (``--rounds``, at least 3 for numbers you report) with the order rotated; a
ratio is the median over rounds of the per-round ratio, so the slow drift of a shared machine
cancels. Each time is ``torch.utils.benchmark.Timer(..., num_threads=...).blocked_autorange``.
The header names torch, the CPU, its capability and the flags the ratios depend on (AMX,
AVX-512 BF16); the footer how many cores other processes kept busy (the noise). For the LSTM family
on the fused backend, ``loops`` says which loops ran: ``C++`` with the variant (avx512, avx2, default)
and the recurrent GEMM (tiled, packed, gemv, addmm; under bf16 autocast ``bf16`` where the per-step GEMMs took
bf16 operands, ``bf16-emulated`` where ``RNNKIT_BF16_GEMM=1`` forced them on a CPU without bf16 instructions),
``float32`` where they ran float32 GEMMs under bf16 autocast, or ``Python``.

    rnnkit bench                                  # the four shapes of the issue, all cells
    rnnkit bench --quick                          # one small shape, a smoke test
    rnnkit bench --cells lstm,gru --shape 1,1000,64,256 --markdown
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.benchmark import Timer

from .backends.fused import lstm as fused_lstm
from .cells import cells as registered_cells
from .recurrent import Recurrent

SHAPES = [(32, 100, 128, 256), (64, 256, 256, 512), (16, 512, 128, 1024), (1, 1000, 64, 256)]  # (B, T, I, H)
QUICK_SHAPES = [(8, 20, 16, 32)]
MODES = ("training", "inference")
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")  # what bf16 and GEMM speed depend on


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """The CPU's model name and which of FLAGS it has, from /proc/cpuinfo (Linux)."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return model, [f for f in FLAGS if f in flags]


def header(args: argparse.Namespace) -> str:
    model, flags = cpu_model_and_flags()
    gpu = f"GPU: {torch.cuda.get_device_name(args.device)} | " if args.device.startswith("cuda") else ""
    return (f"torch {torch.__version__} | {gpu}CPU: {model} | capability: {torch.backends.cpu.get_cpu_capability()} "
            f"| flags: {' '.join(flags) or 'none of ' + ' '.join(FLAGS)} | threads: {torch.get_num_threads()} "
            f"| rounds: {args.rounds} | min_run_time: {args.min_run_time:g} s | {args.dtype}"
            + ("" if args.autocast is None else f" under {args.autocast} autocast"))


class OtherLoad:
    """How many cores other processes kept busy since this object was made (from /proc/stat)."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                ticks = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
        own = os.times()
        return time.perf_counter(), busy, own.user + own.system

    def cores(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return None
        (wall0, busy0, own0), (wall1, busy1, own1) = self.start, end
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0)


def layer_workload(module: nn.Module, x: Tensor, mode: str, autocast: torch.dtype | None = None
                   ) -> Callable[[], None]:
    """The call to time: a no-grad forward, or forward + backward with the input requiring grad.

    ``autocast``: run the forward under ``torch.autocast(x.device.type, dtype=autocast)``.
    """
    def context():
        return torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None)

    if mode == "inference":
        module.eval()

        def infer() -> None:
            with torch.no_grad(), context():
                module(x)

        return infer
    module.train()
    x = x.detach().requires_grad_()
    params = list(module.parameters())

    def train() -> None:
        x.grad = None
        for p in params:
            p.grad = None
        with context():
            out, _ = module(x)
        out.float().sum().backward()

    return train


def gemm_floor_workload(B: int, T: int, I: int, H: int, mode: str, dtype: torch.dtype,
                        device: str = "cpu") -> Callable[[], None]:
    """The matrix products of one LSTM layer and nothing else: its lower bound on this machine.

    Forward: the input GEMM (T*B, I) x (I, 4H) and T recurrent GEMMs (B, H) x (H, 4H). Training
    adds dX (T*B, 4H) x (4H, I), T GEMMs dh = (B, 4H) x (4H, H), and dW_ih, dW_hh over all rows.
    """
    kw = dict(dtype=dtype, device=device)
    x = torch.randn(T * B, I, **kw)
    w_ih, w_hh = torch.randn(4 * H, I, **kw), torch.randn(4 * H, H, **kw)
    h = torch.randn(B, H, **kw)
    gates = torch.randn(T * B, 4 * H, **kw)
    hs = torch.randn(T * B, H, **kw)
    step_out = torch.empty(B, 4 * H, **kw)
    dh_out = torch.empty(B, H, **kw)

    def forward() -> None:
        x @ w_ih.t()
        for _ in range(T):
            torch.mm(h, w_hh.t(), out=step_out)

    def train() -> None:
        forward()
        for _ in range(T):
            torch.mm(step_out, w_hh, out=dh_out)
        gates @ w_ih  # dX
        gates.t() @ x  # dW_ih
        gates.t() @ hs  # dW_hh

    return forward if mode == "inference" else train


def measure(fn: Callable[[], None], min_run_time: float) -> float:
    """Median seconds per call, with every thread the run was given (Timer defaults to one)."""
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


@dataclass
class Row:
    name: str  # "nn.LSTM", "GEMM floor" or a cell name
    backend: str  # the backend that ran ("torch" for the baselines)
    shape: tuple[int, int, int, int]
    mode: str
    times: list[float] = field(default_factory=list)  # seconds, one per round
    vs_lstm: list[float] = field(default_factory=list)  # per-round ratios
    vs_gru: list[float] = field(default_factory=list)
    loops: str = ""  # the fused LSTM family: which loops ran ("C++ avx2 tiled", "Python")


def bench_shape(shape, mode, cells: list[str], args: argparse.Namespace, echo) -> list[Row]:
    """All rows of one shape and mode, timed in interleaved rounds."""
    B, T, I, H = shape
    dtype = getattr(torch, args.dtype)
    autocast = None if args.autocast is None else getattr(torch, args.autocast)
    torch.manual_seed(0)
    kw = dict(dtype=dtype, device=args.device)
    x = torch.randn(T, B, I, **kw)  # (T, B, I)
    fns: dict[str, Callable[[], None]] = {
        "nn.LSTM": layer_workload(nn.LSTM(I, H, **kw), x, mode, autocast),
        "nn.GRU": layer_workload(nn.GRU(I, H, **kw), x, mode, autocast),
        "GEMM floor": gemm_floor_workload(B, T, I, H, mode, autocast or dtype, args.device),
    }
    rows = {name: Row(name, "torch", shape, mode) for name in fns}
    for cell in cells:
        layer = Recurrent(cell, I, H, backend=args.backend, **kw)
        fns[cell] = layer_workload(layer, x, mode, autocast)
        fused_lstm.last_loop = ""
        fns[cell]()  # also the warm-up; it tells which backend auto picked and which loops ran
        loops = fused_lstm.last_loop or ("Python" if layer.last_backend == "fused" else "")  # other fused cells
        rows[cell] = Row(cell, layer.last_backend, shape, mode, loops=loops)
    for fn in fns.values():
        fn()  # warm-up: first-call allocations, oneDNN primitives, extension builds
    names = list(fns)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
        times = {name: measure(fns[name], args.min_run_time) for name in order}
        for name in names:
            rows[name].times.append(times[name])
            rows[name].vs_lstm.append(times[name] / times["nn.LSTM"])
            rows[name].vs_gru.append(times[name] / times["nn.GRU"])
        echo(f"  {mode} {','.join(map(str, shape))}: round {r + 1}/{args.rounds} done")
    return list(rows.values())


COLUMNS = ["cell", "backend", "loops", "mode", "B,T,I,H", "ms", "vs nn.LSTM", "vs nn.GRU", "tokens/s"]
NUMERIC = {"ms", "vs nn.LSTM", "vs nn.GRU", "tokens/s"}


def row_cells(row: Row) -> list[str]:
    B, T, _, _ = row.shape
    seconds = statistics.median(row.times)
    gru_like = row.name in ("nn.GRU", "gru", "cho_gru")
    return [row.name, row.backend, row.loops, row.mode, ",".join(map(str, row.shape)), f"{seconds * 1e3:.2f}",
            f"{statistics.median(row.vs_lstm):.2f}",
            f"{statistics.median(row.vs_gru):.2f}" if gru_like else "",
            f"{B * T / seconds:,.0f}"]


def table(rows: list[Row], markdown: bool) -> str:
    body = [row_cells(r) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |",
                 "|" + "|".join("---:" if c in NUMERIC else "---" for c in COLUMNS) + "|"]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])
    widths = [max(len(c), *(len(cells[i]) for cells in body)) for i, c in enumerate(COLUMNS)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(v.rjust(w) if c in NUMERIC else v.ljust(w) for c, v, w in zip(COLUMNS, cells, widths))

    return "\n".join([fmt(COLUMNS), fmt(["-" * w for w in widths]), *(fmt(cells) for cells in body)])


def parse_shape(text: str) -> tuple[int, int, int, int]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"a shape is four positive ints B,T,I,H, got {text!r}")
    return shape  # type: ignore[return-value]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for the run (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, median ratio (default 3)")
    parser.add_argument("--min-run-time", type=float, default=0.2, help="seconds per measurement (default 0.2)")
    parser.add_argument("--quick", action="store_true", help=f"one small shape {QUICK_SHAPES[0]}, a smoke test")
    parser.add_argument("--cells", default=None, help="comma-separated cells (default: all registered)")
    parser.add_argument("--shape", action="append", type=parse_shape, metavar="B,T,I,H",
                        help="a shape to time; repeat for several (default: the four of docs/results.md)")
    parser.add_argument("--mode", choices=MODES, action="append", help="training, inference (default both)")
    parser.add_argument("--backend", default="auto", help="backend of the rnnkit layers (default auto)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--autocast", choices=["bfloat16"], default=None,
                        help="run every layer (torch's too) under torch.autocast with this dtype")
    parser.add_argument("--device", default="cpu",
                        help="cpu (default) or cuda: torch.nn then runs cuDNN; Timer synchronizes CUDA")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")


def run(args: argparse.Namespace) -> int:
    known = registered_cells()
    cells = known if args.cells is None else args.cells.split(",")
    unknown = [c for c in cells if c not in known]
    if unknown:
        raise SystemExit(f"--cells: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    if args.rounds < 1 or args.threads < 1:
        raise SystemExit(f"--rounds and --threads must be >= 1, got {args.rounds} and {args.threads}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device: {args.device!r} asked for, but torch {torch.__version__} sees no CUDA device")
    if (args.autocast == "bfloat16" and args.device == "cpu"
            and not torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        raise SystemExit("--autocast bfloat16: torch's own LSTM cannot run under bfloat16 autocast on this CPU "
                         "(oneDNN needs AVX-512 BF16 or AMX), so there is no baseline to compare with")
    torch.set_num_threads(args.threads)
    shapes = args.shape or (QUICK_SHAPES if args.quick else SHAPES)

    def echo(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    print(header(args), flush=True)
    start, load = time.perf_counter(), OtherLoad()
    rows: list[Row] = []
    for shape in shapes:
        for mode in args.mode or MODES:
            rows += bench_shape(shape, mode, cells, args, echo)
    print()
    print(table(rows, args.markdown))
    print()
    others = load.cores()
    noise = "" if others is None else f"; other processes kept {others:.2f} cores busy on average"
    print(f"Run time {time.perf_counter() - start:.0f} s{noise}.")
    return 0
