"""Stateful sampling: temperature, top-k and top-p (nucleus) over a model's next-token logits."""

from __future__ import annotations

import torch
from torch import Tensor


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """Clear errors for sampling settings a user typed."""
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0: always the most likely token), got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0: no limit), got {top_k!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1: no limit), got {top_p!r}")


def sample(logits: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           generator: torch.Generator | None = None) -> Tensor:
    """One token id per row of ``logits`` (B, V) -> (B,).

    temperature 0 takes the argmax; otherwise softmax(logits / temperature) restricted to the
    ``top_k`` most likely tokens (0: all) and to the smallest set whose probability reaches
    ``top_p`` (Holtzman et al. 2020; 1: all), renormalized.
    """
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens before it already reach top_p (the first one always stays)
        drop = probs.cumsum(-1) - probs >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
