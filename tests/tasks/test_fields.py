"""What the task Configs share (rnnkit.tasks.fields): the checks, model_settings and the regularizer group."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rnnkit.tasks import registry
from rnnkit.tasks.classify import Classifier, ClassifyConfig
from rnnkit.tasks.fields import TaskConfig, check_choice, check_fractions, check_ints
from rnnkit.tasks.lm import LMConfig

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
