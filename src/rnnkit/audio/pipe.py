"""Reading 16-bit PCM from a pipe as it arrives: the source of ``rnnkit asr transcribe --stream -``.

A live source (``sox -d -t raw -r 16000 -e signed -b 16 -c 1 -``, ``arecord -f S16_LE``, a FIFO, ``cat clip.raw``)
writes signed 16-bit little-endian mono samples. A WAV header in front (``RIFF....WAVE``, PCM) is read and
checked (16-bit, one channel) and gives the sample rate; without one the caller says the rate. The samples
come out as float32 in [-1, 1), ``sample / 32768``, as soundfile reads a 16-bit file, in chunks of
``chunk_samples`` as soon as each chunk is complete, so a source that never ends is read forever; at the end
of the stream the last, shorter chunk follows.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

from .read import AudioError

SAMPLE_BYTES = 2  # signed 16-bit
WAV_PCM, WAV_EXTENSIBLE = 1, 0xFFFE  # format tags of the "fmt " chunk
COMPRESSED = {b"fLaC": "FLAC", b"OggS": "Ogg"}  # first bytes of files that are not raw PCM


class PCMReader:
    """16-bit mono PCM from ``stream`` (a binary file object: ``sys.stdin.buffer``, an open FIFO or file).

    ``rate`` is the sample rate: the WAV header's if there is one (``input_rate``, when given, must agree with
    it), else ``input_rate``, else ``default_rate``. ``chunks(chunk_samples)`` yields (N,) float32 tensors.
    """

    def __init__(self, stream: BinaryIO, input_rate: int | None, default_rate: int, name: str = "the stream") -> None:
        self.stream, self.name = stream, name
        self.head = self._read(4)  # 4 bytes of samples, or the start of a header
        header_rate = self._read_wav_header() if self.head == b"RIFF" else None
        if self.head[:4] in COMPRESSED:
            raise AudioError(f"{name} is {COMPRESSED[self.head[:4]]}, --stream reads 16-bit PCM (raw or WAV): decode "
                             "it first, e.g. sox FILE -t raw -r 16000 -e signed -b 16 -c 1 -")
        if header_rate is not None and input_rate is not None and header_rate != input_rate:
            raise AudioError(f"{name}: the WAV header says {header_rate} Hz, --input-rate says {input_rate} Hz")
        rate = next(r for r in (header_rate, input_rate, default_rate) if r is not None)
        if rate <= 0:
            raise AudioError(f"{name}: the sample rate must be a positive number of Hz, got {rate}")
        self.rate = rate
        self.samples_read = 0

    def _read(self, n: int) -> bytes:
        """Up to ``n`` bytes: fewer only at the end of the stream (a pipe's read may return less)."""
        data = b""
        while len(data) < n:
            more = self.stream.read(n - len(data))
            if not more:
                break
            data += more
        return data

    def _read_wav_header(self) -> int:
        """Reads the header up to the samples; returns its rate. Raises on anything but 16-bit mono PCM."""
        riff = self._read(8)
        if len(riff) < 8 or riff[4:] != b"WAVE":
            raise AudioError(f"{self.name} starts with RIFF but is not a WAV file")
        rate = None
        while True:
            chunk = self._read(8)
            if len(chunk) < 8:
                raise AudioError(f"{self.name}: the WAV header ends before its data chunk")
            kind, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if kind == b"data":  # a live writer may not know the size (0 or 0xFFFFFFFF): read to the end
                break
            body = self._read(size + size % 2)  # chunks are padded to an even size
            if kind == b"fmt ":
                tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
                if tag not in (WAV_PCM, WAV_EXTENSIBLE) or channels != 1 or bits != 8 * SAMPLE_BYTES:
                    raise AudioError(f"{self.name}: the WAV header says {channels} channel(s) of {bits}-bit samples "
                                     f"(format {tag}); --stream reads 16-bit mono PCM: convert it, e.g. sox IN "
                                     "-b 16 -c 1 -e signed OUT.wav")
        if rate is None:
            raise AudioError(f"{self.name}: the WAV header has no fmt chunk before its data")
        self.head = b""
        return rate

    def chunks(self, chunk_samples: int) -> Iterator[Tensor]:
        """(N,) float32 chunks of ``chunk_samples`` samples as they arrive, the last one shorter."""
        if chunk_samples < 1:
            raise ValueError(f"chunk_samples must be >= 1, got {chunk_samples}")
        want = chunk_samples * SAMPLE_BYTES
        while True:
            data = self.head + self._read(want - len(self.head))
            self.head = b""
            if len(data) % SAMPLE_BYTES:
                raise AudioError(f"{self.name} ended mid-sample: {self.samples_read * SAMPLE_BYTES + len(data)} "
                                 f"bytes of audio, not a whole number of {SAMPLE_BYTES}-byte samples")
            if data:
                samples = torch.from_numpy(np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0)
                self.samples_read += len(samples)
                yield samples
            if len(data) < want:
                return
