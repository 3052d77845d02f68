"""Convolutional recurrent cells and ``rnnkit.ConvRecurrent``, checked from the equations up.

- golden values: the layer against an independent scalar implementation of the docstrings'
  equations written here (lists, dicts and ``math`` only, the convolution as explicit sums),
  for every cell and dims 1, 2, 3, and against literal numbers;
- ``torch.autograd.gradcheck`` of the whole layer in the input, the initial state and every parameter;
- on 1x1 frames the cells are ``lstm``, ``peephole_lstm``, ``gru``, ``cho_gru``: the layer equals ``rnnkit.Recurrent``;
- the layer equals stepping its cell by hand (stacked, both directions) and equals ``layer.step`` T times;
- lengths: each clip alone, the reverse direction starts at each clip's own end, gradients too;
- bad input gives errors that name the argument; dropout acts between layers in training only;
- it learns: a ConvLSTM predicts a moving dot's next frame.

Everything is float64 and tiny, but the one learning test (float32, a moving dot, 60 Adam steps).
"""

from __future__ import annotations

import math
from itertools import product

import pytest
import torch
from torch.func import functional_call

import rnnkit
from rnnkit import LSTMState
from rnnkit.cells.conv import conv_same
from rnnkit.driver import reverse_padded

from .helpers import assert_close, state_tensors

DTYPE = torch.float64
TOL = 1e-12
CELLS = ("convlstm", "peephole_convlstm", "convgru", "cho_convgru")
SIZES = {1: (5,), 2: (3, 4), 3: (2, 3, 3)}  # a frame per dims, non-square so no axis is confused


def make_layer(cell, in_channels=2, hidden_channels=2, kernel_size=3, dims=2, seed=0, **kwargs):
    """A float64 layer with its init perturbed, so no parameter sits at a special value."""
    torch.manual_seed(seed)
    layer = rnnkit.ConvRecurrent(cell, in_channels, hidden_channels, kernel_size, dims=dims, dtype=DTYPE, **kwargs)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return layer


def random_state(layer, batch, spatial, seed=1):
    gen = torch.Generator().manual_seed(seed)
    shape = (layer.num_layers * layer.num_directions, batch, layer.hidden_channels, *spatial)
    parts = [0.5 * torch.randn(shape, generator=gen, dtype=DTYPE) for _ in range(2 if is_lstm(layer) else 1)]
    return parts[0] if len(parts) == 1 else LSTMState(*parts)


def is_lstm(layer):
    return layer.cell.state_type is LSTMState


def assert_state_close(name, expected, got, tol=TOL):
    for label, e, g in zip(("h", "c"), state_tensors(expected), state_tensors(got)):
        assert_close(f"{name}.{label}", e, g, tol)


# ---------------------------------------------------------------------------------------------
# 1. Golden values: an independent scalar implementation of the equations
# ---------------------------------------------------------------------------------------------


def sigmoid(a):
    return 1.0 / (1.0 + math.exp(-a))


def nested(v, index):
    for i in index:
        v = v[i]
    return v


def conv_scalar(frame, weight, bias, size):
    """torch's "same" convolution (a cross-correlation), zero padding k // 2, as explicit sums.

    frame: list over input channels of {position: value}; weight: nested lists [out][in][k_1]...[k_d];
    returns a list over output channels of {position: value}.
    """
    k = []
    w = weight[0][0]
    while isinstance(w, list):
        k.append(len(w))
        w = w[0]
    out = []
    for o, w_o in enumerate(weight):
        plane = {}
        for pos in product(*(range(n) for n in size)):
            acc = bias[o] if bias is not None else 0.0
            for ci, w_oc in enumerate(w_o):
                for off in product(*(range(kk) for kk in k)):
                    src = tuple(p + q - kk // 2 for p, q, kk in zip(pos, off, k))
                    if all(0 <= s < n for s, n in zip(src, size)):
                        acc += nested(w_oc, off) * frame[ci][src]
            plane[pos] = acc
        out.append(plane)
    return out


def scalar_step(cell, p, x, h, c, size):
    """One step of one clip; x, h, c are lists over channels of {position: value}. Returns (h, c)."""
    gx = conv_scalar(x, p["weight_ih"], p.get("bias_ih"), size)
    gh = conv_scalar(h, p["weight_hh"], p.get("bias_hh"), size)
    Hc = len(h)
    positions = list(h[0])
    if cell in ("convlstm", "peephole_convlstm"):
        a = [{pos: gx[j][pos] + gh[j][pos] for pos in positions} for j in range(4 * Hc)]
        h_new, c_new = [], []
        for j in range(Hc):
            a_i, a_f, a_g, a_o = a[j], a[Hc + j], a[2 * Hc + j], a[3 * Hc + j]
            w_ci, w_cf, w_co = (p["weight_peephole"][r][j] if cell == "peephole_convlstm" else 0.0 for r in range(3))
            hj, cj = {}, {}
            for pos in positions:
                i = sigmoid(a_i[pos] + w_ci * c[j][pos])
                f = sigmoid(a_f[pos] + w_cf * c[j][pos])
                cj[pos] = f * c[j][pos] + i * math.tanh(a_g[pos])
                o = sigmoid(a_o[pos] + w_co * cj[pos])
                hj[pos] = o * math.tanh(cj[pos])
            h_new.append(hj)
            c_new.append(cj)
        return h_new, c_new
    r = [{pos: sigmoid(gx[j][pos] + gh[j][pos]) for pos in positions} for j in range(Hc)]
    z = [{pos: sigmoid(gx[Hc + j][pos] + gh[Hc + j][pos]) for pos in positions} for j in range(Hc)]
    if cell == "convgru":  # reset after the recurrent convolution
        n = [{pos: math.tanh(gx[2 * Hc + j][pos] + r[j][pos] * gh[2 * Hc + j][pos]) for pos in positions}
             for j in range(Hc)]
    else:  # cho_convgru: reset before it, W_hn * (r . h) + b_hn
        rh = [{pos: r[j][pos] * h[j][pos] for pos in positions} for j in range(Hc)]
        b_n = p["bias_hh"][2 * Hc :] if "bias_hh" in p else None
        gh_n = conv_scalar(rh, p["weight_hh"][2 * Hc :], b_n, size)
        n = [{pos: math.tanh(gx[2 * Hc + j][pos] + gh_n[j][pos]) for pos in positions} for j in range(Hc)]
    h_new = [{pos: (1 - z[j][pos]) * n[j][pos] + z[j][pos] * h[j][pos] for pos in positions} for j in range(Hc)]
    return h_new, None


def as_planes(t, size):
    """A tensor (channels, *S) as a list over channels of {position: value}."""
    values = t.tolist()
    return [{pos: nested(ch, pos) for pos in product(*(range(n) for n in size))} for ch in values]


def as_tensor(planes, size):
    return torch.tensor([[plane[pos] for pos in product(*(range(n) for n in size))] for plane in planes],
                        dtype=DTYPE).view(len(planes), *size)


def golden_layer(cell, dims, bias=True):
    """Constant-pattern weights: every parameter a fixed, readable function of its flat index."""
    layer = rnnkit.ConvRecurrent(cell, 2, 2, 3, dims=dims, bias=bias, dtype=DTYPE)
    with torch.no_grad():
        for shift, p in enumerate(layer.parameters()):
            j = torch.arange(p.numel(), dtype=DTYPE)
            p.copy_((0.3 * (((7 * j + 3 * shift) % 11) - 5.5) / 5.5).view_as(p))  # in (-0.3, 0.3), never 0
    return layer


def golden_inputs(layer, dims, T=3, B=2):
    size = SIZES[dims]
    n = T * B * layer.in_channels * math.prod(size)
    x = (0.05 * torch.arange(n, dtype=DTYPE) - 0.02 * n).sin().view(T, B, layer.in_channels, *size)
    state = random_state(layer, B, size)
    return x, state


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_golden_values_match_the_equations(cell, dims):
    layer = golden_layer(cell, dims)
    x, state = golden_inputs(layer, dims)
    out, final = layer(x, state)
    p = {name: w.tolist() for name, w in layer.weights(0, 0).items()}
    size = SIZES[dims]
    h0, c0 = (state.h, state.c) if is_lstm(layer) else (state, None)
    for b in range(x.shape[1]):
        h = as_planes(h0[0, b], size)
        c = as_planes(c0[0, b], size) if c0 is not None else None
        for t in range(x.shape[0]):
            h, c = scalar_step(cell, p, as_planes(x[t, b], size), h, c, size)
            assert_close(f"out[{t}, {b}]", as_tensor(h, size), out[t, b], TOL)
        final_h = final.h if is_lstm(layer) else final
        assert_close(f"h_T[{b}]", as_tensor(h, size), final_h[0, b], TOL)
        if c is not None:
            assert_close(f"c_T[{b}]", as_tensor(c, size), final.c[0, b], TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_golden_values_without_bias(cell):
    layer = golden_layer(cell, 1, bias=False)
    assert not any(name.startswith("bias") for name, _ in layer.named_parameters())
    x, state = golden_inputs(layer, 1, T=2, B=1)
    out, _ = layer(x, state)
    p = {name: w.tolist() for name, w in layer.weights(0, 0).items()}
    h0 = state.h if is_lstm(layer) else state
    h, c = as_planes(h0[0, 0], SIZES[1]), (as_planes(state.c[0, 0], SIZES[1]) if is_lstm(layer) else None)
    for t in range(2):
        h, c = scalar_step(cell, p, as_planes(x[t, 0], SIZES[1]), h, c, SIZES[1])
    assert_close("out[-1]", as_tensor(h, SIZES[1]), out[-1, 0], TOL)


# Literal numbers of the golden case (dims=2): out[-1, 1, :, 1, 2], pinned so that a change to both
# implementations at once cannot pass unnoticed.
LITERALS = {
    "convlstm": [-0.0276744679127586, -0.009301213243950533],
    "peephole_convlstm": [-0.023887072997492716, -0.010593587767621992],
    "convgru": [0.006537494583423467, 0.1358304855644113],
    "cho_convgru": [-0.03964994157203762, 0.010691437593675808],
}


@pytest.mark.parametrize("cell", CELLS)
def test_golden_literal_numbers(cell):
    layer = golden_layer(cell, 2)
    out, _ = layer(*golden_inputs(layer, 2))
    got = out[-1, 1, :, 1, 2]
    assert_close("out[-1, 1, :, 1, 2]", torch.tensor(LITERALS[cell], dtype=DTYPE), got, 1e-12)


# ---------------------------------------------------------------------------------------------
# 2. gradcheck of the whole layer in the input, the initial state and every parameter
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)], ids=["1layer", "2layers-bidir"])
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck(cell, num_layers, bidirectional):
    # a (3, 1) kernel: every tap still tested, a third of the parameters to perturb
    layer = make_layer(cell, in_channels=1, hidden_channels=2, kernel_size=(3, 1), dims=2, num_layers=num_layers,
                       bidirectional=bidirectional)
    size = (2, 3)
    x = torch.randn(3, 2, 1, *size, dtype=DTYPE, requires_grad=True)
    state = [s.requires_grad_() for s in state_tensors(random_state(layer, 2, size))]
    names = [name for name, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    lengths = torch.tensor([3, 2]) if bidirectional else None
    n_state = len(state)

    def f(x, *rest):
        s = rest[0] if n_state == 1 else LSTMState(*rest[:2])
        out, final = functional_call(layer, dict(zip(names, rest[n_state:])), (x, s, lengths))
        return (out, *state_tensors(final))

    assert torch.autograd.gradcheck(f, (x, *state, *params), fast_mode=num_layers > 1)


# ---------------------------------------------------------------------------------------------
# 3. On 1x1 frames the convolutional cells are the plain ones: the layer equals rnnkit.Recurrent
# ---------------------------------------------------------------------------------------------

PLAIN = {"convlstm": "lstm", "peephole_convlstm": "peephole_lstm", "convgru": "gru", "cho_convgru": "cho_gru"}


@pytest.mark.parametrize("cell", CELLS)
def test_one_pixel_frames_equal_the_plain_cell(cell):
    """A 1x1 frame sees only the kernel's centre tap (the rest falls on the zero padding)."""
    conv = make_layer(cell, in_channels=3, hidden_channels=4, kernel_size=(3, 5), num_layers=2, bidirectional=True)
    plain = rnnkit.Recurrent(PLAIN[cell], 3, 4, num_layers=2, bidirectional=True, backend="reference", dtype=DTYPE)
    with torch.no_grad():
        for name, p in plain.named_parameters():
            w = getattr(conv, name)
            p.copy_(w[..., 1, 2] if name.startswith(("weight_ih", "weight_hh")) else w)
    x = torch.randn(4, 3, 3, dtype=DTYPE)
    lengths = torch.tensor([4, 1, 3])
    xc = x[..., None, None].clone().requires_grad_()
    xp = x.clone().requires_grad_()
    out_c, state_c = conv(xc, lengths=lengths)
    out_p, state_p = plain(xp, lengths=lengths)
    assert_close("out", out_p, out_c[..., 0, 0], TOL)
    for label, e, g in zip(("h", "c"), state_tensors(state_p), state_tensors(state_c)):
        assert_close(f"state.{label}", e, g[..., 0, 0], TOL)
    (out_c.square().sum()).backward()
    (out_p.square().sum()).backward()
    assert_close("dx", xp.grad, xc.grad[..., 0, 0], 1e-10)
    assert_close("dweight_hh_l1_reverse", plain.weight_hh_l1_reverse.grad, conv.weight_hh_l1_reverse.grad[..., 1, 2],
                 1e-10)


# ---------------------------------------------------------------------------------------------
# 4. The layer equals stepping its cell by hand, and layer.step T times
# ---------------------------------------------------------------------------------------------


def run_by_hand(layer, x, state):
    """Layers and directions written out with the cell's step and one conv per frame: (out, finals)."""
    cell, D = layer.cell, layer.num_directions
    finals = []
    inp = x
    for k in range(layer.num_layers):
        outs = []
        for d in range(D):
            w = layer.weights(k, d)
            s = map_rows(state, k * D + d)
            ys = []
            frames = inp.unbind(0) if d == 0 else inp.flip(0).unbind(0)
            for x_t in frames:
                gx = conv_same(x_t, w["weight_ih"], w.get("bias_ih"))
                y, s = cell.step(gx, s, w)
                ys.append(y)
            y = torch.stack(ys)
            outs.append(y if d == 0 else y.flip(0))
            finals.append(s)
        inp = torch.cat(outs, dim=2)
    if is_lstm(layer):
        return inp, LSTMState(torch.stack([f.h for f in finals]), torch.stack([f.c for f in finals]))
    return inp, torch.stack(finals)


def map_rows(state, i):
    return LSTMState(state.h[i], state.c[i]) if isinstance(state, LSTMState) else state[i]


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_layer_equals_manual_stepping(cell, dims):
    layer = make_layer(cell, dims=dims, num_layers=2, bidirectional=True)
    size = SIZES[dims]
    x = torch.randn(4, 2, 2, *size, dtype=DTYPE)
    state = random_state(layer, 2, size)
    out, final = layer(x, state)
    expected_out, expected_final = run_by_hand(layer, x, state)
    assert out.shape == (4, 2, 4, *size)
    assert layer.last_backend == "reference"
    assert_close("out", expected_out, out, TOL)
    assert_state_close("state", expected_final, final)


@pytest.mark.parametrize("cell", CELLS)
def test_step_t_times_equals_forward(cell):
    layer = make_layer(cell, num_layers=2, kernel_size=(1, 3))
    x = torch.randn(5, 3, 2, 3, 4, dtype=DTYPE)
    state = random_state(layer, 3, (3, 4))
    out, final = layer(x, state)
    s = state
    for t in range(5):
        y, s = layer.step(x[t], s)
        assert_close(f"y[{t}]", out[t], y, TOL)
    assert_state_close("state", final, s)
    y, s0 = layer.step(x[0])  # state=None: zeros
    assert_close("y with zero state", layer(x[:1])[0][0], y, TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_batch_first_and_carried_state(cell):
    layer = make_layer(cell, num_layers=2)
    x = torch.randn(6, 2, 2, 3, 4, dtype=DTYPE)
    out, final = layer(x)
    first, mid = layer(x[:2])
    second, final2 = layer(x[2:], tuple(state_tensors(mid)) if is_lstm(layer) else mid)  # a plain (h, c) works
    assert_close("out split in two calls", out, torch.cat([first, second]), TOL)
    assert_state_close("state split in two calls", final, final2)
    bf = rnnkit.ConvRecurrent(cell, 2, 2, 3, num_layers=2, batch_first=True, dtype=DTYPE)
    bf.load_state_dict(layer.state_dict())
    out_bf, final_bf = bf(x.transpose(0, 1))
    assert_close("batch_first out", out.transpose(0, 1), out_bf, TOL)
    assert_state_close("batch_first state", final, final_bf)


# ---------------------------------------------------------------------------------------------
# 5. Lengths: each clip alone, the reverse direction starts at each clip's own end
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_lengths_equal_each_clip_alone(cell):
    """Outputs, final states and gradients (input, initial state, every parameter) of a padded batch
    with lengths equal those of each clip run alone; nothing flows from past a clip's end."""
    layer = make_layer(cell, num_layers=2, bidirectional=True)
    params = list(layer.parameters())
    T, size = 5, (3, 3)
    x = torch.randn(T, 3, 2, *size, dtype=DTYPE, requires_grad=True)
    lengths = torch.tensor([2, 5, 3])
    state = random_state(layer, 3, size)
    state = type(state)(*(s.requires_grad_() for s in state)) if is_lstm(layer) else state.requires_grad_()
    probe = torch.linspace(-1, 1, T * 3 * 4 * 9, dtype=DTYPE).view(T, 3, 4, *size)  # weights every output apart
    out, final = layer(x, state, lengths=lengths)
    loss = (out * probe).sum() + sum((s * s).sum() for s in state_tensors(final))
    dx, *rest = torch.autograd.grad(loss, [x, *state_tensors(state), *params])
    n_state = len(state_tensors(state))
    ds, dparams = rest[:n_state], rest[n_state:]
    dparams_alone = [torch.zeros_like(p) for p in params]
    for b, n in enumerate(lengths.tolist()):
        x_b = x[:n, b : b + 1].detach().requires_grad_()
        s_b = [s[:, b : b + 1].detach().requires_grad_() for s in state_tensors(state)]
        out_b, final_b = layer(x_b, LSTMState(*s_b) if is_lstm(layer) else s_b[0])
        assert_close(f"out[:{n}, {b}]", out_b[:, 0], out[:n, b], TOL)
        assert torch.all(out[n:, b] == 0), f"out[{n}:, {b}] past the clip's end is not zero"
        for label, e, g in zip(("h", "c"), state_tensors(final_b), state_tensors(final)):
            assert_close(f"state.{label}[:, {b}]", e[:, 0], g[:, b], TOL)
        loss_b = (out_b * probe[:n, b : b + 1]).sum() + sum((s * s).sum() for s in state_tensors(final_b))
        dx_b, *rest_b = torch.autograd.grad(loss_b, [x_b, *s_b, *params])
        assert_close(f"dx[:{n}, {b}]", dx_b[:, 0], dx[:n, b], 1e-12)
        assert torch.all(dx[n:, b] == 0), f"dx[{n}:, {b}] past the clip's end is not zero"
        for label, e, g in zip(("h0", "c0"), rest_b[:n_state], ds):
            assert_close(f"d{label}[:, {b}]", e[:, 0], g[:, b], 1e-12)
        for total, g in zip(dparams_alone, rest_b[n_state:]):
            total += g
    for (name, _), e, g in zip(layer.named_parameters(), dparams_alone, dparams):
        assert_close(f"d{name}", e, g, 1e-11)


@pytest.mark.parametrize("cell", CELLS)
def test_reverse_direction_starts_at_each_end(cell):
    """The reverse direction's first step reads each clip's last frame, from the initial state."""
    layer = make_layer(cell, bidirectional=True)
    x = torch.randn(4, 2, 2, 3, 2, dtype=DTYPE)
    lengths = [2, 4]
    out, final = layer(x, lengths=torch.tensor(lengths))
    w = layer.weights(0, 1)
    for b, n in enumerate(lengths):
        s = layer.cell.zero_state((1,), 2, (3, 2), x)
        for t in reversed(range(n)):  # x[n-1], ..., x[0]
            gx = conv_same(x[t, b : b + 1], w["weight_ih"], w["bias_ih"])
            y, s = layer.cell.step(gx, s, w)
            assert_close(f"reverse out[{t}, {b}]", y[0], out[t, b, 2:], TOL)
        final_rev = map_rows(final, 1)
        for label, e, g in zip(("h", "c"), state_tensors(s), state_tensors(final_rev)):
            assert_close(f"reverse state.{label}[{b}]", e[0], g[b], TOL)


def test_reverse_padded_keeps_the_padding_in_place():
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 2, 1, 1)  # (T, B, C, L)
    got = reverse_padded(x, torch.tensor([2, 4]))[:, :, 0, 0]
    assert got.tolist() == [[1.0, 3.0], [0.0, 2.0], [2.0, 1.0], [3.0, 0.0]]


# ---------------------------------------------------------------------------------------------
# 6. Registry, parameters, errors
# ---------------------------------------------------------------------------------------------


def test_registry_is_separate_from_the_plain_cells():
    assert rnnkit.conv_cells() == ["convlstm", "peephole_convlstm", "convgru", "cho_convgru"]
    assert not set(rnnkit.conv_cells()) & set(rnnkit.cells())
    with pytest.raises(ValueError, match="cell must be one of convlstm, peephole_convlstm, convgru, cho_convgru; "
                                         "got 'lstm'"):
        rnnkit.ConvRecurrent("lstm", 2, 2, 3)


@pytest.mark.parametrize("cell,gates", [("convlstm", 4), ("peephole_convlstm", 4), ("convgru", 3), ("cho_convgru", 3)])
def test_parameter_names_and_shapes(cell, gates):
    layer = rnnkit.ConvRecurrent(cell, 3, 5, (3, 1, 5), num_layers=2, bidirectional=True, dims=3)
    shapes = {name: tuple(p.shape) for name, p in layer.named_parameters()}
    for suffix, c_in in (("_l0", 3), ("_l0_reverse", 3), ("_l1", 10), ("_l1_reverse", 10)):
        assert shapes.pop("weight_ih" + suffix) == (gates * 5, c_in, 3, 1, 5)
        assert shapes.pop("weight_hh" + suffix) == (gates * 5, 5, 3, 1, 5)
        assert shapes.pop("bias_ih" + suffix) == (gates * 5,)
        assert shapes.pop("bias_hh" + suffix) == (gates * 5,)
        if cell == "peephole_convlstm":
            assert shapes.pop("weight_peephole" + suffix) == (3, 5)
    assert not shapes, f"unexpected parameters {shapes}"
    bound = 1 / math.sqrt(5 * 15)
    assert all(float(p.detach().abs().max()) <= bound for p in layer.parameters())


def test_frames_of_any_size_with_one_layer():
    layer = rnnkit.ConvRecurrent("peephole_convlstm", 1, 2, 3)
    for size in ((4, 4), (7, 3), (1, 1)):
        out, state = layer(torch.randn(2, 1, 1, *size))
        assert out.shape == (2, 1, 2, *size) and state.c.shape == (1, 1, 2, *size)


ERRORS = [
    ("x 4-D", dict(x=torch.randn(3, 2, 4, 4)), ValueError, r"x must be 5-D \(T, B, C, H, W\) for dims=2, got 4-D"),
    ("x channels", dict(x=torch.randn(3, 2, 5, 4, 4)), ValueError, "x has 5 channels .* in_channels=2"),
    ("x ints", dict(x=torch.zeros(3, 2, 2, 4, 4, dtype=torch.long)), TypeError, "floating-point"),
    ("x dtype", dict(x=torch.randn(3, 2, 2, 4, 4, dtype=torch.float64)), TypeError, "dtype torch.float64"),
    ("lengths too long", dict(lengths=torch.tensor([3, 4])), ValueError, "at most the 3 time steps"),
    ("lengths zero", dict(lengths=torch.tensor([0, 3])), ValueError, "every length must be >= 1"),
    ("lengths count", dict(lengths=torch.tensor([3])), ValueError, "lengths has 1 entries but the batch has 2"),
    ("lengths float", dict(lengths=torch.tensor([3.0, 2.0])), TypeError, "lengths must hold integers"),
    ("lengths 2-D", dict(lengths=torch.tensor([[3, 2]])), ValueError, "lengths must be 1-D"),
    ("state shape", dict(state=(torch.zeros(1, 2, 3, 4, 4), torch.zeros(1, 2, 3, 4, 4))), ValueError,
     r"state.h has shape \(1, 2, 3, 4, 4\), expected .* = \(1, 2, 2, 4, 4\)"),
    ("state frame", dict(state=(torch.zeros(1, 2, 2, 5, 4), torch.zeros(1, 2, 2, 4, 4))), ValueError,
     r"state.h has shape \(1, 2, 2, 5, 4\)"),
    ("state type", dict(state=torch.zeros(1, 2, 2, 4, 4)), TypeError, "LSTMState or an \\(h, c\\) pair"),
]


@pytest.mark.parametrize("kwargs,error,match", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_bad_input_names_the_argument(kwargs, error, match):
    layer = rnnkit.ConvRecurrent("convlstm", 2, 2, 3)
    args = {"x": torch.randn(3, 2, 2, 4, 4), **kwargs}
    with pytest.raises(error, match=match):
        layer(**args)


CONSTRUCTOR_ERRORS = [
    ("even kernel", dict(kernel_size=4), "kernel_size must be odd in every dimension, got 4"),
    ("even kernel tuple", dict(kernel_size=(3, 2)), r"kernel_size must be odd in every dimension, got \(3, 2\)"),
    ("kernel tuple length", dict(kernel_size=(3, 3, 3)), "a tuple of 2 positive ints"),
    ("dims 4", dict(dims=4), "dims must be 1, 2 or 3"),
    ("channels 0", dict(in_channels=0), "in_channels must be a positive int, got 0"),
    ("hidden list", dict(hidden_channels=[4, 8]), r"hidden_channels must be a positive int, got \[4, 8\]"),
    ("dropout", dict(dropout=1.5), r"dropout must be a number in \[0, 1\]"),
]


@pytest.mark.parametrize("kwargs,match", [e[1:] for e in CONSTRUCTOR_ERRORS], ids=[e[0] for e in CONSTRUCTOR_ERRORS])
def test_bad_constructor_arguments(kwargs, match):
    args = {"cell": "convgru", "in_channels": 2, "hidden_channels": 2, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        rnnkit.ConvRecurrent(**args)


def test_step_errors():
    with pytest.raises(ValueError, match="step\\(\\) needs a unidirectional layer"):
        rnnkit.ConvRecurrent("convgru", 2, 2, 3, bidirectional=True).step(torch.randn(1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"x_t must be 3-D \(B, C, L\) for dims=1, got 4-D"):
        rnnkit.ConvRecurrent("convgru", 2, 2, 3, dims=1).step(torch.randn(1, 2, 4, 4))
    with pytest.raises(TypeError, match="state must be a Tensor h for cell 'convgru'"):
        rnnkit.ConvRecurrent("convgru", 2, 2, 3).step(torch.randn(1, 2, 4, 4), (torch.zeros(1, 1, 2, 4, 4),) * 2)


# ---------------------------------------------------------------------------------------------
# 7. It learns: a ConvLSTM fits a moving dot's next frame
# ---------------------------------------------------------------------------------------------


def test_next_frame_loss_falls():
    """A dot moving one pixel right per frame: the next frame is the state's shift, which a 3x3
    recurrent convolution can learn; 60 Adam steps bring the loss under half that of the best
    prediction that ignores the motion (the frequency of lit pixels)."""
    torch.manual_seed(0)
    T, B, W = 6, 8, 8
    start = torch.randint(0, 2, (B,))
    frames = torch.zeros(T + 1, B, 1, 1, W)
    for t in range(T + 1):
        frames[t, torch.arange(B), 0, 0, start + t] = 1.0
    layer = rnnkit.ConvRecurrent("convlstm", 1, 4, 3, dims=2)
    head = torch.nn.Conv2d(4, 1, 1)
    opt = torch.optim.Adam([*layer.parameters(), *head.parameters()], lr=0.03)
    losses = []
    for _ in range(60):
        out, _ = layer(frames[:-1])
        pred = head(out.flatten(0, 1)).view(T, B, 1, 1, W)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(pred, frames[1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    p = frames[1:].mean()
    prior = float(-(p * p.log() + (1 - p) * (1 - p).log()))  # the best loss of a model that ignores motion
    assert losses[-1] < 0.5 * prior, f"loss went {losses[0]:.3f} -> {losses[-1]:.3f}, prior-only {prior:.3f}"


def test_dropout_acts_between_layers_in_training_only():
    layer = make_layer("convgru", num_layers=2, dropout=0.5)
    plain = make_layer("convgru", num_layers=2)  # same seed: same weights
    x = torch.randn(3, 2, 2, 3, 3, dtype=DTYPE)
    layer.eval()
    assert_close("eval out", plain(x)[0], layer(x)[0], TOL)
    layer.train()
    torch.manual_seed(0)
    out_a = layer(x)[0]
    torch.manual_seed(1)
    out_b = layer(x)[0]
    assert (out_a - out_b).abs().max() > 1e-3, "dropout=0.5 in training changed nothing"
    with pytest.warns(UserWarning, match="dropout=0.5 has no effect with num_layers=1"):
        one = make_layer("convgru", num_layers=1, dropout=0.5).train()
    assert_close("1 layer: nothing to drop", make_layer("convgru")(x)[0], one(x)[0], TOL)


def test_state_dtype_is_checked():
    layer = rnnkit.ConvRecurrent("convgru", 2, 2, 3)
    with pytest.raises(TypeError, match="state has dtype torch.float64 but x has torch.float32"):
        layer(torch.randn(2, 1, 2, 3, 3), torch.zeros(1, 1, 2, 3, 3, dtype=DTYPE))
