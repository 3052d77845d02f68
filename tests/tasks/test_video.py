"""The video task: the per-frame CNN and the three models (shapes, lengths, order blindness), training
on tiny clips until the loss falls, the moving-digits run end to end, users' folders (.npy, image
frames) through train / evaluate --json / predict, and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.cli import main
from rnnkit.tasks.video import (
    MODEL_NAMES,
    FrameEncoder,
    FreshClipStream,
    TrainedVideo,
    VideoConfig,
    build_model,
    load_folder,
    read_clip,
    train,
)
from rnnkit.train.trainer import TrainConfig

# tiny models: 16x16 frames, a 4x4 feature map
TINY = dict(channels=16, features=32, hidden_size=32, hidden_channels=8, frame_size=16, batch_size=16)
EVAL_KEYS = {"task", "split", "model", "n", "accuracy", "macro_f1", "majority_accuracy", "chance_accuracy",
             "per_class_accuracy", "labels", "confusion"}


def square_clip(rng: np.random.Generator, label: str, frames: int = 6, size: int = 16) -> np.ndarray:
    """A 3x3 bright square moving 2 px a frame left or right, in the top or the bottom half; uint8 (T, H, W)."""
    direction, half = label.split("-")
    clip = (rng.random((frames, size, size)) * 40).astype(np.uint8)  # dim noise
    row = int(rng.integers(1, 4)) + (0 if half == "top" else 9)
    step = 2 if direction == "right" else -2
    col = int(rng.integers(0, 3)) if step > 0 else int(rng.integers(10, 13))
    for t in range(frames):
        clip[t, row : row + 3, col + step * t : col + step * t + 3] = 255
    return clip


LABELS = ["left-top", "right-top", "left-bottom", "right-bottom"]


def write_folder(folder: Path, n: int = 64, seed: int = 0, labels=LABELS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = ["clip,label"]
    for i in range(n):
        label = labels[i % len(labels)]
        np.save(folder / f"c{i}.npy", square_clip(rng, label, frames=6 + i % 3))  # lengths 6-8
        rows.append(f"c{i}.npy,{label}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def losses(out: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


# ---------------------------------------------------------------------- models


def test_frame_encoder_shapes_and_bad_frames():
    encoder = FrameEncoder(in_channels=1, channels=32, out_features=128)
    x = torch.rand(5, 1, 32, 32)
    assert encoder(x).shape == (5, 128)
    assert encoder.stem(x).shape == (5, 32, 8, 8)
    assert FrameEncoder(3, 8, 10, frame_size=16)(torch.rand(2, 3, 16, 16)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"frames must be \(N, 1, 32, 32\), got \(5, 1, 16, 16\)"):
        encoder(torch.rand(5, 1, 16, 16))
    with pytest.raises(ValueError, match="frame_size must be divisible by 8"):
        FrameEncoder(frame_size=20)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_padding_past_a_clips_length_changes_nothing(name):
    torch.manual_seed(0)
    model = build_model(VideoConfig(model=name, **TINY), in_channels=1, num_labels=4).eval()
    clip = torch.rand(5, 1, 1, 16, 16)  # (T, B=1, C, S, S)
    padded = torch.cat([clip, torch.zeros(3, 1, 1, 16, 16)])  # 3 zero frames past the end
    alone = model(clip, torch.tensor([5]))
    batch = model(torch.cat([padded, torch.rand(8, 1, 1, 16, 16)], dim=1), torch.tensor([5, 8]))
    assert alone.shape == (1, 4) and batch.shape == (2, 4)
    torch.testing.assert_close(batch[:1], alone, atol=1e-5, rtol=1e-5)


def test_mean_frame_is_blind_to_order_and_the_recurrent_models_are_not():
    torch.manual_seed(0)
    x, lengths = torch.rand(6, 3, 1, 16, 16), torch.full((3,), 6)
    for name in MODEL_NAMES:
        model = build_model(VideoConfig(model=name, **TINY), 1, 4).eval()
        same = torch.allclose(model(x, lengths), model(x.flip(0), lengths), atol=1e-6)
        assert same == (name == "mean-frame"), name


# ---------------------------------------------------------------------- training


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_training_on_a_folder_lowers_the_loss(name, tmp_path):
    folder = write_folder(tmp_path / "clips")
    out = tmp_path / "run"
    result = train(VideoConfig(model=name, data=str(folder), dev_fraction=0.25, **TINY),
                   TrainConfig(steps=40, lr=1e-2, warmup_steps=5, eval_every=40, log_every=5, checkpoint_every=40),
                   out, progress=False)
    curve = losses(out)
    assert np.mean(curve[-2:]) < 0.85 * np.mean(curve[:2]), curve
    assert result["test"]["split"] == "dev" and result["test"]["n"] == 16
    assert json.loads((out / "test.json").read_text())["model"] == name


def test_moving_digits_run_end_to_end_and_the_stream_resumes(tmp_path):
    config = VideoConfig(channels=4, features=8, hidden_size=8, batch_size=4, clip_length=8, dev_clips=8,
                         test_clips=12)
    result = train(config, TrainConfig(steps=3, warmup_steps=1, eval_every=3, checkpoint_every=3), tmp_path / "run",
                   progress=False)
    assert result["test"]["split"] == "test" and result["test"]["n"] == 12
    assert result["test"]["labels"] == ["left", "right", "up", "down"]
    evaluated = TrainedVideo.load(tmp_path / "run").evaluate()
    assert evaluated["accuracy"] == result["test"]["accuracy"] and evaluated["n"] == 12

    stream = FreshClipStream(4, seed=0, length=8, device=torch.device("cpu"))
    first = [stream.next() for _ in range(3)]
    meta, tensors = stream.state()
    after = stream.next()
    resumed = FreshClipStream(4, seed=0, length=8, device=torch.device("cpu"))
    resumed.load_state(meta, tensors)
    torch.testing.assert_close(resumed.next().x, after.x, rtol=0, atol=0)
    assert not torch.equal(first[0].x, first[1].x)


def test_cli_train_evaluate_json_and_predict_on_a_folder(tmp_path, capsys):
    folder = write_folder(tmp_path / "clips")
    test_folder = write_folder(tmp_path / "test", n=12, seed=1)
    out = tmp_path / "run"
    flags = ["--channels", "8", "--features", "16", "--hidden-size", "16", "--frame-size", "16"]
    assert main(["video", "train", "--data", str(folder), "--steps", "4", "--out", str(out), "--no-progress",
                 *flags]) == 0
    capsys.readouterr()
    assert main(["video", "evaluate", "--checkpoint", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == EVAL_KEYS and result["task"] == "video" and result["split"] == "dev"
    assert result["chance_accuracy"] == 0.25 and sum(map(sum, result["confusion"])) == result["n"]
    assert main(["video", "evaluate", "--checkpoint", str(out), "--data", str(test_folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 12
    assert main(["video", "predict", "--checkpoint", str(out), str(test_folder / "c0.npy"),
                 str(test_folder / "c1.npy")]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert len(lines) == 2 and all(line.split("\t")[0] in LABELS for line in lines)


# ---------------------------------------------------------------------- users' clips


def test_npy_layouts_and_image_frame_folders_read_alike(tmp_path):
    image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    grey = (rng.random((4, 8, 16)) * 255).astype(np.uint8)  # (T, H, W)
    np.save(tmp_path / "grey.npy", grey)
    np.save(tmp_path / "rgb.npy", np.stack([grey] * 3, axis=-1).astype(np.float32) / 255)  # (T, H, W, C)
    frames = tmp_path / "frames"
    frames.mkdir()
    for t in range(4):  # frame10 > frame9 in natural order: names that sort wrongly as text
        image.fromarray(grey[t]).save(frames / f"frame{t + 8}.png")
    a, b, c = read_clip(tmp_path / "grey.npy"), read_clip(tmp_path / "rgb.npy"), read_clip(frames)
    assert a.shape == c.shape == (4, 1, 8, 16) and b.shape == (4, 3, 8, 16)
    torch.testing.assert_close(a, c, rtol=0, atol=0)
    torch.testing.assert_close(b[:, 1:2], a)


def test_a_folder_is_resized_to_the_frame_size(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((3, 24, 24), np.uint8) * 255)
    (tmp_path / "labels.csv").write_text("clip,label\na.npy,x\n")
    clips = load_folder(tmp_path, None, frame_size=16)
    assert clips.clips[0].shape == (3, 1, 16, 16) and clips.labels == ["x"]
    torch.testing.assert_close(clips.clips[0], torch.ones(3, 1, 16, 16))


@pytest.mark.parametrize("case,error,message", [
    ("sizes", ValueError, r"clips of different frame sizes: b.npy has 16x8 frames, a.npy has 16x16"),
    ("missing", FileNotFoundError, r"labels.csv line 3 names clip 'nope.npy', which is not in"),
    ("empty", ValueError, r"is empty: expected clips"),
    ("columns", ValueError, r"must have the columns clip and label, found \['name', 'label'\]"),
    ("shape", ValueError, r"a clip must be \(T, H, W\) or \(T, H, W, C\), got an array of shape \(16, 16\)"),
    ("no labels", FileNotFoundError, r"no labels file .*labels.csv: give --labels FILE"),
])
def test_bad_folders_raise_clear_errors(tmp_path, case, error, message):
    if case != "empty":
        np.save(tmp_path / "a.npy", np.zeros((3, 16, 16), np.uint8))
        np.save(tmp_path / "b.npy", np.zeros((3, 8 if case == "sizes" else 16, 16), np.uint8))
    if case == "shape":
        np.save(tmp_path / "b.npy", np.zeros((16, 16), np.uint8))
    rows = {"missing": "clip,label\na.npy,x\nnope.npy,y\n", "columns": "name,label\na.npy,x\n"}
    if case != "no labels":
        (tmp_path / "labels.csv").write_text(rows.get(case, "clip,label\na.npy,x\nb.npy,y\n"))
    with pytest.raises(error, match=message):
        load_folder(tmp_path, None, frame_size=16)


def test_evaluation_refuses_labels_never_seen_in_training(tmp_path):
    folder = write_folder(tmp_path / "clips", n=8, labels=["left-top", "right-top"])
    out = tmp_path / "run"
    train(VideoConfig(model="mean-frame", data=str(folder), **TINY), TrainConfig(steps=1, warmup_steps=0),
          out, progress=False)
    other = write_folder(tmp_path / "other", n=4, labels=["left-top", "down-top"])
    with pytest.raises(ValueError, match=r"never seen in training: 'down-top' \(first at clip c1.npy\)"):
        TrainedVideo.load(out).evaluate(str(other))
    with pytest.raises(ValueError, match="the model was trained on 1"):
        TrainedVideo.load(out).predict([torch.rand(4, 3, 16, 16)])


def test_video_files_need_the_video_extra(tmp_path):
    try:
        import av  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("PyAV is installed: the message for its absence cannot show")
    (tmp_path / "clip.mp4").write_bytes(b"not really a video")
    with pytest.raises(ImportError, match=r"pip install 'rnnkit\[video\]'"):
        read_clip(tmp_path / "clip.mp4")


def test_video_files_are_decoded_with_pyav(tmp_path):
    av = pytest.importorskip("av")
    frames = np.zeros((5, 32, 32, 3), np.uint8)
    for t in range(5):
        frames[t, 8:16, 4 * t : 4 * t + 8] = 255
    with av.open(str(tmp_path / "clip.avi"), "w") as container:
        stream = container.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuvj420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    clip = read_clip(tmp_path / "clip.avi")
    assert clip.shape == (5, 3, 32, 32)
    assert (clip - torch.from_numpy(frames).permute(0, 3, 1, 2) / 255).abs().mean() < 0.01  # JPEG is lossy


@pytest.mark.slow
def test_convlstm_learns_the_direction_of_moving_digits_and_mean_frame_cannot(tmp_path):
    """The defaults of `rnnkit video train --model convlstm|mean-frame` (docs/results.md), on 400 test clips."""
    from rnnkit.tasks.video import VIDEO_TRAIN_DEFAULTS

    accuracy = {}
    for name in ("convlstm", "mean-frame"):
        result = train(VideoConfig(model=name, test_clips=400),
                       TrainConfig(**VIDEO_TRAIN_DEFAULTS), tmp_path / name, progress=False)
        accuracy[name] = result["test"]["accuracy"]
    assert accuracy["convlstm"] >= 0.95 and accuracy["mean-frame"] <= 0.6, accuracy
