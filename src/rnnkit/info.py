"""``rnnkit info``: what this machine gives rnnkit, in one screen (or one JSON object).

Versions (rnnkit, torch, Python); the CPU (model, the vector instructions it has, the capability
torch dispatches to, threads); the C++ loops (loaded or why not, build seconds, cache folder);
CUDA devices and whether triton imports; and which backend ``backend="auto"`` picks for every cell,
in training and in inference, at two benchmark shapes. Nothing is timed: the picks come from
``rnnkit.backends.select``, the same rule a layer follows. It does build the C++ loops if they
were never built, because whether they load is the question.

``collect()`` returns the facts as a dict (what ``--json`` prints); ``format_info()`` makes the text.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch

# (B, T, I, H): the shapes of the benchmarks in docs/results.md. auto's rule looks at B and T only.
SHAPES = [(32, 100, 128, 256), (1, 1000, 64, 256)]
# the /proc/cpuinfo flag that says the CPU has each instruction set
CPU_FEATURES = {"AVX2": "avx2", "AVX-512": "avx512f", "AVX-512 BF16": "avx512_bf16", "AMX": "amx_tile"}
CPUINFO = Path("/proc/cpuinfo")


def cpu_from_cpuinfo(text: str) -> dict:
    """The model and the features (``CPU_FEATURES``: True/False) of the first processor in /proc/cpuinfo text."""
    model, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "model") and model is None and not value.strip().isdigit():
            model = value.strip()  # x86 "model name"; some ARM kernels "Model" (x86's "model" is a number)
        elif key in ("flags", "features") and flags is None:
            flags = set(value.split())
    features = None if flags is None else {name: flag in flags for name, flag in CPU_FEATURES.items()}
    return {"model": model, "features": features}


def cpu_info() -> dict:
    """The CPU: model, features (None where /proc/cpuinfo is absent), torch's capability, threads."""
    try:
        found = cpu_from_cpuinfo(CPUINFO.read_text())
    except OSError:  # not Linux
        found = {"model": None, "features": None}
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"model": found["model"] or platform.processor() or platform.machine(), "machine": platform.machine(),
            "features": found["features"], "torch_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "cpus": usable}


def cuda_info() -> dict:
    """CUDA devices (name, compute capability, memory) and whether triton imports (its version, or why not)."""
    devices = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append({"name": props.name, "capability": f"{props.major}.{props.minor}",
                            "memory_gib": round(props.total_memory / 2**30, 1)})
    try:
        import triton

        triton_status = f"imports (triton {triton.__version__})"
    except Exception as e:  # any failure to import is the answer, not an error of `info`
        triton_status = f"does not import: {type(e).__name__}: {e}"
    return {"cuda": torch.version.cuda, "devices": devices, "triton": triton_status}


def auto_picks(devices: list[str]) -> list[dict]:
    """The backend ``auto`` picks for every cell, float32, on each device, at each of ``SHAPES``."""
    from .backends import Problem, select
    from .cells import cells

    picks = []
    for device in devices:
        for cell in cells():
            for B, T, I, H in SHAPES:
                row = {"cell": cell, "device": device, "shape": [B, T, I, H]}
                for mode, training in (("training", True), ("inference", False)):
                    problem = Problem(cell=cell, cell_options=(), device=device, dtype=torch.float32, batch=B,
                                      steps=T, training=training, hidden_size=H)
                    row[mode] = select("auto", problem).NAME
                picks.append(row)
    return picks


def collect() -> dict:
    """Everything ``rnnkit info`` reports, as plain JSON-ready values."""
    from . import __version__
    from .backends.fused import extension

    cuda = cuda_info()
    return {"rnnkit": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "python_executable": sys.executable, "platform": platform.platform(), "cpu": cpu_info(),
            "cpp_loops": extension.details(), "cuda": cuda,
            "auto": auto_picks(["cpu"] + (["cuda"] if cuda["devices"] else []))}


def _yes_no(features: dict | None, name: str) -> str:
    return "unknown" if features is None else ("yes" if features[name] else "no")


def format_info(info: dict) -> str:
    """The text of ``rnnkit info``: a few lines of facts, then auto's table."""
    cpu, loops, cuda = info["cpu"], info["cpp_loops"], info["cuda"]
    features = ", ".join(f"{name} {_yes_no(cpu['features'], name)}" for name in CPU_FEATURES)
    lines = [
        f"rnnkit {info['rnnkit']}, torch {info['torch']}, Python {info['python']} ({info['python_executable']})",
        f"CPU: {cpu['model']} ({cpu['machine']}); {features}; torch dispatches {cpu['torch_capability']}",
        f"threads: {cpu['threads']} intra-op, {cpu['interop_threads']} inter-op, {cpu['cpus']} CPUs usable",
        f"C++ loops: {loops['status']}",
        f"  cache folder: {loops['cache_dir']}; compiler: {loops['compiler']}; ninja: {loops['ninja']}",
    ]
    if cuda["devices"]:
        names = "; ".join(f"{d['name']} (sm {d['capability']}, {d['memory_gib']} GiB)" for d in cuda["devices"])
        lines.append(f"CUDA {cuda['cuda']}: {len(cuda['devices'])} device(s): {names}")
    else:
        lines.append(f"CUDA: no devices (torch built with CUDA {cuda['cuda']})" if cuda["cuda"]
                     else "CUDA: no devices (torch built for CPU only)")
    lines.append(f"triton: {cuda['triton']}")
    lines.append("backend='auto' picks, float32, training / inference (nothing timed: the fixed table):")
    columns = [f"(B,T,I,H)={tuple(s)}".replace(" ", "") for s in SHAPES]
    width = max(len(c) for c in columns) + 2
    for device in dict.fromkeys(row["device"] for row in info["auto"]):
        lines.append(f"  {device + ' cell':<16}" + "".join(f"{c:<{width}}" for c in columns))
        by_cell: dict[str, list[str]] = {}
        for row in info["auto"]:
            if row["device"] == device:
                by_cell.setdefault(row["cell"], []).append(f"{row['training']} / {row['inference']}")
        for cell, cells in by_cell.items():
            lines.append(f"  {cell:<16}" + "".join(f"{c:<{width}}" for c in cells))
    return "\n".join(line.rstrip() for line in lines)
