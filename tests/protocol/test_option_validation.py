"""Training option values checked before any work: ``TrainOptions.validate``.

Each bad value raises a ConfigError whose message names the option by its command-line
flag and whose hint says what to give instead; every value the defaults and the edges of
the valid ranges allow passes. Standard library only, as protocol/ is.
"""

from __future__ import annotations

import math

import pytest

from terraseg.protocol.errors import ConfigError
from terraseg.protocol.options import DEFAULTS, TrainOptions, option_specs


def opts(**values: object) -> TrainOptions:
    return TrainOptions.build(raster="r.tif", labels="l.gpkg", out="m.tsm").replace(**values)


def refused(flag: str, **values: object) -> ConfigError:
    """The ConfigError of ``values``; its message names ``flag`` and it has a hint."""
    with pytest.raises(ConfigError) as exc:
        opts(**values).validate()
    err = exc.value
    assert flag in err.message, err.message
    assert len(err.hint) > 10, err.hint
    return err


@pytest.mark.parametrize("values, flag", [
    ({"lr": math.nan}, "--lr"),
    ({"lr": math.inf}, "--lr"),
    ({"lr": 0.0}, "--lr"),
    ({"lr": -1e-3}, "--lr"),
    ({"epochs": 0}, "--epochs"),
    ({"epochs": -3}, "--epochs"),
    ({"epochs": 2.5}, "--epochs"),
    ({"epochs": True}, "--epochs"),
    ({"batch_size": -1}, "--batch-size"),
    ({"batch_size": 0}, "--batch-size"),
    ({"samples_per_epoch": 0}, "--samples-per-epoch"),
    ({"patience": 0}, "--patience"),
    ({"weight_decay": -0.1}, "--weight-decay"),
    ({"weight_decay": math.inf}, "--weight-decay"),
    ({"val_fraction": 1.5}, "--val-fraction"),
    ({"val_fraction": 1.0}, "--val-fraction"),
    ({"val_fraction": -0.1}, "--val-fraction"),
    ({"test_fraction": math.nan}, "--test-fraction"),
    ({"cutmix": 1.5}, "--cutmix"),
    ({"pixel_noise": math.nan}, "--pixel-noise"),
    ({"channel_noise": -1.0}, "--channel-noise"),
    ({"tile_px": 8}, "--tile-size"),
    ({"tile_px": 0}, "--tile-size"),
    ({"tile_px": 100_000}, "--tile-size"),
    ({"patch_px": 1}, "--patch-size"),
    ({"block_px": 0}, "--block-size"),
    ({"stride_px": -1}, "--stride"),
    ({"planes": (0, 8, 16)}, "--planes"),
    ({"blocks": ()}, "--blocks"),
    ({"base_width": -4}, "--base-width"),
    ({"split_block_px": 0}, "--split-block-size"),
    ({"seed": -5}, "--seed"),
    ({"seed": 2**32}, "--seed"),
    ({"num_nodes": 0}, "--num-nodes"),
    ({"num_workers": -1}, "--num-workers"),
    ({"split": "diagonal"}, "--split"),
    ({"optimizer": "sgd"}, "--optimizer"),
    ({"devices": "0"}, "--devices"),
    ({"devices": "-2"}, "--devices"),
    ({"devices": "gpu0"}, "--devices"),
    ({"devices": "0,0"}, "--devices"),
    ({"precision": "8"}, "--precision"),
    ({"class_field": 3}, "--class-field"),
    ({"out": ""}, "--out"),
    ({"out": "models/"}, "--out"),
])
def test_bad_value_names_its_flag(values: dict, flag: str) -> None:
    refused(flag, **values)


def test_messages_say_the_valid_range_and_a_valid_value() -> None:
    err = refused("--lr", lr=0.0)
    assert "above 0" in err.message and "--lr 0.001" in err.hint
    err = refused("--val-fraction", val_fraction=1.5)
    assert "below 1" in err.message and "--val-fraction 0.2" in err.hint
    err = refused("--lr", lr=math.nan)
    assert "finite" in err.message


def test_fractions_must_leave_regions_for_training() -> None:
    err = refused("--val-fraction", val_fraction=0.6, test_fraction=0.5)
    assert "--test-fraction" in err.message
    refused("--val-fraction", val_fraction=0.5, test_fraction=0.5)
    opts(val_fraction=0.5, test_fraction=0.49).validate()


def test_folds() -> None:
    """k_folds and fold are set by cv/compare (their --k), not by a flag of their own."""
    with pytest.raises(ConfigError) as exc:
        opts(k_folds=1).validate()
    assert "--k 2" in exc.value.hint
    with pytest.raises(ConfigError, match="Fold 3"):
        opts(k_folds=3, fold=3).validate()
    with pytest.raises(ConfigError, match="'fold'"):
        opts(k_folds=3, fold=-1).validate()
    opts(k_folds=3, fold=2).validate()


@pytest.mark.parametrize("values", [
    {}, {"lr": 1e-9}, {"val_fraction": 0.0}, {"val_fraction": 0.0, "test_fraction": 0.99},
    {"cutmix": 1.0}, {"cutmix": 0.0}, {"weight_decay": 0.0}, {"tile_px": 16},
    {"tile_px": 8192}, {"seed": 2**32 - 1}, {"devices": "-1"}, {"devices": "0,1"},
    {"devices": "2"}, {"devices": "auto"}, {"precision": "bf16-mixed"}, {"epochs": 1},
    {"stride_px": 0}, {"base_width": 0}, {"class_field": None}, {"lr": 1}, {"out": "m"},
])
def test_valid_values_pass(values: dict) -> None:
    o = opts(**values)
    assert o.validate() is o


def test_defaults_are_valid() -> None:
    DEFAULTS.replace(out="m.tsm").validate()


def test_every_numeric_option_has_a_lower_bound() -> None:
    """So validate() checks every number (and Processing gets a minimum for it)."""
    for spec in option_specs():
        if spec.annotation in (int, float):
            assert spec.minimum is not None or spec.above is not None, spec.name


def test_options_set_by_commands_are_named_by_field() -> None:
    spec = next(s for s in option_specs() if s.name == "k_folds")
    assert spec.label == "'k_folds'"
    assert next(s for s in option_specs() if s.name == "lr").label == "--lr"
