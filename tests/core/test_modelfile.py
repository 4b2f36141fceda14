"""Tests for terraseg.core.modelfile: safetensors model files, loading errors, raster fit."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from helpers.synthetic import ORIGIN, write_raster
from rasterio.transform import from_origin
from safetensors.torch import save_file
from torch import nn

from terraseg.core import modelfile
from terraseg.core.modelfile import (
    FORMAT,
    FORMAT_VERSION,
    META_KEY,
    check_raster_fits,
    load_model,
    read_metadata,
    save_model,
)
from terraseg.core.models.registry import build_model
from terraseg.core.raster import RasterSource, parse_band_mapping
from terraseg.protocol.errors import ModelFileError, RasterError
from terraseg.protocol.model_meta import ModelMeta

PARAMS = {"in_channels": 4, "num_classes": 3, "patch_px": 25, "block_px": 5,
          "planes": [4, 8, 16], "blocks": [1, 1, 1], "stride_px": 0}


def make_network(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = build_model("patch_cnn", PARAMS)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-default buffers must survive the round trip
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.num_batches_tracked.fill_(17)
    return net


def make_meta() -> dict:
    return {
        "architecture": {"name": "patch_cnn", "params": PARAMS},
        "geometry": {"patch_px": 25, "block_px": 5, "stride_px": 5, "receptive_field_px": 25,
                     "margin_px": 10},
        "bands": {"indices": [1, 2, 3, 4], "names": ["red", "green", "blue", "nir"]},
        "normalisation": {"method": "standardise", "mean": [1.0, 2.0, 3.0, 4.0],
                          "std": [0.5, 1.5, 2.5, 3.5]},
        "classes": [{"id": 1, "name": "sealed", "colour": "#ff0000"},
                    {"id": 2, "name": "unsealed", "colour": "#00ff00"},
                    {"id": 3, "name": "water", "colour": "#0000ff"}],
        "training_raster": {"pixel_size": [10.0, 10.0], "crs_epsg": 32632},
        "metrics": {"val": {"accuracy": 0.875}},
        "note": "ünïcode ✓",
    }


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, nn.Module, dict]:
    net, meta = make_network(), make_meta()
    path = save_model(tmp_path / "m.tsm", net, meta)
    return path, net, meta


# --------------------------------------------------------------------------- round trip


def test_round_trip_weights_metadata_outputs(saved: tuple[Path, nn.Module, dict]) -> None:
    path, net, meta = saved
    assert path.name == "m.tsm" and path.is_file()
    loaded = load_model(path)
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    assert read_metadata(path) == doc
    assert loaded.meta == ModelMeta.from_dict(doc)
    assert loaded.meta.other == {"note": "ünïcode ✓"}
    assert loaded.meta.class_names == ["sealed", "unsealed", "water"]
    assert loaded.meta.normalisation.std == (0.5, 1.5, 2.5, 3.5)
    assert loaded.band_names == ["red", "green", "blue", "nir"]
    assert not loaded.network.training
    sd_a, sd_b = net.state_dict(), loaded.network.state_dict()
    assert sd_a.keys() == sd_b.keys()
    for k in sd_a:
        assert sd_a[k].dtype == sd_b[k].dtype
        torch.testing.assert_close(sd_a[k], sd_b[k], atol=0, rtol=0, msg=k)
    net.eval()
    x = torch.randn(3, 4, 35, 35, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(loaded.network(x), net(x), atol=0, rtol=0)


def test_file_is_plain_safetensors_without_pickle(saved: tuple[Path, nn.Module, dict]) -> None:
    path, net, meta = saved
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert 8 + n < len(raw)
    header = json.loads(raw[8 : 8 + n])
    doc = json.loads(header["__metadata__"][META_KEY])
    assert doc["format"] == "terraseg-model" and doc["format_version"] == 1
    assert doc["classes"][2]["name"] == "water"
    assert set(header) - {"__metadata__"} == set(net.state_dict())
    # tensor data offsets cover the whole rest of the file
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    assert max(ends) == len(raw) - 8 - n
    # no pickle stream anywhere: no protocol-2+ header (\x80\x02..\x80\x05) nor torch zip
    for proto in range(2, 6):
        assert bytes([0x80, proto]) + b"c" not in raw
        assert bytes([0x80, proto]) + b"\x95" not in raw
    assert not raw.startswith(b"PK")
    # and safetensors itself reads the same tensors
    tensors = safetensors.torch.load_file(str(path))
    torch.testing.assert_close(tensors["head.weight"], net.state_dict()["head.weight"])


# --------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        read_metadata(tmp_path / "none.tsm")
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "none.tsm")


def test_truncated_file(saved: tuple[Path, nn.Module, dict], tmp_path: Path) -> None:
    path = saved[0]
    raw = path.read_bytes()
    cut = tmp_path / "cut.tsm"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError) as exc:
        load_model(cut)
    assert "truncated" in exc.value.message
    assert "re-copy" in exc.value.hint
    # cut inside the 8-byte length prefix and inside the header too
    for n in (4, 40):
        cut.write_bytes(raw[:n])
        with pytest.raises(ModelFileError):
            read_metadata(cut)


def test_text_file(tmp_path: Path) -> None:
    txt = tmp_path / "model.tsm"
    txt.write_text("definitely not a model\n" * 50)
    with pytest.raises(ModelFileError) as exc:
        load_model(txt)
    assert "not a readable TerraSeg model file" in exc.value.message
    assert exc.value.hint


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.tsm"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError):
        read_metadata(empty)


def test_safetensors_without_terraseg_metadata(tmp_path: Path) -> None:
    p = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(p), metadata={"format": "pt"})
    with pytest.raises(ModelFileError) as exc:
        load_model(p)
    assert "not a TerraSeg model" in exc.value.message
    p2 = tmp_path / "nometa.safetensors"
    save_file({"w": torch.zeros(3)}, str(p2))
    with pytest.raises(ModelFileError, match="not a TerraSeg model"):
        read_metadata(p2)


def test_corrupt_metadata_json(tmp_path: Path) -> None:
    p = tmp_path / "bad.tsm"
    save_file({"w": torch.zeros(3)}, str(p), metadata={META_KEY: "{not json"})
    with pytest.raises(ModelFileError, match="corrupt TerraSeg metadata"):
        read_metadata(p)


@pytest.mark.parametrize("doc", ["[1, 2]", '"text"', "null"])
def test_metadata_not_an_object(tmp_path: Path, doc: str) -> None:
    p = tmp_path / "odd.tsm"
    save_file({"w": torch.zeros(1)}, str(p), metadata={META_KEY: doc})
    with pytest.raises(ModelFileError):
        read_metadata(p)


def test_future_format_version(tmp_path: Path) -> None:
    net = make_network()
    p = save_model(tmp_path / "future.tsm", net, {**make_meta(), "format_version": 99})
    # save_model puts its own keys first; the caller's meta wins on conflict
    with pytest.raises(ModelFileError) as exc:
        load_model(p)
    assert "v99" in exc.value.message and f"up to v{FORMAT_VERSION}" in exc.value.message
    assert "Update TerraSeg" in exc.value.hint


def test_other_format_name(tmp_path: Path) -> None:
    p = tmp_path / "x.tsm"
    doc = {"format": "something-else", "format_version": 1}
    save_file({"w": torch.zeros(1)}, str(p), metadata={META_KEY: json.dumps(doc)})
    with pytest.raises(ModelFileError, match="something-else"):
        read_metadata(p)


def test_weights_not_matching_architecture(tmp_path: Path) -> None:
    p = tmp_path / "mismatch.tsm"
    doc = {"format": FORMAT, "format_version": 1, **make_meta()}
    save_file({"w": torch.zeros(1)}, str(p), metadata={META_KEY: json.dumps(doc)})
    with pytest.raises(ModelFileError, match="do not match its architecture"):
        load_model(p)


# --------------------------------------------------------------------------- atomic save


def test_save_leaves_no_partial_and_overwrites(tmp_path: Path) -> None:
    p = tmp_path / "m.tsm"
    save_model(p, make_network(0), make_meta())
    save_model(p, make_network(1), {**make_meta(), "note": "second"})
    assert sorted(f.name for f in tmp_path.iterdir()) == ["m.tsm"]
    loaded = load_model(p)
    assert loaded.meta.other["note"] == "second"
    torch.testing.assert_close(loaded.network.state_dict()["head.weight"],
                               make_network(1).state_dict()["head.weight"])


def test_failing_save_keeps_existing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "m.tsm"
    save_model(p, make_network(0), make_meta())
    before = p.read_bytes()
    calls: list[str] = []

    def broken_save(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        calls.append(filename)
        Path(filename).write_bytes(b"half a file")  # partial write, then failure
        raise OSError("disk full")

    monkeypatch.setattr(modelfile, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(p, make_network(1), {**make_meta(), "note": "lost"})
    assert calls and Path(calls[0]).name.endswith(".partial") and Path(calls[0]).parent == tmp_path
    assert p.read_bytes() == before
    assert sorted(f.name for f in tmp_path.iterdir()) == ["m.tsm"]
    assert load_model(p).meta.other["note"] == make_meta()["note"]


def test_interrupted_save_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(modelfile, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_model(tmp_path / "new.tsm", make_network(), make_meta())
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- raster fit


def _raster(tmp_path: Path, bands: int, pixel: float, name: str) -> Path:
    data = np.ones((bands, 6, 6), np.uint8)
    return write_raster(tmp_path / name, data, transform=from_origin(*ORIGIN, pixel, pixel))


def typed_meta() -> ModelMeta:
    return ModelMeta.from_dict(make_meta())


def test_check_raster_fits_ok(tmp_path: Path) -> None:
    meta = typed_meta()
    for pixel in (10.0, 19.0, 5.5, 20.0):  # factor 1.9, 1.82, exactly 2 are accepted
        path = _raster(tmp_path, 4, pixel, f"ok{pixel}.tif")
        with RasterSource(path) as src:
            check_raster_fits(meta, src)


@pytest.mark.parametrize("pixel", [20.5, 4.9, 100.0])
def test_check_raster_fits_pixel_size(tmp_path: Path, pixel: float) -> None:
    path = _raster(tmp_path, 4, pixel, "px.tif")
    with RasterSource(path) as src, pytest.raises(RasterError) as exc:
        check_raster_fits(typed_meta(), src)
    assert "(> 2)" in exc.value.message
    assert "(10.0, 10.0)" in exc.value.message
    assert "Resample" in exc.value.hint


def test_check_raster_fits_band_count(tmp_path: Path) -> None:
    path = _raster(tmp_path, 3, 10.0, "three.tif")
    with RasterSource(path) as src, pytest.raises(RasterError) as exc:
        check_raster_fits(typed_meta(), src)
    assert "expects 4 band(s)" in exc.value.message
    assert "gives 3" in exc.value.message
    assert "4 band numbers" in exc.value.hint
    # a 6-band raster mapped to 4 bands fits
    six = _raster(tmp_path, 6, 10.0, "six.tif")
    with RasterSource(six, parse_band_mapping("1,2,3,6", six)) as src:
        check_raster_fits(typed_meta(), src)
    with RasterSource(six) as src, pytest.raises(RasterError, match="gives 6"):
        check_raster_fits(typed_meta(), src)
