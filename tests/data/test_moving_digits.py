"""Moving digits (rnnkit.data.moving_digits): golden clips, determinism, the time-reversal property."""

import hashlib

import pytest
import torch

from rnnkit.data import moving_digits as md

pytest.importorskip("sklearn", reason="the glyphs come from scikit-learn's digits.csv.gz (rnnkit[tasks])")

# A change in the generator (glyphs, upsampling, the draws, their order, the rendering) changes these:
# regenerate them only on purpose, and say so in the CHANGELOG.
GOLDEN = {
    "direction 4 seed 0 train": "7895fb474fe2156268c3b8009a96aaf0d40f1d3db8f02f23d8999db71b7bc7b2",
    "direction 4 seed 7 test": "6fba99e105ba3930cc6389235410820952cdb6949b93707bcb71ffb6ae210930",
    "caption 3 seed 0 train": "e504580ee71520f7cc208c20a84528595ecb8a28f77a43689e4bd62b15666ec4",
    "caption 3 seed 5 test distractors 1": "e3b12c6efdcd7cfdc209f077554bcd50145d0d627b27d323b0651b86d9e665aa",
    "bouncing 4 seed 0 train": "e5eacf63750b3b4dc00f8200ab87e0f8444923c166b6e01b2b73e0b794674bd9",
    "bouncing 2 seed 3 test length 12 digits 3": "1916ee5a568eb645ed875675fd83a0b5ebc808f7e8581e4e302a1cf8242663f8",
    "glyphs train": "0bcef66477d506b39145ba3bc652c4b36f93faa265f9ae451e1c5e9a9bac0adc",
    "glyphs test": "2e942103b25c7638b60dcf3262141e148dc8c3c2c52683c6e8aae111c704c193",
}
BRIGHT = 0.75  # above every distractor pixel (intensity 0.5), reached by part of every target glyph


def glyph_digest(split):
    images, _ = md.glyphs(split)
    return hashlib.sha256((images * 16).round().to(torch.uint8).numpy().tobytes()).hexdigest()


def test_golden_clips():
    x, y = md.direction_clips(4, 0, "train")
    got = {"direction 4 seed 0 train": md.clip_digest(x)}
    assert y.tolist() == [1, 1, 1, 2]
    x, y = md.direction_clips(4, 7, "test")
    got["direction 4 seed 7 test"] = md.clip_digest(x)
    assert y.tolist() == [2, 2, 2, 3]
    x, captions, _ = md.caption_clips(3, 0, "train")
    got["caption 3 seed 0 train"] = md.clip_digest(x)
    assert captions == ["the digit 6 moves left then the digit 9 moves left",
                        "the digit 5 moves right then the digit 6 moves left",
                        "the digit 9 moves down then the digit 6 moves left"]
    x, captions, _ = md.caption_clips(3, 5, "test", distractors=1)
    got["caption 3 seed 5 test distractors 1"] = md.clip_digest(x)
    assert captions[0] == "the digit 4 moves down then the digit 3 moves right"
    got["bouncing 4 seed 0 train"] = md.clip_digest(md.bouncing_clips(4, 0, "train"))
    got["bouncing 2 seed 3 test length 12 digits 3"] = md.clip_digest(md.bouncing_clips(2, 3, "test", 12, 3))
    got["glyphs train"], got["glyphs test"] = glyph_digest("train"), glyph_digest("test")
    changed = [name for name in GOLDEN if got[name] != GOLDEN[name]]
    assert not changed, f"the generator changed: {changed}"


def test_glyph_splits_are_disjoint_and_hold_every_digit():
    train, train_digits = md.glyphs("train")
    test, test_digits = md.glyphs("test")
    assert train.shape == (899, 8, 8) and test.shape == (898, 8, 8)
    assert train.dtype == torch.float32 and 0 <= train.min() and train.max() <= 1
    for digits in (train_digits, test_digits):
        assert digits.bincount(minlength=10).min() >= 80
    seen = {bytes((g * 16).round().to(torch.uint8).flatten().tolist()) for g in train}
    assert not any(bytes((g * 16).round().to(torch.uint8).flatten().tolist()) in seen for g in test)


def test_shapes_ranges_and_grey_levels():
    x, y = md.direction_clips(6, 1, "train", length=16)
    assert x.shape == (6, 16, 32, 32) and x.dtype == torch.float32 and y.shape == (6,) and y.dtype == torch.long
    c, captions, slots = md.caption_clips(5, 1, "test", segment_length=8)
    assert c.shape == (5, 16, 32, 32) and len(captions) == 5 and slots.shape == (5, 4) and slots.dtype == torch.long
    b = md.bouncing_clips(3, 1, "train", length=7, digits=1)
    assert b.shape == (3, 7, 32, 32)
    for clips in (x, c, b):
        assert clips.min() >= 0 and clips.max() <= 1
        assert torch.equal((clips * 255).round() / 255, clips)  # every pixel a grey level k/255


def test_deterministic_and_independent_of_chunking_and_global_rng():
    torch.manual_seed(123)
    x, y = md.direction_clips(12, 3, "train")
    torch.manual_seed(456)
    torch.rand(10)
    parts = [md.direction_clips(5, 3, "train", start=0), md.direction_clips(7, 3, "train", start=5)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
    other, _ = md.direction_clips(12, 4, "train")
    assert not torch.equal(other, x)
    test, _ = md.direction_clips(12, 3, "test")
    assert not torch.equal(test, x)
    assert torch.equal(md.bouncing_clips(3, 2, "test", start=2)[0], md.bouncing_clips(5, 2, "test")[2])


def target_motion(clip):
    """(visible frames, per-frame (row, column) steps) of the bright target's pixels in one clip."""
    bright = clip > BRIGHT  # (T, C, C)
    visible = bright.flatten(1).any(1).nonzero()[:, 0]
    grid = torch.arange(32.0)
    mass = bright[visible].float()
    rows = (mass.sum(2) * grid).sum(1) / mass.sum((1, 2))
    cols = (mass.sum(1) * grid).sum(1) / mass.sum((1, 2))
    return visible, torch.stack([rows.diff(), cols.diff()], 1)


def direction_of(steps):
    """The DIRECTIONS index of constant per-frame steps (rows, columns); asserts the motion is straight."""
    assert torch.allclose(steps, steps[:1].expand_as(steps)), f"not a constant velocity: {steps.tolist()}"
    d_row, d_col = steps[0].tolist()
    assert (d_row == 0) != (d_col == 0), f"not along one axis: {steps[0].tolist()}"
    return (0 if d_col < 0 else 1) if d_row == 0 else (2 if d_row < 0 else 3)


def test_time_reversal_gives_the_opposite_class_within_the_generators_support():
    length, (low, high), speeds = 20, (4, 7), (1, 2, 3)
    x, y = md.direction_clips(200, 11, "test", length, window=(low, high), speeds=speeds)
    for clip, label in zip(x, y.tolist()):
        for reversed_, expected in ((False, label), (True, md.OPPOSITE[label])):
            frames = clip.flip(0) if reversed_ else clip
            visible, steps = target_motion(frames)
            assert low <= len(visible) <= high and torch.equal(visible, visible[0] + torch.arange(len(visible)))
            assert direction_of(steps) == expected
            speed = round(float(steps[0].abs().sum()))
            assert speed in speeds
            # the reversed start is one the generator draws for the opposite class (module notes)
            bright = frames[visible[0]] > BRIGHT
            along = bright.any(0 if expected in (0, 1) else 1).nonzero()[0, 0]  # first bright column / row
            travel = speed * (len(visible) - 1)
            assert (along - travel >= 0) if expected in (0, 2) else (along + travel <= 31)
    assert set(y.tolist()) == {0, 1, 2, 3}


def test_opposite_is_an_involution_without_fixed_points():
    assert [md.DIRECTIONS[md.OPPOSITE[i]] for i in range(4)] == ["right", "left", "down", "up"]
    assert all(md.OPPOSITE[md.OPPOSITE[i]] == i for i in range(4))


def placed_glyph(frame, sprites):
    """Indices of the sprites that appear exactly somewhere in ``frame`` (one digit on a black frame)."""
    levels = (frame * 255).round().double()  # sprites are grey levels 0..255
    candidates = (sprites.sum((1, 2)) == levels.sum()).nonzero()[:, 0]  # the whole glyph is on the frame
    patches = torch.nn.functional.unfold(levels[None, None], md.GLYPH_SIZE)[0].t()  # (21 * 21, G * G)
    match = (patches[:, None, :] == sprites[candidates].flatten(1)[None]).all(-1)  # (21 * 21, candidates)
    return candidates[match.any(0)].tolist()


def test_captions_parse_into_slots_and_describe_the_clip():
    x, captions, slots = md.caption_clips(4, 3, "test")
    sprites, digits = md._sprites("test")
    L = 10
    labels = md.frame_digit_labels(slots, L)
    assert labels.shape == (4, 2 * L)
    for clip, text, slot, frame_digits in zip(x, captions, slots.tolist(), labels):
        assert md.parse_caption(text) == tuple(slot) and md.caption(slot) == text
        for segment in range(2):
            frames = clip[segment * L : (segment + 1) * L]
            found = placed_glyph(frames[0], sprites)
            assert found and all(digits[i] == slot[2 * segment] for i in found)
            assert (frame_digits[segment * L : (segment + 1) * L] == slot[2 * segment]).all()
            _, steps = target_motion(frames)
            assert direction_of(steps) == slot[2 * segment + 1]


def test_parse_caption_rejects_text_off_the_template():
    with pytest.raises(ValueError, match="caption must read"):
        md.parse_caption("the digit 3 moves left")
    with pytest.raises(ValueError, match="directions must be one of"):
        md.parse_caption("the digit 3 moves sideways then the digit 7 moves down")
    with pytest.raises(ValueError, match="digits must be 0-9"):
        md.parse_caption("the digit x moves left then the digit 7 moves down")


def test_bouncing_digits_stay_inside_and_keep_their_speed():
    x = md.bouncing_clips(16, 5, "train", length=30, digits=1, max_speed=3)
    mass = x.sum((2, 3))  # (n, T): the whole glyph is drawn in every frame
    assert torch.allclose(mass, mass[:, :1].expand_as(mass))
    for clip in x:
        _, steps = target_motion(clip)
        speed = steps.abs()  # bounces flip a sign but the glyph stays whole, so |step| only shrinks there
        assert speed.max() <= 3 + 1e-4
    g = torch.Generator().manual_seed(0)
    paths = [md._bouncing_path(g, 50, [-3, -2, -1, 1, 2, 3]) for _ in range(50)]
    assert {v for path in paths for point in path for v in point} == set(range(md.REACH + 1))  # all of [0, R]


@pytest.mark.parametrize("call,message", [
    (lambda: md.glyphs("dev"), "split must be one of train, test, got 'dev'"),
    (lambda: md.direction_clips(2, 0, "train", window=(4, 30)), "window must be"),
    (lambda: md.direction_clips(2, 0, "train", speeds=(5,)), "moves up to 30 pixels"),
    (lambda: md.direction_clips(-1, 0, "train"), "n must be an int >= 0, got -1"),
    (lambda: md.caption_clips(2, 0, "train", segment_length=1), "segment_length must be an int >= 2"),
    (lambda: md.bouncing_clips(2, 0, "train", digits=0), "digits must be an int >= 1, got 0"),
    (lambda: md.frame_digit_labels(torch.zeros(3, 2)), r"slots must be \(n, 4\)"),
], ids=["split", "window", "speed", "n", "segment", "digits", "slots"])
def test_bad_arguments_name_themselves(call, message):
    with pytest.raises(ValueError, match=message):
        call()
