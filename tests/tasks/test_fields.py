"""What the task Configs share (rnnkit.tasks.fields): the checks, model_settings, the field groups and with_defaults."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rnnkit.tasks import registry
from rnnkit.tasks.asr import ASRConfig
from rnnkit.tasks.caption import CaptionConfig
from rnnkit.tasks.classify import Classifier, ClassifyConfig
from rnnkit.tasks.fields import (
    BatchFields,
    ExampleFields,
    TaskConfig,
    check_choice,
    check_fractions,
    check_ints,
    with_defaults,
)
from rnnkit.tasks.lm import LMConfig
from rnnkit.tasks.speech import SpeechConfig
from rnnkit.tasks.translate import TranslateConfig

REGULARIZERS = ("input_dropout", "hidden_dropout", "output_dropout", "zoneout", "weight_drop")


@dataclasses.dataclass
class Sizes:
    width: int = 1
    depth: int = 0
    share: float = 0.5


@pytest.mark.parametrize("value", [0, -3, 1.0, True, "4", None])
def test_check_ints_refuses_what_is_not_a_positive_int(value):
    # catches a check that lets bools through (True == 1) or takes any number >= 1
    with pytest.raises(ValueError, match=rf"^width must be a positive int, got {value!r}$"):
        check_ints(Sizes(width=value), ("width", "depth"))


def test_check_ints_minimum_zero():
    check_ints(Sizes(width=5), ("width",))
    check_ints(Sizes(depth=0), ("depth",), minimum=0)
    with pytest.raises(ValueError, match=r"^depth must be an int >= 0, got -1$"):
        check_ints(Sizes(depth=-1), ("width", "depth"), minimum=0)


@pytest.mark.parametrize("value", [1.0, -0.1, 3])
def test_check_fractions_refuses_outside_zero_one(value):
    check_fractions(Sizes(share=0.0), ("share",))
    with pytest.raises(ValueError, match=rf"^share must be in \[0, 1\), got {value!r}$"):
        check_fractions(Sizes(share=value), ("share",))


def test_check_choice_lists_the_choices():
    check_choice("pooling", "max", ("last", "max"))
    check_choice("series", "b", {"a": 1, "b": 2})  # a dict's keys are its choices
    with pytest.raises(ValueError, match=r"^pooling must be one of last, max, got 'min'$"):
        check_choice("pooling", "min", ("last", "max"))


def test_every_task_config_records_every_field_and_round_trips_through_json():
    """config.json is model_settings(); a Config rebuilt from it equals the one that wrote it (inherited fields too)."""
    for name, spec in registry.specs().items():
        if not issubclass(spec.config, TaskConfig):
            continue  # a test's registered toy task
        config = spec.config()
        settings = json.loads(json.dumps(config.model_settings()))
        assert set(settings) == {f.name for f in dataclasses.fields(spec.config)}, name
        assert spec.config(**settings) == config, name


@pytest.mark.parametrize("config_type", [LMConfig, ClassifyConfig])
def test_regularizer_fields_are_config_fields(config_type):
    # catches a Config that drops the group: its flags and the keys of old config.json files would vanish
    assert set(REGULARIZERS) <= {f.name for f in dataclasses.fields(config_type)}
    config = config_type(zoneout=0.25, weight_drop=0.5, input_dropout=0.1)
    assert config.regularizers() == {"input_dropout": 0.1, "hidden_dropout": 0.0, "output_dropout": 0.0,
                                     "zoneout": 0.25, "weight_drop": 0.5}


def test_classifier_builds_its_layer_with_the_regularizers():
    # catches a model that builds its Recurrent without them (the flags would parse and do nothing)
    built = Classifier(10, 2, ClassifyConfig(zoneout=0.25, weight_drop=0.5, input_dropout=0.1)).rnn.regularizers
    assert (built.input_dropout, built.zoneout, built.weight_drop) == (0.1, (0.25, 0.25), 0.5)


@dataclasses.dataclass
class Group:
    width: int = dataclasses.field(default=1, metadata={"help": "the width"})
    depth: int = dataclasses.field(default=2, metadata={"help": "the depth"})


def test_with_defaults_sets_the_default_keeps_the_help_and_the_place():
    # catches a decorator that only sets a class attribute (__init__ would keep the group's 1), one that drops the
    # field's metadata (the flag would lose its help) or one that moves the field after the class's own fields
    @dataclasses.dataclass
    @with_defaults(width=7)
    class Task(TaskConfig, Group):
        own: str = dataclasses.field(default="a", metadata={"help": "its own"})

    assert Task().width == 7 and Task(width=3).width == 3 and Task().depth == 2
    assert [(f.name, f.default, f.metadata["help"]) for f in dataclasses.fields(Task)] == [
        ("width", 7, "the width"), ("depth", 2, "the depth"), ("own", "a", "its own")]
    assert Group().width == 1  # the group itself is unchanged


def test_with_defaults_refuses_what_would_change_nothing():
    # catches a decorator that silently ignores a misspelt name, a field the class declares itself, or being
    # written above @dataclass (where __init__ is already built with the group's default)
    with pytest.raises(TypeError, match=r"with_defaults\(wdth=\.\.\.\) on Task: the class has no group with it"):
        @with_defaults(wdth=7)
        class Task(TaskConfig, Group):
            pass
    with pytest.raises(TypeError, match=r"with_defaults\(depth=\.\.\.\) on Own: the class declares it itself"):
        @with_defaults(depth=7)
        class Own(TaskConfig, Group):
            depth: int = 3
    with pytest.raises(TypeError, match="write it below @dataclass"):
        @with_defaults(width=7)
        @dataclasses.dataclass
        class Above(TaskConfig, Group):
            pass


@pytest.mark.parametrize("config_type,expected", [
    (LMConfig, {"cell": "lstm", "hidden_size": 512, "num_layers": 1, "dropout": 0.0}),
    (SpeechConfig, {"cell": "gru", "hidden_size": 64, "pooling": "mean", "head_dropout": 0.3}),
    (ASRConfig, {"cell": "lstm", "hidden_size": 128, "num_layers": 2, "dropout": 0.1}),
    (CaptionConfig, {"cell": "lstm", "hidden_size": 128, "attention": "multiplicative", "beam_size": 3}),
    (TranslateConfig, {"beam_size": 5}),
])
def test_tasks_keep_their_own_defaults_for_group_fields(config_type, expected):
    # catches a task whose with_defaults was lost: it would train with the group's defaults, and its old
    # config.json files would no longer match a fresh run's flags
    config = config_type()
    assert {name: getattr(config, name) for name in expected} == expected


@pytest.mark.parametrize("config_type", [ClassifyConfig, SpeechConfig])
@pytest.mark.parametrize("values,message", [({"pooling": "sum"}, r"^pooling must be one of last, mean, max, "
                                             r"attention, got 'sum'$"),
                                            ({"head_dropout": 1.0}, r"^head_dropout must be in \[0, 1\), got 1.0$")])
def test_pooling_group_checks_its_fields_in_every_task(config_type, values, message):
    # catches a task whose validate no longer checks the group's fields (the checks moved into PoolingFields)
    with pytest.raises(ValueError, match=message):
        config_type(**values).validate()


def test_with_defaults_fills_the_help_templates_with_the_class_words():
    # catches a decorator that leaves "{units} per step" in --help, fills a field only when its default is given, or
    # fills the group's own field (another task would then show this task's words)
    @dataclasses.dataclass
    @with_defaults(batch_size=8)
    class Task(TaskConfig, ExampleFields):
        unit, units = "clip", "clips"

    helps = {f.name: (f.default, f.metadata["help"]) for f in dataclasses.fields(Task)}
    assert helps == {"batch_size": (8, "clips per step"), "bidirectional": (True, "read each clip in both directions")}
    assert [f.metadata["help"] for f in dataclasses.fields(ExampleFields)] == ["{units} per step",
                                                                               "read each {unit} in both directions"]


def test_with_defaults_refuses_a_template_the_class_has_no_words_for():
    # catches a Config that forgets its unit: its --help would print "{units} per step"
    with pytest.raises(TypeError, match=r"Task sets no units, which the help of its field batch_size names"):
        @with_defaults()
        class Task(TaskConfig, BatchFields):
            pass


def test_every_task_help_names_its_own_examples():
    # catches a task Config that takes a templated group without with_defaults (a raw "{unit}" in --help) and a
    # unit that is not the one its batch help names
    for name, spec in registry.specs().items():
        if not issubclass(spec.config, TaskConfig):
            continue  # a test's registered toy task
        helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(spec.config)}
        assert not [h for h in helps.values() if "{" in h], name
        if name != "lm":  # lm's batch is its parallel streams of text, a field of its own
            assert helps["batch_size"] == f"{spec.config.units} per step", name


@pytest.mark.parametrize("config_type", [LMConfig, ClassifyConfig])
def test_token_fields_check_the_level(config_type):
    # catches a Config whose validate drops the group's check (an unknown level would fail later, deep in the data)
    with pytest.raises(ValueError, match="level must be 'char' or 'word', got 'byte'"):
        config_type(level="byte").validate()
