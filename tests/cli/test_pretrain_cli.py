"""``terraseg pretrain`` end to end: an encoder file that ``train --encoder`` starts from.

The end-to-end tests run the real console script in a subprocess on tiny synthetic scenes
with a real CRS; bad input is checked in-process through the same parser and options.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.paths import terraseg
from helpers.synthetic import make_scene, write_raster

from terraseg.cli.commands_pretrain import pretrain_options
from terraseg.cli.parser import build_parser
from terraseg.core.encoder_file import load_encoder
from terraseg.core.normalise import compute_band_stats
from terraseg.core.raster import RasterSource
from terraseg.protocol.errors import ConfigError, OutputError, RasterError
from terraseg.protocol.jobs import Job
from terraseg.training.pretrain import run_pretrain

TINY = ["--base-width", "8", "--tile-size", "32", "--batch-size", "4",
        "--samples-per-epoch", "8", "--accelerator", "cpu"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, object]:
    d = tmp_path_factory.mktemp("pretrain_cli")
    (d / "a").mkdir()
    (d / "b").mkdir()
    return d, make_scene(d / "a", size=64), make_scene(d / "b", size=64, seed=1)


@pytest.mark.slow  # two subprocesses that train (about 30 s on 2 idle cores)
def test_pretrain_writes_an_encoder_that_train_starts_from(scenes: tuple) -> None:
    d, a, b = scenes
    enc = d / "scene.tse"
    proc = terraseg("pretrain", "--raster", a.raster, "--raster", b.raster, "--out", enc,
                    "--epochs", "2", *TINY, cwd=d)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "simclr (ssl), 2 epoch(s), loss" in proc.stdout and str(enc) in proc.stdout
    # progress and per-epoch metrics (an ETA shows only once a stage has run 0.5 s: on an
    # idle machine these two tiny epochs are faster, so it is not required here)
    assert "epoch 2: loss=" in proc.stderr and "[train]" in proc.stderr
    loaded = load_encoder(enc)
    meta = loaded.meta
    assert (meta.encoder, meta.in_channels, meta.base_width) == ("resnet18", 4, 8)
    assert meta.band_names == ("red", "green", "blue", "nir")
    assert meta.pixel_size == (10.0, 10.0)
    pre = meta.pretraining
    assert pre.method == "simclr" and pre.epochs == 2 and pre.samples == 8
    assert pre.rasters == (str(a.raster.resolve()), str(b.raster.resolve()))
    assert len(pre.metrics["loss_curve"]) == 2 and pre.metrics["loss"] > 0
    assert pre.options["tile_px"] == 32 and pre.options["task"] == "ssl"
    # normalisation: the pooled moments of both scenes (same size: mean of the means)
    sa, sb = (compute_band_stats(RasterSource(s.raster)) for s in (a, b))
    assert meta.mean == pytest.approx([(x + y) / 2 for x, y in zip(sa.mean, sb.mean,
                                                                    strict=True)])
    assert all(torch.isfinite(v.float()).all() for v in loaded.state.values())

    model = d / "from_ssl.tsm"
    proc = terraseg("train", "--raster", a.raster, "--labels", a.labels, "--class-field",
                    "klass", "--model", "unet_resnet18", "--base-width", "8", "--tile-size",
                    "32", "--epochs", "2", "--samples-per-epoch", "16", "--batch-size", "8",
                    "--encoder", enc, "--freeze-epochs", "1", "--accelerator", "cpu",
                    "--cache-dir", d / "cache", "--out", model, cwd=d)
    assert proc.returncode == 0, proc.stderr
    assert "encoder initialised from scene.tse" in proc.stderr
    from safetensors import safe_open

    with safe_open(str(model), framework="pt") as fh:
        record = json.loads(fh.metadata()["terraseg"])["training"]["encoder"]
    assert record["pretraining"]["method"] == "simclr"
    assert record["pretraining"]["rasters"] == list(pre.rasters)


def parse(*args: object) -> object:
    return build_parser().parse_args(["pretrain", *map(str, args)])


def test_bad_input_is_refused_before_any_work(scenes: tuple, tmp_path: Path) -> None:
    d, a, _ = scenes
    missing = tmp_path / "nowhere.tif"
    with pytest.raises(RasterError, match="does not exist"):
        run_pretrain(pretrain_options(parse("--raster", missing, "--out", tmp_path / "x.tse",
                                            *TINY)))
    existing = tmp_path / "old.tse"
    existing.write_bytes(b"keep")
    with pytest.raises(OutputError, match="--overwrite"):
        run_pretrain(pretrain_options(parse("--raster", a.raster, "--out", existing, *TINY)))
    assert existing.read_bytes() == b"keep"
    with pytest.raises(ConfigError, match="needs labels"):
        pretrain_options(parse("--raster", a.raster, "--out", "x.tse", "--task", "classify"))
    with pytest.raises(ConfigError, match="--labels is for --task classify only"):
        pretrain_options(parse("--raster", a.raster, "--out", "x.tse", "--labels", a.labels))
    with pytest.raises(ConfigError, match="--batch-size is 1"):
        pretrain_options(parse("--raster", a.raster, "--out", "x.tse", "--batch-size", "1"))
    three = write_raster(tmp_path / "three.tif", torch.zeros(3, 40, 40).numpy())
    with pytest.raises(RasterError, match="same bands"):
        run_pretrain(pretrain_options(parse("--raster", a.raster, "--raster", three,
                                            "--out", tmp_path / "y.tse", *TINY)))
    assert not (tmp_path / "y.tse").exists()


def test_missing_raster_fails_with_a_fix_on_the_command_line(tmp_path: Path) -> None:
    proc = terraseg("pretrain", "--raster", tmp_path / "nowhere.tif", "--out",
                    tmp_path / "x.tse", cwd=tmp_path)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "fix:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_worker_job_repeats_the_raster_flag() -> None:
    job = Job.make("pretrain", raster=["a.tif", "b,c.tif"], out="e.tse", epochs=3)
    argv = job.to_argv()
    assert argv == ["pretrain", "--raster", "a.tif", "--raster", "b,c.tif", "--out", "e.tse",
                    "--epochs", "3"]
    opts = pretrain_options(build_parser().parse_args(argv))
    assert opts.rasters == ("a.tif", "b,c.tif") and opts.epochs == 3
    assert Job.from_dict(job.to_dict()) == job
