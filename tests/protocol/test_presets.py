"""Training presets (protocol/presets.py) and ``--preset`` on the training commands."""

from __future__ import annotations

import pytest

from terraseg.cli.options import GIVEN, train_options
from terraseg.cli.parser import build_parser
from terraseg.protocol.errors import ConfigError
from terraseg.protocol.jobs import Job
from terraseg.protocol.options import SPEC_BY_JOB_KEY, TrainOptions, check_value
from terraseg.protocol.presets import TRAIN_PRESETS, apply_preset, preset_values

BASE = ["--raster", "r.tif", "--labels", "l.gpkg"]


def parse(*args: str, command: str = "train") -> TrainOptions:
    out = ["--out", "m.tsm"] if command == "train" else ["--out-dir", "d"]
    return train_options(build_parser().parse_args([command, *BASE, *out, *args]),
                         out="" if command == "train" else "unused.tsm")


@pytest.mark.parametrize("name", sorted(TRAIN_PRESETS))
def test_every_preset_names_training_options_with_valid_values(name: str) -> None:
    for key, value in TRAIN_PRESETS[name].items():
        assert key in SPEC_BY_JOB_KEY, f"{name}: '{key}' is not a job key"
        check_value(SPEC_BY_JOB_KEY[key], value)
    TrainOptions.build(raster="r", labels="l", out="m.tsm",
                       **preset_values(name)).validate()


def test_seed003_is_the_studys_setup() -> None:
    opts = parse("--preset", "seed003")
    assert opts.network.model == "unet_resnet50" and opts.network.tile_px == 128
    assert (opts.optim.optimizer, opts.optim.lr, opts.optim.weight_decay) == ("adam", 1e-3, 0.0)
    assert (opts.optim.loss, opts.optim.epochs, opts.optim.patience) == ("dice", 40, 40)
    assert opts.augment.augment == "flip"
    # options the preset leaves alone keep the engine's defaults
    assert opts.optim.batch_size == 128 and opts.split.val_fraction == 0.2


def test_preset_values_are_by_field_name() -> None:
    values = preset_values("seed003")
    assert values["tile_px"] == 128 and "tile_size" not in values
    assert apply_preset({"tile_px": 64, "lr": 0.5}, "seed003", {"lr"}) == {
        **values, "lr": 0.5}


@pytest.mark.parametrize("flags, field, wanted", [
    (["--epochs", "5"], ("optim", "epochs"), 5),
    (["--model", "fpn_resnet18", "--tile-size", "64"], ("network", "model"), "fpn_resnet18"),
    # flags whose value equals the engine's default still win over the preset
    (["--augment", "flip,rotate"], ("augment", "augment"), "flip,rotate"),
    (["--optimizer", "adamw"], ("optim", "optimizer"), "adamw"),
    (["--weight-decay", "0.01"], ("optim", "weight_decay"), 0.01),
    (["--lr", "0.001"], ("optim", "lr"), 0.001),
])
def test_flags_given_win_over_the_preset(flags: list[str], field: tuple[str, str],
                                         wanted: object) -> None:
    opts = parse("--preset", "seed003", *flags)
    assert getattr(getattr(opts, field[0]), field[1]) == wanted
    assert opts.optim.loss == "dice"  # the rest of the preset still applies


def test_flag_order_does_not_matter() -> None:
    assert parse("--epochs", "7", "--preset", "seed003") == parse("--preset", "seed003",
                                                                  "--epochs", "7")


def test_switches_and_repeated_flags_are_recorded_as_given() -> None:
    a = build_parser().parse_args(["train", *BASE, "--out", "m.tsm", "--all-touched",
                                   "--extra-raster", "a.tif", "--extra-raster", "twi=b.tif"])
    assert a.all_touched is True and a.extra_rasters == ["a.tif", "twi=b.tif"]
    assert getattr(a, GIVEN) == {"raster", "labels", "all_touched", "extra_rasters"}
    opts = train_options(a)
    assert opts.data.extra_rasters == ("a.tif", "twi=b.tif") and opts.data.all_touched


def test_without_a_preset_nothing_changes() -> None:
    assert parse() == TrainOptions.build(raster="r.tif", labels="l.gpkg", out="m.tsm")


def test_unknown_preset_is_refused_with_the_list() -> None:
    with pytest.raises(ConfigError) as exc:
        parse("--preset", "seed999")
    assert "seed999" in exc.value.message and "seed003" in exc.value.hint
    with pytest.raises(ConfigError):
        preset_values("")


@pytest.mark.parametrize("command", ["grid", "cv", "compare"])
def test_other_training_commands_take_the_preset(command: str) -> None:
    opts = parse("--preset", "seed003", "--epochs", "3", command=command)
    assert opts.network.model == "unet_resnet50" and opts.optim.epochs == 3


def test_a_worker_job_takes_the_preset_and_its_own_options_win() -> None:
    job = Job.make("train", raster="r.tif", labels="l.gpkg", out="m.tsm", preset="seed003",
                   epochs=3, augment="none")
    opts = train_options(build_parser().parse_args(job.to_argv()))
    assert opts.optim.epochs == 3 and opts.augment.augment == "none"
    assert opts.optim.loss == "dice" and opts.network.model == "unet_resnet50"
