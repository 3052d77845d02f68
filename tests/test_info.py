"""``rnnkit info``: the CPU features read from /proc/cpuinfo, the C++ loops' line, auto's table, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

import rnnkit
from rnnkit import info
from rnnkit.backends import Problem, select
from rnnkit.backends.fused import extension
from rnnkit.cells import cells
from rnnkit.cli import main

# trimmed /proc/cpuinfo of three machines; x86's "model" is a number, its name is "model name"
ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
model\t\t: 17
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512_bf16 avx512_vnni
processor\t: 1
model name\t: another
flags\t\t: fpu
"""
SAPPHIRE_RAPIDS = """model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""
HASWELL = "model name\t: Intel(R) Xeon(R) CPU E5-2680 v3\nflags\t\t: avx avx2 fma\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd sve\nCPU part\t: 0xd40\n"


@pytest.mark.parametrize("text,model,features", [
    (ZEN4, "AMD EPYC 9R14 96-Core Processor", {"AVX2": True, "AVX-512": True, "AVX-512 BF16": True, "AMX": False}),
    (SAPPHIRE_RAPIDS, "Intel(R) Xeon(R) Platinum 8488C",
     {"AVX2": True, "AVX-512": True, "AVX-512 BF16": True, "AMX": True}),
    (HASWELL, "Intel(R) Xeon(R) CPU E5-2680 v3", {"AVX2": True, "AVX-512": False, "AVX-512 BF16": False,
                                                  "AMX": False}),
    (GRAVITON, None, {"AVX2": False, "AVX-512": False, "AVX-512 BF16": False, "AMX": False}),
], ids=["zen4", "sapphire_rapids", "haswell", "graviton"])
def test_cpu_features_from_cpuinfo(text, model, features):
    """The first processor's model name (not x86's model number) and its features, each by its own flag."""
    assert info.cpu_from_cpuinfo(text) == {"model": model, "features": features}


def test_cpu_features_unknown_without_cpuinfo():
    assert info.cpu_from_cpuinfo("") == {"model": None, "features": None}


def fake_loops(loaded: bool) -> dict:
    status = "loaded (avx2, packed oneDNN GEMM, built in 48 s)" if loaded else \
        "unavailable: no C++ compiler ('c++' is not on PATH; install g++ or clang++, or set CXX)"
    return {"loaded": loaded, "status": status, "variant": "avx2", "build_seconds": 48.0 if loaded else None,
            "built_now": loaded, "cache_dir": "/cache/rnnkit_fused_avx2",
            "compiler": "/usr/bin/c++" if loaded else None, "ninja": "/venv/bin/ninja"}


@pytest.fixture(scope="module")
def facts():
    return info.collect()


def test_auto_table_is_what_a_layer_would_pick(facts):
    """Every cell, both shapes, training and inference: the table says what a real layer of that shape runs.

    Catches a table built from a Problem the layer does not build (e.g. without the hidden size, which auto's
    LSTM rows read). On CPU auto does not read T, so the layers run 3 steps to keep the test short."""
    rows = {(r["cell"], r["device"], tuple(r["shape"])): r for r in facts["auto"]}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    assert len(rows) == len(facts["auto"]) == len(cells()) * len(info.SHAPES) * len(devices)
    for cell in cells():
        for device in devices:
            for B, T, I, H in info.SHAPES:
                row = rows[(cell, device, (B, T, I, H))]
                layer = rnnkit.Recurrent(cell, I, H, device=device)
                x = torch.randn(T if device == "cuda" else 3, B, I, device=device)
                for mode, training in (("training", True), ("inference", False)):
                    with torch.set_grad_enabled(training):
                        layer(x)
                    assert row[mode] == layer.last_backend, f"{cell} {device} {(B, T)} {mode}"


def test_collect_reports_versions_cpu_loops_and_cuda(facts):
    assert facts["torch"] == torch.__version__
    assert facts["cpu"]["threads"] == torch.get_num_threads()
    assert facts["cpu"]["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    assert facts["cpp_loops"]["loaded"] == (not extension.disabled() and extension.load() is not None)
    assert facts["cpp_loops"]["status"] == extension.status()
    assert len(facts["cuda"]["devices"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    json.dumps(facts)  # --json prints it


@pytest.mark.parametrize("loaded", [True, False], ids=["loaded", "unavailable"])
def test_cpp_loops_line_says_loaded_only_when_they_loaded(facts, loaded):
    text = info.format_info({**facts, "cpp_loops": fake_loops(loaded)})
    line = next(line for line in text.splitlines() if line.startswith("C++ loops:"))
    assert ("loaded" in line) == loaded, line
    if not loaded:
        assert "no C++ compiler" in line
    assert "/cache/rnnkit_fused_avx2" in text  # the cache folder


def test_cpu_line_names_each_feature(facts):
    cpu = {**facts["cpu"], "model": "AMD EPYC 9R14", "features": info.cpu_from_cpuinfo(ZEN4)["features"]}
    text = info.format_info({**facts, "cpu": cpu})
    line = next(line for line in text.splitlines() if line.startswith("CPU:"))
    assert "AMD EPYC 9R14" in line
    assert "AVX-512 yes" in line and "AVX-512 BF16 yes" in line and "AMX no" in line


def test_cli_info_text_and_json(capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "C++ loops:" in text and f"torch {torch.__version__}" in text
    table = text.split("backend='auto' picks")[1]
    assert all(cell in table for cell in cells())
    assert main(["info", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert {"rnnkit", "torch", "python", "cpu", "cpp_loops", "cuda", "auto"} <= facts.keys()


def test_cuda_devices_and_their_auto_table_are_shown(facts):
    """The CUDA branch, on any machine: a device line, and auto's picks for cuda (scan for mingru at T >= 32)."""
    picks = info.auto_picks(["cuda"])
    mingru = next(r for r in picks if r["cell"] == "mingru" and r["shape"][:2] == [32, 100])
    problem = Problem(cell="mingru", cell_options=(), device="cuda", dtype=torch.float32, batch=32, steps=100,
                      training=True)
    assert mingru["training"] == select("auto", problem).NAME
    cuda = {"cuda": "12.8", "devices": [{"name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "memory_gib": 79.1}],
            "triton": "imports (triton 3.5.0)"}
    text = info.format_info({**facts, "cuda": cuda, "auto": facts["auto"] + picks})
    assert "CUDA 12.8: 1 device(s): NVIDIA H100 80GB HBM3 (sm 9.0, 79.1 GiB)" in text
    cuda_table = text.split("cuda cell")[1]
    line = next(line for line in cuda_table.splitlines() if line.split()[:1] == ["mingru"])
    assert line.split()[1:4] == [mingru["training"], "/", mingru["inference"]], line
