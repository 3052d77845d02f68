"""The C++ time loops of the fused LSTM family (csrc/) against its Python loops.

The same layer runs twice, once with the C++ loops and once with ``RNNKIT_NO_EXTENSION=1``:
outputs, final states and the gradients of the input, the initial state and every parameter
agree within 1e-10 in float64 and 1e-5 (relative to the largest value; layernorm_lstm 1e-4) in float32, for lstm,
peephole_lstm, cifg_lstm and layernorm_lstm with and without projection, lengths and bias, at
shapes that exercise vector tails, the row split and the hidden-unit split over threads (the
layer-norm kind keeps each row on one thread: its norms reduce over the row). test_fused.py
checks the same kernels (C++ when available) against the reference backend. The suite pins one
intra-op thread (conftest.py); these parity tests also run at 2 and 3, so the code that splits work
over threads runs too. Plus: status() is a string, the environment variable really forces the
Python loops, and an unavailable extension warns once and falls back.

Where a C++ compiler exists the loops must load (test_cpp_loops_load_where_a_compiler_exists fails,
not skips, otherwise): a green run proves the parity tests ran. The build finds the environment's own
ninja when PATH has none (an environment used without activating it), and a cached failure is retried
when what it depended on changes.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import rnnkit
from rnnkit.backends.fused import extension
from rnnkit.cells import LSTMState
from tests.helpers import OpSpy, assert_close

CELLS = ["lstm", "peephole_lstm", "cifg_lstm", "layernorm_lstm"]
# (id, T, B, I, H, proj_size, lengths or None)
SHAPES = [
    ("small", 6, 4, 3, 7, 3, [5, 2, 6, 1]),  # H and P below one vector: tails only
    ("wide", 4, 3, 8, 1100, 0, [4, 1, 3]),  # few rows: hidden units split over threads, tail of 4
    ("rows", 3, 80, 5, 130, 40, [3, 1, 2, 3] * 20),  # many rows split over threads
]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def tolerance(cell: str, dtype: torch.dtype) -> float:
    """TOL, but 1e-4 for layernorm_lstm in float32: its norms divide rounding differences by the deviation
    (measured 2.7e-5 for the portable, non-FMA build)."""
    return 1e-4 if cell == "layernorm_lstm" and dtype == torch.float32 else TOL[dtype]
THREADS = [1, 2, 3]  # intra-op threads: 3 splits rows and hidden units unevenly
GRID = [(cell, shape, lengths, bias, dtype)
        for cell, shape, (lengths, bias), dtype in itertools.product(
            CELLS, SHAPES, [(False, True), (True, True), (True, False)], [torch.float64, torch.float32])
        if shape[0] == "small" or (lengths and bias)]


def grid_id(cell, shape, lengths, bias, dtype):
    return f"{cell}-{shape[0]}-{'len' if lengths else 'full'}-{'b' if bias else 'nob'}-{str(dtype)[6:]}"


needs_extension = pytest.mark.skipif(
    extension.disabled() or extension.load() is None, reason=f"C++ loops: {extension.status()}")


@contextlib.contextmanager
def intra_op_threads(n: int):
    """torch's intra-op thread count set to ``n`` inside, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        assert torch.get_num_threads() == n
        yield
    finally:
        torch.set_num_threads(before)


def run(layer, x, state, lengths, coefs):
    """Output, final state and every gradient of one forward + backward of a fixed random loss."""
    x = x.detach().clone().requires_grad_()
    state = LSTMState(*(s.detach().clone().requires_grad_() for s in state))
    for p in layer.parameters():
        p.grad = None
    out, final = layer(x, state, lengths=lengths)
    loss = sum((t * k).sum() for t, k in zip([out, *final], coefs))
    loss.backward()
    results = {"output": out, "final h": final.h, "final c": final.c, "grad input": x.grad,
               "grad h0": state.h.grad, "grad c0": state.c.grad}
    results.update({f"grad {n}": p.grad for n, p in layer.named_parameters()})
    return results


@needs_extension
@pytest.mark.parametrize("threads", THREADS, ids=[f"{n}thr" for n in THREADS])
@pytest.mark.parametrize("cell,shape,lengths,bias,dtype", GRID, ids=[grid_id(*g) for g in GRID])
def test_cpp_loops_match_python_loops(cell, shape, lengths, bias, dtype, threads, monkeypatch):
    with intra_op_threads(threads):
        check_cpp_loops_match_python_loops(cell, shape, lengths, bias, dtype, monkeypatch)


def check_cpp_loops_match_python_loops(cell, shape, lengths, bias, dtype, monkeypatch):
    _, T, B, I, H, P, lens = shape
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cell, I, H, proj_size=P, bias=bias, backend="fused", dtype=dtype)
    with torch.no_grad():  # off the init rule, so no term is trivially small; gates O(1) at any H
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p) / max(1.0, p.shape[-1] / 8) ** 0.5)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, I, dtype=dtype, generator=gen)
    R = P or H
    state = LSTMState(torch.randn(1, B, R, dtype=dtype, generator=gen),
                      torch.randn(1, B, H, dtype=dtype, generator=gen))
    lengths = torch.tensor(lens) if lengths else None
    coefs = [torch.randn(T, B, R, dtype=dtype, generator=gen), torch.randn(1, B, R, dtype=dtype, generator=gen),
             torch.randn(1, B, H, dtype=dtype, generator=gen)]

    spy = OpSpy(extension.load())
    monkeypatch.setattr(extension, "_ops", spy)
    got = run(layer, x, state, lengths, coefs)
    assert spy.calls == ["lstm_forward", "lstm_backward"], f"the C++ loops did not run: {spy.calls}"
    monkeypatch.setenv(extension.ENV_DISABLE, "1")
    expected = run(layer, x, state, lengths, coefs)
    assert spy.calls == ["lstm_forward", "lstm_backward"], "RNNKIT_NO_EXTENSION=1 still ran the C++ loops"

    assert got.keys() == expected.keys()
    for name in expected:
        # float32: the GEMMs round differently (oneDNN vs MKL), so 1e-5 relative to the largest value
        scale = 1.0 if dtype == torch.float64 else max(1.0, float(expected[name].detach().abs().max()))
        assert_close(name, expected[name], got[name], tolerance(cell, dtype) * scale)


@needs_extension
@pytest.mark.parametrize("threads", THREADS, ids=[f"{n}thr" for n in THREADS])
@pytest.mark.parametrize("cell", CELLS)
def test_cpp_inference_matches_training_forward(cell, threads, monkeypatch):
    """Under no_grad the C++ forward keeps only two states and saves nothing: same output."""
    with intra_op_threads(threads):
        check_cpp_inference_matches_training_forward(cell, monkeypatch)


def check_cpp_inference_matches_training_forward(cell, monkeypatch):
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cell, 5, 33, proj_size=9, backend="fused", dtype=torch.float64)
    x = torch.randn(7, 6, 5, dtype=torch.float64)
    lengths = torch.tensor([7, 3, 1, 7, 5, 2])
    out_train, final_train = layer(x, lengths=lengths)
    with torch.no_grad():
        out_infer, final_infer = layer(x, lengths=lengths)
    monkeypatch.setenv(extension.ENV_DISABLE, "1")
    with torch.no_grad():
        out_py, final_py = layer(x, lengths=lengths)
    for name, a, b in [("output", out_py, out_infer), ("h", final_py.h, final_infer.h),
                       ("c", final_py.c, final_infer.c), ("training output", out_py, out_train)]:
        assert_close(name, a, b, 1e-10)


def test_status_is_a_string():
    assert isinstance(extension.status(), str) and extension.status()


def test_env_var_forces_python_loops(monkeypatch):
    class Forbidden:
        def __getattr__(self, name):
            raise AssertionError(f"C++ op {name} called although {extension.ENV_DISABLE}=1")

    monkeypatch.setenv(extension.ENV_DISABLE, "1")
    monkeypatch.setattr(extension, "_ops", Forbidden())
    monkeypatch.setattr(extension, "_reason", "")
    assert extension.load() is None
    assert extension.ENV_DISABLE in extension.status()
    layer = rnnkit.Recurrent("peephole_lstm", 3, 4, backend="fused")
    x = torch.randn(5, 2, 3, requires_grad=True)
    out, _ = layer(x, lengths=torch.tensor([5, 3]))
    out.sum().backward()
    assert x.grad is not None


def test_unavailable_extension_warns_once_and_falls_back(monkeypatch):
    monkeypatch.delenv(extension.ENV_DISABLE, raising=False)
    monkeypatch.setattr(extension, "_ops", None)
    monkeypatch.setattr(extension, "_reason", "build failed: simulated")
    monkeypatch.setattr(extension, "_warned", set())
    assert extension.load() is None
    assert "simulated" in extension.status()
    layer = rnnkit.Recurrent("cifg_lstm", 3, 4, backend="fused")
    x = torch.randn(5, 2, 3)
    with pytest.warns(RuntimeWarning, match="simulated"):
        layer(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, _ = layer(x)  # the second call is silent
    assert torch.isfinite(out).all()


@needs_extension
@pytest.mark.parametrize("proj_size", [0, 30], ids=["noproj", "proj"])
def test_layernorm_gradient_sums_over_threads(proj_size, monkeypatch):
    """layernorm_lstm sums its LN parameters' gradients per thread: two threads, same gradients."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the suite runs with one; rows of 4H = 1200 split over two
    try:
        torch.manual_seed(0)
        layer = rnnkit.Recurrent("layernorm_lstm", 5, 300, proj_size=proj_size, backend="fused",
                                 dtype=torch.float64)
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(0.3 * torch.randn_like(p) / max(1.0, p.shape[-1] / 8) ** 0.5)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(4, 40, 5, dtype=torch.float64, generator=gen)
        R = proj_size or 300
        state = LSTMState(torch.randn(1, 40, R, dtype=torch.float64, generator=gen),
                          torch.randn(1, 40, 300, dtype=torch.float64, generator=gen))
        lengths = torch.randint(1, 5, (40,), generator=gen)
        coefs = [torch.randn(4, 40, R, dtype=torch.float64, generator=gen),
                 torch.randn(1, 40, R, dtype=torch.float64, generator=gen),
                 torch.randn(1, 40, 300, dtype=torch.float64, generator=gen)]
        spy = OpSpy(extension.load())
        monkeypatch.setattr(extension, "_ops", spy)
        got = run(layer, x, state, lengths, coefs)
        assert spy.calls == ["lstm_forward", "lstm_backward"], f"the C++ loops did not run: {spy.calls}"
        monkeypatch.setenv(extension.ENV_DISABLE, "1")
        expected = run(layer, x, state, lengths, coefs)
    finally:
        torch.set_num_threads(threads)
    for name in expected:
        assert_close(name, expected[name], got[name], 1e-10)


def test_cpp_loops_load_where_a_compiler_exists():
    """CI's proof that the C++ loops ran: with a compiler, a failed build fails here instead of skipping."""
    if extension.disabled():
        pytest.skip(f"{extension.ENV_DISABLE}=1 asks for the Python loops")
    compiler = extension.find_compiler(extension.build_path(extension.find_ninja()))
    if compiler is None:
        pytest.skip("no C++ compiler on PATH: the Python loops are the documented fallback")
    assert extension.load() is not None, f"a C++ compiler ({compiler}) exists but the C++ loops did not load: " \
                                         f"{extension.status()}"
    assert "loaded" in extension.status()


def executable(folder: Path, name: str, version: str) -> Path:
    """A shell script ``folder/name`` that prints ``version`` for ``--version``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\necho '{version}'\n")
    path.chmod(0o755)
    return path


needs_posix = pytest.mark.skipif(os.name != "posix", reason="the fake tools are shell scripts")


@needs_posix
def test_ninja_is_the_environments_own_activated_or_not(tmp_path, monkeypatch):
    """The ninja package's ninja, else the one beside Python, else PATH's: the same one whether or not
    the environment's bin folder is on PATH; the build's PATH puts its folder in front when needed."""
    import ninja

    on_path = executable(tmp_path / "usr_bin", "ninja", "1.0")
    package = executable(tmp_path / "package", "ninja", "2.0")
    beside = executable(tmp_path / "env" / "bin", "ninja", "3.0")
    monkeypatch.setattr(ninja, "BIN_DIR", str(package.parent))
    monkeypatch.setattr(sys, "executable", str(beside.parent / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # not activated, no system ninja
    assert extension.find_ninja() == str(package)
    monkeypatch.setenv("PATH", str(on_path.parent))  # not activated, a system ninja on PATH
    assert extension.find_ninja() == str(package)
    monkeypatch.setattr(ninja, "BIN_DIR", str(tmp_path / "nothing"))
    assert extension.find_ninja() == str(beside)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bare" / "python"))
    assert extension.find_ninja() == str(on_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert extension.find_ninja() is None
    # the build's PATH: ninja's folder in front unless PATH already finds that ninja first
    usr_bin, env_bin = str(on_path.parent), str(package.parent)
    assert extension.build_path(str(package), usr_bin) == f"{env_bin}{os.pathsep}{usr_bin}"
    assert extension.build_path(str(package), f"{env_bin}{os.pathsep}{usr_bin}") == f"{env_bin}{os.pathsep}{usr_bin}"
    assert extension.build_path(str(package), f"{usr_bin}{os.pathsep}{env_bin}") == \
        f"{env_bin}{os.pathsep}{usr_bin}{os.pathsep}{env_bin}"  # PATH's first ninja is another one
    assert extension.build_path(None, usr_bin) == usr_bin


@needs_posix
def test_build_key_changes_with_what_the_build_depends_on(tmp_path, monkeypatch):
    """Each input alone changes the key: the compiler's path ($CXX, same PATH), its version (same path),
    PATH, the flags, ninja, rnnkit's version. A key that ignored one would keep a stale failure."""
    monkeypatch.delenv("CXX", raising=False)
    tools = tmp_path / "tools"
    compiler = executable(tools, "c++", "g++ 12.2.0")
    other = executable(tmp_path / "other", "c++", "g++ 12.2.0")
    ninja = str(executable(tmp_path / "n", "ninja", "1.13.2"))
    flags, path = extension._flags("avx2"), str(tools)

    def key(flags=flags, ninja=ninja, path=path):
        return extension.build_key(extension.build_inputs(flags, ninja, path))

    before = key()
    assert key() == before  # stable
    monkeypatch.setenv("CXX", str(other))
    assert key() != before, "the key ignores the compiler's path"
    monkeypatch.setenv("CXX", str(compiler))
    assert key() == before  # $CXX naming the same compiler as PATH: same inputs
    executable(tools, "c++", "g++ 13.1.0")
    assert key() != before, "the key ignores the compiler's version"
    executable(tools, "c++", "g++ 12.2.0")
    assert key(path=f"{tools}{os.pathsep}{tmp_path}") != before, "the key ignores PATH"
    assert key(flags=extension._flags("default")) != before, "the key ignores the flags"
    assert key(ninja=str(executable(tmp_path / "m", "ninja", "1.13.2"))) != before, "the key ignores ninja's path"
    assert key(ninja=str(executable(tmp_path / "n", "ninja", "1.11.0"))) != before, "the key ignores ninja's version"
    executable(tmp_path / "n", "ninja", "1.13.2")
    assert key() == before  # everything back as it was
    monkeypatch.setattr(rnnkit, "__version__", "99.0")
    assert key() != before, "the key ignores rnnkit's version"


def test_build_key_covers_every_header(tmp_path, monkeypatch):
    """Editing a header, or adding one, changes the key: a key over lstm.cpp alone would keep a stale
    build (or a stale failure) after a change in gates.h."""
    import shutil

    csrc = tmp_path / "csrc"
    shutil.copytree(extension.CSRC, csrc)
    monkeypatch.setattr(extension, "CSRC", csrc)
    headers = sorted(p.name for p in csrc.glob("*.h"))
    assert {"gates.h", "layer_norm.h", "vec.h"} <= set(headers), headers
    assert [p.name for p in extension.source_files()] == sorted(["lstm.cpp", *headers])

    def key():
        return extension.build_key(extension.build_inputs(["-O3"], "ninja", "/bin"))

    before = key()
    gates = csrc / "gates.h"
    gates.write_text(gates.read_text() + "\n// touched\n")
    touched = key()
    assert touched != before, "the key ignores an edited header"
    (csrc / "new.h").write_text("#pragma once\n")
    assert key() != touched, "the key ignores a new header"


@needs_extension
def test_cpp_loops_check_shapes():
    """A size that does not fit G = 4H (3H for cifg), (G, R) or (R, H) is an error that names the argument,
    the expected sizes and the ones that came, not a read past a buffer's end."""
    ops = extension.load()
    T, B, H = 2, 3, 5
    gx, h0, c0, w = torch.zeros(T, B, 4 * H), torch.zeros(B, H), torch.zeros(B, H), torch.zeros(4 * H, H)

    def forward(kind=0, gx=gx, h0=h0, w_hh=w, w_hr=None, peep=None):
        return ops.lstm_forward(kind, gx, h0, c0, w_hh, None, w_hr, peep, None, False, "addmm", [], 1e-5)

    assert forward()[0].shape == (T, B, H)  # the sizes that fit run
    with pytest.raises(RuntimeError, match=r"weight_hh must be \(G, R\) = \(20, 5\), got \(20, 4\)"):
        forward(w_hh=torch.zeros(4 * H, H - 1))
    with pytest.raises(RuntimeError, match=r"gx's last size G must be 3H = 15 \(H = 5 from c0\), got 20"):
        forward(kind=2)  # cifg has three gates
    with pytest.raises(RuntimeError, match=r"weight_hr must be \(R, H\) = \(3, 5\), got \(5, 3\)"):
        forward(h0=torch.zeros(B, 3), w_hh=torch.zeros(4 * H, 3), w_hr=torch.zeros(H, 3))
    with pytest.raises(RuntimeError, match=r"weight_peephole must be \(3, H\) = \(3, 5\), got \(3, 4\)"):
        forward(kind=1, peep=torch.zeros(3, H - 1))


def test_variant_is_the_cpus_best_unless_a_lower_one_is_asked(monkeypatch):
    """AVX-512 where torch runs AVX-512 kernels, AVX2 where AVX2, the portable build elsewhere;
    RNNKIT_CPU_VARIANT asks for a lower one (AVX2 on an AVX-512 CPU) and a higher one is refused."""
    import platform

    monkeypatch.delenv(extension.ENV_VARIANT, raising=False)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    for capability, best in [("AVX512", "avx512"), ("AVX2", "avx2"), ("DEFAULT", "default")]:
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert extension.variant_choice() == (best, ""), capability
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setenv(extension.ENV_VARIANT, "avx2")
    assert extension.variant_choice() == ("avx2", "")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setenv(extension.ENV_VARIANT, "avx512")
    assert extension.variant_choice() == (None, "RNNKIT_CPU_VARIANT=avx512 asks for more than this CPU runs "
                                                "(at most avx2)")
    monkeypatch.setenv(extension.ENV_VARIANT, "sse4")
    assert "expected one of avx512, avx2, default" in extension.variant_choice()[1]
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    monkeypatch.delenv(extension.ENV_VARIANT)
    assert extension.variant_choice() == ("default", "")
    assert "-DCPU_CAPABILITY_AVX512" in extension._flags("avx512") and "-mavx512f" in extension._flags("avx512")
    assert not any("avx512" in f for f in extension._flags("avx2"))


@needs_extension
def test_the_loaded_variant_is_the_one_this_cpu_runs():
    """The loops this suite tested are the variant chosen for this CPU (AVX-512 on an AVX-512 CPU, not AVX2)."""
    assert extension.details()["variant"] == extension.variant_choice()[0]
    assert f"loaded ({extension.variant_choice()[0]}, " in extension.status()


@pytest.fixture
def fresh_extension(tmp_path, monkeypatch):
    """The extension module as before its first build, with its cache in tmp_path and a fake compiler."""
    for name, value in [("_ops", None), ("_reason", None), ("_packed_reason", None), ("_build_seconds", None),
                        ("_built_now", False), ("_variant", None)]:
        monkeypatch.setattr(extension, name, value)
    monkeypatch.delenv(extension.ENV_DISABLE, raising=False)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    tools = tmp_path / "tools"
    executable(tools, "c++", "g++ 12.2.0")
    ninja = executable(tmp_path / "venv" / "bin", "ninja", "1.13.2")  # off PATH, as in an unactivated venv
    monkeypatch.setenv("PATH", str(tools))
    monkeypatch.setattr(extension, "find_ninja", lambda path=None: str(ninja))
    return ninja


@needs_posix
def test_cached_failure_is_retried_only_when_its_inputs_change(fresh_extension, tmp_path, monkeypatch, capsys):
    from torch.utils import cpp_extension

    builds = []

    def failing_load(**kwargs):
        builds.append(os.environ["PATH"])
        raise RuntimeError("error: simulated compiler failure")

    monkeypatch.setattr(cpp_extension, "load", failing_load)
    assert extension.load() is None
    assert builds == [f"{fresh_extension.parent}{os.pathsep}{tmp_path / 'tools'}"], "ninja's folder not on PATH"
    assert os.environ["PATH"] == str(tmp_path / "tools"), "PATH not restored after the build"
    assert extension.BUILD_MESSAGE in capsys.readouterr().err
    assert "simulated compiler failure" in extension.status()

    monkeypatch.setattr(extension, "_reason", None)  # a new process, same inputs: the cached failure, no build
    assert extension.load() is None
    assert len(builds) == 1
    assert "simulated compiler failure" in extension.status() and "delete" in extension.status()
    assert "retried when the compiler" in extension.status()

    executable(tmp_path / "tools", "c++", "g++ 13.1.0")  # a new compiler: built again
    monkeypatch.setattr(extension, "_reason", None)
    assert extension.load() is None
    assert len(builds) == 2


@needs_posix
def test_successful_build_records_its_time_and_says_nothing_next_time(fresh_extension, monkeypatch, capsys):
    from torch.utils import cpp_extension

    def load_writing_the_library(name, **kwargs):
        library = Path(os.environ["TORCH_EXTENSIONS_DIR"]) / name / f"{name}.so"
        if not library.exists():  # the first call compiles; a later one finds it up to date
            library.write_bytes(b"")

    monkeypatch.setattr(cpp_extension, "load", load_writing_the_library)
    assert extension.load() is not None
    assert extension._built_now and extension._build_seconds is not None
    assert extension.BUILD_MESSAGE in capsys.readouterr().err
    monkeypatch.setattr(extension, "_reason", None)  # a new process
    monkeypatch.setattr(extension, "_built_now", False)
    assert extension.load() is not None
    assert not extension._built_now and extension._build_seconds is not None  # from the record
    assert extension.BUILD_MESSAGE not in capsys.readouterr().err


def path_without_ninja(folder: Path) -> str:
    """A folder of links to every program on PATH but ninja and the venv's: PATH of a bare shell."""
    folder.mkdir()
    venv_bin = Path(sys.executable).parent
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or Path(directory) == venv_bin or not Path(directory).is_dir():
            continue
        for program in Path(directory).iterdir():
            if program.name != "ninja" and not (folder / program.name).exists() and os.access(program, os.X_OK):
                (folder / program.name).symlink_to(program)
    return str(folder)


@pytest.mark.slow
@needs_posix
def test_build_in_an_environment_that_is_not_activated(tmp_path):
    """The whole build (~50 s on 2 cores) with no ninja on PATH and a fresh cache: it loads, and says so."""
    if extension.disabled():
        pytest.skip(f"{extension.ENV_DISABLE}=1 asks for the Python loops")
    if extension.find_ninja() is None or extension.find_compiler() is None:
        pytest.skip("no ninja in this environment or no C++ compiler")
    env = {"HOME": os.environ.get("HOME", str(tmp_path)), "PATH": path_without_ninja(tmp_path / "bin"),
           "TORCH_EXTENSIONS_DIR": str(tmp_path / "cache")}
    script = textwrap.dedent("""
        import os
        from rnnkit.backends.fused import extension
        path = os.environ["PATH"]
        print(extension.status())
        assert os.environ["PATH"] == path, "PATH not restored"
    """)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("loaded"), done.stdout
    assert extension.BUILD_MESSAGE in done.stderr
    assert list((tmp_path / "cache").glob("rnnkit_fused_*/rnnkit_fused_*.so")), "no library in the fresh cache"


@needs_extension
@pytest.mark.parametrize("proj_size", [0, 3], ids=["noproj", "proj"])
def test_layernorm_input_norm_runs_in_the_cpp_loop(proj_size, monkeypatch):
    """layernorm_lstm hands the raw x W_ih^T to the C++ loop, which normalizes each step (LN_ih) forward and
    backward: no Python layer norm runs, and float32 matches the float64 reference backend within 1e-4 relative
    to the largest value, for the output, the final state and every gradient (lengths, b_ih and projection)."""
    torch.manual_seed(0)
    ref = rnnkit.Recurrent("layernorm_lstm", 4, 9, proj_size=proj_size, backend="reference", dtype=torch.float64)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ours = rnnkit.Recurrent("layernorm_lstm", 4, 9, proj_size=proj_size, backend="fused")
    ours.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    gen = torch.Generator().manual_seed(1)
    T, B, R = 6, 5, proj_size or 9
    x = 3 * torch.randn(T, B, 4, dtype=torch.float64, generator=gen) + 1  # off zero mean: LN_ih's mean matters
    state = LSTMState(torch.randn(1, B, R, dtype=torch.float64, generator=gen),
                      torch.randn(1, B, 9, dtype=torch.float64, generator=gen))
    lengths = torch.tensor([6, 2, 5, 1, 6])
    coefs = [torch.randn(T, B, R, dtype=torch.float64, generator=gen),
             torch.randn(1, B, R, dtype=torch.float64, generator=gen),
             torch.randn(1, B, 9, dtype=torch.float64, generator=gen)]
    expected = run(ref, x, state, lengths, coefs)

    def no_python_layer_norm(*args, **kwargs):
        raise AssertionError("a Python layer norm ran on the C++ path: LN_ih belongs in the loop")

    spy = OpSpy(extension.load())
    monkeypatch.setattr(extension, "_ops", spy)
    monkeypatch.setattr(torch.nn.functional, "layer_norm", no_python_layer_norm)
    got = run(ours, x.float(), LSTMState(*(s.float() for s in state)), lengths, [k.float() for k in coefs])
    assert spy.calls == ["lstm_forward", "lstm_backward"], f"the C++ loops did not run: {spy.calls}"
    assert got.keys() == expected.keys()
    for name in expected:
        scale = max(1.0, float(expected[name].detach().abs().max()))
        assert_close(name, expected[name], got[name].double(), 1e-4 * scale)
