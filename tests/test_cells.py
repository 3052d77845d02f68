"""The cells torch lacks, checked from the equations up (design sections 3 and 7).

- golden values: constant-pattern weights and an ``arange`` input through the layer, against
  an independent scalar implementation written here from the docstrings' equations (``math``
  and lists only) and against literal numbers;
- ``torch.autograd.gradcheck`` of the whole layer (reference backend) in every input;
- the layer equals stepping its cell by hand and equals ``layer.step`` T times;
- lengths: packed == padded == each sequence alone, the reverse direction starts at each
  sequence's own end, and gradients with lengths equal those of each sequence alone;
- the registry, parameter names and shapes (design section 3's table) and init rules.

Everything is float64; sizes are T=3, B=2, I=3, H=2 unless a test says otherwise.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit import LSTMState

from .helpers import assert_close, state_tensors

DTYPE = torch.float64
T, B, I, H = 3, 2, 3, 2
TOL = 1e-12

LSTM_FAMILY = ("peephole_lstm", "layernorm_lstm", "cifg_lstm")

# (id, cell, cell options, proj_size): every cell torch lacks, both IndRNN activations and
# IndRNN's bound on |u|.
CELL_CASES = [
    ("peephole_lstm", "peephole_lstm", {}, 0),
    ("layernorm_lstm", "layernorm_lstm", {}, 0),
    ("cifg_lstm", "cifg_lstm", {}, 0),
    ("cho_gru", "cho_gru", {}, 0),
    ("mingru", "mingru", {}, 0),
    ("minlstm", "minlstm", {}, 0),
    ("indrnn-relu", "indrnn", {}, 0),
    ("indrnn-tanh", "indrnn", {"nonlinearity": "tanh"}, 0),
    ("indrnn-relu-max0.5", "indrnn", {"recurrent_max": 0.5}, 0),
]
PROJ_CASES = [(f"{cell}-proj1", cell, {}, 1) for cell in LSTM_FAMILY]
ALL_CASES = CELL_CASES + PROJ_CASES


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: one intra-op thread is faster, and it keeps the run time steady on a
    busy machine, where torch's OpenMP kernels (layer_norm above all) can wait milliseconds per call."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cases(case_list):
    return [pytest.param(*case[1:], id=case[0]) for case in case_list]


def make_layer(cell, options, proj_size=0, num_layers=1, bidirectional=False, seed=0, input_size=I, hidden_size=H):
    """A float64 reference-backend layer with its init perturbed, so no parameter sits at a
    special value (LN gains 1, IndRNN biases 0) and every term of every equation matters."""
    torch.manual_seed(seed)
    layer = rnnkit.Recurrent(
        cell,
        input_size,
        hidden_size,
        num_layers=num_layers,
        bidirectional=bidirectional,
        proj_size=proj_size,
        backend="reference",
        dtype=DTYPE,
        **options,
    )
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return layer


def random_state(layer, batch, seed=1):
    """A random initial state of the layer's shapes, (L*D, B, R) or LSTMState(h, c)."""
    gen = torch.Generator().manual_seed(seed)
    rows = layer.num_layers * layer.num_directions
    sizes = layer.cell.state_sizes(layer.hidden_size, layer.proj_size)
    parts = [0.5 * torch.randn(rows, batch, size, generator=gen, dtype=DTYPE) for size in sizes]
    return parts[0] if len(parts) == 1 else LSTMState(*parts)


def assert_state_close(name, expected, got, tol):
    exp_parts, got_parts = state_tensors(expected), state_tensors(got)
    assert len(exp_parts) == len(got_parts), f"{name}: {len(got_parts)} state tensors, expected {len(exp_parts)}"
    labels = ["h", "c"] if len(exp_parts) == 2 else ["h"]
    for label, e, g in zip(labels, exp_parts, got_parts):
        assert_close(f"{name}.{label}", e, g, tol)


# ---------------------------------------------------------------------------------------------
# 1. Golden values from an independent scalar implementation of the docstrings' equations
# ---------------------------------------------------------------------------------------------


def sigmoid(a):
    return 1.0 / (1.0 + math.exp(-a))


def matvec(w, v):
    return [sum(w_jk * v_k for w_jk, v_k in zip(row, v)) for row in w]


def add(*vectors):
    return [sum(parts) for parts in zip(*vectors)]


def mul(a, b):
    return [x * y for x, y in zip(a, b)]


def split(v, n):
    size = len(v) // n
    return [v[k * size : (k + 1) * size] for k in range(n)]


def layer_norm(v, gain, bias, eps=1e-5):
    """LN over the whole vector, biased variance, as Ba et al. 2016 and torch.nn.LayerNorm."""
    mean = sum(v) / len(v)
    var = sum((a - mean) ** 2 for a in v) / len(v)
    return [(a - mean) / math.sqrt(var + eps) * g_j + b_j for a, g_j, b_j in zip(v, gain, bias)]


def g_min(a):
    """minGRU/minLSTM candidate activation: a + 1/2 for a >= 0, sigma(a) below."""
    return a + 0.5 if a >= 0 else sigmoid(a)


def scalar_step(cell, options, p, x, h, c):
    """One step of one sequence; returns (output, h, c) with c None outside the LSTM family."""
    if cell in LSTM_FAMILY:
        if cell == "layernorm_lstm":
            a = add(
                layer_norm(matvec(p["weight_ih"], x), p["ln_ih_weight"], p["ln_ih_bias"]),
                layer_norm(matvec(p["weight_hh"], h), p["ln_hh_weight"], p["ln_hh_bias"]),
                p["bias_ih"],
                p["bias_hh"],
            )
            a_i, a_f, a_g, a_o = split(a, 4)
            c_new = [sigmoid(f) * c_j + sigmoid(i) * math.tanh(g) for i, f, g, c_j in zip(a_i, a_f, a_g, c)]
            c_norm = layer_norm(c_new, p["ln_c_weight"], p["ln_c_bias"])
            h_new = [sigmoid(o) * math.tanh(cn) for o, cn in zip(a_o, c_norm)]
        else:
            a = add(matvec(p["weight_ih"], x), p["bias_ih"], matvec(p["weight_hh"], h), p["bias_hh"])
            if cell == "peephole_lstm":
                a_i, a_f, a_g, a_o = split(a, 4)
                w_ci, w_cf, w_co = p["weight_peephole"]
                i = [sigmoid(a + w * c_j) for a, w, c_j in zip(a_i, w_ci, c)]
                f = [sigmoid(a + w * c_j) for a, w, c_j in zip(a_f, w_cf, c)]
                c_new = add(mul(f, c), mul(i, [math.tanh(g) for g in a_g]))
                o = [sigmoid(a + w * cn) for a, w, cn in zip(a_o, w_co, c_new)]
            else:  # cifg_lstm: i = 1 - f
                a_f, a_g, a_o = split(a, 3)
                f = [sigmoid(a) for a in a_f]
                c_new = [f_j * c_j + (1 - f_j) * math.tanh(g) for f_j, c_j, g in zip(f, c, a_g)]
                o = [sigmoid(a) for a in a_o]
            h_new = [o_j * math.tanh(cn) for o_j, cn in zip(o, c_new)]
        if "weight_hr" in p:
            h_new = matvec(p["weight_hr"], h_new)
        return h_new, h_new, c_new
    if cell == "cho_gru":
        x_r, x_z, x_n = split(add(matvec(p["weight_ih"], x), p["bias_ih"]), 3)
        w_r, w_z, w_n = split(p["weight_hh"], 3)
        b_r, b_z, b_n = split(p["bias_hh"], 3)
        r = [sigmoid(a) for a in add(x_r, matvec(w_r, h), b_r)]
        z = [sigmoid(a) for a in add(x_z, matvec(w_z, h), b_z)]
        n = [math.tanh(a) for a in add(x_n, matvec(w_n, mul(r, h)), b_n)]
        h_new = [(1 - z_j) * n_j + z_j * h_j for z_j, n_j, h_j in zip(z, n, h)]
    elif cell == "mingru":
        a_z, a_h = split(add(matvec(p["weight_ih"], x), p["bias_ih"]), 2)
        h_new = [(1 - sigmoid(az)) * h_j + sigmoid(az) * g_min(ah) for az, ah, h_j in zip(a_z, a_h, h)]
    elif cell == "minlstm":
        a_f, a_i, a_h = split(add(matvec(p["weight_ih"], x), p["bias_ih"]), 3)
        h_new = []
        for af, ai, ah, h_j in zip(a_f, a_i, a_h, h):
            f, i = sigmoid(af), sigmoid(ai)
            h_new.append(f / (f + i) * h_j + i / (f + i) * g_min(ah))
    elif cell == "indrnn":
        bound = options.get("recurrent_max")
        u = [min(max(u_j, -bound), bound) if bound else u_j for u_j in p["weight_hh"]]
        a = add(matvec(p["weight_ih"], x), p["bias_ih"], mul(u, h), p["bias_hh"])
        act = math.tanh if options.get("nonlinearity") == "tanh" else (lambda v: max(v, 0.0))
        h_new = [act(v) for v in a]
    else:
        raise AssertionError(f"no scalar implementation of {cell}")
    return h_new, h_new, None


def pattern(n, scale, shift):
    """n values in (-scale, scale), signs mixed, never zero: a fixed, readable pseudo-pattern."""
    return [scale * (((7 * j + shift) % 11) - 5.5) / 5.5 for j in range(n)]


def matrix(rows, cols, scale, shift):
    flat = pattern(rows * cols, scale, shift)
    return [flat[r * cols : (r + 1) * cols] for r in range(rows)]


GATES = {"peephole_lstm": 4, "layernorm_lstm": 4, "cifg_lstm": 3, "cho_gru": 3, "mingru": 2, "minlstm": 3, "indrnn": 1}


def golden_params(cell, proj_size):
    """Every parameter of one layer and direction, as lists, under the names of design section 3."""
    G, R = GATES[cell], proj_size or H
    p = {"weight_ih": matrix(G * H, I, 0.3, 0), "bias_ih": pattern(G * H, 0.2, 5)}
    if cell == "indrnn":
        # 0.8 exceeds recurrent_max=0.5 (clamped there), -0.3 does not
        p.update(weight_hh=[0.8, -0.3], bias_ih=[0.05, 0.03], bias_hh=[0.03, 0.01])
    elif cell not in ("mingru", "minlstm"):
        p.update(weight_hh=matrix(G * H, R, 0.4, 3), bias_hh=pattern(G * H, 0.1, 8))
    if proj_size:
        p["weight_hr"] = matrix(R, H, 0.6, 6)
    if cell == "peephole_lstm":
        p["weight_peephole"] = matrix(3, H, 0.5, 2)
    if cell == "layernorm_lstm":
        p.update(
            ln_ih_weight=[0.9, 1.1] * (2 * H),
            ln_ih_bias=pattern(4 * H, 0.05, 1),
            ln_hh_weight=[1.1, 0.9] * (2 * H),
            ln_hh_bias=pattern(4 * H, 0.05, 4),
            ln_c_weight=[0.9, 1.1] * (H // 2),
            ln_c_bias=[0.05, -0.05] * (H // 2),
        )
    if cell == "indrnn":
        # rows of mixed sign, so the rising arange input drives relu units both ways
        p["weight_ih"] = [[0.3, -0.2, 0.1], [-0.4, 0.1, 0.2]]
    return p


def golden_inputs(cell, proj_size):
    """The arange input and a non-zero initial state, as lists: x[t][b], h0[b], c0[b]."""
    x = [[[0.1 * (t * B * I + b * I + k) for k in range(I)] for b in range(B)] for t in range(T)]
    R = proj_size or H
    h0 = [pattern(R, 0.3, 2 + b) for b in range(B)]
    c0 = [pattern(H, 0.5, 7 + b) for b in range(B)] if cell in LSTM_FAMILY else None
    return x, h0, c0


def scalar_run(cell, options, p, x, h0, c0):
    """outputs[t][b] and the final h[b], c[b] of one layer, one direction."""
    outputs = [[None] * B for _ in range(T)]
    h_fin, c_fin = [], []
    for b in range(B):
        h, c = h0[b], (c0[b] if c0 is not None else None)
        for t in range(T):
            y, h, c = scalar_step(cell, options, p, x[t][b], h, c)
            outputs[t][b] = y
        h_fin.append(h)
        c_fin.append(c)
    return outputs, h_fin, (c_fin if c0 is not None else None)


# out[0] of the scalar implementation above, printed once and pasted (12 significant digits):
# a change to both the scalar code and the library would still be caught here.
GOLDEN_FIRST_OUTPUT = {
    "peephole_lstm": [[-0.0322023897065, -0.0426599516242], [-0.00293019676389, -0.0123302441378]],
    "layernorm_lstm": [[0.296269446703, -0.654369413122], [0.281732722272, -0.499791638413]],
    "cifg_lstm": [[0.00731670821807, -0.0506241781316], [0.0220731508903, -0.0546235574536]],
    "cho_gru": [[-0.210430428356, 0.159905363278], [-0.162573061799, 0.188542151461]],
    "mingru": [[0.167289423763, 0.316319366362], [0.165757458407, 0.339310948938]],
    "minlstm": [[0.140223242532, 0.386218730743], [0.18085655494, 0.412634200066]],
    "indrnn-relu": [[0.0, 0.0327272727273], [0.0309090909091, 0.0]],
    "indrnn-tanh": [[-0.0725993190397, 0.0327155932833], [0.0308992514436, -0.0136355184701]],
    "indrnn-relu-max0.5": [[0.0, 0.0327272727273], [0.0718181818182, 0.0]],
    "peephole_lstm-proj1": [[0.00821347919226], [-0.000546849497572]],
    "layernorm_lstm-proj1": [[0.10289857196], [0.0910625937367]],
    "cifg_lstm-proj1": [[0.0263493977397], [0.0292798665292]],
}


def check_layer_against_scalar(cell, options, proj_size, p, bias=True):
    """The layer with the golden parameters p and inputs equals the scalar run; returns that run."""
    x, h0, c0 = golden_inputs(cell, proj_size)
    layer = rnnkit.Recurrent(cell, I, H, proj_size=proj_size, bias=bias, backend="reference", dtype=DTYPE, **options)
    w = layer.weights(0, 0)
    if not bias:  # the equations without biases: the same run with every bias zero
        p = {name: value for name, value in p.items() if name not in ("bias_ih", "bias_hh")}
    assert sorted(w) == sorted(p), f"layer parameters {sorted(w)}, the equations use {sorted(p)}"
    with torch.no_grad():
        for name, value in p.items():
            w[name].copy_(torch.tensor(value, dtype=DTYPE))
    full = golden_params(cell, proj_size)
    zeros = {name: [0.0] * len(full[name]) for name in ("bias_ih", "bias_hh") if name in full}
    out, h_fin, c_fin = scalar_run(cell, options, {**zeros, **p}, x, h0, c0)

    h0_t = torch.tensor([h0], dtype=DTYPE)  # (1, B, R)
    state = h0_t if c0 is None else LSTMState(h0_t, torch.tensor([c0], dtype=DTYPE))
    with torch.no_grad():
        got_out, got_state = layer(torch.tensor(x, dtype=DTYPE), state)
    assert_close("out", torch.tensor(out, dtype=DTYPE), got_out, TOL)
    expected_state = torch.tensor([h_fin], dtype=DTYPE)
    if c_fin is not None:
        expected_state = LSTMState(expected_state, torch.tensor([c_fin], dtype=DTYPE))
    assert_state_close("state", expected_state, got_state, TOL)
    return out


@pytest.mark.parametrize("case_id,cell,options,proj_size", [pytest.param(*c, id=c[0]) for c in ALL_CASES])
def test_golden_values(case_id, cell, options, proj_size):
    out = check_layer_against_scalar(cell, options, proj_size, golden_params(cell, proj_size))
    literal = torch.tensor(GOLDEN_FIRST_OUTPUT[case_id], dtype=DTYPE)
    assert_close("scalar out[0] vs literal", literal, torch.tensor(out[0], dtype=DTYPE), 1e-11)


@pytest.mark.parametrize("cell,options,proj_size", cases(CELL_CASES))
def test_golden_values_without_bias(cell, options, proj_size):
    check_layer_against_scalar(cell, options, proj_size, golden_params(cell, proj_size), bias=False)


def test_golden_values_exercise_every_branch():
    """The golden inputs reach both sides of relu and of minGRU/minLSTM's g, and IndRNN's clamp bites."""
    for cell, options in (("indrnn", {}), ("indrnn", {"recurrent_max": 0.5})):
        p = golden_params(cell, 0)
        x, h0, _ = golden_inputs(cell, 0)
        out, _, _ = scalar_run(cell, options, p, x, h0, None)
        values = [v for step in out for row in step for v in row]
        assert any(v == 0.0 for v in values) and any(v > 0.0 for v in values), values
    assert max(abs(u) for u in golden_params("indrnn", 0)["weight_hh"]) > 0.5
    for cell in ("mingru", "minlstm"):
        p = golden_params(cell, 0)
        x, _, _ = golden_inputs(cell, 0)
        G = GATES[cell]
        candidates = [
            a
            for t in range(T)
            for b in range(B)
            for a in split(add(matvec(p["weight_ih"], x[t][b]), p["bias_ih"]), G)[-1]
        ]
        assert any(a >= 0 for a in candidates) and any(a < 0 for a in candidates), (cell, candidates)


# ---------------------------------------------------------------------------------------------
# 2. gradcheck of the whole layer in the input, the initial state and every parameter
# ---------------------------------------------------------------------------------------------

GRADCHECK_CONFIGS = [
    pytest.param(*case[1:], layers, bidir, id=f"{case[0]}-{tag}")
    for case in ALL_CASES
    for layers, bidir, tag in ((1, False, "1layer"), (2, True, "2layer-bidir"))
]


@pytest.mark.parametrize("cell,options,proj_size,num_layers,bidirectional", GRADCHECK_CONFIGS)
def test_gradcheck(cell, options, proj_size, num_layers, bidirectional):
    layer = make_layer(cell, options, proj_size, num_layers, bidirectional)
    names = [name for name, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(T, B, I, dtype=DTYPE, generator=torch.Generator().manual_seed(2)).requires_grad_()
    state = [s.requires_grad_() for s in state_tensors(random_state(layer, B))]
    n_state = len(state)

    def f(x, *rest):
        s = rest[:n_state]
        s = s[0] if n_state == 1 else LSTMState(*s)
        out, final = functional_call(layer, dict(zip(names, rest[n_state:])), (x, s))
        return (out, *state_tensors(final))

    # every entry of the Jacobian for one layer; a random projection of it (fast mode) for the
    # larger stacks, which keeps the file fast and still fails on any wrong gradient path
    assert torch.autograd.gradcheck(f, (x, *state, *params), fast_mode=num_layers > 1)


# ---------------------------------------------------------------------------------------------
# 3. the layer == stepping the cell by hand == layer.step T times
# ---------------------------------------------------------------------------------------------

STEP_CONFIGS = [
    pytest.param(*case[1:], layers, id=f"{case[0]}-{layers}layer") for case in ALL_CASES for layers in (1, 2)
]


@pytest.mark.parametrize("cell,options,proj_size,num_layers", STEP_CONFIGS)
def test_layer_equals_manual_stepping(cell, options, proj_size, num_layers):
    layer = make_layer(cell, options, proj_size, num_layers)
    x = torch.randn(T + 2, B, I, dtype=DTYPE, generator=torch.Generator().manual_seed(3))
    s0 = random_state(layer, B)
    with torch.no_grad():
        out, final = layer(x, s0)
        assert layer.last_backend == "reference"

        # (a) the cell by hand, layer by layer, with the layer's own weights
        y, finals = x, []
        for k in range(num_layers):
            w = layer.weights(k, 0)
            gx = layer.cell.input_projection(y, w)  # (T, B, G*H)
            s = s0[k] if isinstance(s0, torch.Tensor) else LSTMState(s0.h[k], s0.c[k])
            ys = []
            for gx_t in gx.unbind(0):
                h, s = layer.cell.step(gx_t, s, w)
                ys.append(h)
            y = torch.stack(ys)
            finals.append(s)
        manual_final = (
            torch.stack(finals)
            if isinstance(finals[0], torch.Tensor)
            else LSTMState(torch.stack([s.h for s in finals]), torch.stack([s.c for s in finals]))
        )
        assert_close("out vs cell by hand", y, out, TOL)
        assert_state_close("state vs cell by hand", manual_final, final, TOL)

        # (b) layer.step T times, from the same initial state and from None (zeros)
        for start, (expected_out, expected_final) in ((s0, (out, final)), (None, layer(x))):
            s, ys = start, []
            for x_t in x.unbind(0):
                y_t, s = layer.step(x_t, s)
                ys.append(y_t)
            label = "given state" if start is not None else "zero state"
            assert_close(f"out vs layer.step ({label})", expected_out, torch.stack(ys), TOL)
            assert_state_close(f"state vs layer.step ({label})", expected_final, s, TOL)


# ---------------------------------------------------------------------------------------------
# 4-6. lengths: packed == padded == each sequence alone; reverse starts at each end; gradients
# ---------------------------------------------------------------------------------------------

LENGTHS = [5, 2, 4, 1]  # unsorted, one full, one of length 1


def select_batch(state, b):
    """State columns b:b+1 of every layer and direction."""
    if isinstance(state, torch.Tensor):
        return state[:, b : b + 1]
    return LSTMState(state.h[:, b : b + 1], state.c[:, b : b + 1])


def run_alone(layer, x, s0, lengths):
    """Each sequence through the layer by itself, with no lengths: [(out (L, 1, D*R), state)]."""
    return [layer(x[:n, b : b + 1], select_batch(s0, b)) for b, n in enumerate(lengths)]


@pytest.mark.parametrize("cell,options,proj_size", cases(ALL_CASES))
def test_lengths_equal_each_sequence_alone(cell, options, proj_size):
    layer = make_layer(cell, options, proj_size, num_layers=2, bidirectional=True)
    Tmax, Bn = max(LENGTHS), len(LENGTHS)
    x = torch.randn(Tmax, Bn, I, dtype=DTYPE, generator=torch.Generator().manual_seed(4))
    s0 = random_state(layer, Bn)
    lengths = torch.tensor(LENGTHS)
    with torch.no_grad():
        out, final = layer(x, s0, lengths=lengths)
        packed_in = pack_padded_sequence(x, lengths, enforce_sorted=False)
        packed_out, packed_final = layer(packed_in, s0)
        alone = run_alone(layer, x, s0, LENGTHS)

    assert isinstance(packed_out, PackedSequence)
    assert torch.equal(packed_out.batch_sizes, packed_in.batch_sizes)
    assert torch.equal(packed_out.sorted_indices, packed_in.sorted_indices)
    assert torch.equal(packed_out.unsorted_indices, packed_in.unsorted_indices)
    unpacked, unpacked_lengths = pad_packed_sequence(packed_out)
    assert unpacked_lengths.tolist() == LENGTHS

    for b, (n, (out_b, final_b)) in enumerate(zip(LENGTHS, alone)):
        assert_close(f"out[:{n}, {b}] vs alone", out_b[:, 0], out[:n, b], TOL)
        assert_close(f"packed out[:{n}, {b}] vs alone", out_b[:, 0], unpacked[:n, b], TOL)
        assert_state_close(f"state[:, {b}] vs alone", final_b, select_batch(final, b), TOL)
        assert_state_close(f"packed state[:, {b}] vs alone", final_b, select_batch(packed_final, b), TOL)
        assert torch.all(out[n:, b] == 0), f"out[{n}:, {b}] past the end is not exactly zero"


@pytest.mark.parametrize("cell,options,proj_size", cases(ALL_CASES))
def test_reverse_direction_starts_at_each_end(cell, options, proj_size):
    layer = make_layer(cell, options, proj_size, num_layers=1, bidirectional=True)
    R = proj_size or H
    Tmax, Bn = max(LENGTHS), len(LENGTHS)
    x = torch.randn(Tmax, Bn, I, dtype=DTYPE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out, final = layer(x, lengths=torch.tensor(LENGTHS))
        w = layer.weights(0, 1)
        for b, n in enumerate(LENGTHS):
            gx = layer.cell.input_projection(x[n - 1, b : b + 1].unsqueeze(0), w)[0]  # (1, G*H)
            zero = layer.cell.zero_state((1,), H, proj_size, x)
            h, _ = layer.cell.step(gx, zero, w)
            assert_close(f"reverse out[{n - 1}, {b}] vs one step from zeros", h[0], out[n - 1, b, R:], TOL)
            final_h = state_tensors(final)[0]
            assert_close(f"reverse final h[{b}] vs reverse out[0, {b}]", out[0, b, R:], final_h[1, b], TOL)
            assert_close(f"forward final h[{b}] vs forward out[{n - 1}, {b}]", out[n - 1, b, :R], final_h[0, b], TOL)


@pytest.mark.parametrize("cell,options,proj_size", cases(ALL_CASES))
def test_gradients_with_lengths_equal_each_sequence_alone(cell, options, proj_size):
    layer = make_layer(cell, options, proj_size, num_layers=2, bidirectional=True)
    Tmax, Bn = max(LENGTHS), len(LENGTHS)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(Tmax, Bn, I, dtype=DTYPE, generator=gen, requires_grad=True)
    s0 = [s.requires_grad_() for s in state_tensors(random_state(layer, Bn))]
    s0_state = s0[0] if len(s0) == 1 else LSTMState(*s0)
    out, final = layer(x, s0_state, lengths=torch.tensor(LENGTHS))
    # random weights on every output and final-state entry, so each gradient path counts
    out_w = torch.randn(out.shape, dtype=DTYPE, generator=gen)
    state_w = [torch.randn(s.shape, dtype=DTYPE, generator=gen) for s in state_tensors(final)]

    def loss(out, final, cols):
        total = (out * out_w[: out.shape[0], cols]).sum()
        return total + sum((s * w[:, cols]).sum() for s, w in zip(state_tensors(final), state_w))

    inputs = [x, *s0, *layer.parameters()]
    got = torch.autograd.grad(loss(out, final, slice(None)), inputs)

    expected = [torch.zeros_like(t) for t in inputs]
    for b, (out_b, final_b) in enumerate(run_alone(layer, x, s0_state, LENGTHS)):
        for acc, g in zip(expected, torch.autograd.grad(loss(out_b, final_b, slice(b, b + 1)), inputs)):
            acc += g

    labels = [
        "d input",
        *[f"d initial {n}" for n in ("h", "c")[: len(s0)]],
        *[f"d {name}" for name, _ in layer.named_parameters()],
    ]
    for label, e, g in zip(labels, expected, got):
        assert_close(label, e, g, 1e-10)
    for b, n in enumerate(LENGTHS):
        assert torch.all(got[0][n:, b] == 0), f"d input[{n}:, {b}] past the end is not exactly zero"


# ---------------------------------------------------------------------------------------------
# 7. the registry, parameter names and shapes, init rules
# ---------------------------------------------------------------------------------------------


def test_registry_lists_the_eleven_cells_in_design_order():
    assert rnnkit.cells() == [
        "rnn_tanh",
        "rnn_relu",
        "lstm",
        "peephole_lstm",
        "layernorm_lstm",
        "cifg_lstm",
        "gru",
        "cho_gru",
        "mingru",
        "minlstm",
        "indrnn",
    ]


def table_shapes(cell, inp, hid, proj):
    """One layer's parameters as design section 3's table has them (names without the suffix)."""
    R = proj or hid
    if cell in ("mingru", "minlstm"):
        G = 2 if cell == "mingru" else 3
        return {"weight_ih": (G * hid, inp), "bias_ih": (G * hid,)}
    if cell == "indrnn":
        return {"weight_ih": (hid, inp), "weight_hh": (hid,), "bias_ih": (hid,), "bias_hh": (hid,)}
    G = 3 if cell in ("cifg_lstm", "cho_gru", "gru") else 4
    shapes = {"weight_ih": (G * hid, inp), "weight_hh": (G * hid, R), "bias_ih": (G * hid,), "bias_hh": (G * hid,)}
    if proj:
        shapes["weight_hr"] = (R, hid)
    if cell == "peephole_lstm":
        shapes["weight_peephole"] = (3, hid)
    if cell == "layernorm_lstm":
        for part in ("ih", "hh"):
            shapes[f"ln_{part}_weight"] = shapes[f"ln_{part}_bias"] = (4 * hid,)
        shapes["ln_c_weight"] = shapes["ln_c_bias"] = (hid,)
    return shapes


SHAPE_CASES = [
    pytest.param(cell, 0, id=cell)
    for cell in ("peephole_lstm", "layernorm_lstm", "cifg_lstm", "cho_gru", "mingru", "minlstm", "indrnn")
]
SHAPE_CASES += [pytest.param(cell, 2, id=f"{cell}-proj2") for cell in LSTM_FAMILY]


@pytest.mark.parametrize("cell,proj_size", SHAPE_CASES)
def test_parameter_names_and_shapes_follow_the_table(cell, proj_size):
    inp, hid = 3, 4
    layer = rnnkit.Recurrent(cell, inp, hid, num_layers=2, bidirectional=True, proj_size=proj_size, dtype=DTYPE)
    expected = {}
    for k in range(2):
        layer_input = inp if k == 0 else 2 * (proj_size or hid)
        for suffix in (f"_l{k}", f"_l{k}_reverse"):
            for name, shape in table_shapes(cell, layer_input, hid, proj_size).items():
                expected[name + suffix] = shape
    got = {name: tuple(p.shape) for name, p in layer.named_parameters()}
    assert got == expected
    # torch's own parameters come in torch's order, so state_dicts line up with nn.LSTM/nn.GRU
    torch_order = ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"]
    names_l0 = [n[: -len("_l0")] for n, _ in layer.named_parameters() if n.endswith("_l0")]
    assert [n for n in names_l0 if n in torch_order] == [n for n in torch_order if n in names_l0]
    assert all(p.dtype == DTYPE for p in layer.parameters())


INIT_CASES = [
    pytest.param(cell, {}, id=cell)
    for cell in ("peephole_lstm", "layernorm_lstm", "cifg_lstm", "cho_gru", "mingru", "minlstm", "indrnn")
]
INIT_CASES += [
    pytest.param("indrnn", {"recurrent_max": 0.3}, id="indrnn-max0.3"),
    pytest.param("indrnn", {"nonlinearity": "tanh"}, id="indrnn-tanh"),
]


@pytest.mark.parametrize("cell,options", INIT_CASES)
def test_init_rules(cell, options):
    inp, hid = 16, 64  # 1/sqrt(I) = 0.25 and 1/sqrt(H) = 0.125 tell the two rules apart
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cell, inp, hid, num_layers=2, bidirectional=True, dtype=DTYPE, **options)
    for k in range(2):
        layer_input = inp if k == 0 else 2 * hid
        for d in range(2):
            for name, p in layer.weights(k, d).items():
                where = f"{name} (layer {k}, direction {d})"
                if cell == "indrnn" and name == "weight_hh":
                    top = options.get("recurrent_max", 1.0)
                    assert 0 <= p.min() and p.max() < top, f"{where}: u outside [0, {top})"
                    assert p.max() > 0.8 * top, f"{where}: u does not fill [0, {top})"
                elif cell == "indrnn" and name.startswith("bias"):
                    assert torch.all(p == 0), f"{where}: IndRNN biases start at 0"
                elif name.startswith("ln_"):
                    fill = 1.0 if name.endswith("_weight") else 0.0
                    assert torch.all(p == fill), f"{where}: LN gains start at 1, LN biases at 0"
                else:
                    bound = 1 / math.sqrt(layer_input if cell in ("mingru", "minlstm") else hid)
                    assert p.abs().max() <= bound, f"{where}: beyond U(-{bound:.4f}, {bound:.4f})"
                    assert p.abs().max() > 0.8 * bound, f"{where}: does not fill U(-{bound:.4f}, {bound:.4f})"
                    assert p.min() < 0 < p.max(), f"{where}: not symmetric around 0"


@pytest.mark.parametrize("backend", ["reference", "fused", "scan"])
def test_minlstm_survives_gates_that_underflow(backend):
    """f / (f + i) with both sigmoids underflowing is 0/0; the cell computes it as sigmoid(log f - log i)."""
    layer = rnnkit.Recurrent("minlstm", 1, 1, bias=False, backend=backend)
    with torch.no_grad():
        layer.weight_ih_l0.fill_(200.0)  # a_f = a_i = -200 below: both gates underflow in float32
    x = torch.full((3, 1, 1), -1.0, requires_grad=True)
    out, _ = layer(x, torch.ones(1, 1, 1))
    out.sum().backward()
    # f' = i' = 1/2 and g(-200) ~ 0: h halves every step
    assert torch.allclose(out.flatten(), torch.tensor([0.5, 0.25, 0.125]))
    assert torch.isfinite(x.grad).all() and torch.isfinite(layer.weight_ih_l0.grad).all()
