"""``rnnkit.export`` per cell: parity of the exported files with PyTorch, and onnxruntime's speed.

Parity: for every cell, a layer (I=16, H=32; one layer, and two bidirectional layers with
``lengths`` and an initial state) is exported to ONNX and TorchScript at the export example
(B=2, T=5), and each file is run at (B=3, T=11), the export's own check, and at (B=8, T=200),
a length forty times the example's. The table gives the largest |file - PyTorch| over every output
(out, h_n, c_n), float32; the PyTorch side is the layer itself (``backend="auto"``).

Speed (``--speed``): one layer in eval mode, x (T, B, I), inference; onnxruntime (one intra-op
thread, the CPU provider) against the PyTorch layer (``torch.set_num_threads(--threads)``), each run
once before it is timed, ``torch.utils.benchmark.Timer(..., num_threads=...).blocked_autorange``
for PyTorch and the same for a session call; ``--rounds`` interleaved rounds, the ratio is the median
of the per-round ratios, onnxruntime / PyTorch (below 1: the file is faster).

    .venv/bin/python benchmarks/export.py                      # the parity table
    .venv/bin/python benchmarks/export.py --speed --cells lstm,gru --shape 50,16,64,128
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils import benchmark

import rnnkit
from rnnkit import export


def parity(cell: str, directory: Path, stacked: bool) -> dict[str, float]:
    torch.manual_seed(0)
    options = dict(num_layers=2, bidirectional=True) if stacked else {}
    layer = rnnkit.Recurrent(cell, 16, 32, **options).eval()
    row = {}
    for format in export.FORMATS:
        path = directory / f"{cell}-{stacked}.{format}"
        result = export.export_layer(layer, path, format, lengths=stacked, initial_state=stacked)
        spec = export.layer_spec(layer, stacked, stacked)
        row[f"{format} (3, 11)"] = result.max_abs_diff
        row[f"{format} (8, 200)"] = export.max_abs_diff(path, format, spec, 8, 200)[0]
    return row


def speed(cell: str, shape: tuple[int, int, int, int], directory: Path, threads: int, rounds: int) -> float:
    import onnxruntime as ort

    T, B, I, H = shape
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cell, I, H).eval()
    path = directory / f"{cell}-speed.onnx"
    export.export_layer(layer, path, "onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = torch.randn(T, B, I)
    feed = {"x": x.numpy()}

    def eager():
        with torch.no_grad():
            layer(x)

    def onnx():
        session.run(None, feed)

    got = torch.from_numpy(session.run(None, feed)[0])
    with torch.no_grad():
        assert (got - layer(x)[0]).abs().max() < 1e-4, "the file disagrees with the layer"
    ratios = []
    for _ in range(rounds):
        times = {}
        for name, fn in (("eager", eager), ("onnx", onnx)):
            fn()
            timer = benchmark.Timer("fn()", globals={"fn": fn}, num_threads=threads)
            times[name] = timer.blocked_autorange(min_run_time=0.5).median
        ratios.append(times["onnx"] / times["eager"])
    return statistics.median(ratios)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default=",".join(rnnkit.cells()))
    parser.add_argument("--speed", action="store_true", help="time onnxruntime against the PyTorch layer")
    parser.add_argument("--shape", default="50,16,64,128", help="T,B,I,H for --speed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cells = args.cells.split(",")
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, load {load:.1f}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        if args.speed:
            shape = tuple(int(v) for v in args.shape.split(","))
            print(f"| cell | onnxruntime / PyTorch, inference (T, B, I, H) = {shape} |\n|---|---:|")
            for cell in cells:
                print(f"| {cell} | {speed(cell, shape, directory, args.threads, args.rounds):.2f} |", flush=True)
            return 0
        header = [f"{f} {s}" for f in ("onnx", "torchscript") for s in ("(3, 11)", "(8, 200)")]
        print("| cell | layers | " + " | ".join(header) + " |")
        print("|---|---|" + "---:|" * len(header))
        for cell in cells:
            for stacked in (False, True):
                row = parity(cell, directory, stacked)
                label = "2, bidirectional, lengths, h0" if stacked else "1"
                print(f"| {cell} | {label} | " + " | ".join(f"{row[h]:.1e}" for h in header) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
