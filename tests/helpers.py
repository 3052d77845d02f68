"""Shared test helpers: comparisons that say which tensor differs and by how much."""

from __future__ import annotations

import torch
from torch import Tensor


def assert_close(name: str, expected: Tensor, got: Tensor, tol: float) -> None:
    """Assert ``got`` equals ``expected`` within an absolute tolerance, naming the tensor if not."""
    assert got is not None, f"{name}: got None (no gradient?)"
    assert expected is not None, f"{name}: expected is None"
    assert tuple(got.shape) == tuple(expected.shape), (
        f"{name}: shape {tuple(got.shape)} != expected {tuple(expected.shape)}"
    )
    diff = (got.detach().double() - expected.detach().double()).abs()
    worst = float(diff.max()) if diff.numel() else 0.0
    assert worst <= tol, f"{name}: max abs difference {worst:.3e} > {tol:.0e}"


def state_tensors(state) -> list[Tensor]:
    """The tensors of a state: [h] or [h, c]."""
    return [state] if isinstance(state, Tensor) else list(state)


def named_grads(module: torch.nn.Module) -> dict[str, Tensor]:
    return {name: p.grad for name, p in module.named_parameters()}


class OpSpy:
    """Stands in for an op namespace (``torch.ops.rnnkit_fused``) and records the name of each op called, and in
    ``arguments`` and ``results`` what it was given and returned."""

    def __init__(self, ops):
        self.ops, self.calls, self.arguments, self.results = ops, [], [], []

    def __getattr__(self, name):
        op = getattr(self.ops, name)

        def call(*args):
            self.calls.append(name)
            self.arguments.append(args)
            self.results.append(op(*args))
            return self.results[-1]

        return call
