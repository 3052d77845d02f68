"""PNG plots written by the tasks: loss curves (more plots join as tasks need them)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt  # noqa: E402


def save(fig, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG at ``path`` (making its folder), close it, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def loss_curve(records: list[dict], path: Path, title: str = "training", eval_key: str = "loss") -> Path:
    """Training loss per logged step and, where present, the evaluation's ``eval_key`` against steps."""
    train = [(r["step"], r["loss"]) for r in records if "loss" in r and "eval" not in r]
    evals = [(r["step"], r["eval"][eval_key]) for r in records if "eval" in r and eval_key in r["eval"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1)
    if evals:
        ax.plot(*zip(*evals), "o-", label=f"validation {eval_key}", lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def confusion_matrix(matrix: list[list[int]], labels: list[str], path: Path, title: str = "confusion matrix") -> Path:
    """A confusion matrix as a heat map, counts written in the cells; row = true label, column = predicted."""
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) > 4 else 0, ha="right"
                  if len(labels) > 4 else "center")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    return save(fig, path)


def ctc_alignment(features, log_probs, alphabet, frame_stack: int, path: Path, title: str = "CTC alignment") -> Path:
    """A log-mel spectrogram over its CTC posteriors: frames (10 ms) on a shared time axis.

    features (T, n_mels); log_probs (T', 1 + A), one row per ``frame_stack`` frames, class 0 the blank.
    The lower panel shows each class's probability per step; the labels of the greedy path are
    written where they fire.
    """
    probs = log_probs.float().exp().numpy()  # (T', 1 + A)
    names = ["blank", *("␣" if c == " " else c for c in alphabet)]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, gridspec_kw={"height_ratios": [1, 1.3]})
    T = features.shape[0]
    top.imshow(features.float().numpy().T, origin="lower", aspect="auto", cmap="magma", extent=(0, T, 0,
                                                                                                 features.shape[1]))
    top.set_ylabel("mel band")
    top.set_title(title)
    bottom.imshow(probs.T, origin="lower", aspect="auto", cmap="Blues", vmin=0, vmax=1,
                  extent=(0, probs.shape[0] * frame_stack, -0.5, len(names) - 0.5))
    bottom.set_yticks(range(len(names)))
    bottom.set_yticklabels(names, fontsize=7)
    previous = 0
    for step, label in enumerate(probs.argmax(-1).tolist()):
        if label != previous and label != 0:
            bottom.text((step + 0.5) * frame_stack, label, names[label], ha="center", va="center", color="red",
                        fontsize=9, fontweight="bold")
        previous = label
    bottom.set_xlabel("frame (10 ms)")
    bottom.set_ylabel("class")
    return save(fig, path)
