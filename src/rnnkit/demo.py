"""The demo (``make demo``, ``rnnkit demo``): a character language model learns Shakespeare.

It trains the ``lm`` task with its defaults on the bundled plays for a few minutes of CPU,
prints the validation loss beside the unigram baseline and a generated sample, and leaves
the run directory (checkpoints, metrics.jsonl, a loss curve) for ``rnnkit lm generate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from rich.console import Console

from .console import make_console


@dataclass
class DemoConfig:
    max_minutes: float = field(default=4.0, metadata={"help": "training time; with loading and sampling under 5 min"})
    steps: int | None = field(default=None, metadata={"help": "a step budget instead (for a quick look)"})
    out: str | None = field(default=None, metadata={"help": "run directory (default: runs/demo-DATE-TIME)"})
    seed: int = field(default=0, metadata={"help": "seed of the run and of the sample"})
    sample_length: int = field(default=400, metadata={"help": "characters to generate at the end"})
    progress: bool = field(default=True, metadata={"help": "show the progress bar"})


def run_demo(config: DemoConfig, console: Console | None = None) -> dict:
    """Train, report, sample; returns the training summary with the sample under ``"sample"``."""
    from .tasks.lm import LM_TRAIN_DEFAULTS, LMConfig, TrainedLM, train
    from .train.trainer import TrainConfig

    console = console or make_console()
    out = config.out or f"runs/demo-{datetime.now():%Y%m%d-%H%M%S}"
    budget = {"steps": config.steps} if config.steps is not None else {"max_minutes": config.max_minutes}
    # the demo's own budget replaces the lm's default step count
    train_config = TrainConfig(seed=config.seed, **{**LM_TRAIN_DEFAULTS, "steps": None, **budget})
    train_config.validate()  # before the message: --steps 0 is refused, not read as "no step budget"
    console.print(f"rnnkit demo: a character-level LSTM reads Shakespeare for "
                  f"{f'{config.steps} steps' if config.steps else f'{config.max_minutes:g} minutes'}", highlight=False)
    summary = train(LMConfig(), train_config, out, console=console, progress=config.progress)
    model = TrainedLM.load(out)
    prompt = "ROMEO."
    sample = prompt + "".join(model.generate(prompt, config.sample_length, temperature=0.8, seed=config.seed))
    console.print("\n[bold]A sample[/bold] (rnnkit lm generate --checkpoint "
                  f"{out} --prompt {prompt!r}):\n", highlight=False)
    console.print(sample, highlight=False, markup=False)
    return {**summary, "sample": sample, "out": out}
