"""Property tests (hypothesis) over random cells, sizes, lengths and directions, in float64.

- every backend that should run a configuration (``EXPECTED_BACKENDS``, written out here rather than
  read from the backends' ``supports``) runs it, says so in ``last_backend``, and equals ``reference``:
  outputs, final state, and the gradients of the input, the initial state and every parameter;
- a PackedSequence gives what the padded input with ``lengths`` gives, and both equal ``reference``;
- running a sequence in chunks, carrying the state, equals running it whole (and ``step`` T
  times, through the stepper's own code, equals it too).

``derandomize=True``: the examples are a function of the test, so CI sees the same ones every
run. The non-slow tests draw 5 examples per cell for each property; the ``slow`` copies draw 50.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

hypothesis = pytest.importorskip("hypothesis")  # declared in the dev extra
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import rnnkit  # noqa: E402
from rnnkit import NotSupported, Recurrent  # noqa: E402
from rnnkit.cells import LSTMState  # noqa: E402

CELLS = rnnkit.cells()
PROJ_CELLS = ("lstm", "peephole_lstm", "layernorm_lstm", "cifg_lstm")
BACKENDS = ("native", "fused", "scan")
# Which backends must run each cell in these tests (CPU, float64, no cell options, no regularizers): fused
# runs every cell; torch's kernels (native) the four torch has; the log-space scan the two minimal cells.
TORCH_CELLS, MINIMAL_CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru"), ("mingru", "minlstm")
EXPECTED_BACKENDS = {cell: {"fused"} | ({"native"} if cell in TORCH_CELLS else set())
                     | ({"scan"} if cell in MINIMAL_CELLS else set()) for cell in CELLS}
FEW, MANY = 5, 50  # examples per cell


def profile(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def configs(draw, cell: str, bidirectional=None, lengths="maybe"):
    """A layer of ``cell`` and an input: sizes, layers, direction, projection, batch, steps, lengths, seed."""
    hidden = draw(st.integers(1, 5))
    config = {
        "cell": cell,
        "input_size": draw(st.integers(1, 4)),
        "hidden_size": hidden,
        "num_layers": draw(st.integers(1, 2)),
        "bidirectional": draw(st.booleans()) if bidirectional is None else bidirectional,
        "proj_size": draw(st.integers(0, hidden - 1)) if cell in PROJ_CELLS and hidden > 1 else 0,
        "batch_first": draw(st.booleans()),
    }
    T, B = draw(st.integers(1, 7)), draw(st.integers(1, 4))
    some = lengths == "always" or (lengths == "maybe" and draw(st.booleans()))
    lens = draw(st.lists(st.integers(1, T), min_size=B, max_size=B)) if some else None
    return config, T, B, lens, draw(st.integers(0, 2**16))


def build(config: dict, seed: int) -> Recurrent:
    torch.manual_seed(seed)
    layer = Recurrent(**config, dtype=torch.float64)
    with torch.no_grad():  # away from the default init so that every gate matters
        for p in layer.parameters():
            p.uniform_(-0.8, 0.8)
    return layer


def inputs(layer: Recurrent, T: int, B: int, seed: int, initial: bool):
    g = torch.Generator().manual_seed(seed + 1)
    shape = (B, T, layer.input_size) if layer.batch_first else (T, B, layer.input_size)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    if not initial:
        return x, None
    L = layer.num_layers * (2 if layer.bidirectional else 1)
    R = layer.proj_size or layer.hidden_size
    h = torch.randn(L, B, R, generator=g, dtype=torch.float64)
    if isinstance(layer.cell.zero_state((1, 1), layer.hidden_size, layer.proj_size, x), LSTMState):
        return x, LSTMState(h, torch.randn(L, B, layer.hidden_size, generator=g, dtype=torch.float64))
    return x, h


def parts(state) -> list[torch.Tensor]:
    return list(state) if isinstance(state, tuple) else [state]


def run_with_grads(layer: Recurrent, backend: str, x, state, lengths):
    """Outputs, final state and the gradients of a fixed random function of them, under ``backend``."""
    layer.backend = backend
    layer.last_backend = None
    layer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    state = None if state is None else type(state)(*[s.detach().clone().requires_grad_() for s in parts(state)]) \
        if isinstance(state, tuple) else state.detach().clone().requires_grad_()
    out, final = layer(x, state, lengths=lengths)
    assert layer.last_backend == backend, f"asked for {backend}, last_backend says {layer.last_backend}"
    g = torch.Generator().manual_seed(7)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    for s in parts(final):
        loss = loss + (s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum()
    loss.backward()
    grads = {"x": x.grad}
    if state is not None:
        grads.update({f"state{i}": s.grad for i, s in enumerate(parts(state))})
    grads.update({name: p.grad for name, p in layer.named_parameters()})
    return out.detach(), [s.detach() for s in parts(final)], grads


def assert_close(what: str, expected, got) -> None:
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10, msg=lambda m: f"{what}: {m}")


def check_backends_agree(example) -> None:
    config, T, B, lens, seed = example
    layer = build(config, seed)
    x, state = inputs(layer, T, B, seed, initial=seed % 2 == 0)
    lengths = None if lens is None else torch.tensor(lens)
    ref_out, ref_state, ref_grads = run_with_grads(layer, "reference", x, state, lengths)
    ran = set()
    for backend in BACKENDS:
        try:
            out, final, grads = run_with_grads(layer, backend, x, state, lengths)
        except NotSupported as refusal:
            assert backend not in EXPECTED_BACKENDS[config["cell"]], f"{backend} refused {config}: {refusal}"
            continue
        ran.add(backend)
        assert_close(f"{backend} output", ref_out, out)
        for i, (a, b) in enumerate(zip(ref_state, final)):
            assert_close(f"{backend} final state part {i}", a, b)
        for name, grad in ref_grads.items():
            if grad is None:
                assert grads[name] is None or not grads[name].any(), f"{backend}: {name} has a gradient, ref none"
            else:
                assert_close(f"{backend} d{name}", grad, grads[name])
    assert ran == EXPECTED_BACKENDS[config["cell"]], f"{config['cell']}: ran {sorted(ran)}"


def check_packed_equals_padded(example) -> None:
    config, T, B, lens, seed = example
    layer = build(config, seed)
    x, state = inputs(layer, T, B, seed, initial=seed % 2 == 0)
    lengths = torch.tensor(lens)
    padded_out, padded_state = layer(x, state, lengths=lengths)
    assert layer.last_backend in EXPECTED_BACKENDS[config["cell"]], f"auto ran {layer.last_backend}"
    layer.backend = "reference"  # an independent computation: auto's backend returning zeros would fail
    ref_out, ref_state = layer(x, state, lengths=lengths)
    layer.backend = "auto"
    assert_close("padded output against reference", ref_out, padded_out)
    for i, (a, b) in enumerate(zip(parts(ref_state), parts(padded_state))):
        assert_close(f"padded final state part {i} against reference", a, b)
    packed = pack_padded_sequence(x, lengths, batch_first=layer.batch_first, enforce_sorted=False)
    packed_out, packed_state = layer(packed, state)
    out, out_lengths = pad_packed_sequence(packed_out, batch_first=layer.batch_first, total_length=T)
    assert out_lengths.tolist() == lens
    assert_close("packed output", padded_out, out)
    for i, (a, b) in enumerate(zip(parts(padded_state), parts(packed_state))):
        assert_close(f"packed final state part {i}", a, b)


def check_chunks_equal_whole(example, cuts: list[int]) -> None:
    config, T, B, _, seed = example
    layer = build(config, seed).eval()
    x, state = inputs(layer, T, B, seed, initial=seed % 2 == 0)
    whole, whole_state = layer(x, state)
    assert layer.last_backend in EXPECTED_BACKENDS[config["cell"]], f"auto ran {layer.last_backend}"
    dim = 1 if layer.batch_first else 0
    bounds = sorted({c for c in cuts if 0 < c < T})
    outs, carried = [], state
    for chunk in torch.tensor_split(x, bounds, dim=dim):
        out, carried = layer(chunk, carried)
        outs.append(out)
    assert_close("chunked output", whole, torch.cat(outs, dim=dim))
    for i, (a, b) in enumerate(zip(parts(whole_state), parts(carried))):
        assert_close(f"chunked final state part {i}", a, b)
    with torch.no_grad():  # and T single steps
        stepped, carried = [], state
        for x_t in x.unbind(dim):
            y, carried = layer.step(x_t, carried)
            stepped.append(y)
    assert_close("stepped output", whole.detach(), torch.stack(stepped, dim=dim))


def backends_agree(examples: int):
    @pytest.mark.parametrize("cell", CELLS)
    @profile(examples)
    @given(data=st.data())
    def test(cell, data):
        check_backends_agree(data.draw(configs(cell)))

    return test


def packed_equals_padded(examples: int):
    @pytest.mark.parametrize("cell", CELLS)
    @profile(examples)
    @given(data=st.data())
    def test(cell, data):
        check_packed_equals_padded(data.draw(configs(cell, lengths="always")))

    return test


def chunks_equal_whole(examples: int):
    @pytest.mark.parametrize("cell", CELLS)
    @profile(examples)
    @given(data=st.data(), cuts=st.lists(st.integers(0, 7), max_size=4))
    def test(cell, data, cuts):
        check_chunks_equal_whole(data.draw(configs(cell, bidirectional=False, lengths="never")), cuts)

    return test


test_every_backend_equals_reference = backends_agree(FEW)
test_packed_equals_padded = packed_equals_padded(FEW)
test_chunks_with_state_carried_equal_the_whole = chunks_equal_whole(FEW)
test_every_backend_equals_reference_many = pytest.mark.slow(backends_agree(MANY))
test_packed_equals_padded_many = pytest.mark.slow(packed_equals_padded(MANY))
test_chunks_with_state_carried_equal_the_whole_many = pytest.mark.slow(chunks_equal_whole(MANY))
