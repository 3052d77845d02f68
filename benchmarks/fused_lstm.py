"""The fused LSTM family (C++ time loops) against torch.nn.LSTM in the same run, as ratios.

For each shape (B, T, I, H), time-major input, one layer, one direction, float32, and each mode
("training": forward + ``out.sum().backward()`` with the input requiring grad, gradients set to
None before each call; "inference": forward under ``no_grad`` in eval mode), one round times
nn.LSTM and ``rnnkit.Recurrent(cell, I, H, backend="fused")`` for lstm, peephole_lstm and
cifg_lstm, plus "gemm floor": only the matrix products such a layer cannot avoid, with the
recurrent weight packed once per sequence by oneDNN as the C++ loops do (inference: the input
projection and T recurrent GEMMs; training: those, T GEMMs for dh, and the weight and input
gradients as one GEMM each). Design section 7: ``torch.set_num_threads`` fixed (``--threads``, 2),
a warm-up call, ``torch.utils.benchmark.Timer(..., num_threads=...).blocked_autorange``, rounds
(``--rounds``, at least 3) with the order rotated, and a row's ratio is the median over rounds of
its per-round ratio to nn.LSTM (below 1: faster than torch); "best-time ratio" divides the fastest
block of all rounds by nn.LSTM's, which other processes can only slow down, so it is the steadier
figure on a busy machine. Before timing, the fused lstm with nn.LSTM's weights must give nn.LSTM's
output.

The header names torch, the CPU and its capability, and what the C++ loops run with
(``extension.status()``); header and footer give /proc/loadavg: the machines are shared, and
ratios taken at a load above ~1.5 on 2 cores are noisy.

    .venv/bin/python benchmarks/fused_lstm.py                     # 3 shapes, 5 rounds: about 6 minutes
    .venv/bin/python benchmarks/fused_lstm.py --quick             # one small shape, a smoke test
    .venv/bin/python benchmarks/fused_lstm.py --shapes 32,100,128,256 --cells peephole_lstm --rounds 5
    .venv/bin/python benchmarks/fused_lstm.py --modes inference --gemm packed,tiled,brgemm   # the forward GEMMs
    .venv/bin/python benchmarks/fused_lstm.py --modes training --shapes "1,1000,64,256;8,200,64,256" --gemm packed,gemv

``--gemm`` times the rows once per way of forming the recurrent products (``auto``: what the layer runs;
``packed``: oneDNN GEMM + one pointwise pass; ``gemv``: rnnkit's own kernel for a few rows (csrc/gemm.h) + the
same pass; ``addmm``: at::addmm + the pass; inference only: ``tiled``, the tiled step on rnnkit's micro-kernel,
x_t W_ih^T inside the tile; ``tiled-gx``: the same step reading a precomputed gx; ``brgemm``: the tiled step from
x on ``cpublas::brgemm``). In training the forward and the backward both run the one named.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.benchmark import Timer

import rnnkit
from rnnkit.backends.fused import extension
from rnnkit.backends.fused import lstm as fused_lstm
from rnnkit.bench import cpu_model_and_flags, layer_workload

SHAPES = [(32, 100, 128, 256), (64, 256, 256, 512), (16, 512, 128, 1024)]  # (B, T, I, H)
QUICK_SHAPES = [(8, 20, 16, 32)]
CELLS = ["lstm", "peephole_lstm", "cifg_lstm"]
MODES = ("training", "inference")
FLOOR = "gemm floor"


def cpu_model() -> str:
    return cpu_model_and_flags()[0]


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


make_call = layer_workload  # a training step or an inference forward of a module


def gemm_floor(B: int, T: int, I: int, H: int, mode: str) -> Callable[[], None]:
    """Only the GEMMs of an LSTM layer, recurrent weights packed by oneDNN as the C++ loops do."""
    G = 4 * H
    x = torch.randn(T * B, I)
    W_ih, W_hh, b = torch.randn(G, I) * 0.05, torch.randn(G, H) * 0.05, torch.zeros(G)
    h = torch.randn(B, H)
    da = torch.randn(T, B, G)
    hs = torch.randn(T * B, H)
    linear, reorder = torch.ops.mkldnn._linear_pointwise, torch.ops.mkldnn._reorder_linear_weight

    def forward() -> None:
        torch.addmm(b, x, W_ih.t())  # the input projection, all steps at once
        W = reorder(W_hh, B)
        for _ in range(T):
            linear(h, W, b, "none", [], "")

    def training() -> None:
        forward()
        W_t = reorder(W_hh.t().contiguous(), B)
        for t in range(T):
            linear(da[t], W_t, None, "none", [], "")  # dh_{t-1} = da_t W_hh
        d = da.reshape(T * B, G)
        d.t() @ hs  # dW_hh
        d.t() @ x  # dW_ih
        d @ W_ih  # dx

    return training if mode == "training" else forward


TRAINING_GEMMS = ("auto", "packed", "gemv", "addmm")


def forcing_gemm(fn: Callable[[], None], gemm: str) -> Callable[[], None]:
    """``fn`` with the C++ loops' recurrent GEMMs forced to ``gemm`` ('auto': left as it is): 'tiled' and
    'brgemm' run the tiled step from x (``lstm_forward_tiled``), the others the loop from gx, forward and
    backward."""
    if gemm == "auto":
        return fn
    from_x = gemm in ("tiled", "brgemm")
    saved = extension.forward_gemm, extension.backward_gemm, extension.tiled_gemm, fused_lstm.tiled_input

    def call() -> None:
        extension.forward_gemm = lambda *args: gemm.removesuffix("-gx")
        extension.backward_gemm = lambda *args: gemm
        extension.tiled_gemm = lambda: gemm
        if not from_x:
            fused_lstm.tiled_input = lambda *args: False
        try:
            fn()
        finally:
            extension.forward_gemm, extension.backward_gemm, extension.tiled_gemm, fused_lstm.tiled_input = saved

    return call


def build_rows(B: int, T: int, I: int, H: int, cells: list[str], mode: str,
               gemms: list[str]) -> dict[str, Callable[[], None]]:
    torch.manual_seed(0)
    x = torch.randn(T, B, I)
    base = nn.LSTM(I, H)
    rows = {"nn.LSTM": make_call(base, x, mode)}
    for cell in cells:
        layer = rnnkit.Recurrent(cell, I, H, backend="fused")
        if cell == "lstm":  # same function as the baseline: check before timing
            layer.load_state_dict(base.state_dict())
            with torch.no_grad():
                err = float((layer(x)[0] - base(x)[0]).abs().max())
            if err > 1e-4:
                sys.exit(f"fused lstm differs from nn.LSTM by {err:.2e} at {(B, T, I, H)}")
        if gemms == ["auto"]:
            rows[f"{cell} fused"] = make_call(layer, x, mode)
        else:
            for gemm in gemms:
                if mode == "training" and gemm not in TRAINING_GEMMS:
                    sys.exit(f"--gemm {gemm}: training runs {', '.join(TRAINING_GEMMS)} (the tiled step is "
                             f"inference only); pass --modes inference")
                rows[f"{cell} fused {gemm}"] = forcing_gemm(make_call(layer, x, mode), gemm)
    if extension.packed_gemm():
        rows[FLOOR] = gemm_floor(B, T, I, H, mode)
    return rows


def measure(fn: Callable[[], None], min_run_time: float) -> tuple[float, float]:
    """(median, fastest) seconds per call over the blocks of one blocked_autorange."""
    timer = Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return m.median, min(m.times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=None, help="B,T,I,H[;B,T,I,H...]; default: the three of the targets")
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-run-time", type=float, default=0.3)
    parser.add_argument("--quick", action="store_true", help="one small shape, 1 round per mode: a smoke test")
    parser.add_argument("--gemm", default="auto",
                        help="auto, packed, gemv, addmm; inference also tiled, tiled-gx, brgemm (comma-separated)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";")]
    rounds = 1 if args.quick else args.rounds
    cells = [c for c in args.cells.split(",") if c]
    modes = [m for m in args.modes.split(",") if m]

    print(f"torch {torch.__version__} | CPU: {cpu_model()} | capability: {torch.backends.cpu.get_cpu_capability()} "
          f"| threads: {torch.get_num_threads()} | rounds: {rounds} | min_run_time: {args.min_run_time:g} s | fp32")
    print(f"C++ loops: {extension.status()}")
    print(f"loadavg at start: {loadavg()}")
    results = []  # (shape, mode, row, ratio, ratio range, ms)
    for B, T, I, H in shapes:
        for mode in modes:
            rows = build_rows(B, T, I, H, cells, mode, args.gemm.split(","))
            for fn in rows.values():  # warm-up: builds, packs, allocator
                fn()
            names = list(rows)
            times: dict[str, list[float]] = {n: [] for n in names}  # per round: the median time
            fastest = {n: float("inf") for n in names}  # over all rounds: the fastest block
            for r in range(rounds):
                order = names[r % len(names):] + names[:r % len(names)]  # rotate: no row always first
                for n in order:
                    median, best = measure(rows[n], args.min_run_time)
                    times[n].append(median)
                    fastest[n] = min(fastest[n], best)
            for n in names:
                ratios = [c / b for c, b in zip(times[n], times["nn.LSTM"])]
                results.append(((B, T, I, H), mode, n, statistics.median(ratios), (min(ratios), max(ratios)),
                                fastest[n] / fastest["nn.LSTM"], 1e3 * statistics.median(times[n])))
            print(f"  done {(B, T, I, H)} {mode} (loadavg {loadavg()})", file=sys.stderr)

    print()
    print("| (B, T, I, H) | mode | row | ratio to nn.LSTM | ratio range | best-time ratio | ms |")
    print("|---|---|---|---|---|---|---|")
    for shape, mode, name, ratio, (lo, hi), best, ms in results:
        print(f"| {shape} | {mode} | {name} | {ratio:.3f} | {lo:.3f}-{hi:.3f} | {best:.3f} | {ms:.1f} |")
    print(f"\nloadavg at end: {loadavg()}")


if __name__ == "__main__":
    main()
