"""Training augmentation: SpecAugment masks on features, and perturbations of the waveform.

SpecAugment-style masking (Park et al. 2019), without time warping: ``freq_masks`` times: a band of
``f ~ U{0..freq_width}`` mel channels from ``f0 ~ U{0..F-f}`` is set to ``value``; ``time_masks`` times:
``t ~ U{0..min(time_width, ratio * T)}`` frames from
``t0 ~ U{0..T-t}``. On normalized features ``value = 0`` is the utterance mean.

``WaveAugment``: audio as users have it. Per utterance, each drawn from a seeded generator, in the order
the sound meets them: speed perturbation (the speaker; Ko et al. 2015: the samples played at ``speed``
times their rate, so pitch and tempo change together), white or pink background noise at an SNR in
``snr_db`` (the room), band-limiting (the channel: resampled down to a lower rate and back, which removes
everything above half that rate: 8 kHz is the telephone band of 4 kHz), and a gain (the level). The noise
comes before the band-limit, as on a telephone line, so a band-limited utterance has nothing above its
band, noise included: white noise added after it would fill the empty bands, which telephone audio never
has.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .resample import resample


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


def band_limit(wave: Tensor, sample_rate: int, band_rate: int) -> Tensor:
    """``wave`` (N,) resampled to ``band_rate`` and back to ``sample_rate``: only what lies below ``band_rate / 2``
    is left (8000: the 4 kHz telephone band)."""
    return resample(resample(wave, sample_rate, band_rate), band_rate, sample_rate)[: len(wave)]


@dataclass(frozen=True)
class WaveAugment:
    """Random perturbations of a training waveform (see the module docstring); every field is a setting."""

    speeds: Sequence[float] = (0.9, 1.0, 1.1)  # one drawn per utterance (Ko et al. 2015's three)
    band_rates: Sequence[int] = (6000, 8000, 11025)  # band-limit to half of one of these (only those below the rate)
    band_probability: float = 0.5  # share of utterances band-limited
    gain_db: float = 10.0  # gain drawn uniformly from [-gain_db, gain_db] dB
    noise_probability: float = 0.5  # share of utterances with noise added
    snr_db: tuple[float, float] = (10.0, 40.0)  # the noise's SNR range

    def __call__(self, wave: Tensor, sample_rate: int, generator: torch.Generator) -> Tensor:
        """``wave`` (N,) at ``sample_rate`` -> a perturbed copy at the same rate (its length changes with the
        speed)."""
        from ..data.synth_speech import add_random_noise

        def uniform() -> float:
            return float(torch.rand((), generator=generator))

        speed = self.speeds[int(torch.randint(len(self.speeds), (), generator=generator))]
        if speed != 1.0:  # played faster: as if recorded at speed * rate
            wave = resample(wave, round(sample_rate * speed), sample_rate)
        if uniform() < self.noise_probability:
            wave = add_random_noise(wave, generator, self.snr_db)
        rates = [r for r in self.band_rates if r < sample_rate]
        if uniform() < self.band_probability and rates:
            rate = rates[int(torch.randint(len(rates), (), generator=generator))]
            wave = band_limit(wave, sample_rate, rate)
        return wave * math.pow(10.0, (2 * uniform() - 1) * self.gain_db / 20)
