"""Time-series forecasting: ``rnnkit forecast train | evaluate | predict``.

Data: ``--data FILE.csv`` (or .tsv) with ``--column`` (repeatable or comma-separated; several
make a multivariate input, the first is the target) and ``--time-column``, or a bundled series
(``--series air_passengers | sunspots | seattle_temps``; ``rnnkit.data``, SOURCES.md), or one read
from an installed package (``sp500 | nasdaq | stocks | seattle_daily``; ``rnnkit.data.packaged_series``). The
last ``horizon`` points are held out (the test split); the model, the scaler and the baselines
see only the points before them (the training part).

Prices: ``--target returns`` forecasts the log returns r_t = log(p_t / p_{t-1}) of the first column (the
default for sp500, nasdaq and stocks; the other columns stay inputs as they are), with ``--horizon 1`` and
walk-forward evaluation by default: the last ``rolling_origins`` (250) points are the test part, the model
and its scaler are fitted on the points before them, and each origin's forecast is scored beside the
random walk with the Diebold-Mariano and directional tests (``rnnkit.tasks.walk_forward``,
``rnnkit.tasks.skill``). seattle_daily forecasts the maximum temperature 1-7 days ahead, walked forward
over its last 365 days (2015), beside persistence, climatology and ETS. Returns have no level: their
windows are not made level-free (step 2 below applies to levels only).

Model (symbols as in ``rnnkit.tasks.series``: L lookback, H horizon, F columns, Q quantiles):

1. z = (g(x) - mean) / std per column, g = log for positive columns (``transform auto``), the
   mean and std of the training part only, stored in the checkpoint as buffers;
2. each window is made level-free: the mean of its L inputs, per column, is subtracted from the
   inputs and the targets (and added back to the forecast), so a trending series looks alike in
   every window and the net never has to extrapolate to levels it has not seen;
3. ``rnnkit.Recurrent`` (any cell) over the L steps, then a linear head:
   - ``direct``: the final state -> H x Q values at once (one head output per step ahead), plus
     (``skip``) a linear map of the L target inputs, y += W_skip x, which can copy the last season;
   - ``autoregressive``: at every step t the next value of every column, F x Q; a forecast
     feeds its median (or, with MC dropout, its sample) back as the next input, H times;
4. ``ensemble`` members (independent inits, the same batches) are averaged: their quantiles are
   averaged (Vincentization), their MC-dropout samples pooled.

Prediction intervals, central ``interval_level`` (0.8: the 10% and 90% quantiles):

- ``quantile``: the head predicts the quantiles q in (lo, 0.5, hi), trained with the pinball loss
  rho_q(e) = max(q e, (q - 1) e), e = y - yhat_q (Koenker & Bassett 1978);
- ``mc_dropout``: the head predicts the median (pinball at q = 0.5, i.e. half the L1 loss); at
  prediction dropout stays on before the head and ``mc_samples`` draws per member give the
  quantiles (Gal & Ghahramani 2016). In autoregressive mode each draw is a whole sample path.

In autoregressive mode with quantile intervals, the interval at step h is the one-step
interval around the fed-back median path: it ignores the error accumulated over the steps, so it
is too narrow beyond h = 1 (its coverage, reported, shows it); MC-dropout paths do not have this flaw.

Metrics: MASE and sMAPE (``rnnkit.tasks.series``) beside the seasonal naive forecast and
statsmodels' AIC-selected ETS on the same split, the interval's coverage, and a rolling-origin
evaluation over the held-out part: origins n_train + k * max(1, H // R), k = 0..R-1
(R = ``rolling_origins``); at each the model (trained once) forecasts from the actual history up
to the origin, the baselines are refit on it, the horizon shrinks to the points left (Tashman
2000, "fixed hold-out"), and the MASE scale is that history's own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from rich.console import Console
from torch import Tensor, nn

from ..data.batching import BatchStream
from ..recurrent import Recurrent
from ..train import checkpoint
from ..train.distributed import split_batch
from ..train.trainer import TrainConfig
from .base import Trained, begin, fit
from .fields import ExampleFields, LayerFields, TaskConfig, check_choice, check_fractions, check_ints, with_defaults
from .registry import TaskSpec, Verb
from .series import (
    LEVELS,
    PRESETS,
    RETURNS,
    SERIES,
    Scaler,
    Series,
    coverage,
    ets_forecast,
    infer_season,
    log_returns,
    mape,
    mase,
    mase_scale,
    next_times,
    read_series,
    seasonal_naive,
    smape,
    split_columns,
    window_starts,
)
from .walk_forward import (
    describe_walk_forward,
    plot_long_or_flat,
    plot_walk_forward,
    score_walk_forward,
    verdict,
    walk_forward_forecasts,
)

NAME = "forecast"
STRATEGIES = ("direct", "autoregressive")
INTERVALS = ("quantile", "mc_dropout")
TRANSFORMS = ("auto", "log", "none")
TARGETS = ("auto", "levels", "returns")
EVALUATIONS = ("auto", "holdout", "walk_forward")
FORECAST_TRAIN_DEFAULTS = {"steps": 300, "lr": 3e-3, "warmup_steps": 20, "eval_every": 100, "checkpoint_every": 100,
                           "log_every": 25, "weight_decay": 0.01}


@dataclass
@with_defaults(cell="gru", hidden_size=32, bidirectional=False, batch_size=16)
class ForecastConfig(TaskConfig, ExampleFields, LayerFields):
    """The forecaster and its data; defaults tuned for the bundled air passengers on 2 CPU cores."""

    unit, units = "window", "windows"

    data: str | None = field(default=None, metadata={"help": "CSV or TSV with a header (default: the bundled "
                                                             "series of --series)"})
    series: str = field(default="air_passengers", metadata={"help": "the bundled series without --data: "
                                                                    + ", ".join(SERIES)})
    column: str | None = field(default=None, metadata={"help": "the column(s) to read, repeatable or comma-"
                                                               "separated; the first is the target (default: the "
                                                               "file's only column besides the time column)",
                                                       "repeatable": True})
    time_column: str | None = field(default=None, metadata={"help": "the time stamps (ISO 8601 or 1949-01); "
                                                                    "they give the season"})
    format: str | None = field(default=None, metadata={"help": "csv or tsv (default: from the extension)"})
    season: int = field(default=0, metadata={"help": "the season m of MASE and the seasonal naive baseline (0: "
                                                     "from the time column, 12 monthly, 24 hourly, else 1)"})
    target: str = field(default="auto", metadata={"help": "levels (the values), returns (log returns of the first "
                                                         "column, > 0) or auto (returns for sp500, nasdaq and "
                                                         "stocks, else levels)"})
    horizon: int | None = field(default=None, metadata={"help": "H: steps forecast at once, and with holdout "
                                                                "evaluation the points held out (default: 1 for "
                                                                "returns, 7 for seattle_daily, else 24)"})
    lookback: int = field(default=24, metadata={"help": "L: past steps the model reads"})
    transform: str = field(default="auto", metadata={"help": "auto (log where the training values are all > 0), "
                                                             "log or none; then standardized on the training part"})
    strategy: str = field(default="direct", metadata={"help": "direct (all H steps from one head) or "
                                                              "autoregressive (one step, fed back H times)"})
    interval: str = field(default="quantile", metadata={"help": "prediction intervals from quantile (pinball) "
                                                                "loss or mc_dropout"})
    interval_level: float = field(default=0.8, metadata={"help": "the central probability of the interval"})
    mc_samples: int = field(default=50, metadata={"help": "mc_dropout: draws per ensemble member"})
    head_dropout: float = field(default=0.1, metadata={"help": "dropout before the head (kept on at prediction "
                                                               "with mc_dropout)"})
    input_noise: float = field(default=0.0, metadata={"help": "std of Gaussian noise on the scaled inputs in "
                                                              "training"})
    skip: bool = field(default=True, metadata={"help": "direct: add a linear map from the lookback of the target "
                                                       "to the outputs (a seasonal pattern is linear in the "
                                                       "window)"})
    ensemble: int = field(default=5, metadata={"help": "independently initialized members, averaged (one seed "
                                                       "is unstable on 120 training points)"})
    evaluation: str = field(default="auto", metadata={"help": "holdout (the last horizon points, rolling origins "
                                                              "inside them), walk_forward (forecasts from each of the "
                                                              "last --rolling-origins points, the model fit before "
                                                              "the first) or auto (walk_forward for returns and "
                                                              "seattle_daily)"})
    rolling_origins: int | None = field(default=None, metadata={"help": "holdout: origins inside the held-out part "
                                                                        "(1: the headline only; default 4); "
                                                                        "walk_forward: the last N points forecast "
                                                                        "(default 250, seattle_daily 365, stocks 36)"})
    ets_max_points: int = field(default=1000, metadata={"help": "the ETS baseline fits on at most the last N "
                                                                "training points (18 fits on 8,735 hourly points "
                                                                "take ~30 s)"})

    def columns(self) -> list[str]:
        return split_columns(self.column)

    def validate(self) -> None:
        if isinstance(self.column, (list, tuple)):
            self.column = ",".join(self.column)
        check_choice("strategy", self.strategy, STRATEGIES)
        check_choice("interval", self.interval, INTERVALS)
        check_choice("transform", self.transform, TRANSFORMS)
        check_choice("series", self.series, SERIES)
        self.resolve_defaults()
        check_ints(self, ("horizon", "lookback", "mc_samples", "hidden_size", "num_layers", "ensemble", "batch_size",
                          "rolling_origins", "ets_max_points"))
        if isinstance(self.season, bool) or not isinstance(self.season, int) or self.season < 0:
            raise ValueError(f"season must be an int >= 0 (0: from the time column), got {self.season!r}")
        if not 0 < self.interval_level < 1:
            raise ValueError(f"interval_level must be in (0, 1), got {self.interval_level!r}")
        if self.evaluation == "walk_forward" and self.rolling_origins < 2 * self.horizon:
            raise ValueError(f"walk_forward evaluation needs rolling_origins >= 2 x horizon = {2 * self.horizon} "
                             f"(the Diebold-Mariano test needs more {self.horizon}-step forecasts than "
                             f"{self.horizon}), got {self.rolling_origins}")
        check_fractions(self, ("dropout", "head_dropout"))
        if self.input_noise < 0:
            raise ValueError(f"input_noise must be >= 0, got {self.input_noise!r}")
        if self.interval == "mc_dropout" and self.head_dropout == 0:
            raise ValueError("interval mc_dropout needs --head-dropout > 0: the draws differ only by it")
        if self.strategy == "autoregressive" and self.bidirectional:
            raise ValueError("strategy autoregressive steps forward in time: it cannot use --bidirectional")

    def resolve_defaults(self) -> None:
        """Fill target, horizon, evaluation and rolling_origins left at auto / None from the series' preset
        (``rnnkit.tasks.series.PRESETS``; a user's file: levels, or returns with --target returns)."""
        check_choice("target", self.target, TARGETS)
        check_choice("evaluation", self.evaluation, EVALUATIONS)
        preset = PRESETS.get(self.series, LEVELS) if self.data is None else LEVELS
        if self.target == "auto":
            self.target = preset.target
        if self.target != preset.target:
            preset = RETURNS if self.target == "returns" else LEVELS
        if self.horizon is None:
            self.horizon = preset.horizon
        if self.evaluation == "auto":
            self.evaluation = preset.evaluation
        if self.rolling_origins is None:
            self.rolling_origins = preset.origins if self.evaluation == preset.evaluation else \
                (RETURNS if self.evaluation == "walk_forward" else LEVELS).origins

    def held_out(self) -> int:
        """The points after the training part: the horizon (holdout) or the walk-forward origins."""
        return self.rolling_origins if self.evaluation == "walk_forward" else self.horizon

    def quantiles(self) -> tuple[float, ...]:
        """The head's quantile levels: (lo, 0.5, hi) for quantile intervals, (0.5,) for MC dropout."""
        if self.interval == "mc_dropout":
            return (0.5,)
        tail = (1 - self.interval_level) / 2
        return (tail, 0.5, 1 - tail)


# ---------------------------------------------------------------------- the model


class Member(nn.Module):
    """One ensemble member: Recurrent over the window -> dropout -> Linear head.

    direct: forward(z (L, B, F)) -> (B, H, Q); autoregressive: forward(z (T, B, F)) -> (T, B, F, Q).
    """

    def __init__(self, num_features: int, config: ForecastConfig) -> None:
        super().__init__()
        self.direct = config.strategy == "direct"
        self.horizon, self.num_features, self.num_quantiles = config.horizon, num_features, len(config.quantiles())
        self.head_dropout = config.head_dropout
        self.rnn = Recurrent(config.cell, num_features, config.hidden_size, config.num_layers,
                             dropout=config.dropout, bidirectional=config.bidirectional)
        outputs = (config.horizon if self.direct else num_features) * self.num_quantiles
        self.head = nn.Linear(config.hidden_size * self.rnn.num_directions, outputs)
        # yhat += W_skip x_target: the L level-free target inputs straight to the H x Q outputs
        self.skip = nn.Linear(config.lookback, outputs, bias=False) if self.direct and config.skip else None

    def read(self, features: Tensor, sample: bool) -> Tensor:
        """The head on recurrent features (..., D*H); ``sample`` keeps dropout on (MC dropout)."""
        dropped = nn.functional.dropout(features, self.head_dropout, training=self.training or sample)
        return self.head(dropped)

    def forward(self, z: Tensor, sample: bool = False) -> Tensor:
        out, state = self.rnn(z)  # (T, B, D*H)
        if self.direct:
            h = state.h if isinstance(state, tuple) else state  # (L*D, B, H)
            D = self.rnn.num_directions
            last = h[-D:].transpose(0, 1).reshape(h.shape[1], -1)  # (B, D*H): the top layer's directions
            y = self.read(last, sample)  # (B, H*Q)
            if self.skip is not None:
                y = y + self.skip(z[:, :, 0].t())  # (B, L) -> (B, H*Q)
            return y.view(-1, self.horizon, self.num_quantiles)  # (B, H, Q)
        T, B = z.shape[:2]
        return self.read(out, sample).view(T, B, self.num_features, self.num_quantiles)  # (T, B, F, Q)


class Forecaster(nn.Module):
    """The scaler's statistics (buffers) and ``ensemble`` members; see the module notes."""

    def __init__(self, num_features: int, config: ForecastConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("scale_log", torch.zeros(num_features))  # (F,) 1 where the column is logged
        self.register_buffer("scale_mean", torch.zeros(num_features, dtype=torch.float64))  # (F,)
        self.register_buffer("scale_std", torch.ones(num_features, dtype=torch.float64))  # (F,)
        self.members = nn.ModuleList(Member(num_features, config) for _ in range(config.ensemble))

    def set_scaler(self, scaler: Scaler) -> None:
        self.scale_log.copy_(torch.from_numpy(scaler.log.astype(np.float32)))
        self.scale_mean.copy_(torch.from_numpy(scaler.mean))
        self.scale_std.copy_(torch.from_numpy(scaler.std))

    def scaler(self) -> Scaler:
        return Scaler(self.scale_log.cpu().numpy() > 0.5, self.scale_mean.cpu().numpy(), self.scale_std.cpu().numpy())

    def forward(self, z: Tensor, sample: bool = False) -> Tensor:
        """Every member's output stacked: (K, B, H, Q) direct, (K, T, B, F, Q) autoregressive."""
        return torch.stack([member(z, sample) for member in self.members])


def pinball(prediction: Tensor, target: Tensor, quantiles: Sequence[float]) -> Tensor:
    """Mean of rho_q(y - yhat_q) = max(q e, (q - 1) e); prediction (..., Q), target (...)."""
    q = torch.tensor(quantiles, dtype=prediction.dtype, device=prediction.device)  # (Q,)
    e = target.unsqueeze(-1) - prediction  # (..., Q)
    return torch.maximum(q * e, (q - 1) * e).mean()


class Window(NamedTuple):
    x: Tensor  # direct (L, B, F); autoregressive (L+H-1, B, F): level-free scaled inputs
    y: Tensor  # direct (B, H) target column; autoregressive (L+H-1, B, F) next values


def make_windows(z: Tensor, starts: Sequence[int], lookback: int, horizon: int, direct: bool,
                 noise: float = 0.0, level_free: bool = True) -> Window:
    """Windows of the scaled series z (N, F) at ``starts``, each minus its lookback's mean per column where
    ``level_free`` (levels; returns have no level to remove, and the lookback's mean would only add its noise)."""
    span = lookback + horizon
    idx = torch.as_tensor(list(starts))[None, :] + torch.arange(span)[:, None]  # (L+H, B)
    w = z[idx]  # (L+H, B, F)
    if level_free:
        w = w - w[:lookback].mean(0)  # the level of the lookback
    if noise > 0:
        w = w + noise * torch.randn_like(w)
    if direct:
        return Window(w[:lookback], w[lookback:, :, 0].t())  # (L, B, F), (B, H)
    return Window(w[:-1], w[1:])  # (L+H-1, B, F) each


def window_batch(starts: list[int], z: Tensor, config: ForecastConfig, device: torch.device) -> Window:
    """The training windows at ``starts`` (with the input noise), on ``device``: a batch of the window stream."""
    x, y = make_windows(z, starts, config.lookback, config.horizon, config.strategy == "direct", config.input_noise,
                        config.target == "levels")
    return Window(x.to(device), y.to(device))


def window_loss(model: Forecaster, batch: Window) -> Tensor:
    """The pinball loss of every member, averaged."""
    out = model(batch.x)  # (K, B, H, Q) or (K, T, B, F, Q)
    return pinball(out.float(), batch.y.expand(out.shape[:-1]), model.config.quantiles())


class Forecast(NamedTuple):
    """One forecast of the target column, raw units, each (steps,)."""

    point: np.ndarray  # the median
    lower: np.ndarray  # the interval's lower quantile
    upper: np.ndarray  # its upper quantile


@torch.no_grad()
def forecast(model: Forecaster, history: np.ndarray, steps: int | None = None, source: str = "the series",
             seed: int = 0) -> Forecast:
    """The next ``steps`` (at most the horizon) values of the target after ``history`` (N, F) raw values."""
    c = model.config
    steps = c.horizon if steps is None else steps
    if not 1 <= steps <= c.horizon:
        raise ValueError(f"steps must be in 1..{c.horizon} (the trained horizon), got {steps}")
    if len(history) < c.lookback:
        raise ValueError(f"{source} has {len(history)} points before the forecast origin; the model reads "
                         f"lookback = {c.lookback}")
    if history.shape[1] != model.scale_mean.numel():
        raise ValueError(f"{source}: {history.shape[1]} column(s), the model was trained on "
                         f"{model.scale_mean.numel()}")
    was_training = model.training
    model.eval()
    device = model.scale_mean.device
    scaler = model.scaler()
    window = torch.as_tensor(scaler.forward(history[-c.lookback:], source), dtype=torch.float32)  # (L, F)
    level = window.mean(0) if c.target == "levels" else torch.zeros(window.shape[1])  # (F,) as make_windows
    mc = c.interval == "mc_dropout"
    draws = c.mc_samples if mc else 1
    x = (window - level)[:, None, :].expand(-1, draws, -1).to(device)  # (L, S, F)
    # MC dropout draws are reproducible, and the caller's generators are left as they were
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        if c.strategy == "direct":
            out = model(x, sample=mc)  # (K, S, H, Q)
        else:
            out = torch.stack([_roll(member, x, c.horizon, mc) for member in model.members])  # (K, S, H, Q)
    model.train(was_training)
    out = out.double().cpu() + float(level[0])
    if mc:
        pooled = out[..., 0].reshape(-1, c.horizon)  # (K*S, H) sample paths
        tail = (1 - c.interval_level) / 2
        levels = torch.tensor([tail, 0.5, 1 - tail], dtype=torch.float64)
        lower, point, upper = torch.quantile(pooled, levels, dim=0)  # (H,) each
    else:
        mean = out.mean((0, 1))  # (H, Q): the members' quantiles averaged
        lower, point, upper = mean[:, 0], mean[:, 1], mean[:, 2]
        lower, upper = torch.minimum(lower, point), torch.maximum(upper, point)  # quantiles may cross
    raw = [scaler.inverse(v[:steps].numpy()) for v in (point, lower, upper)]
    return Forecast(*raw)


def _roll(member: Member, x: Tensor, horizon: int, sample: bool) -> Tensor:
    """Autoregressive forecast of one member from the lookback x (L, S, F): (S, H, Q) of the target column.

    Each step's median (or, sampling, the dropout draw) of every column is the next input.
    """
    out, state = member.rnn(x)  # (L, S, D*H)
    y = member.read(out[-1], sample).view(x.shape[1], member.num_features, member.num_quantiles)  # (S, F, Q)
    middle = member.num_quantiles // 2  # the median's index
    steps = [y[:, 0]]  # each (S, Q)
    for _ in range(horizon - 1):
        h, state = member.rnn.step(y[:, :, middle], state)  # (S, D*H)
        y = member.read(h, sample).view(x.shape[1], member.num_features, member.num_quantiles)
        steps.append(y[:, 0])
    return torch.stack(steps, 1)  # (S, H, Q)


# ---------------------------------------------------------------------- evaluation


def resolve_season(config: ForecastConfig, series: Series) -> int:
    return config.season or infer_season(series.times)


def check_length(series: Series, config: ForecastConfig) -> None:
    """The series must hold a training window plus the held-out horizon (walk-forward: the origins)."""
    if config.evaluation == "walk_forward":
        need = config.lookback + config.horizon + config.rolling_origins
        what = " of returns" if config.target == "returns" else ""
        if len(series.values) < need:
            raise ValueError(f"{series.source} has {len(series.values)} points{what}; walk-forward evaluation needs "
                             f"at least lookback + horizon + rolling_origins = {config.lookback} + {config.horizon} "
                             f"+ {config.rolling_origins} = {need} (one training window before the first of the "
                             f"{config.rolling_origins} origins); lower --rolling-origins or --lookback")
        return
    need = config.lookback + 2 * config.horizon
    if len(series.values) < need:
        raise ValueError(f"{series.source} has {len(series.values)} points; forecasting needs at least lookback + "
                         f"2 x horizon = {config.lookback} + 2 x {config.horizon} = {need} (one training window "
                         f"and the {config.horizon} held-out points); lower --lookback or --horizon")


def score(model: Forecaster, series: Series, season: int, config: ForecastConfig) -> tuple[dict, dict]:
    """The held-out metrics (the last ``horizon`` points) of the model beside seasonal naive and ETS, the
    rolling-origin figures, and the curves for the plot; walk-forward: ``rnnkit.tasks.walk_forward``."""
    if config.evaluation == "walk_forward":
        predict = partial(forecast, model, source=series.source)  # predict(history, steps)
        forecasts = walk_forward_forecasts(predict, series.values, config.rolling_origins, config.horizon)
        result, curves = score_walk_forward(series, forecasts, config.target, config.interval_level)
        return {"task": NAME, "split": "test", **result}, curves
    H = config.horizon
    y = series.target
    n_train = len(y) - H
    origins = sorted({n_train + k * max(1, H // config.rolling_origins) for k in range(config.rolling_origins)})
    origins = [o for o in origins if o < len(y)]
    rows, curves, form = [], {}, None
    for origin in origins:
        actual = y[origin : origin + H]
        steps = len(actual)
        history = y[:origin]
        scale = mase_scale(history, season)
        ours = forecast(model, series.values[:origin], steps, series.source)
        naive = seasonal_naive(history, steps, season)
        # the form is selected by AIC at the first origin and refit on each later one (18 fits -> 1)
        ets, form = ets_forecast(history[-config.ets_max_points:], steps, season, None if form is None else [form])
        row = {"mase": mase(actual, ours.point, scale), "smape": smape(actual, ours.point),
               "mape": mape(actual, ours.point), "coverage": coverage(actual, ours.lower, ours.upper),
               "seasonal_naive_mase": mase(actual, naive, scale), "seasonal_naive_smape": smape(actual, naive),
               "seasonal_naive_mape": mape(actual, naive),
               "ets_mase": None if ets is None else mase(actual, ets, scale),
               "ets_smape": None if ets is None else smape(actual, ets),
               "ets_mape": None if ets is None else mape(actual, ets),
               "ets_model": "none fit" if form is None else form.name()}
        rows.append(row)
        if origin == n_train:
            curves = {"forecast": ours, "seasonal_naive": naive, "ets": ets, "ets_model": row["ets_model"]}
    head = rows[0]
    result = {"task": NAME, "split": "test", "n": H, "horizon": H, "season": season, **head,
              "interval_level": config.interval_level, "strategy": config.strategy, "interval": config.interval,
              "rolling_origins": len(rows)}
    for key in ("mase", "smape", "coverage", "seasonal_naive_mase", "seasonal_naive_smape", "ets_mase", "ets_smape"):
        values = [r[key] for r in rows]
        result[f"rolling_{key}"] = None if None in values else float(np.mean(values))
    return result, curves


def plot_forecast(series: Series, curves: dict, result: dict, path: Path, history_points: int) -> Path:
    """The last ``history_points`` of the training part, the held-out actuals, the forecast with its
    interval band, seasonal naive and ETS."""
    from ..plots import plt, save

    H = result["horizon"]
    y = series.target
    n_train = len(y) - H
    x = series.times if series.times is not None else list(range(len(y)))
    start = max(0, n_train - history_points)
    ours: Forecast = curves["forecast"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(x[start:n_train], y[start:n_train], color="black", lw=1, label="training part")
    ax.plot(x[n_train:], y[n_train:], color="black", lw=1.5, ls=":", label="held out")
    band = f"{100 * result['interval_level']:.0f}% interval (coverage {result['coverage']:.2f})"
    ax.fill_between(x[n_train:], ours.lower, ours.upper, color="tab:blue", alpha=0.25, label=band)
    ax.plot(x[n_train:], ours.point, color="tab:blue", lw=1.5, label=f"rnnkit (MASE {result['mase']:.3f})")
    ax.plot(x[n_train:], curves["seasonal_naive"], color="tab:orange", lw=1, ls="--",
            label=f"seasonal naive (MASE {result['seasonal_naive_mase']:.3f})")
    if curves["ets"] is not None:
        ax.plot(x[n_train:], curves["ets"], color="tab:green", lw=1, ls="--",
                label=f"{curves['ets_model']} (MASE {result['ets_mase']:.3f})")
    ax.set_title(f"forecast: {series.source}, {series.columns[0]}, last {H} points held out")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return save(fig, path)


def describe_result(result: dict) -> str:
    ets = "n/a" if result["ets_mase"] is None else f"{result['ets_mase']:.3f}"
    return (f"test (last {result['horizon']} points): MASE {result['mase']:.3f} (seasonal naive "
            f"{result['seasonal_naive_mase']:.3f}, {result['ets_model']} {ets}), sMAPE {result['smape']:.2f}%, "
            f"{100 * result['interval_level']:.0f}% interval coverage {result['coverage']:.2f}; rolling over "
            f"{result['rolling_origins']} origins: MASE {result['rolling_mase']:.3f}")


# ---------------------------------------------------------------------- training


class ForecastTask:
    """The Trainer's view of the forecaster (``rnnkit.train.trainer.TrainingTask``). The evaluation is the loss
    on all training windows: 120 monthly points leave nothing for a validation split, and the held-out part
    must not choose the checkpoint."""

    name = NAME
    metric = "loss"
    higher_is_better = False

    def __init__(self, config: ForecastConfig, series: Series, season: int, seed: int, device: torch.device):
        self.config, self.series, self.season = config, series, season
        train_part = series.values[: len(series.values) - config.held_out()]  # (n_train, F)
        scaler = Scaler.fit(train_part, config.transform)
        self.z = torch.as_tensor(scaler.forward(train_part, series.source), dtype=torch.float32)  # (n_train, F)
        self.starts = window_starts(len(train_part), config.lookback, config.horizon).tolist()
        self.model = Forecaster(train_part.shape[1], config).to(device)
        self.model.set_scaler(scaler)
        self.stream = BatchStream(self.starts, config.batch_size, seed,
                                  partial(window_batch, z=self.z, config=config, device=device))
        self.device = device

    def shard(self, batch: Window, rank: int, world_size: int) -> Window:
        """This rank's windows of a batch under torchrun (the pinball loss is a mean over equal-sized windows)."""
        y_dim = 0 if batch.y.dim() == 2 else 1  # direct (B, H); autoregressive (L+H-1, B, F)
        return Window(split_batch(batch.x, rank, world_size, 1), split_batch(batch.y, rank, world_size, y_dim))

    def loss(self, batch: Window, carry):
        return window_loss(self.model, batch), None, int(batch.x.shape[1])

    def evaluate(self) -> dict:
        c = self.config
        x, y = make_windows(self.z, self.starts, c.lookback, c.horizon, c.strategy == "direct",
                            level_free=c.target == "levels")
        return {"loss": float(window_loss(self.model, Window(x.to(self.device), y.to(self.device)))),
                "windows": len(self.starts)}

    def describe(self) -> tuple[dict, None]:
        return {**self.config.model_settings(), "columns": self.series.columns, "season_used": self.season,
                "num_features": len(self.series.columns)}, None


def load_series(config: ForecastConfig) -> Series:
    series = read_series(config.data, config.columns(), config.time_column, config.series, config.format)
    series = log_returns(series) if config.target == "returns" else series
    check_length(series, config)
    return series


def train(config: ForecastConfig, train_config: TrainConfig, out: str | Path, resume: bool = False,
          console: Console | None = None, progress: bool = True) -> dict:
    """Train on the training part into the run directory ``out``; returns the Trainer's summary plus ``test``
    (the held-out metrics beside the baselines, also in ``test.json``) and writes ``plots/forecast.png``."""
    config.validate()
    console, _ = begin(train_config, out, resume, console)
    series = load_series(config)
    season = resolve_season(config, series)
    task = ForecastTask(config, series, season, train_config.seed, torch.device(train_config.device))
    started = time.perf_counter()
    summary = fit(task, train_config, out, resume, console, progress, lambda params: (
        f"forecast: {config.ensemble} x {'bi' if config.bidirectional else ''}{config.cell} {config.num_layers}x"
        f"{config.hidden_size}, {config.strategy}, {config.interval} intervals, {params:,} parameters; "
        f"{series.source}: {len(series.values)} points of {', '.join(series.columns)}, season {season}, "
        f"{len(task.starts)} training windows (lookback {config.lookback}, horizon {config.horizon})"))
    train_s = time.perf_counter() - started
    result, curves = score(task.model, series, season, config)
    (Path(out) / "test.json").write_text(json.dumps({**result, "train_s": round(train_s, 1)}) + "\n")
    plots = Path(out) / "plots"
    if config.evaluation == "walk_forward":
        plot_walk_forward(series, curves, result, plots / "forecast.png")
        if config.target == "returns":
            plot_long_or_flat(series, curves, plots / "long_or_flat.png")
        described = describe_walk_forward(result)
    else:
        plot_forecast(series, curves, result, plots / "forecast.png", history_points=4 * config.lookback)
        described = describe_result(result) + ";"
    console.print(f"{described} {summary['step']} steps in {train_s:.1f} s; run directory {out}", highlight=False)
    return {**summary, "train_s": train_s, "test": result}


# ---------------------------------------------------------------------- a trained model


@dataclass(eq=False, repr=False)
class TrainedForecaster(Trained):
    """A trained forecaster loaded from a checkpoint: ``predict`` and ``evaluate``."""

    task, config_class, what, needs = NAME, ForecastConfig, "a forecast model", ("columns", "num_features")

    columns: list[str]  # the series' columns it reads, the target first

    @classmethod
    def read(cls, ckpt: checkpoint.Checkpoint, config: ForecastConfig, path: Path) -> tuple[Forecaster, dict]:
        config.validate()  # a run that predates --target and --evaluation: levels, holdout
        return Forecaster(int(ckpt.config["num_features"]), config), {"columns": list(ckpt.config["columns"])}

    def _series(self, data: str | None, column: str | list[str] | None, time_column: str | None,
                format: str | None) -> Series:
        columns = split_columns(column) or self.columns
        if len(columns) != len(self.columns):
            raise ValueError(f"the model reads {len(self.columns)} column(s) ({', '.join(self.columns)}); "
                             f"--column names {len(columns)}")
        path = self.config.data if data is None else data
        series = read_series(path, columns, time_column or self.config.time_column, self.config.series,
                             format or (self.config.format if data is None else None))
        return log_returns(series) if self.config.target == "returns" else series

    def predict(self, data: str | None = None, *, column: str | list[str] | None = None,
                time_column: str | None = None, format: str | None = None, steps: int | None = None) -> list[dict]:
        """The next ``steps`` (default: the horizon) values after the end of the series: one dict per step with
        ``step``, ``time`` (where the series has time stamps), ``forecast``, ``lower`` and ``upper``."""
        series = self._series(data, column, time_column, format)
        result = forecast(self.model, series.values, steps, series.source)
        times = next_times(series.times, len(result.point))
        return [{"step": h + 1, **({"time": times[h].isoformat(sep=" ")} if times else {}),
                 "forecast": float(result.point[h]), "lower": float(result.lower[h]),
                 "upper": float(result.upper[h])} for h in range(len(result.point))]

    def evaluate(self, data: str | None = None, split: str = "test", *, column: str | list[str] | None = None,
                 time_column: str | None = None, format: str | None = None) -> dict:
        """The held-out metrics (the last ``horizon`` points of the series) beside seasonal naive and ETS; with
        walk-forward evaluation (the run's), those of ``rnnkit.tasks.walk_forward``."""
        if split != "test":
            raise ValueError(f"split must be test (the last horizon points), got {split!r}")
        series = self._series(data, column, time_column, format)
        check_length(series, self.config)
        season = self.config.season or infer_season(series.times)
        return score(self.model, series, season, self.config)[0]


# ---------------------------------------------------------------------- the task's SPEC (rnnkit.tasks.registry)

@dataclass
class SeriesArgs:
    data: str | None = field(default=None, metadata={"help": "a CSV or TSV file (default: the training run's "
                                                             "series)"})
    column: str | None = field(default=None, metadata={"help": "repeatable or comma-separated (default: the training "
                                                               "run's)", "repeatable": True})
    time_column: str | None = field(default=None, metadata={"help": "default: the training run's"})
    format: str | None = field(default=None, metadata={"help": "csv or tsv (default: from the extension)"})


@dataclass
class EvaluateArgs(SeriesArgs):
    pass


@dataclass
class PredictArgs(SeriesArgs):
    steps: int | None = field(default=None, metadata={"help": "steps ahead, at most the trained horizon (default: "
                                                              "it)"})


def run_predict(trained: TrainedForecaster, args: PredictArgs, as_json: bool) -> list | None:
    """``rnnkit forecast predict``: a header and one row per step, or the rows as JSON."""
    rows = trained.predict(**asdict(args))
    if as_json:
        print(json.dumps(rows))
        return None
    print("\t".join(rows[0]))  # step, time (with a time column), forecast, lower, upper
    for row in rows:
        print("\t".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    return None


def run_evaluate(trained: TrainedForecaster, args: EvaluateArgs, as_json: bool) -> dict | None:
    """``rnnkit forecast evaluate``: the metrics (one JSON object with --json); a walk-forward result's text ends
    with the plain sentence of ``rnnkit.tasks.walk_forward.verdict``."""
    result = trained.evaluate(**asdict(args))
    if as_json or result.get("evaluation") != "walk_forward":
        return result
    for key, value in result.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    print(f"Verdict: {verdict(result)}.")
    return None


def export_spec(model, trained: TrainedForecaster, what: str):
    """``rnnkit export``: the scaled window z -> the ensemble's quantiles."""
    from ..export import Flat, Port, Spec, random_features, swap_layers

    c = model.config
    F = model.scale_mean.shape[0]
    call = lambda m, z: (m(z),)  # noqa: E731
    K, Q = c.ensemble, len(c.quantiles())
    direct = c.strategy == "direct"
    fixed = c.lookback if direct and c.skip else None
    time = str(c.lookback) if fixed else "time"
    outputs = [Port("y", (str(K), "batch", str(c.horizon), str(Q)) if direct
                    else (str(K), time, "batch", str(F), str(Q)))]
    notes = ["z: the window as the task feeds it: each column scaled by the checkpoint's scaler (log where "
             "scale_log, then minus scale_mean, over scale_std)" + (" and minus the window's mean per column"
                                                                   if c.target == "levels" else "")]
    if c.interval == "mc_dropout":
        notes.append("interval mc_dropout: the file gives the point forecast only; the intervals need dropout at "
                     "inference (Forecaster(z, sample=True)), which the exported model does not have")
    if fixed:
        notes.append(f"the time axis is fixed at lookback = {fixed}: the direct strategy's skip connection is a "
                     "linear map of exactly that many inputs")
    return Spec(Flat(swap_layers(model), call), Flat(model, call), random_features(F, False),
                [Port("z", (time, "batch", str(F)))], outputs, what, fixed_time=fixed, notes=notes)


SPEC = TaskSpec(NAME, "time-series forecasting: train, evaluate, predict", ForecastConfig, train,
                TrainedForecaster.load, train_help="train a forecaster (default: the bundled air passengers)",
                train_defaults=FORECAST_TRAIN_DEFAULTS, export=export_spec,
                verbs={"evaluate": Verb("MASE, sMAPE and interval coverage on the last horizon points, beside "
                                        "seasonal naive and ETS, with the rolling-origin figures; walk-forward: "
                                        "MSE and MAE beside the random walk, with the Diebold-Mariano test",
                                        EvaluateArgs, run_evaluate),
                       "predict": Verb("the next horizon values after the end of the series, with the interval",
                                       PredictArgs, run_predict)})
