"""Audio in, features out: the speech front end of ``rnnkit asr``.

- ``read``:      WAV / FLAC / OGG files through soundfile, to mono float32, resampled on request
- ``resample``:  band-limited (windowed-sinc) resampling between integer rates, whole or streamed
- ``pipe``:      16-bit PCM (raw or WAV) read from a pipe in chunks as it arrives
- ``features``:  log-mel spectrograms from ``torch.stft`` and a mel filterbank of rnnkit's own
- ``augment``:   SpecAugment-style time and frequency masks, and waveform perturbations, for training
- ``join``:      utterances joined by pauses into training examples that sound like a live stream

soundfile is imported only when a file is read, so ``import rnnkit`` never needs it.
"""

from .augment import WaveAugment, band_limit, spec_augment
from .features import LogMel, StreamingLogMel, mel_filterbank, normalize
from .pipe import PCMReader
from .read import AudioError, read_audio
from .resample import StreamingResampler, resample

__all__ = ["AudioError", "LogMel", "PCMReader", "StreamingLogMel", "StreamingResampler", "mel_filterbank", "normalize",
           "read_audio", "resample", "spec_augment", "WaveAugment", "band_limit"]
