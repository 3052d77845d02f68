"""SpecAugment-style masking (Park et al. 2019), without time warping.

``freq_masks`` times: a band of ``f ~ U{0..freq_width}`` mel channels from ``f0 ~ U{0..F-f}``
is set to ``value``; ``time_masks`` times: ``t ~ U{0..min(time_width, ratio * T)}`` frames from
``t0 ~ U{0..T-t}``. On normalized features ``value = 0`` is the utterance mean.
"""

from __future__ import annotations

import torch
from torch import Tensor


def spec_augment(features: Tensor, freq_masks: int = 2, freq_width: int = 15, time_masks: int = 2,
                 time_width: int = 20, max_time_ratio: float = 0.2, value: float = 0.0,
                 generator: torch.Generator | None = None) -> Tensor:
    """A masked copy of ``features`` (frames, n_mels)."""
    if features.dim() != 2:
        raise ValueError(f"features must be (frames, n_mels), got shape {tuple(features.shape)}")
    out = features.clone()
    T, F = out.shape

    def draw(high: int) -> int:  # uniform on 0..high
        return int(torch.randint(0, high + 1, (1,), generator=generator))

    for _ in range(freq_masks):
        f = draw(min(freq_width, F))
        f0 = draw(F - f)
        out[:, f0:f0 + f] = value
    limit = min(time_width, int(max_time_ratio * T))
    for _ in range(time_masks):
        t = draw(limit)
        t0 = draw(T - t)
        out[t0:t0 + t, :] = value
    return out
