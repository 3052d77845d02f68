"""Export a ``Recurrent`` layer or a trained task model to ONNX or TorchScript, with a dynamic time axis.

``export_layer(layer, "m.onnx")`` and ``export_checkpoint("runs/RUN", "m.onnx")`` (``rnnkit export``)
write a file that runs at any batch size and any sequence length, then run that file at a second
batch size and length and report its largest difference to the PyTorch model (``Export.max_abs_diff``;
a difference beyond ``TOLERANCE`` raises ``ExportMismatch``).

How the time loop survives export (design section 4). Every exporter unrolls a Python loop over
time steps to the example's length, and the file then silently gives wrong shapes at other lengths.
So here the loop is written in TorchScript and everything else is traced:

- each layer and direction's **step** is the cell's own ``cell.step`` (and its input projection,
  ``cell.input_projection``) traced at the example's shapes: one step has no loop, so tracing keeps
  exactly the library's equations for every cell (nothing is re-implemented per cell);
- the **driver** (``rnnkit.scripted_loop``: layers, directions, lengths) is ``torch.jit.script``-ed,
  so its ``for t in range(T)`` stays a loop: an ONNX ``Loop`` for the legacy exporter
  (``torch.onnx.export(..., dynamo=False)``), a loop in the TorchScript file;
- a task model is copied with each ``Recurrent`` inside it swapped for that scripted layer and then
  traced as a whole; the tracer records the scripted layer as a call, loop intact.

Why this route (measured with torch 2.13, onnxruntime 1.32, docs/results.md "Export"): the legacy
exporter turns the scripted loop into ``Loop`` with a sequence of outputs, and onnxruntime matches the
PyTorch layer within 1e-7 to 4e-6 in float32 (most cells under 5e-7) at a batch size and length other
than the example's, for every cell, stacked and bidirectional, with lengths; TorchScript files the same,
and within 1e-12 in float64. onnxruntime ran the file 0.8x to 1.5x as long as the eager layer. An
export takes about a second. The new exporter (``dynamo=True``) keeps ``nn.LSTM``'s time axis static and unrolls Python
loops; an onnxscript ``Scan`` would need every cell's equations written a second time in onnxscript,
the very duplication this module avoids. ``nn.LSTM``'s own ONNX ``LSTM`` op covers one cell of eleven.

What is exported: the model in eval mode, in its parameters' dtype (float32 from a checkpoint); dropout,
zoneout and the other regularizers are training-time only and absent. Lengths and masking are
exported: with ``lengths=True`` the file takes ``lengths`` (B,) int64 and masks as ``Recurrent`` does
(state frozen and outputs zero past each sequence's end, the reverse direction starting at each
sequence's last element). What is refused, with a ``NotSupported`` that names it: PackedSequence
inputs (pass ``lengths``), a layer in training mode with active regularizers, the tasks whose forward
is not a tensor function of fixed inputs (each task's ``SPEC.export`` in rnnkit.tasks says why).

What a task's export function (its ``SPEC.export``) builds from, the public surface of this module for
the tasks: ``Spec`` (the modules, example inputs and ports of one export), ``Port``, ``swap_layers`` (a copy
of a model with each ``Recurrent`` replaced by its scripted loop), ``Flat`` (a model and a function of its
inputs as a module of flat tensor outputs), ``state_outputs`` (a final state as flat outputs) and the
example-input makers ``random_ids`` and ``random_features``.

torch 2.13 deprecates torch.jit and the legacy exporter in favour of ``torch.export``, which cannot keep
a custom cell's loop; they still work, ``_quiet`` silences their deprecation warnings inside this
module, and every export is checked by running the file.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from .backends import NotSupported
from .cells import LSTMState
from .extras import require
from .recurrent import Recurrent
from .scripted_loop import EXAMPLE, ScriptedStack

FORMATS = ("onnx", "torchscript")
OPSET = 17  # ONNX opset: LayerNormalization is native from 17; onnxruntime 1.16+ runs it
TOLERANCE = 1e-4  # relative to the outputs' size: float32 rounding is ~1e-7, a traced-in length is O(1)
CHECK = (3, 11)  # (B, T) the file is run at afterwards: both differ from EXAMPLE


# ---------------------------------------------------------------------- the scripted layer


class ExportMismatch(ValueError):
    """The exported file does not compute what the PyTorch model computes at a second batch size and length."""


class ScriptedRecurrent(nn.Module):
    """A ``Recurrent`` in eval mode as a module that exports with its time loop intact.

    Called as the layer is, ``forward(x, state=None, lengths=None) -> (out, state)``, x time-major
    (T, B, I) or batch-first as the layer was built, state a tensor or ``LSTMState``; but whether
    ``lengths`` and ``state`` are given is fixed when it is built (``lengths``, ``initial_state``),
    since each is compiled into the loop. The weights are the layer's own tensors (not copies).
    """

    def __init__(self, layer: Recurrent, lengths: bool = False, initial_state: bool = False) -> None:
        super().__init__()
        check_exportable(layer)
        for name in ("cell", "input_size", "hidden_size", "num_layers", "num_directions", "bidirectional",
                     "proj_size", "batch_first"):  # what task models read from their layer
            setattr(self, name, getattr(layer, name))
        self.lstm = layer.cell.state_type is LSTMState
        self.lengths, self.initial_state = lengths, initial_state
        with _quiet():
            self.stack = torch.jit.script(ScriptedStack(layer, lengths, initial_state))

    def forward(self, x: Tensor, state=None, lengths: Tensor | None = None):
        if isinstance(x, PackedSequence):
            raise NotSupported("a PackedSequence cannot be exported: pass the padded tensor and lengths")
        if not isinstance(x, Tensor) or x.dim() != 3:
            got = f"{x.dim()}-D" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be 3-D ({'B, T' if self.batch_first else 'T, B'}, I) to export, got {got}")
        for name, value, built in (("lengths", lengths, self.lengths), ("state", state, self.initial_state)):
            if (value is not None) != built:
                raise ValueError(f"this ScriptedRecurrent was built {'with' if built else 'without'} {name}, "
                                 f"but is called {'without' if built else 'with'} it")
        if self.batch_first:
            x = x.transpose(0, 1)
        if 0 in x.shape[:2]:  # as Recurrent; the scripted loop would fail inside TorchScript on T = 0
            what = "0 time steps" if x.shape[0] == 0 else "a batch of 0 sequences"
            raise ValueError(f"x has {what}, shape {tuple(x.shape)} (T, B, I); expected at least 1")
        h0 = c0 = x  # placeholders the compiled stack does not read
        if state is not None:
            h0, c0 = state if self.lstm else (state, state)
        if lengths is not None:
            lengths = lengths.to(device=x.device, dtype=torch.int64)
        out, h, c = self.stack(x, x if lengths is None else lengths, h0, c0)
        if self.batch_first:
            out = out.transpose(0, 1)
        return out, (LSTMState(h, c) if self.lstm else h)


def check_exportable(layer: Recurrent) -> None:
    """Raise ``NotSupported`` naming what a layer has that an exported file cannot have."""
    if not isinstance(layer, Recurrent):
        raise TypeError(f"layer must be an rnnkit.Recurrent, got {type(layer).__name__}")
    if layer.training and layer.regularizers.active():
        raise NotSupported(f"the layer is in training mode with {', '.join(layer.regularizers.active())}: an "
                           "exported file is an inference model; call layer.eval() first")
    if layer.training and layer.dropout > 0 and layer.num_layers > 1:
        raise NotSupported(f"the layer is in training mode with dropout={layer.dropout}: an exported file is an "
                           "inference model; call layer.eval() first")


@contextlib.contextmanager
def _quiet():
    """Silence what torch 2.13 says about the tools this module rests on on purpose.

    torch.jit (script, trace, save, load) and the legacy ONNX exporter are deprecated in favour of
    torch.export, which unrolls or freezes the time loop (see the module notes); they still work and
    the exported file is checked after every export. TracerWarnings are covered by that check too.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*(torch\.jit|TorchScript)")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message="The feature will be removed")
        warnings.filterwarnings("ignore", category=UserWarning, message="no signature found")  # traced modules
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def swap_layers(model: nn.Module, lengths: bool = False, initial_state: bool = False) -> nn.Module:
    """A copy of ``model`` in eval mode with every ``Recurrent`` inside replaced by ``ScriptedRecurrent``.

    ``lengths`` and ``initial_state``: whether the model calls its layers with them (see ScriptedRecurrent).
    """
    model = copy.deepcopy(model).eval()
    if isinstance(model, Recurrent):
        return ScriptedRecurrent(model, lengths, initial_state)

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, Recurrent):
                setattr(module, name, ScriptedRecurrent(child, lengths, initial_state))
            else:
                swap(child)

    swap(model)
    return model


# ---------------------------------------------------------------------- what one export is


@dataclass
class Port:
    """One input or output of an exported file: its name, its axes' names (``batch``, ``time`` dynamic)."""

    name: str
    axes: tuple[str, ...]
    dtype: torch.dtype = torch.float32

    def dynamic(self) -> dict[int, str]:
        return {i: a for i, a in enumerate(self.axes) if a in ("batch", "time")}

    def describe(self) -> str:
        return f"{self.name} ({', '.join(self.axes)}) {str(self.dtype).replace('torch.', '')}"


@dataclass
class Spec:
    """A model ready to export: a module, how to make its inputs at (B, T), its ports, its reference."""

    module: nn.Module  # the module to trace (Recurrent layers swapped for ScriptedRecurrent)
    reference: nn.Module  # the PyTorch model the file must match (eval mode)
    make_inputs: Callable[[int, int], tuple[Tensor, ...]]  # (B, T) -> inputs in the order of ``inputs``
    inputs: list[Port]
    outputs: list[Port]
    what: str  # one line: what is exported
    fixed_time: int | None = None  # where the time axis cannot vary: its only length
    notes: list[str] = field(default_factory=list)


@dataclass
class Export:
    """What ``export_layer`` / ``export_checkpoint`` wrote and how well the file matches PyTorch."""

    path: Path
    format: str
    what: str
    inputs: list[Port]
    outputs: list[Port]
    example_shape: tuple[int, int]  # (B, T) the file was traced at
    check_shape: tuple[int, int]  # (B, T) the file was run at after export
    max_abs_diff: float  # over every output, against the PyTorch model at check_shape
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"exported {self.what} to {self.path} ({self.format})"]
        lines += [f"  input  {p.describe()}" for p in self.inputs]
        lines += [f"  output {p.describe()}" for p in self.outputs]
        dynamic = sorted({a for p in self.inputs + self.outputs for a in p.dynamic().values()})
        lines.append(f"  dynamic axes: {', '.join(dynamic) or 'none'}")
        lines += [f"  note: {n}" for n in self.notes]
        (B, T), (B0, T0) = self.check_shape, self.example_shape
        lines.append(f"  check: run at batch {B}, time {T} (traced at batch {B0}, time {T0}): max abs difference to "
                     f"PyTorch {self.max_abs_diff:.2e}")
        return "\n".join(lines)


class Flat(nn.Module):
    """``fn(model, *inputs)`` as a module whose outputs are a flat tuple of tensors, for the exporters.

    A task's export function (its ``SPEC.export``) wraps its model twice: once with each ``Recurrent``
    swapped for its scripted loop (``swap_layers``), the module that is exported, and once as it is, the
    reference the file is checked against; ``fn`` is the same for both."""

    def __init__(self, model: nn.Module, fn: Callable) -> None:
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.fn(self.model, *inputs))


def state_outputs(state) -> tuple[Tensor, ...]:
    """A layer's final state as flat outputs: ``(h_n, c_n)`` for the LSTM family's ``LSTMState``, else ``(h_n,)``."""
    return (state.h, state.c) if isinstance(state, tuple) else (state,)


# ---------------------------------------------------------------------- a layer


def layer_spec(layer: Recurrent, lengths: bool = False, initial_state: bool = False) -> Spec:
    """The export of a ``Recurrent``: inputs x [, lengths] [, h0 [, c0]]; outputs out, h_n [, c_n].

    The file is made from a CPU copy of the layer, wherever its parameters are.
    """
    check_exportable(layer)
    layer = copy.deepcopy(layer).cpu()
    lstm = layer.cell.state_type is LSTMState
    D, L = layer.num_directions, layer.num_layers
    R = layer.proj_size or layer.hidden_size
    dtype = layer.weight_ih_l0.dtype
    x_axes = ("batch", "time", str(layer.input_size)) if layer.batch_first else ("time", "batch", str(layer.input_size))
    out_axes = ("batch", "time", str(D * R)) if layer.batch_first else ("time", "batch", str(D * R))
    inputs = [Port("x", x_axes, dtype)]
    if lengths:
        inputs.append(Port("lengths", ("batch",), torch.int64))
    if initial_state:
        inputs.append(Port("h0", (str(L * D), "batch", str(R)), dtype))
        if lstm:
            inputs.append(Port("c0", (str(L * D), "batch", str(layer.hidden_size)), dtype))
    outputs = [Port("out", out_axes, dtype), Port("h_n", (str(L * D), "batch", str(R)), dtype)]
    if lstm:
        outputs.append(Port("c_n", (str(L * D), "batch", str(layer.hidden_size)), dtype))

    def make_inputs(B: int, T: int) -> tuple[Tensor, ...]:
        g = torch.Generator().manual_seed(B * 1000 + T)
        x = torch.randn((B, T, layer.input_size) if layer.batch_first else (T, B, layer.input_size), generator=g,
                        dtype=dtype)
        made = [x]
        if lengths:
            n = torch.randint(1, T + 1, (B,), generator=g)
            n[0] = T  # the longest sequence fills the batch, as padded batches do
            made.append(n)
        if initial_state:
            made.append(torch.randn(L * D, B, R, generator=g, dtype=dtype))
            if lstm:
                made.append(torch.randn(L * D, B, layer.hidden_size, generator=g, dtype=dtype))
        return tuple(made)

    def run(model, x, *rest):
        rest = list(rest)
        n = rest.pop(0) if lengths else None
        state = None
        if initial_state:
            state = LSTMState(rest[0], rest[1]) if lstm else rest[0]
        out, final = model(x, state, lengths=n)
        return (out, *state_outputs(final))

    reference = copy.deepcopy(layer).eval()
    what = (f"Recurrent({layer.cell.name!r}, {layer.input_size}, {layer.hidden_size}, num_layers={L}, "
            f"bidirectional={layer.bidirectional}{f', proj_size={layer.proj_size}' if layer.proj_size else ''})")
    return Spec(Flat(swap_layers(layer, lengths, initial_state), run), Flat(reference, run), make_inputs, inputs,
                outputs, what)


# ---------------------------------------------------------------------- a trained task model


def checkpoint_spec(directory: str | Path) -> Spec:
    """The export of the model a checkpoint's task builds (``rnnkit.load``): its ``TaskSpec.export``, a
    function of (model, trained object, description), or the sentence that says why the task cannot export."""
    from .tasks import load
    from .tasks.registry import specs
    from .train import checkpoint

    path = checkpoint.resolve(directory)
    task = checkpoint.load(path).config.get("task")
    known = specs()
    exportable = ", ".join(name for name, spec in known.items() if callable(spec.export))
    if task not in known:
        raise NotSupported(f"{path}: config.json names task {task!r}; rnnkit export supports {exportable} "
                           f"(rnnkit knows {', '.join(known)})")
    if not callable(known[task].export):
        raise NotSupported(f"{path} holds a {task!r} model, which rnnkit export does not support: "
                           f"{known[task].export}. Exportable tasks: {exportable}")
    trained = load(path)
    return known[task].export(trained.model.eval(), trained, f"the {task} model of {path}")


def random_ids(vocab_size: int) -> Callable[[int, int], tuple[Tensor, ...]]:
    """A ``Spec.make_inputs`` for a model of token ids: ``make(B, T)`` gives ids (T, B) below ``vocab_size`` and
    lengths (B,) in 1..T, the first T (the longest fills the batch), seeded by (B, T) so each call repeats."""
    def make(B: int, T: int) -> tuple[Tensor, ...]:
        g = torch.Generator().manual_seed(B * 1000 + T)
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0] = T
        return torch.randint(0, vocab_size, (T, B), generator=g), lengths
    return make


def random_features(features: int, lengths: bool) -> Callable[[int, int], tuple[Tensor, ...]]:
    """A ``Spec.make_inputs`` for a model of feature vectors: ``make(B, T)`` gives x (T, B, ``features``) and,
    with ``lengths``, lengths (B,) in 1..T (the first T) with x zero past each length, as the tasks pad."""
    def make(B: int, T: int) -> tuple[Tensor, ...]:
        g = torch.Generator().manual_seed(B * 1000 + T)
        x = torch.randn(T, B, features, generator=g)
        if not lengths:
            return (x,)
        n = torch.randint(1, T + 1, (B,), generator=g)
        n[0] = T
        return x * (torch.arange(T)[:, None] < n)[..., None], n  # zeros past each length, as the tasks pad
    return make



# ---------------------------------------------------------------------- writing and checking files


def export_layer(layer: Recurrent, path: str | Path, format: str = "onnx", *, lengths: bool = False,
                 initial_state: bool = False) -> Export:
    """Write ``layer`` (eval mode) to ``path`` as ONNX or TorchScript, dynamic in batch and time; check it.

    Inputs: x (T, B, I) (or (B, T, I) with batch_first), ``lengths`` (B,) int64 if asked, h0
    (L*D, B, R) and, for the LSTM family, c0 (L*D, B, H) if ``initial_state``. Outputs: out, h_n [, c_n].
    """
    return write(layer_spec(layer, lengths, initial_state), path, format)


def export_checkpoint(directory: str | Path, path: str | Path, format: str = "onnx") -> Export:
    """Write the trained model of a checkpoint or run directory to ``path``; check it at a second shape."""
    return write(checkpoint_spec(directory), path, format)


def write(spec: Spec, path: str | Path, format: str) -> Export:
    """Export ``spec`` to ``path`` in ``format``, then run the file at ``CHECK`` against the reference."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a file name such as {path / ('model.' + format)}")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:  # else mkdir's bare "[Errno 17] File exists"
        raise FileExistsError(f"cannot write {path}: {blocking} is a file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    example_shape = (EXAMPLE[0], spec.fixed_time or EXAMPLE[1])
    example = spec.make_inputs(*example_shape)
    with torch.no_grad(), _quiet():
        traced = torch.jit.trace(spec.module, example, check_trace=False)
        if format == "onnx":
            _write_onnx(traced, spec, example, path)
        else:
            torch.jit.save(traced, str(path))
    check_shape = (CHECK[0], spec.fixed_time or CHECK[1])
    diff, scale = max_abs_diff(path, format, spec, *check_shape)
    if diff > TOLERANCE * max(1.0, scale):
        raise ExportMismatch(f"{path} was written, but at batch {check_shape[0]}, time {check_shape[1]} it differs "
                             f"from PyTorch by up to {diff:.2e} (outputs up to {scale:.2e}); please report this "
                             "as a bug with the command that made it")
    return Export(path, format, spec.what, spec.inputs, spec.outputs, example_shape, check_shape, diff, spec.notes)


def _write_onnx(traced: torch.jit.ScriptModule, spec: Spec, example: tuple[Tensor, ...], path: Path) -> None:
    require("onnx", "rnnkit export --format onnx", extra="export")
    axes = {p.name: p.dynamic() for p in spec.inputs + spec.outputs if p.dynamic()}
    with _quiet():
        torch.onnx.export(traced, example, str(path), dynamo=False, opset_version=OPSET,
                          input_names=[p.name for p in spec.inputs], output_names=[p.name for p in spec.outputs],
                          dynamic_axes=axes)


def load_file(path: str | Path, format: str) -> Callable[..., list[Tensor]]:
    """An exported file as a function of its inputs, in order: onnxruntime for ONNX, ``torch.jit.load``
    for TorchScript. It returns the outputs as a list of tensors.

    A file that is missing or not of ``format`` is refused here; inputs of the wrong number, or empty
    (0 sequences or 0 time steps), are refused before the file runs, and an error of the runtime
    (a wrong shape or dtype) is a ``ValueError`` naming the file and the shapes given.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} {'is a directory' if path.is_dir() else 'does not exist'}; expected an "
                                f"exported {format} file")
    try:
        if format == "onnx":
            ort = require("onnxruntime", "running an exported ONNX file", extra="export")
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            names = [i.name for i in session.get_inputs()]
            call = lambda *inputs: session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})  # noqa: E731
        else:
            with _quiet():
                module = torch.jit.load(str(path))
            names = [a.name for a in module.forward.schema.arguments[1:]]  # [0] is self
            call = lambda *inputs: module(*inputs)  # noqa: E731
    except ImportError:
        raise
    except Exception as error:  # onnxruntime's and torch's own error types
        raise ValueError(f"{path} is not a readable {format} file ({_first_line(error)}); export it again with "
                         "rnnkit export") from None

    def run(*inputs: Tensor) -> list[Tensor]:
        if len(inputs) != len(names):
            raise ValueError(f"{path} takes {len(names)} inputs ({', '.join(names)}), got {len(inputs)}")
        for name, t in zip(names, inputs):
            if not isinstance(t, Tensor):
                raise TypeError(f"input {name} of {path} must be a Tensor, got {type(t).__name__}")
            if t.numel() == 0:
                raise ValueError(f"input {name} of {path} is empty, shape {tuple(t.shape)}; an exported model needs "
                                 "at least 1 sequence of at least 1 time step")
        try:
            with torch.no_grad():
                got = call(*inputs)
        except Exception as error:
            shapes = ", ".join(f"{n} {tuple(t.shape)} {str(t.dtype).replace('torch.', '')}"
                               for n, t in zip(names, inputs))
            raise ValueError(f"{path} could not run on the inputs {shapes}: {_first_line(error)}") from None
        return [torch.from_numpy(a) for a in got] if format == "onnx" else list(got)

    return run


def _first_line(error: Exception) -> str:
    """The line of a runtime's message that says what went wrong (TorchScript puts it last)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[-1] if isinstance(error, torch.jit.Error) or "TorchScript" in lines[0] else " ".join(lines[:3])


def run_file(path: str | Path, format: str, inputs: tuple[Tensor, ...]) -> list[Tensor]:
    """Run an exported file once on ``inputs`` (see ``load_file``)."""
    return load_file(path, format)(*inputs)


def max_abs_diff(path: str | Path, format: str, spec: Spec, B: int, T: int) -> tuple[float, float]:
    """The largest |file - PyTorch| over every output at batch B and time T, and the largest |PyTorch|.

    Raises ``ExportMismatch`` where an output's shape differs (a length the trace kept).
    """
    inputs = spec.make_inputs(B, T)
    got = run_file(path, format, inputs)
    with torch.no_grad():
        expected = spec.reference(*inputs)
    worst = scale = 0.0
    for port, e, g in zip(spec.outputs, expected, got):
        if tuple(e.shape) != tuple(g.shape):
            raise ExportMismatch(f"{path}: output {port.name} has shape {tuple(g.shape)} at batch {B}, time {T}; "
                                 f"PyTorch gives {tuple(e.shape)}")
        if e.numel():
            worst = max(worst, float((g.double() - e.double()).abs().max()))
            scale = max(scale, float(e.double().abs().max()))
    return worst, scale
