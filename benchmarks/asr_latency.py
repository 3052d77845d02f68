"""Live transcription latency: FSDD test clips written into a pipe in real time, read by ``asr transcribe --stream``.

Run as ``.venv/bin/python benchmarks/asr_latency.py --checkpoint RUN [--lm LM_RUN] [--clips 20]`` with RUN a
streaming recognizer (``rnnkit asr train --streaming``) trained on FSDD; a few minutes with ``--clips 20``
(each chunk size and decoder streams the clips once, in real time).

A writer thread writes ``--clips`` clips of the FSDD official test split (seeded order), each followed by 300 ms
of silence, as raw 16-bit PCM at the clips' 8 kHz into an ``os.pipe``, one chunk of ``--chunk-ms`` every
``--chunk-ms`` milliseconds on the clock (``time.sleep`` to the chunk's due time), so the audio arrives as a
microphone's would; the resampler to the model's rate runs. The main thread reads the pipe as the CLI does
(``PCMReader``, ``TrainedASR.live``, one torch thread) and timestamps every update on arrival. Per chunk size
and decoder (greedy; beam with the run's word list and, with ``--lm``, the character LM):

  cpu/audio s  CPU seconds of the reading thread (``time.thread_time``: features, steps, decoding) per second
               of audio streamed; target at most 0.2 on 2 cores
  median lag   over the clips, from the moment the clip's last sample was spoken to the first update, after
               the clip began, whose text (every final text so far plus the current one) holds the clip's
               word once more than the text did when the clip began; target at most 300 ms with 100 ms
               chunks. A clip whose word does not appear so by the end of the next clip is a miss (its lag
               is not counted; "missed" says how many). A lag below 0: the word was complete before the
               clip's last (quiet) samples
  p90 lag      the 90th percentile of the same (nearest rank)

Chunks cost latency by themselves: the reader gets nothing of a chunk until all of it is recorded, so the
lag includes up to one chunk of waiting, as a user's would. Measure on a quiet machine (load average below
1): the load is printed beside every row.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import torch

from rnnkit.audio import PCMReader
from rnnkit.tasks import asr

GAP_S = 0.3  # silence after every clip
DEFAULT_FSDD = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "fsdd"


def test_clips(fsdd: Path, n: int, seed: int) -> list[tuple[str, np.ndarray, int]]:
    """(word, int16 samples, rate) of ``n`` clips of FSDD's official test split (index 0-4), seeded order."""
    soundfile = __import__("soundfile")
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    paths = sorted(p for p in (fsdd / "recordings").glob("*.flac") if int(p.stem.split("_")[2]) < 5)
    if not paths:
        raise SystemExit(f"{fsdd}/recordings: no FSDD test clips (give --fsdd DIR)")
    random.Random(seed).shuffle(paths)
    clips = []
    for path in paths[:n]:
        samples, rate = soundfile.read(path, dtype="int16")
        clips.append((words[int(path.stem.split("_")[0])], samples, rate))
    return clips


def write_in_real_time(fd: int, clips, chunk_ms: float, spans: list[tuple[float, float]]) -> None:
    """Writes every clip and its silence into ``fd``, each chunk of ``chunk_ms`` when its last sample has been
    "recorded" on the clock; ``spans`` gets the monotonic times at which each clip's first and last sample
    were spoken."""
    rate = clips[0][2]
    chunk = round(rate * chunk_ms / 1000)
    audio, boundaries = [], []
    for _, samples, _ in clips:
        audio += [samples, np.zeros(round(GAP_S * rate), np.int16)]
        boundaries.append(sum(len(a) for a in audio) - round(GAP_S * rate))
    pcm = np.concatenate(audio).astype("<i2")
    start = time.monotonic()
    spans += [(start + (b - len(c[1])) / rate, start + b / rate) for b, c in zip(boundaries, clips)]
    with os.fdopen(fd, "wb", buffering=0) as pipe:
        for written in range(0, len(pcm), chunk):
            time.sleep(max(0.0, start + (written + chunk) / rate - time.monotonic()))
            pipe.write(pcm[written:written + chunk].tobytes())


def measure(trained: asr.TrainedASR, clips, chunk_ms: float, decoder: asr.Decoder, silence_ms: float) -> dict:
    read_fd, write_fd = os.pipe()
    spans: list[tuple[float, float]] = []
    writer = threading.Thread(target=write_in_real_time, args=(write_fd, clips, chunk_ms, spans))  # fills spans
    seen: list[tuple[float, str]] = []  # (arrival time, every final text so far + the current one)
    finals = ""
    with os.fdopen(read_fd, "rb") as source:
        writer.start()
        reader = PCMReader(source, None, clips[0][2], "the pipe")
        cpu = time.thread_time()
        chunks = reader.chunks(round(reader.rate * chunk_ms / 1000))
        for update in trained.live(chunks, reader.rate, decoder, silence_ms):
            seen.append((time.monotonic(), finals + update.text))
            if update.final:
                finals += update.text + "|"
        cpu = time.thread_time() - cpu
        audio_s = reader.samples_read / reader.rate
    writer.join()
    lags, missed = [], 0
    for i, (word, _, _) in enumerate(clips):
        start, end = spans[i]
        until = spans[i + 1][1] if i + 1 < len(clips) else math.inf  # by the end of the next clip at the latest
        before = ([text for t, text in seen if t <= start] or [""])[-1].count(word)  # as the clip begins
        arrival = next((t for t, text in seen if start < t <= until and text.count(word) > before), None)
        if arrival is None:
            missed += 1
        else:
            lags.append(arrival - end)
    lags.sort()
    return {"cpu_per_audio_s": cpu / audio_s, "median_lag_ms": 1000 * statistics.median(lags) if lags else None,
            "p90_lag_ms": 1000 * lags[math.ceil(0.9 * len(lags)) - 1] if lags else None, "missed": missed,
            "clips": len(clips), "audio_s": audio_s, "text": finals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a streaming recognizer's run (asr train --streaming)")
    parser.add_argument("--lm", help="a character LM's run for the beam row (rnnkit lm train on transcripts.txt)")
    parser.add_argument("--words", help="word list for the beam row (default: the run's transcripts.txt)")
    parser.add_argument("--fsdd", type=Path, default=DEFAULT_FSDD, help="the FSDD folder (recordings/*.flac)")
    parser.add_argument("--clips", type=int, default=20, help="test clips per row")
    parser.add_argument("--chunk-ms", type=float, nargs="+", default=[50.0, 100.0, 250.0])
    parser.add_argument("--silence-ms", type=float, default=800.0, help="as transcribe --stream's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show-text", action="store_true", help="after the table, the words spoken and each row's "
                                                                  "final texts (one per utterance, | between)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as `transcribe --stream`
    trained = asr.TrainedASR.load(args.checkpoint)
    run = Path(args.checkpoint)
    found = [d / "transcripts.txt" for d in (run, run.parent) if (d / "transcripts.txt").is_file()]  # a run or best/
    words = args.words or str(found[0] if found else run / "transcripts.txt")
    decoders = {"greedy": trained.decoder("greedy"),
                "beam + words" + (" + LM" if args.lm else ""): trained.decoder("beam", lm=args.lm, words=words)}
    clips = test_clips(args.fsdd, args.clips, args.seed)
    print(f"{len(clips)} FSDD test clips + {GAP_S * 1000:.0f} ms silence each, real time, --silence-ms "
          f"{args.silence_ms:g}; {args.checkpoint}")
    print("| chunk ms | decoder | cpu / audio s | median lag ms | p90 lag ms | missed | load before, after |")
    print("|---:|---|---:|---:|---:|---:|---|")
    heard = []
    for chunk_ms in args.chunk_ms:
        for name, decoder in decoders.items():
            before = os.getloadavg()[0]
            r = measure(trained, clips, chunk_ms, decoder, args.silence_ms)
            heard.append(f"{chunk_ms:g} ms, {name}: {r['text']}")
            lag = "-" if r["median_lag_ms"] is None else f"{r['median_lag_ms']:.0f}"
            p90 = "-" if r["p90_lag_ms"] is None else f"{r['p90_lag_ms']:.0f}"
            print(f"| {chunk_ms:g} | {name} | {r['cpu_per_audio_s']:.3f} | {lag} | {p90} | {r['missed']}/{r['clips']}"
                  f" | {before:.1f}, {os.getloadavg()[0]:.1f} |", flush=True)
    if args.show_text:
        print("\nspoken: " + " ".join(word for word, _, _ in clips))
        print("\n".join(heard))


if __name__ == "__main__":
    main()
