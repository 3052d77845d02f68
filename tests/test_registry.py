"""The task registry: a task defined here, in the test file, is a command of the CLI and a ``rnnkit.load`` target.

Adding a task is one module ending in a ``TaskSpec``; this test is that module. Nothing in rnnkit names the
toy task, so a CLI or loader that lists tasks by hand fails here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import rnnkit
from rnnkit.cli import build_parser, main
from rnnkit.tasks import registry
from rnnkit.tasks.registry import TaskSpec, Verb
from rnnkit.train import checkpoint


@dataclass
class ToyConfig:
    scale: float = field(default=2.0, metadata={"help": "what the toy model multiplies by"})
    offset: int = field(default=0, metadata={"help": "added after the product"})


@dataclass
class ToyEvaluateArgs:
    split: str = field(default="test", metadata={"help": "dev or test"})


@dataclass
class ToyPredictArgs:
    values: list | None = field(default=None, metadata={"help": "numbers to transform", "nargs": "+"})


def toy_train(config: ToyConfig, train_config, out, resume=False, console=None, progress=True) -> dict:
    """Writes last/ as a real task does: the weight and config.json with the task's name and the training steps."""
    ckpt = checkpoint.Checkpoint(model={"weight": torch.tensor([config.scale])},
                                 config={"task": "toy", **dataclasses.asdict(config),
                                         "train": {"steps": train_config.steps, "seed": train_config.seed,
                                                   "max_minutes": train_config.max_minutes}})
    checkpoint.save(Path(out) / "last", ckpt)
    return {"test": {"scale": config.scale, "resumed": resume}}


class TrainedToy:
    def __init__(self, weight: float, offset: int) -> None:
        self.weight, self.offset = weight, offset

    @classmethod
    def load(cls, directory, device="cpu") -> TrainedToy:
        ckpt = checkpoint.load(checkpoint.resolve(directory))
        return cls(float(ckpt.model["weight"]), ckpt.config["offset"])

    def evaluate(self, split: str = "test") -> dict:
        return {"task": "toy", "split": split, "value": self.weight * (1 if split == "test" else 10) + self.offset}

    def predict(self, values) -> list[float]:
        return [self.weight * float(v) + self.offset for v in values]


def show_predictions(trained: TrainedToy, args: ToyPredictArgs, as_json: bool) -> None:
    for value, y in zip(args.values, trained.predict(args.values)):
        print(f"{value}\t{y}")


SPEC = TaskSpec("toy", "a task defined in a test", ToyConfig, toy_train, TrainedToy.load, train_help="train the toy",
                train_defaults={"steps": 3}, export="it is a toy",
                verbs={"evaluate": Verb("the toy's value", ToyEvaluateArgs),
                       "predict": Verb("each value transformed", ToyPredictArgs, show_predictions, json=None)})


@pytest.fixture
def toy():
    registry.register(SPEC)
    yield SPEC
    registry.unregister("toy")


def test_a_registered_task_trains_evaluates_and_predicts_through_the_cli(toy, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["toy", "train", "--out", str(out), "--scale", "3", "--offset", "1", "--no-progress"]) == 0
    saved = checkpoint.load(out / "last").config
    assert saved["scale"] == 3.0 and saved["train"]["steps"] == 3  # the task's train_defaults reach TrainConfig
    capsys.readouterr()
    assert main(["toy", "evaluate", "--checkpoint", str(out), "--split", "dev", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"task": "toy", "split": "dev", "value": 31.0}
    assert main(["toy", "evaluate", "--checkpoint", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == ["task: toy", "split: test", "value: 4.0000"]
    assert main(["toy", "predict", "--checkpoint", str(out), "1", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == ["1\t4.0", "2\t7.0"]


@pytest.mark.parametrize("flags,steps,minutes", [([], 4, None), (["--max-minutes", "2"], None, 2.0),
                                                  (["--steps", "9", "--max-minutes", "2"], 9, 2.0)])
def test_default_steps_apply_without_a_budget_and_a_time_budget_alone_plans_its_own(tmp_path, flags, steps, minutes):
    registry.register(dataclasses.replace(SPEC, train_defaults={"steps": 4}))
    try:
        assert main(["toy", "train", "--out", str(tmp_path / "run"), "--no-progress", *flags]) == 0
    finally:
        registry.unregister("toy")
    saved = checkpoint.load(tmp_path / "run" / "last").config["train"]
    assert (saved["steps"], saved["max_minutes"]) == (steps, minutes)


def test_rnnkit_load_finds_a_registered_task_and_evaluate_takes_the_verb_fields(toy, tmp_path):
    main(["toy", "train", "--out", str(tmp_path / "run"), "--scale", "5", "--no-progress"])
    trained = rnnkit.load(tmp_path / "run")
    assert isinstance(trained, TrainedToy)
    assert trained.evaluate(**dataclasses.asdict(ToyEvaluateArgs(split="dev"))) == {"task": "toy", "split": "dev",
                                                                                     "value": 50.0}


def test_resume_keeps_the_runs_config_where_no_flag_is_given(toy, tmp_path):
    out = str(tmp_path / "run")
    main(["toy", "train", "--out", out, "--scale", "4", "--steps", "7", "--no-progress"])
    main(["toy", "train", "--out", out, "--resume", "--offset", "2", "--no-progress"])
    saved = checkpoint.load(tmp_path / "run" / "last").config
    assert (saved["scale"], saved["offset"], saved["train"]["steps"]) == (4.0, 2, 7)


def test_an_unknown_task_in_a_checkpoint_names_the_known_ones(tmp_path):
    checkpoint.save(tmp_path / "ckpt", checkpoint.Checkpoint(model={"w": torch.zeros(1)}, config={"task": "toy"}))
    with pytest.raises(checkpoint.CheckpointError, match=r"names task 'toy'.*it knows: lm, classify"):
        rnnkit.load(tmp_path / "ckpt")


def test_every_task_module_declares_its_spec_under_its_own_name():
    specs = registry.specs()
    assert list(specs) == list(registry.MODULES)
    for name, spec in specs.items():
        # load is the inherited Trained.load, bound to the task's own trained class
        assert spec.load.__self__.__module__ == spec.train.__module__ == f"rnnkit.tasks.{name}", name
        assert callable(spec.export) or spec.export.strip(), name  # how it exports, or why it does not


def all_parsers(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from all_parsers(sub)


def test_help_shows_each_default_once_and_every_flag_has_help():
    """The defaults come from the dataclasses, added once: a hand-written '(default: ...)' beside an added one, or
    a formatter that adds another, shows up as two."""
    for parser in all_parsers(build_parser()):
        for action in parser._actions:
            text = action.help or ""
            assert text.count("(default:") <= 1, f"{parser.prog} {action.option_strings}: {text!r}"
            assert "default: None" not in text, f"{parser.prog} {action.option_strings}: {text!r}"
        assert parser.formatter_class is not argparse.ArgumentDefaultsHelpFormatter, parser.prog


def test_shared_flags_are_spelled_the_same_in_every_verb():
    """--checkpoint is required and --device defaults to cpu in every verb of every task."""
    for spec in registry.specs().values():
        for verb in spec.verbs if not spec.variants else ():
            args = build_parser().parse_args([spec.name, verb, "--checkpoint", "DIR", *_positionals(spec, verb)])
            assert (args.checkpoint, args.device) == ("DIR", "cpu"), (spec.name, verb)


def _positionals(spec, verb) -> list[str]:
    args = spec.verbs[verb].args
    fields = dataclasses.fields(args) if args is not None else ()
    return ["x" for f in fields if "nargs" in f.metadata and f.metadata["nargs"] in (None, "+")]


def test_nextframe_hidden_size_keeps_hidden_channels_as_an_alias():
    parser = build_parser()
    for flag in ("--hidden-size", "--hidden-channels"):
        assert parser.parse_args(["nextframe", "train", flag, "7"]).hidden_channels == 7


def test_every_verb_without_a_run_function_matches_its_methods_keywords():
    """The CLI calls ``trained.<verb>(**fields)``: every field of the verb's dataclass must be a keyword of the
    trained object's method (a renamed flag or parameter fails here, not in a user's shell)."""
    import inspect

    for spec in registry.specs().values():
        trained_cls = spec.load.__self__  # the Trained* class whose classmethod loads it
        for name, verb in spec.verbs.items():
            if verb.run is not None or verb.args is None:
                continue
            keywords = set(inspect.signature(getattr(trained_cls, name)).parameters) - {"self"}
            fields = {f.name for f in dataclasses.fields(verb.args)}
            assert fields <= keywords, f"{spec.name} {name}: flags {fields - keywords} are not keywords of {name}()"


def test_evaluate_and_predict_take_the_same_positional_shape_in_every_task():
    """One Python shape: ``evaluate`` takes at most ``data`` then ``split`` by position (where the task has them)
    and every other option by keyword only; ``predict`` takes its inputs as its one positional argument. A task
    that put ``split`` first (caption and nextframe did) or ``labels`` between ``data`` and ``split`` (video did)
    fails here."""
    import inspect

    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    for spec in registry.specs().values():
        trained_cls = spec.load.__self__
        evaluate = [p.name for p in inspect.signature(trained_cls.evaluate).parameters.values()
                    if p.kind in positional][1:]  # without self
        assert evaluate == ["data", "split"][: len(evaluate)], f"{spec.name}.evaluate positional {evaluate}"
        if hasattr(trained_cls, "predict"):
            predict = [p for p in inspect.signature(trained_cls.predict).parameters.values()
                       if p.kind in positional][1:]
            assert len(predict) == 1, f"{spec.name}.predict positional {[p.name for p in predict]}"
    assert callable(getattr(registry.spec("speech").load.__self__, "predict", None))
    assert "predict" in registry.spec("speech").verbs


def test_cli_imports_no_task_module():
    """cli.py knows tasks only through the registry: an import of a task module there (lab_data for the
    gradients command's choices, as it had) fails here."""
    import ast

    import rnnkit.cli

    tree = ast.parse(open(rnnkit.cli.__file__, encoding="utf-8").read())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    tasks = {name for name in imported if name.startswith("tasks")}
    assert tasks == {"tasks.registry"}, tasks


def test_no_task_name_is_written_as_a_string_outside_its_module_the_registry_and_data():
    """A task's name as a string constant anywhere in the package but its own module, the registry and data/
    fails here (walk_forward.py wrote "forecast" into its results): a task is declared once."""
    import ast

    package = Path(rnnkit.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative.startswith("data/") or relative == "tasks/registry.py":
            continue
        strings = {node.value for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                   if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        found += [(relative, name) for name in registry.MODULES if name in strings and relative != f"tasks/{name}.py"]
    assert len(list(package.rglob("*.py"))) > 50  # the package was read, not an empty folder
    assert found == []
