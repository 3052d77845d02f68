"""Band-limited resampling between integer sample rates (polyphase windowed sinc).

For rates reduced by their gcd to ``orig -> new``, output sample ``j`` is

    y[j] = sum_k x[k] * h(j * orig / new - k),
    h(t) = (f_c / orig) * sinc(f_c t / orig) * w(t),   f_c = rolloff * min(orig, new)

with a Hann window ``w`` over ``width`` zero crossings each side: the same kernel as
torchaudio's ``sinc_interp_hann`` (width 6, rolloff 0.99). The ``new`` phases become the
output channels of one strided ``conv1d``, so the cost grows with ``new * orig``; rates
whose reduced ratio needs more than ``MAX_PHASES`` phases are refused rather than run slowly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOWPASS_WIDTH = 6  # zero crossings of the sinc kept on each side
ROLLOFF = 0.99  # cut-off as a fraction of the lower Nyquist frequency
MAX_PHASES = 2000  # orig + new after the gcd: 44100 -> 16000 is 441 + 160


def resample(wave: Tensor, orig_rate: int, new_rate: int) -> Tensor:
    """``wave`` (N,) or (C, N) at ``orig_rate`` Hz, resampled to ``new_rate`` Hz: (ceil(N new/orig),) or (C, ...)."""
    for name, rate in (("orig_rate", orig_rate), ("new_rate", new_rate)):
        if not isinstance(rate, int) or rate <= 0:
            raise ValueError(f"{name} must be a positive int (Hz), got {rate!r}")
    if orig_rate == new_rate:
        return wave
    g = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // g, new_rate // g
    if orig + new > MAX_PHASES:
        raise ValueError(f"cannot resample {orig_rate} Hz to {new_rate} Hz: the ratio reduces to {orig}/{new}, "
                         f"more than {MAX_PHASES} filter phases; convert the file to a common rate first")
    shape = wave.shape
    x = wave.reshape(-1, 1, shape[-1])  # (C, 1, N)
    cutoff = ROLLOFF * min(orig, new)
    width = math.ceil(LOWPASS_WIDTH * orig / cutoff)
    taps = torch.arange(-width, width + orig, dtype=torch.float64) / orig  # (K,)
    t = (torch.arange(0, -new, -1, dtype=torch.float64)[:, None] / new + taps[None]) * cutoff  # (new, K)
    t = t.clamp(-LOWPASS_WIDTH, LOWPASS_WIDTH)
    window = torch.cos(t * math.pi / LOWPASS_WIDTH / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t.where(t != 0, torch.ones_like(t)))
    kernel = (sinc * window * cutoff / orig).to(wave.dtype)[:, None, :]  # (new, 1, K)
    y = F.conv1d(F.pad(x, (width, width + orig)), kernel, stride=orig)  # (C, new, frames)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)  # (C, frames * new), phases interleaved
    length = math.ceil(new * shape[-1] / orig)
    return y[:, :length].reshape(*shape[:-1], length)
