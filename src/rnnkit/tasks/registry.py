"""The task registry: every task is declared once, by the ``SPEC`` at the end of its own module.

A ``TaskSpec`` says what the command line, ``rnnkit.load`` and ``rnnkit export`` need to know of a
task: its name and one-line help, its Config dataclass and the Trainer's defaults for it, ``train``,
the loader of the trained object, its verbs (each with a small dataclass of its own flags) and how
it exports (a function) or why it does not (a sentence). ``rnnkit.cli`` builds every subcommand
from these, so adding a task is one module ending in its SPEC plus one name in ``MODULES``.

The Python API has one shape for every task::

    trained = rnnkit.load(run_dir, device="cpu")     # the task's Trained* object, from config.json's task
    trained.evaluate([data[, split]], **options) -> dict  # options: the fields of SPEC.verbs["evaluate"].args
    trained.predict(inputs, **options) -> list            # one result per input

By position ``evaluate`` takes at most ``data`` then ``split`` (where the task has them: lm has no split,
caption, nextframe and lab neither, as their data are generated) and every other option by keyword only;
``predict`` takes only its inputs by position. tests/test_registry.py checks both shapes for every task.

``evaluate`` takes its options by keyword, named as the verb's flags (``--beam-size`` is ``beam_size``),
each with the verb's default, so ``rnnkit TASK evaluate --split dev`` is
``rnnkit.load(DIR).evaluate(split="dev")``; the CLI calls exactly this method with those keywords
(tests/test_registry.py checks that every field is a keyword of the method). A verb whose output is more
than a dict of metrics (``lm generate``, ``asr transcribe``, the predict verbs' one line per input,
video's ``--reference`` run) names a ``run`` function in its task module that reads its flags (a file of
texts, a list of clips), calls the same public method and prints what it returned.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The task modules of rnnkit.tasks, listed once: each ends with its SPEC.
MODULES = ("lm", "classify", "speech", "video", "asr", "tag", "translate", "caption", "nextframe", "lab", "forecast")


@dataclass(frozen=True)
class Verb:
    """One ``rnnkit TASK VERB`` besides ``train``: it loads ``--checkpoint`` and calls the trained object's
    method of the same name with the fields of ``args`` (a dataclass, one flag per field) as keywords."""

    help: str
    args: type | None = None  # a dataclass of the verb's own flags; None: no flags besides the shared ones
    # run(trained, args, as_json) -> a dict to print, or None once it printed; None: the method, its dict printed
    run: Callable[[Any, Any, bool], dict | None] | None = None
    json: str | None = "print one JSON object"  # the help of its --json; None: the verb takes no --json


@dataclass
class SplitArgs:
    """The flag of an evaluate verb whose task splits its own data (``rnnkit.tasks.base.SPLITS``); the verb's
    dataclass takes it as a base, beside its own ``data``."""

    split: str = field(default="test", metadata={"help": "train, dev or test"})


@dataclass(frozen=True)
class TaskSpec:
    """A task as the CLI, ``rnnkit.load`` and export see it."""

    name: str  # the CLI name and config.json's "task"
    help: str  # one line, shown by ``rnnkit --help``
    config: type  # the task's Config dataclass: the flags of ``train``
    train: Callable[..., dict]  # train(config, train_config, out, resume=, console=, progress=) -> summary
    load: Callable[..., Any]  # load(directory, device) -> the trained object
    train_help: str  # the help of ``rnnkit TASK train``
    # TrainConfig values where the task's differ; "steps" is the count trained when neither --steps nor
    # --max-minutes is given (the same on every machine)
    train_defaults: dict = field(default_factory=dict)
    verbs: dict[str, Verb] = field(default_factory=dict)
    # export(model, trained, what) -> rnnkit.export.Spec, or a sentence that says why the task cannot export
    export: Callable[..., Any] | str = "it declares no export"
    # sub-commands that each train one variant (lab's problems: {name: help}); their train takes variant=name
    variants: dict[str, str] = field(default_factory=dict)
    variant_defaults: Callable[[str], dict] | None = None  # per variant, replaces train_defaults


_REGISTERED: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    """Add ``spec`` (a task defined outside rnnkit.tasks, or a test's toy task); returns it."""
    if not dataclasses.is_dataclass(spec.config):
        raise TypeError(f"TaskSpec {spec.name!r}: config must be a dataclass, got {spec.config!r}")
    _REGISTERED[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a task added by ``register`` (tests clean up their toy task)."""
    _REGISTERED.pop(name, None)


def specs() -> dict[str, TaskSpec]:
    """Every task: rnnkit's own, in MODULES' order, then the registered ones."""
    found = {}
    for module in MODULES:
        spec = importlib.import_module(f"{__package__}.{module}").SPEC
        found[spec.name] = spec
    return {**found, **_REGISTERED}


def spec(name: str) -> TaskSpec:
    """The TaskSpec called ``name``; a ValueError lists the known names."""
    known = specs()
    if name not in known:
        raise ValueError(f"no task {name!r}: rnnkit knows {', '.join(known)}")
    return known[name]
