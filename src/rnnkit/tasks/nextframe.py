r"""Next-frame prediction with a ConvLSTM encoder-forecaster: ``rnnkit nextframe train | evaluate``.

Data (generated, ``rnnkit.data.moving_digits.bouncing_clips``): clips of T frames, 32 x 32, in
which ``digits`` handwritten digits move with constant velocity (up to ``max_speed`` pixels a
frame per axis) and bounce off the walls. Training reads fresh clips every step (``train``
glyphs, seeded by the run's seed and the step); dev clips (train glyphs, ``fields.DEV_SEED``) pick the
best checkpoint; test clips show the ``test`` glyphs, which no training clip has.

Model (Shi et al. 2015, "Convolutional LSTM Network", an encoder-forecaster; here one network
stepped through time, as at generation time a language model is)::

    x_t (B, 1, 32, 32)
      -> stem: conv 3x3 stride 2, 1 -> c/2, ReLU      s1 (B, c/2, 16, 16)
               conv 3x3 stride 2, c/2 -> c, ReLU      (B, c, 8, 8)
      -> rnnkit.ConvRecurrent (convlstm, Hc channels, L layers) at 8 x 8: h_t (B, Hc, 8, 8)
      -> up: conv 3x3 Hc -> 4 c/2, pixel shuffle x2, ReLU, concatenated with s1   (B, c, 16, 16)
             conv 3x3 c -> 4 c/4, pixel shuffle x2, ReLU, concatenated with x_t    (B, c/4 + 1, 32, 32)
             conv 3x3 -> 1: the logits of x_{t+1}                                  (B, 1, 32, 32)

(sub-pixel convolutions, Shi et al. 2016: the 3x3 convolutions run at the low resolution; on these CPUs
they train faster than 4x4 transposed convolutions)

The skip connections give the decoder the frame's own pixels, so the 8 x 8 state needs to carry
only *where things go*; the strided stem keeps a ConvLSTM step cheap (8 x 8 instead of 32 x 32).

Loss: the per-pixel logistic loss (binary cross-entropy with the true grey level in [0, 1] as the
target) of every one-step prediction x_{t+1} from x_0..x_t, teacher forced (Srivastava et al. 2015
train their unsupervised video LSTMs with this cross-entropy too).
With ``feedback_steps`` K > 0 the last K inputs of each training clip are the model's own
predictions (the sigmoid of its previous logits, gradients flowing through them), so training sees
what a rollout sees; K = 0 (the default) is teacher forcing only.

Metrics (per-pixel mean squared error of the predicted grey levels, sigmoid of the logits):

- ``mse``: one step ahead, predicting x_{t+1} from the true x_0..x_t, averaged over the targets
  t + 1 = ``CONTEXT`` .. T - 1 (the model has seen at least ``CONTEXT`` = 2 frames, enough to tell a velocity);
- ``rollout_mse``: 5 to 5: the model reads x_0..x_4, then feeds back its own predictions for x_5..x_9;
- beside each, ``copy_last_mse`` (predict the last frame seen) and ``mean_image_mse`` (predict the mean
  training frame, a constant image): the baselines a model must beat. Copy-last is weak on this data
  (digits move up to 3 px a frame), the mean image is a little better.

Writes ``plots/rollout.png``: a strip of true frames over predicted frames (5 seen, 5 predicted)
for a few test clips.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor, nn

from ..conv_recurrent import ConvRecurrent
from ..data import moving_digits as md
from ..data.batching import GeneratedStream
from ..train import checkpoint
from ..train.trainer import TrainConfig
from .base import Trained, begin, finished, fit, write_report
from .fields import BatchFields, GeneratedSplitFields, TaskConfig, check_choice, check_ints, with_defaults
from .registry import TaskSpec, Verb

NAME = "nextframe"
CELLS = ("convlstm", "peephole_convlstm", "convgru")
CONTEXT = 2  # one-step targets start at frame CONTEXT: the model has seen CONTEXT frames
SEEN, AHEAD = 5, 5  # the rollout: 5 frames read, 5 predicted
MEAN_IMAGE_CLIPS = 512  # training clips averaged for the mean-image baseline
NEXTFRAME_TRAIN_DEFAULTS = {"lr": 2e-3, "eval_every": 100, "checkpoint_every": 100, "warmup_steps": 30,
                            "weight_decay": 0.0, "steps": 500}


@dataclass
@with_defaults(dev_size=200, test_size=500, batch_size=16)
class NextFrameConfig(TaskConfig, BatchFields, GeneratedSplitFields):
    """The encoder-forecaster and its generated data; defaults sized for a few minutes on 2 CPU cores."""

    unit, units = "clip", "clips"

    cell: str = field(default="convlstm", metadata={"help": "convlstm, peephole_convlstm or convgru"})
    hidden_channels: int = field(default=32, metadata={"help": "Hc: channels of the recurrent state (8 x 8)",
                                                       "flag": "--hidden-size", "aliases": ("--hidden-channels",)})
    num_layers: int = field(default=1, metadata={"help": "stacked ConvLSTM layers"})
    kernel_size: int = field(default=3, metadata={"help": "odd kernel of the recurrent convolutions"})
    channels: int = field(default=32, metadata={"help": "c: channels of the stem's 8 x 8 map"})
    length: int = field(default=10, metadata={"help": "T: frames per clip, in training and evaluation (at least 10 "
                                                      "for the 5-to-5 rollout)"})
    digits: int = field(default=2, metadata={"help": "digits bouncing in a clip"})
    max_speed: int = field(default=3, metadata={"help": "the fastest a digit moves, pixels a frame per axis"})
    feedback_steps: int = field(default=0, metadata={"help": "K: in training, the last K inputs of a clip are the "
                                                             "model's own predictions (gradients flow through them), "
                                                             "as in a rollout (0: teacher forcing only)"})

    def validate(self) -> None:
        check_choice("cell", self.cell, CELLS)
        check_ints(self, ("hidden_channels", "num_layers", "channels", "digits", "max_speed", "dev_size", "test_size",
                          "batch_size"))
        if self.channels < 4 or self.channels % 4:
            raise ValueError(f"channels must be a multiple of 4 (the stem's first layer has channels / 2, the "
                             f"decoder's last channels / 4), got "
                             f"{self.channels!r}")
        if isinstance(self.kernel_size, bool) or not isinstance(self.kernel_size, int) or self.kernel_size < 1 or \
                self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive int, got {self.kernel_size!r}")
        if isinstance(self.length, bool) or not isinstance(self.length, int) or self.length < SEEN + AHEAD:
            raise ValueError(f"length must be an int >= {SEEN + AHEAD} (the {SEEN}-to-{AHEAD} rollout), got "
                             f"{self.length!r}")
        if isinstance(self.feedback_steps, bool) or not isinstance(self.feedback_steps, int) or not (
                0 <= self.feedback_steps <= self.length - 2):
            raise ValueError(f"feedback_steps must be an int in [0, length - 2 = {self.length - 2}] (the first input "
                             f"is always a true frame), got {self.feedback_steps!r}")
        if self.max_speed > md.REACH:
            raise ValueError(f"max_speed must be <= {md.REACH}, got {self.max_speed!r}")


def clips_of(split: str, config: NextFrameConfig, n: int | None = None) -> Tensor:
    """The fixed dev or test clips (``GeneratedSplitFields.held_out``), (N, T, 32, 32)."""
    size, seed, glyphs = config.held_out(split, n)
    return md.bouncing_clips(size, seed, glyphs, config.length, config.digits, max_speed=config.max_speed)


def check_clips(clips, least: int = CONTEXT + 1, name: str = "clips") -> Tensor:
    """(N, T, 32, 32) float in [0, 1] with T >= ``least``; anything else is a ValueError saying what came."""
    if not isinstance(clips, Tensor):
        raise ValueError(f"{name} must be a tensor (N, T, 32, 32), got {type(clips).__name__}")
    if clips.dim() != 4 or tuple(clips.shape[2:]) != (md.CANVAS, md.CANVAS) or clips.shape[1] < least:
        raise ValueError(f"{name} must be (N, T, {md.CANVAS}, {md.CANVAS}) with T >= {least}, got shape "
                         f"{tuple(clips.shape)}")
    if not clips.dtype.is_floating_point or not torch.isfinite(clips).all() or clips.min() < 0 or clips.max() > 1:
        raise ValueError(f"{name} must be float in [0, 1]")
    return clips


# ---------------------------------------------------------------------- the model


class FrameForecaster(nn.Module):
    """Stem -> ConvRecurrent at 8 x 8 -> decoder with skips (module notes).

    forward(clips (B, T, 32, 32)) -> logits (B, T, 32, 32): at t, of frame t + 1 given frames 0..t
    rollout(clips (B, S, 32, 32), ahead) -> probabilities (B, ahead, 32, 32) of frames S..S+ahead-1
    """

    def __init__(self, config: NextFrameConfig) -> None:
        super().__init__()
        c = config.channels
        self.stem1 = nn.Sequential(nn.Conv2d(1, c // 2, 3, stride=2, padding=1), nn.ReLU())  # -> 16 x 16
        self.stem2 = nn.Sequential(nn.Conv2d(c // 2, c, 3, stride=2, padding=1), nn.ReLU())  # -> 8 x 8
        self.rnn = ConvRecurrent(config.cell, c, config.hidden_channels, config.kernel_size, config.num_layers)
        self.up1 = nn.Sequential(nn.Conv2d(config.hidden_channels, 4 * (c // 2), 3, padding=1), nn.PixelShuffle(2),
                                 nn.ReLU())  # -> (c/2, 16, 16)
        self.up2 = nn.Sequential(nn.Conv2d(c, 4 * (c // 4), 3, padding=1), nn.PixelShuffle(2),
                                 nn.ReLU())  # -> (c/4, 32, 32)
        self.out = nn.Conv2d(c // 4 + 1, 1, 3, padding=1)
        # the mean training frame: the mean-image baseline, kept with the weights
        self.register_buffer("mean_image", torch.zeros(md.CANVAS, md.CANVAS))

    def _decode(self, h: Tensor, s1: Tensor, x: Tensor) -> Tensor:
        """h (N, Hc, 8, 8), s1 (N, c/2, 16, 16), x (N, 1, 32, 32) -> logits (N, 1, 32, 32)."""
        u = torch.cat([self.up1(h), s1], 1)  # (N, c, 16, 16)
        u = torch.cat([self.up2(u), x], 1)  # (N, c/4 + 1, 32, 32)
        return self.out(u)

    def forward(self, clips: Tensor) -> Tensor:
        B, T = clips.shape[:2]
        x = clips.transpose(0, 1).reshape(T * B, 1, md.CANVAS, md.CANVAS)  # (T*B, 1, 32, 32), time-major
        s1 = self.stem1(x)  # (T*B, c/2, 16, 16)
        s2 = self.stem2(s1)  # (T*B, c, 8, 8)
        h, _ = self.rnn(s2.view(T, B, *s2.shape[1:]))  # (T, B, Hc, 8, 8)
        logits = self._decode(h.flatten(0, 1), s1, x)  # (T*B, 1, 32, 32)
        return logits.view(T, B, md.CANVAS, md.CANVAS).transpose(0, 1)  # (B, T, 32, 32)

    def step(self, x_t: Tensor, state) -> tuple[Tensor, object]:
        """x_t (B, 32, 32) -> logits of x_{t+1} (B, 32, 32) and the next state."""
        x = x_t[:, None]  # (B, 1, 32, 32)
        s1 = self.stem1(x)
        h, state = self.rnn.step(self.stem2(s1), state)  # (B, Hc, 8, 8)
        return self._decode(h, s1, x)[:, 0], state

    @torch.no_grad()
    def rollout(self, clips: Tensor, ahead: int) -> Tensor:
        """Read ``clips`` (B, S, 32, 32), then predict ``ahead`` frames, each fed back: (B, ahead, 32, 32)."""
        state = None
        for t in range(clips.shape[1]):
            logits, state = self.step(clips[:, t], state)
        predicted = [logits.sigmoid()]
        for _ in range(ahead - 1):
            logits, state = self.step(predicted[-1], state)
            predicted.append(logits.sigmoid())
        return torch.stack(predicted, 1)


def mse(a: Tensor, b: Tensor) -> float:
    return float(((a - b) ** 2).mean())


@torch.no_grad()
def scores(model: FrameForecaster, clips: Tensor, batch_size: int = 100) -> dict:
    """n, mse, copy_last_mse, mean_image_mse (one step, targets CONTEXT..T-1), rollout_mse and the rollout's
    copy_last and mean_image MSE (frames 5..9 from 0..4)."""
    clips = check_clips(clips, SEEN + AHEAD)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums = torch.zeros(6, dtype=torch.float64)
    for start in range(0, len(clips), batch_size):
        x = clips[start : start + batch_size].to(device)  # (b, T, 32, 32)
        predicted = model(x).sigmoid()[:, CONTEXT - 1 : -1]  # (b, T - CONTEXT, 32, 32): frames CONTEXT..T-1
        target = x[:, CONTEXT:]
        mean = model.mean_image.expand_as(target)
        rolled = model.rollout(x[:, :SEEN], AHEAD)  # (b, 5, 32, 32)
        future = x[:, SEEN : SEEN + AHEAD]
        parts = [(predicted, target), (x[:, CONTEXT - 1 : -1], target), (mean, target), (rolled, future),
                 (x[:, SEEN - 1 : SEEN].expand_as(future), future), (model.mean_image.expand_as(future), future)]
        sums += torch.tensor([mse(p, t) * len(x) for p, t in parts], dtype=torch.float64)
    model.train(was_training)
    values = (sums / len(clips)).tolist()
    keys = ("mse", "copy_last_mse", "mean_image_mse", "rollout_mse", "rollout_copy_last_mse",
            "rollout_mean_image_mse")
    return {"n": len(clips), **dict(zip(keys, values))}


def plot_rollout(model: FrameForecaster, clips: Tensor, path: str | Path, count: int = 3) -> Path:
    """A PNG strip per clip: the true frames 0..9 over the model's (frames 0..4 read, 5..9 predicted)."""
    from ..plots import plt, save  # matplotlib with the file-only backend

    clips = check_clips(clips, SEEN + AHEAD)[:count]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        rolled = model.rollout(clips[:, :SEEN].to(next(model.parameters()).device), AHEAD).cpu()
    model.train(was_training)
    frames = SEEN + AHEAD
    fig, axes = plt.subplots(2 * len(clips), frames, figsize=(frames * 0.9, 2 * len(clips) * 0.95))
    for i in range(len(clips)):
        for t in range(frames):
            for row, image in ((2 * i, clips[i, t]), (2 * i + 1, clips[i, t] if t < SEEN else rolled[i, t - SEEN])):
                ax = axes[row, t]
                ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
        axes[2 * i, 0].set_ylabel("true", fontsize=8)
        axes[2 * i + 1, 0].set_ylabel("model", fontsize=8)
    for t in range(frames):
        axes[0, t].set_title(f"t={t}" + (" *" if t >= SEEN else ""), fontsize=8)
    fig.suptitle(f"{SEEN} frames read, {AHEAD} predicted (*), each fed back", fontsize=9)
    return save(fig, path)


# ---------------------------------------------------------------------- training


def training_batch(seed: int, index: int, config: NextFrameConfig, device: torch.device) -> Tensor:
    """Training batch ``index`` (a ``GeneratedStream``'s draw): clips index*B .. (index+1)*B - 1 of (``train``
    glyphs, seed), (B, T, 32, 32)."""
    c = config
    clips = md.bouncing_clips(c.batch_size, seed, "train", c.length, c.digits, max_speed=c.max_speed,
                              start=index * c.batch_size)
    return clips.to(device)


class NextFrameTask:
    """The Trainer's view of the forecaster (``rnnkit.train.trainer.TrainingTask``)."""

    name = NAME
    metric = "mse"
    higher_is_better = False

    def __init__(self, config: NextFrameConfig, seed: int, device: torch.device) -> None:
        self.config = config
        self.model = FrameForecaster(config).to(device)
        c = config
        sample = md.bouncing_clips(MEAN_IMAGE_CLIPS, seed, "train", c.length, c.digits, max_speed=c.max_speed)
        self.model.mean_image.copy_(sample.mean((0, 1)))
        self.stream = GeneratedStream(seed, partial(training_batch, config=config, device=device))
        self.dev = clips_of("dev", config)

    def loss(self, batch: Tensor, carry):
        K = self.config.feedback_steps
        if K == 0:
            logits = self.model(batch)[:, :-1]  # (B, T - 1, 32, 32): predictions of frames 1..T-1
        else:  # the last K inputs are the model's own predictions, as in a rollout
            T = batch.shape[1]
            steps, state, x = [], None, batch[:, 0]
            for t in range(T - 1):
                logits_t, state = self.model.step(x, state)  # (B, 32, 32): of frame t + 1
                steps.append(logits_t)
                x = batch[:, t + 1] if t + 1 < T - 1 - K else logits_t.sigmoid()
            logits = torch.stack(steps, 1)  # (B, T - 1, 32, 32)
        loss = F.binary_cross_entropy_with_logits(logits.float(), batch[:, 1:])
        return loss, None, int(batch[:, 1:].numel())

    def evaluate(self) -> dict:
        return scores(self.model, self.dev)

    def describe(self) -> tuple[dict, None]:
        return self.config.model_settings(), None


def train(config: NextFrameConfig, train_config: TrainConfig, out: str | Path, resume: bool = False,
          console: Console | None = None, progress: bool = True) -> dict:
    """Train a forecaster into the run directory ``out``; returns the Trainer's summary plus ``test`` (the best
    checkpoint, chosen by dev one-step MSE, scored on the test clips) and writes ``plots/rollout.png``."""
    config.validate()
    console, _ = begin(train_config, out, resume, console)
    task = NextFrameTask(config, train_config.seed, torch.device(train_config.device))
    summary = fit(task, train_config, out, resume, console, progress, lambda params: (
        f"nextframe: stem to 8x8 ({config.channels} channels), {config.cell} {config.num_layers}x"
        f"{config.hidden_channels} channels, decoder with skips, {params:,} parameters; {config.digits} digits up "
        f"to {config.max_speed} px/frame, T={config.length}; {config.dev_size} dev clips, {config.test_size} test "
        f"clips (unseen glyphs)"))
    clips = clips_of("test", config)
    result = {"task": NAME, "split": "test", **scores(task.model, clips)}
    write_report(out, NAME, "test", result)
    plot_rollout(task.model, clips, Path(out) / "plots" / "rollout.png")
    task.model.train()
    console.print(f"test: one-step MSE {result['mse']:.4f} (copy last {result['copy_last_mse']:.4f}, mean image "
                  f"{result['mean_image_mse']:.4f}); 5-to-5 rollout MSE {result['rollout_mse']:.4f} (copy last "
                  f"{result['rollout_copy_last_mse']:.4f}, mean image {result['rollout_mean_image_mse']:.4f}), n "
                  f"{result['n']}; {finished(summary, out)}", highlight=False)
    return {**summary, "test": result}


# ---------------------------------------------------------------------- a trained model


@dataclass(eq=False, repr=False)
class TrainedNextFrame(Trained):
    """A trained forecaster loaded from a checkpoint: ``predict``, ``evaluate`` and ``plot_rollout``."""

    task, config_class, what = NAME, NextFrameConfig, "a next-frame model"

    @classmethod
    def read(cls, ckpt: checkpoint.Checkpoint, config: NextFrameConfig, path: Path) -> tuple[FrameForecaster, dict]:
        return FrameForecaster(config), {}

    def predict(self, clips: Tensor, *, ahead: int = AHEAD) -> Tensor:
        """Read each clip (N, S, 32, 32), then predict ``ahead`` frames: (N, ahead, 32, 32) in [0, 1]."""
        if isinstance(ahead, bool) or not isinstance(ahead, int) or ahead < 1:
            raise ValueError(f"ahead must be a positive int, got {ahead!r}")
        clips = check_clips(clips, 1)
        return self.model.rollout(clips.to(next(self.model.parameters()).device), ahead).cpu()

    def evaluate(self, *, split: str = "test", n: int | None = None) -> dict:
        """task, split, n, mse, copy_last_mse, mean_image_mse, rollout_mse and the rollout's baselines on the
        generated ``test`` (unseen glyphs) or ``dev`` clips; ``n`` clips (default: the training run's)."""
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"n must be a positive int, got {n!r}")
        return {"task": NAME, "split": split, **scores(self.model, clips_of(split, self.config, n))}

    def plot_rollout(self, path: str | Path, split: str = "test", count: int = 3) -> Path:
        return plot_rollout(self.model, clips_of(split, self.config, count), path, count)


# ---------------------------------------------------------------------- the task's SPEC (rnnkit.tasks.registry)

@dataclass
class EvaluateArgs:
    split: str = field(default="test", metadata={"help": "test (unseen glyphs) or dev (training glyphs)"})
    n: int | None = field(default=None, metadata={"help": "clips to score (default: the training run's test or dev "
                                                          "size)"})
    plot: str | None = field(default=None, metadata={"help": "also write a strip of true and predicted frames here",
                                                     "metavar": "PNG"})


def run_evaluate(trained: TrainedNextFrame, args: EvaluateArgs, as_json: bool) -> dict:
    """``rnnkit nextframe evaluate``: ``evaluate``, and the rollout strip with --plot."""
    result = trained.evaluate(split=args.split, n=args.n)
    if args.plot:
        print(f"rollout strip: {trained.plot_rollout(args.plot, args.split)}", file=sys.stderr)
    return result


SPEC = TaskSpec(NAME, "next-frame prediction with a ConvLSTM (bouncing digits): train, evaluate", NextFrameConfig,
                train, TrainedNextFrame.load,
                train_help="train a ConvLSTM encoder-forecaster on generated bouncing digits",
                train_defaults=NEXTFRAME_TRAIN_DEFAULTS,
                export="its ConvLSTM runs over frames of a size fixed at training and rolls out in Python",
                verbs={"evaluate": Verb("one-step and 5-to-5 rollout MSE beside copy-last-frame and mean-image "
                                        "baselines", EvaluateArgs, run_evaluate)})
