"""Fast inference steps: ``Recurrent.step`` with raw ops on weights arranged once.

Generation feeds a layer one token at a time, usually with batch 1. Each step is then a
few matrix-vector products (GEMVs) that stream every weight through memory once, plus a
handful of small pointwise ops. The autograd step (``cell.input_projection`` then
``cell.step``) pays around twenty dispatcher calls and allocations per layer on top of
the GEMVs; this module pays about ten, on weights arranged once and reused, and for
float32 lstm, peephole_lstm and cifg_lstm without projection on CPU, one C++ call for the
whole stack (``_CppLSTMStep``: the fused backend's tiled step, ``lstm_step``, GEMV and gates
in one pass per block of hidden units; it needs the C++ loops, else the torch ops below run
and a warning says why once). The torch-op arrangement, for every other cell and dtype:

- every weight is stored transposed and contiguous, (in, out): for batch 1 MKL streams it
  faster than ``W.t()``, the view ``F.linear`` multiplies with (see ``_transposed``);
- gated cells (Elman, LSTM, peephole, CIFG) keep one matrix ``[W_ih | W_hh]^T`` (I+R, G*H)
  and one bias ``b_ih + b_hh``, so a step is ONE ``addmm`` of ``[x_t, h_{t-1}]``,
  concatenated into a preallocated buffer;
- gate rows are reordered where that lets one in-place ``sigmoid_`` cover several gates
  (LSTM i|f|g|o is stored i|f|o|g, CIFG f|g|o as f|o|g; layer norm over all 4H gates does
  not care about the order, so the layer-norm LSTM is reordered too);
- ``gru`` keeps torch's two GEMMs (r scales ``W_hn h + b_hn``, so they cannot merge);
  ``cho_gru`` merges its r|z rows and, separately, ``[W_in | W_hn]`` over ``[x_t, r*h]``;
- ``layernorm_lstm`` keeps two GEMMs (each has its own layer norm), with the four
  additive vectors (two LN biases, b_ih, b_hh) folded into one;
- cells without recurrent weights (``mingru``, ``minlstm``), where nothing is gained,
  run the cell's own ``input_projection`` and ``step``.

Pointwise work runs in place on preallocated scratch buffers, with ``out=`` into the new
state. There is no ``torch.tanh``: ATen computes tanh (like exp and log) with MKL's VML,
which enters MKL's OpenMP team even for 512 elements; when another process holds a core,
each such call waits for the scheduler, 8-16 ms instead of 4 us (measured on the 2-core
machines with torch 2.13, 2 threads): a 2-layer LSTM step (H=512) with tanh took 30-60 ms
under such load, about 1 ms without it.
ATen's sigmoid is its own vectorized kernel, so every tanh here is 2 sigmoid(2x) - 1 or
1 - 2 sigmoid(-2x), the factor folded into the arranged weights wherever x comes from them
(scaling by 2 is exact); the cost is one or two more small ops per tanh.

The arranged weights are cached per layer under a key of every parameter's
identity, ``_version`` counter and data pointer, so an optimizer step, ``load_state_dict``
or in-place edit (each bumps ``_version``) and ``.to(dtype or device)`` (which replaces
``.data``) all re-arrange on the next step. The cache doubles the weights' memory while
it lives; ``layer._stepper.clear()`` drops it. Per step the check costs about 2 us a layer.

The C++ step computes its own exp and tanh (float32 polynomials, tanh within ~1e-7), so it
agrees with the torch ops within float32 rounding, not bit for bit (``tests/test_cpp_batch1.py``:
within 1e-5 of the float64 reference).

Only for inference: nothing here records autograd history. ``Recurrent.step`` uses it
when no gradient is needed (under ``torch.no_grad``/``inference_mode``, or when neither
the input, the state nor any parameter requires grad) and outside autocast. Results equal
the autograd step up to floating-point rounding (the merged GEMM's summation order, tanh
through sigmoid): within 1e-12 in float64 (``tests/test_stepper.py``).
Scratch buffers are kept per thread, so several threads may step one layer at once (as
long as none of them changes the parameters meanwhile).
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .cells import Cell, LSTMState, State
from .driver import dropout_between

_MAX_SCRATCH = 16  # scratch sets kept per layer (batch size x thread x inference mode)


def _blocks(t: Tensor, order: tuple[int, ...], doubled: tuple[int, ...] = ()) -> Tensor:
    """t's row blocks (len(order) equal blocks of a matrix or a vector) in a new order; the
    blocks at the positions ``doubled`` (of the new order) times 2, which is exact."""
    parts = t.chunk(len(order), dim=0)
    return torch.cat([parts[j] * 2 if pos in doubled else parts[j] for pos, j in enumerate(order)], dim=0)


def _transposed(weight: Tensor) -> Tensor:
    """weight (out, in) stored transposed and contiguous, (in, out): ``x @ W^T`` as ``addmm(b, x, W_t)``.

    For batch 1 this layout streams faster than ``weight.t()`` (the view F.linear uses): a
    2-layer LSTM's two GEMVs (H=512, I=512 or 64) took 0.66-0.85x the view's time at 2 threads
    and 0.8-0.9x at 1 thread; at batch 4 to 128 it was as fast or faster (torch 2.13 with MKL,
    on the 2-core machines).
    """
    return weight.t().contiguous()


class _Plan:
    """One layer's weights arranged for stepping, and the scratch buffers its steps write into.

    Subclasses implement ``arrange(w)`` (w: the cell's parameter names -> detached tensors)
    and ``make_scratch(B, like)``, and ``step(inp, prev, out)``: inp (B, I), prev the
    previous state's tensors of this layer ((h,) or (h, c)), out the tensors to write the
    new state into (views of the returned state, same shapes as prev).
    """

    cpp = None  # torch.ops.rnnkit_fused where the layer steps in C++ (``_CppLSTMStep``)

    def __init__(self, cell: Cell, names: dict[str, str], hidden_size: int) -> None:
        self.cell = cell
        self.cell_names = list(names)  # weight_ih, weight_hh, ...
        self.full_names = list(names.values())  # weight_ih_l0, weight_hh_l0, ...
        self.H = hidden_size
        self.key: list | None = None
        self._scratch: dict[tuple, SimpleNamespace] = {}

    def refresh(self, parameters: dict[str, Tensor]) -> None:
        """Re-arrange the weights if any parameter changed since the last arrangement."""
        params = [parameters[name] for name in self.full_names]
        key = [(id(p), p._version, p.data_ptr()) for p in params]
        if key != self.key:
            with torch.no_grad():
                self.arrange({name: p.detach() for name, p in zip(self.cell_names, params)})
            # constants as 0-dim tensors: an op with a Python number wraps it in a new tensor each call (+2 us)
            self.two, self.minus_one, self.minus_two = (params[0].new_tensor(v) for v in (2.0, -1.0, -2.0))
            self.zero = params[0].new_tensor(0.0)
            self.key = key
            self._scratch.clear()

    def tanh_from_sigmoid_(self, s: Tensor) -> Tensor:
        """s holds sigmoid(2x); turn it into tanh(x) = 2 sigmoid(2x) - 1, in place."""
        return torch.addcmul(self.minus_one, s, self.two, out=s)

    def scratch(self, like: Tensor) -> SimpleNamespace:
        """This thread's buffers for batch size B = like.shape[0], made on first use."""
        # inference-mode tensors cannot be written in place outside inference mode: keep both kinds
        key = (like.shape[0], threading.get_ident(), torch.is_inference_mode_enabled())
        s = self._scratch.get(key)
        if s is None:
            if len(self._scratch) >= _MAX_SCRATCH:
                self._scratch.clear()
            s = self._scratch[key] = self.make_scratch(like.shape[0], like)
        return s

    def arrange(self, w: dict[str, Tensor]) -> None:
        raise NotImplementedError

    def make_scratch(self, B: int, like: Tensor) -> SimpleNamespace:
        return SimpleNamespace()

    def step(self, inp: Tensor, prev: tuple[Tensor, ...], out: tuple[Tensor, ...]) -> None:
        raise NotImplementedError


class _MergedPlan(_Plan):
    """``[x_t, h_{t-1}] @ [W_ih | W_hh]^T + (b_ih + b_hh)``: one addmm per step.

    ``order`` reorders the gate blocks of the rows (and the bias) once, so that gates
    sharing an activation are adjacent in the result; the blocks at positions ``doubled``
    (of the new order) are tanh gates, stored times 2 for ``tanh_from_sigmoid_``.
    """

    order: ClassVar[tuple[int, ...]] = (0,)
    doubled: ClassVar[tuple[int, ...]] = ()

    def arrange(self, w):
        weight = torch.cat([w["weight_ih"], w["weight_hh"]], dim=1)  # (G*H, I+R)
        bias = w["bias_ih"] + w["bias_hh"] if "bias_ih" in w else weight.new_zeros(weight.shape[0])
        self.weight_t = _transposed(_blocks(weight, self.order, self.doubled))  # (I+R, G*H)
        self.bias = _blocks(bias, self.order, self.doubled)[None]  # (1, G*H), broadcast over the batch by addmm
        self.weight_hr_t = _transposed(w["weight_hr"]) if "weight_hr" in w else None  # (H, R)

    def make_scratch(self, B, like):
        xh = like.new_empty(B, self.weight_t.shape[0])  # (B, I+R)
        gates = like.new_empty(B, self.weight_t.shape[1])  # (B, G*H)
        return SimpleNamespace(xh=xh, gates=gates)

    def gemm(self, s: SimpleNamespace, inp: Tensor, h_prev: Tensor) -> Tensor:
        torch.cat([inp, h_prev], dim=1, out=s.xh)  # (B, I+R)
        return torch.addmm(self.bias, s.xh, self.weight_t, out=s.gates)  # (B, G*H)


class _ElmanPlan(_MergedPlan):
    def arrange(self, w):
        self.doubled = (0,) if self.cell.nonlinearity == "tanh" else ()
        super().arrange(w)

    def step(self, inp, prev, out):
        a = self.gemm(self.scratch(inp), inp, prev[0])  # (B, H), 2a for tanh
        if self.cell.nonlinearity == "tanh":
            self.tanh_from_sigmoid_(torch.sigmoid(a, out=out[0]))
        else:
            torch.clamp_min(a, self.zero, out=out[0])  # relu, which ATen computes as clamp_min(x, 0)


class _IndRNNPlan(_Plan):
    def arrange(self, w):
        bound = self.cell.recurrent_max
        u = w["weight_hh"] if bound is None else w["weight_hh"].clamp(-bound, bound)  # (H,)
        bias = w["bias_ih"] + w["bias_hh"] if "bias_ih" in w else u.new_zeros(self.H)
        scale = 2 if self.cell.nonlinearity == "tanh" else 1  # tanh as 2 sigmoid(2a) - 1
        self.weight_ih_t, self.u, self.bias = _transposed(scale * w["weight_ih"]), scale * u, scale * bias[None]

    def make_scratch(self, B, like):
        return SimpleNamespace(a=like.new_empty(B, self.H))

    def step(self, inp, prev, out):
        a = torch.addmm(self.bias, inp, self.weight_ih_t, out=self.scratch(inp).a)  # (B, H)
        a.addcmul_(self.u, prev[0])
        if self.cell.nonlinearity == "relu":
            torch.clamp_min(a, self.zero, out=out[0])
        else:
            self.tanh_from_sigmoid_(torch.sigmoid(a, out=out[0]))


class _LSTMOutput:
    """The LSTM family's output ``h = o * tanh(c)``, then torch's projection ``W_hr`` where proj_size > 0."""

    def output(self, o: Tensor, s: Tensor, h: Tensor) -> None:
        """h = o * tanh(c) = o - 2 o sigmoid(-2c), from s = sigmoid(-2c) (overwritten with a projection)."""
        if self.weight_hr_t is None:
            torch.addcmul(o, o, s, value=-2, out=h)
        else:
            torch.mm(torch.addcmul(o, o, s, value=-2, out=s), self.weight_hr_t, out=h)  # (B, R)


def _cpp_step_ops(cell_name: str, w: dict[str, Tensor]):
    """``torch.ops.rnnkit_fused`` where this layer's step runs in C++, else None: lstm, peephole_lstm and cifg_lstm,
    float32 on CPU, without projection, the C++ loops loaded (``RNNKIT_NO_EXTENSION=1`` turns them off). Where they
    cannot load, warns once with the reason and returns None: the torch ops below step instead."""
    from .backends.fused import extension  # the backends import the driver, which this module is beside

    if cell_name not in extension.TILED_KINDS or "weight_hr" in w:  # lstm_step is the tiled step
        return None
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in w.values()):
        return None
    return extension.load_or_warn("rnnkit layer.step", "stepping with torch ops", stacklevel=5)


class _CppLSTMStep:
    """A layer's whole step as one C++ call where ``_cpp_step_ops`` allows: ``lstm_step`` (csrc/lstm.cpp) on the
    tiled step of csrc/tile.h, per block of hidden units [x_t, h_{t-1}] against one contiguous slab of
    [W_ih | W_hh] (arranged once by ``lstm_step_pack``, with b_ih + b_hh) and the gates computed on the result in
    registers. Instead of about ten ATen calls per layer (each 2-5 us) and a (B, G) product through memory. The
    activations are csrc/vec.h's float32 ones (tanh within ~1e-7 absolute), so results agree with the torch ops
    within float32 rounding, not bit for bit."""

    cpp = None  # the ops, when this layer steps in C++

    def arrange_cpp(self, w: dict[str, Tensor]) -> bool:
        self.cpp = _cpp_step_ops(self.cell.name, w)
        if self.cpp is None:
            return False
        from .backends.fused import extension

        self.kind = extension.KINDS[self.cell.name]
        # (blocks, I + H, gates, NB) slabs and (blocks, gates, NB) bias
        self.tiles = self.cpp.lstm_step_pack(self.kind, w["weight_ih"], w.get("bias_ih"), w["weight_hh"],
                                             w.get("bias_hh"))
        self.peepholes = [w["weight_peephole"]] if "weight_peephole" in w else []  # (3, H)
        return True

    def step_cpp(self, inp: Tensor, prev: tuple[Tensor, ...], out: tuple[Tensor, ...]) -> None:
        """This layer alone (between layers with dropout; ``Stepper.step`` steps the whole stack in one call)."""
        _, h, c = self.cpp.lstm_step(self.kind, inp, prev[0][None], prev[1][None], [self.tiles[0]], [self.tiles[1]],
                                     self.peepholes)  # (1, B, H) each
        out[0].copy_(h[0])
        out[1].copy_(c[0])


class _LSTMPlan(_CppLSTMStep, _LSTMOutput, _MergedPlan):
    order = (0, 1, 3, 2)  # torch's i|f|g|o stored as i|f|o|g, g doubled: one sigmoid_ for all four
    doubled = (3,)

    def arrange(self, w):
        if not self.arrange_cpp(w):
            super().arrange(w)

    def make_scratch(self, B, like):
        s = super().make_scratch(B, like)
        H = self.H
        s.i, s.f, s.o, s.g = (s.gates[:, j * H : (j + 1) * H] for j in range(4))
        s.act = like.new_empty(B, H)  # sigmoid(-2 c_t)
        return s

    def step(self, inp, prev, out):
        if self.cpp is not None:
            return self.step_cpp(inp, prev, out)
        s = self.scratch(inp)
        self.gemm(s, inp, prev[0]).sigmoid_()  # (B, 4H): i, f, o and sigmoid(2 a_g)
        h, c = out
        # c_t = f c_{t-1} + i g with g = tanh(a_g) = 2 sigmoid(2 a_g) - 1
        torch.mul(s.f, prev[1], out=c).addcmul_(s.i, s.g, value=2).sub_(s.i)
        self.output(s.o, torch.mul(c, self.minus_two, out=s.act).sigmoid_(), h)


class _PeepholeLSTMPlan(_CppLSTMStep, _LSTMOutput, _MergedPlan):
    # i|f|g|o as torch, g doubled: i and f see c_{t-1}, o sees c_t, so o is computed after c
    order = (0, 1, 2, 3)
    doubled = (2,)

    def arrange(self, w):
        if self.arrange_cpp(w):
            return
        super().arrange(w)
        self.w_ci, self.w_cf, self.w_co = w["weight_peephole"].unbind(0)  # (H,) each

    def make_scratch(self, B, like):
        s = super().make_scratch(B, like)
        H = self.H
        s.i, s.f, s.g, s.o = (s.gates[:, j * H : (j + 1) * H] for j in range(4))
        s.ifg = s.gates[:, : 3 * H]
        s.act = like.new_empty(B, H)  # sigmoid(-2 c_t)
        return s

    def step(self, inp, prev, out):
        if self.cpp is not None:
            return self.step_cpp(inp, prev, out)
        s = self.scratch(inp)
        c_prev = prev[1]
        self.gemm(s, inp, prev[0])  # (B, 4H) i|f|g|o
        s.i.addcmul_(self.w_ci, c_prev)
        s.f.addcmul_(self.w_cf, c_prev)
        s.ifg.sigmoid_()
        self.tanh_from_sigmoid_(s.g)
        h, c = out
        torch.mul(s.f, c_prev, out=c).addcmul_(s.i, s.g)
        self.output(s.o.addcmul_(self.w_co, c).sigmoid_(), torch.mul(c, self.minus_two, out=s.act).sigmoid_(), h)


class _CIFGLSTMPlan(_CppLSTMStep, _LSTMOutput, _MergedPlan):
    order = (0, 2, 1)  # torch-style f|g|o stored as f|o|g, g doubled: one sigmoid_ for all three
    doubled = (2,)

    def arrange(self, w):
        if not self.arrange_cpp(w):
            super().arrange(w)

    def make_scratch(self, B, like):
        s = super().make_scratch(B, like)
        H = self.H
        s.f, s.o, s.g = (s.gates[:, j * H : (j + 1) * H] for j in range(3))
        s.act = like.new_empty(B, H)  # sigmoid(-2 c_t)
        return s

    def step(self, inp, prev, out):
        if self.cpp is not None:
            return self.step_cpp(inp, prev, out)
        s = self.scratch(inp)
        self.gemm(s, inp, prev[0]).sigmoid_()  # (B, 3H): f, o and sigmoid(2 a_g)
        self.tanh_from_sigmoid_(s.g)
        h, c = out
        torch.lerp(s.g, prev[1], s.f, out=c)  # f c_{t-1} + (1 - f) g = g + f (c_{t-1} - g)
        self.output(s.o, torch.mul(c, self.minus_two, out=s.act).sigmoid_(), h)


class _LayerNormLSTMPlan(_LSTMOutput, _Plan):
    """Two GEMMs (each product has its own layer norm), gates stored i|f|o|g as ``_LSTMPlan``.

    A layer norm over all 4H gates does not care about their order, and scaling its gain
    and bias scales its output, so g's rows of both LN gains and of the folded bias are
    doubled, and LN_c's gain and bias are times -2 (the output takes sigmoid(-2 LN_c(c))).
    """

    order = (0, 1, 3, 2)
    doubled = (3,)

    def arrange(self, w):
        H, order, doubled = self.H, self.order, self.doubled
        self.weight_ih_t = _transposed(_blocks(w["weight_ih"], order))  # (I, 4H)
        self.weight_hh_t = _transposed(_blocks(w["weight_hh"], order))  # (R, 4H)
        self.ln_ih_weight = _blocks(w["ln_ih_weight"], order, doubled)
        self.ln_hh_weight = _blocks(w["ln_hh_weight"], order, doubled)
        # every additive vector of the gates in one: LN_ih's and LN_hh's biases, b_ih, b_hh
        bias = w["ln_ih_bias"] + w["ln_hh_bias"]
        if "bias_ih" in w:
            bias = bias + w["bias_ih"] + w["bias_hh"]
        self.bias = _blocks(bias, order, doubled)
        self.ln_c_weight, self.ln_c_bias = -2 * w["ln_c_weight"], -2 * w["ln_c_bias"]
        self.weight_hr_t = _transposed(w["weight_hr"]) if "weight_hr" in w else None
        self.shape_4h, self.shape_h = (4 * H,), (H,)

    def make_scratch(self, B, like):
        H = self.H
        gates = like.new_empty(B, 4 * H)
        s = SimpleNamespace(a_x=like.new_empty(B, 4 * H), a_h=like.new_empty(B, 4 * H), gates=gates)
        s.i, s.f, s.o, s.g = (gates[:, j * H : (j + 1) * H] for j in range(4))
        return s

    def step(self, inp, prev, out):
        s = self.scratch(inp)
        eps = self.cell.eps
        torch.mm(inp, self.weight_ih_t, out=s.a_x)  # (B, 4H)
        torch.mm(prev[0], self.weight_hh_t, out=s.a_h)
        torch.add(F.layer_norm(s.a_x, self.shape_4h, self.ln_ih_weight, self.bias, eps),
                  F.layer_norm(s.a_h, self.shape_4h, self.ln_hh_weight, None, eps), out=s.gates).sigmoid_()
        self.tanh_from_sigmoid_(s.g)
        h, c = out
        torch.mul(s.f, prev[1], out=c).addcmul_(s.i, s.g)
        c_norm = F.layer_norm(c, self.shape_h, self.ln_c_weight, self.ln_c_bias, eps)  # (B, H): -2 LN_c(c)
        self.output(s.o, c_norm.sigmoid_(), h)


class _GRUPlan(_Plan):
    """torch's GRU: ``W_ih x + b_ih`` and ``W_hh h + b_hh`` stay two GEMMs (r scales the second's n block).

    The n rows of both are doubled: n = tanh(a_n) as 2 sigmoid(2 a_n) - 1.
    """

    order, doubled = (0, 1, 2), (2,)

    def arrange(self, w):
        zeros = w["weight_ih"].new_zeros(3 * self.H)
        self.weight_ih_t = _transposed(_blocks(w["weight_ih"], self.order, self.doubled))  # (I, 3H)
        self.weight_hh_t = _transposed(_blocks(w["weight_hh"], self.order, self.doubled))  # (H, 3H)
        self.bias_ih = _blocks(w.get("bias_ih", zeros), self.order, self.doubled)[None]
        self.bias_hh = _blocks(w.get("bias_hh", zeros), self.order, self.doubled)[None]

    def make_scratch(self, B, like):
        H = self.H
        gx, gh = like.new_empty(B, 3 * H), like.new_empty(B, 3 * H)
        return SimpleNamespace(gx=gx, gh=gh, x_rz=gx[:, : 2 * H], h_rz=gh[:, : 2 * H],
                               r=gx[:, :H], z=gx[:, H : 2 * H], x_n=gx[:, 2 * H :], h_n=gh[:, 2 * H :])

    def step(self, inp, prev, out):
        s = self.scratch(inp)
        h_prev, h = prev[0], out[0]
        torch.addmm(self.bias_ih, inp, self.weight_ih_t, out=s.gx)  # (B, 3H) r|z|n
        torch.addmm(self.bias_hh, h_prev, self.weight_hh_t, out=s.gh)
        s.x_rz.add_(s.h_rz).sigmoid_()
        n = self.tanh_from_sigmoid_(s.x_n.addcmul_(s.r, s.h_n).sigmoid_())  # tanh(W_in x + b_in + r (W_hn h + b_hn))
        torch.lerp(n, h_prev, s.z, out=h)  # (1 - z) n + z h_{t-1} = n + z (h_{t-1} - n)


class _ChoGRUPlan(_Plan):
    """Cho et al.'s GRU as two GEMMs over one buffer laid out ``[h_{t-1} | x_t | r * h_{t-1}]``.

    r|z read ``[h | x]`` (its first H+I columns) with ``[W_hh^{rz} | W_ih^{rz}]``; n reads
    ``[x | r h]`` (its last I+H columns) with ``[W_in | W_hn]``, doubled (n = 2 sigmoid(2 a_n) - 1);
    each bias is folded into one.
    """

    def arrange(self, w):
        H = self.H
        w_ih, w_hh = w["weight_ih"], w["weight_hh"]
        bias = w["bias_ih"] + w["bias_hh"] if "bias_ih" in w else w_ih.new_zeros(3 * H)
        self.I = w_ih.shape[1]
        self.weight_rz_t = _transposed(torch.cat([w_hh[: 2 * H], w_ih[: 2 * H]], dim=1))  # (H+I, 2H)
        self.weight_n_t = _transposed(2 * torch.cat([w_ih[2 * H :], w_hh[2 * H :]], dim=1))  # (I+H, H)
        self.bias_rz, self.bias_n = bias[None, : 2 * H], 2 * bias[None, 2 * H :]

    def make_scratch(self, B, like):
        H, I = self.H, self.I
        buf = like.new_empty(B, 2 * H + I)
        rz = like.new_empty(B, 2 * H)
        return SimpleNamespace(h=buf[:, :H], x=buf[:, H : H + I], rh=buf[:, H + I :], hx=buf[:, : H + I],
                               xrh=buf[:, H:], rz=rz, r=rz[:, :H], z=rz[:, H:], n=like.new_empty(B, H))

    def step(self, inp, prev, out):
        s = self.scratch(inp)
        h_prev, h = prev[0], out[0]
        s.h.copy_(h_prev)
        s.x.copy_(inp)
        torch.addmm(self.bias_rz, s.hx, self.weight_rz_t, out=s.rz).sigmoid_()  # (B, 2H) r|z
        torch.mul(s.r, h_prev, out=s.rh)
        n = self.tanh_from_sigmoid_(torch.addmm(self.bias_n, s.xrh, self.weight_n_t, out=s.n).sigmoid_())  # (B, H)
        torch.lerp(n, h_prev, s.z, out=h)  # (1 - z) n + z h_{t-1}


class _CellPlan(_Plan):
    """No arrangement: the cell's own input projection and step (cells without recurrent weights)."""

    def arrange(self, w):
        self.w = w

    def step(self, inp, prev, out):
        state = LSTMState(*prev) if self.cell.state_type is LSTMState else prev[0]
        gx = self.cell.input_projection(inp.unsqueeze(0), self.w).squeeze(0)  # (B, G*H)
        _, new = self.cell.step(gx, state, self.w)
        for target, value in zip(out, (new,) if isinstance(new, Tensor) else new):
            target.copy_(value)


_PLANS: dict[str, type[_Plan]] = {
    "rnn_tanh": _ElmanPlan,
    "rnn_relu": _ElmanPlan,
    "lstm": _LSTMPlan,
    "peephole_lstm": _PeepholeLSTMPlan,
    "layernorm_lstm": _LayerNormLSTMPlan,
    "cifg_lstm": _CIFGLSTMPlan,
    "gru": _GRUPlan,
    "cho_gru": _ChoGRUPlan,
    "indrnn": _IndRNNPlan,
}


class Stepper:
    """Inference steps of one unidirectional ``Recurrent`` layer (every cell; see the module doc).

    Lives on the layer as a plain attribute (not a module or buffer: the state_dict is
    unchanged); the arranged weights are rebuilt whenever a parameter changes.
    """

    def __init__(self) -> None:
        self._plans: list[_Plan] | None = None

    def clear(self) -> None:
        """Drop the arranged weights and buffers (they are rebuilt on the next step)."""
        self._plans = None

    def __getstate__(self) -> dict:
        return {"_plans": None}  # a cache: never pickled or deep-copied with the layer

    def step(self, layer, x_t: Tensor, state: State, dropout: float = 0.0) -> tuple[Tensor, State]:
        """x_t (B, I) through every layer from ``state`` (checked by the caller); dropout > 0 between layers.

        Returns y_t (B, R) and the new state, fresh tensors of ``forward``'s shapes.
        """
        if self._plans is None:
            plan = _PLANS.get(layer.cell.name, _CellPlan)
            self._plans = [plan(layer.cell, layer._names[k][0], layer.hidden_size) for k in range(layer.num_layers)]
        parameters = layer._parameters
        for plan in self._plans:
            plan.refresh(parameters)
        first = self._plans[0]
        if all(p.cpp is not None for p in self._plans) and (dropout == 0 or len(self._plans) == 1):
            # every layer in one C++ call
            y, h, c = first.cpp.lstm_step(first.kind, x_t, state.h, state.c, [p.tiles[0] for p in self._plans],
                                          [p.tiles[1] for p in self._plans],
                                          [w for p in self._plans for w in p.peepholes])  # (B, H), (L, B, H) x 2
            return y, LSTMState(h, c)
        parts = (state,) if isinstance(state, Tensor) else state
        new = [torch.empty_like(p, memory_format=torch.contiguous_format) for p in parts]  # (L, B, *)
        # per layer k: (h_k,) or (h_k, c_k), views of the previous and of the new state
        prev_layers = list(zip(*[p.unbind(0) for p in parts]))
        new_layers = list(zip(*[p.unbind(0) for p in new]))
        inp = x_t
        for k, plan in enumerate(self._plans):
            plan.step(inp, prev_layers[k], new_layers[k])
            inp = dropout_between(new_layers[k][0], k, len(new_layers), dropout, training=True)  # (B, R)
        y = inp.clone()  # its own tensor, as the autograd step returns, not a view of the state
        return y, (new[0] if isinstance(state, Tensor) else LSTMState(*new))
