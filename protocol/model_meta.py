"""Typed metadata of a TerraSeg model file (standard library only; docs/model-file.md).

:class:`ModelMeta` is the JSON document in a ``.tsm`` header as frozen dataclasses. It is
validated when it is read, before any network is built: a missing key, a zero or negative
size or stride, a zero standard deviation, a class id outside 1..255 or band counts that
disagree raise :class:`~terraseg.protocol.errors.ModelFileError` naming the field and the
fix. ``to_dict`` writes the same document back, so a file written by an earlier release
loads and re-saves unchanged (unknown top-level keys are kept in ``other``).

docs/model-file.md is tested against :func:`field_table` so the two cannot drift.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from terraseg.protocol.errors import ModelFileError

FORMAT = "terraseg-model"
FORMAT_VERSION = 1
GEOMETRY_KINDS = ("patch", "tile")
MAX_CLASS_ID = 255
MAX_CHANNELS = 1024
#: Largest tile, patch or receptive field a model file may ask for (pixels).
MAX_WINDOW_PX = 8192
#: Normalisation statistics outside these bounds overflow float32 inputs.
MAX_ABS_MEAN = 1e15
MIN_STD, MAX_STD = 1e-12, 1e15

_FIX = "The model file is damaged or was edited by hand: retrain it or re-copy the original."


def _fail(where: str, problem: str, hint: str = _FIX) -> ModelFileError:
    return ModelFileError(f"Model metadata '{where}' {problem}.", hint)


def _get(doc: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(doc, Mapping):
        raise _fail(where, "is not a JSON object")
    if key not in doc:
        raise _fail(f"{where}.{key}" if where else key, "is missing")
    return doc[key]


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, f"is {type(value).__name__}, not an object")
    return value


def _int(value: Any, where: str, minimum: int | None = None) -> int:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value != int(value)):
        raise _fail(where, f"is {value!r}, not an integer")
    if minimum is not None and value < minimum:
        raise _fail(where, f"is {int(value)}; it must be at least {minimum}")
    return int(value)


def _size(value: Any, where: str) -> int:
    """A size in pixels: an integer in 1..MAX_WINDOW_PX."""
    size = _int(value, where, 1)
    if size > MAX_WINDOW_PX:
        raise _fail(where, f"is {size} px (more than {MAX_WINDOW_PX})")
    return size


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(where, f"is {value!r}, not a finite number")
    return float(value)


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise _fail(where, f"is {type(value).__name__}, not a list")
    return list(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Software:
    """Who wrote the file."""

    name: str = "TerraSeg"
    version: str = ""
    torch: str = ""

    @staticmethod
    def from_dict(d: Any) -> Software:
        """Lenient: old files may lack it."""
        d = d if isinstance(d, Mapping) else {}
        return Software(str(d.get("name", "TerraSeg")), str(d.get("version", "")),
                        str(d.get("torch", "")))


@dataclass(frozen=True)
class Architecture:
    """Registry name and constructor parameters of the network."""

    name: str
    params: Mapping[str, Any]

    @property
    def in_channels(self) -> int:
        """Input channels of the network."""
        return int(self.params["in_channels"])

    @property
    def num_classes(self) -> int:
        """Output classes of the network."""
        return int(self.params["num_classes"])

    @staticmethod
    def from_dict(d: Any) -> Architecture:
        """Validated: a name, and positive channel and class counts."""
        d = _obj(d, "architecture")
        name = _get(d, "name", "architecture")
        if not isinstance(name, str) or not name:
            raise _fail("architecture.name", f"is {name!r}, not a model name")
        params = dict(_obj(_get(d, "params", "architecture"), "architecture.params"))
        _int(_get(params, "in_channels", "architecture.params"),
             "architecture.params.in_channels", 1)
        if params["in_channels"] > MAX_CHANNELS:
            raise _fail("architecture.params.in_channels",
                        f"is {params['in_channels']} (more than {MAX_CHANNELS})")
        _int(_get(params, "num_classes", "architecture.params"),
             "architecture.params.num_classes", 2)
        return Architecture(name, params)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "params": dict(self.params)}


@dataclass(frozen=True)
class Geometry:
    """How inference runs the network: dense stride-aligned tiles or blended tiles.

    Attributes:
        kind: ``patch`` (dense-exact patch model) or ``tile`` (padded tile network).
        stride_px: Total stride of the network.
        patch_px, block_px, receptive_field_px, margin_px: patch models.
        tile_px, step_px, valid_tile_sizes_px: tile networks.
    """

    kind: Literal["patch", "tile"]
    stride_px: int
    patch_px: int | None = None
    block_px: int | None = None
    receptive_field_px: int | None = None
    margin_px: int | None = None
    tile_px: int | None = None
    step_px: int | None = None
    valid_tile_sizes_px: tuple[int, ...] | None = None

    @property
    def context_px(self) -> int:
        """Patch models: extra input pixels a tile needs (R - S)."""
        return int(self.receptive_field_px or 0) - self.stride_px

    @staticmethod
    def from_dict(d: Any) -> Geometry:
        """Validated per kind (files before tile networks have no ``kind``: patch)."""
        d = _obj(d, "geometry")
        kind = d.get("kind", "patch")
        if kind not in GEOMETRY_KINDS:
            raise _fail("geometry.kind", f"is {kind!r}, not one of {', '.join(GEOMETRY_KINDS)}",
                        "Update TerraSeg: the model may be of a newer kind.")
        stride = _size(_get(d, "stride_px", "geometry"), "geometry.stride_px")
        if kind == "tile":
            tile = _size(_get(d, "tile_px", "geometry"), "geometry.tile_px")
            if tile % stride:
                raise _fail("geometry.tile_px", f"is {tile}, not a multiple of the stride "
                                                f"{stride}")
            step = _size(d.get("step_px", tile // 2), "geometry.step_px")
            valid = d.get("valid_tile_sizes_px")
            valid_t = (None if valid is None else
                       tuple(_int(v, "geometry.valid_tile_sizes_px", 1)
                             for v in _list(valid, "geometry.valid_tile_sizes_px")))
            return Geometry("tile", stride, tile_px=tile, step_px=step,
                            valid_tile_sizes_px=valid_t)
        patch = _size(_get(d, "patch_px", "geometry"), "geometry.patch_px")
        block = _size(_get(d, "block_px", "geometry"), "geometry.block_px")
        rf = _size(_get(d, "receptive_field_px", "geometry"), "geometry.receptive_field_px")
        if rf < stride:
            raise _fail("geometry.receptive_field_px",
                        f"is {rf}, smaller than the stride {stride}")
        margin = _int(d.get("margin_px", (patch - block) // 2), "geometry.margin_px", 0)
        return Geometry("patch", stride, patch_px=patch, block_px=block,
                        receptive_field_px=rf, margin_px=margin)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the keys of its kind only)."""
        if self.kind == "tile":
            out: dict[str, Any] = {"kind": "tile", "tile_px": self.tile_px,
                                   "step_px": self.step_px, "stride_px": self.stride_px}
            if self.valid_tile_sizes_px is not None:
                out["valid_tile_sizes_px"] = list(self.valid_tile_sizes_px)
            return out
        return {"kind": "patch", "patch_px": self.patch_px, "block_px": self.block_px,
                "stride_px": self.stride_px, "receptive_field_px": self.receptive_field_px,
                "margin_px": self.margin_px}


@dataclass(frozen=True)
class Bands:
    """Input channels: raster band numbers (1-based) and the names of all channels.

    ``names`` lists every network input channel (bands, then extra rasters, then
    engineered channels); ``indices`` the raster bands among them.
    """

    indices: tuple[int, ...]
    names: tuple[str, ...]

    @staticmethod
    def from_dict(d: Any) -> Bands:
        """Validated: band numbers >= 1, at least one name per band number."""
        d = _obj(d, "bands")
        idx = tuple(_int(i, "bands.indices", 1) for i in _list(_get(d, "indices", "bands"),
                                                              "bands.indices"))
        names = tuple(str(n) for n in _list(_get(d, "names", "bands"), "bands.names"))
        if not idx:
            raise _fail("bands.indices", "is empty")
        if len(names) < len(idx):
            raise _fail("bands.names", f"has {len(names)} name(s) for {len(idx)} band(s)")
        return Bands(idx, names)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"indices": list(self.indices), "names": list(self.names)}


@dataclass(frozen=True)
class ExtraRaster:
    """An extra input raster (DEM, slope from DEM, ...) recorded at training."""

    name: str
    kind: str
    path: str

    @staticmethod
    def from_dict(d: Any) -> ExtraRaster:
        """Validated: name and kind present."""
        d = _obj(d, "extra_rasters[]")
        return ExtraRaster(str(_get(d, "name", "extra_rasters[]")),
                           str(_get(d, "kind", "extra_rasters[]")), str(d.get("path", "")))

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "kind": self.kind, "path": self.path}


@dataclass(frozen=True)
class Features:
    """Engineered channels and their pinned parameters (core/features.py)."""

    names: tuple[str, ...]
    params: Mapping[str, Any]

    @staticmethod
    def from_dict(d: Any) -> Features:
        """Validated: a list of names and an object of parameters."""
        d = _obj(d, "features")
        return Features(tuple(str(n) for n in _list(d.get("names", []), "features.names")),
                        dict(_obj(d.get("params", {}), "features.params")))

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"names": list(self.names), "params": dict(self.params)}


@dataclass(frozen=True)
class Normalisation:
    """Per-channel standardisation in raw units; nodata becomes the channel mean."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    method: str = "standardise"
    nodata_fill: str = "band mean (0 after standardisation)"

    @staticmethod
    def from_dict(d: Any) -> Normalisation:
        """Validated: finite means, positive standard deviations, equal lengths."""
        d = _obj(d, "normalisation")
        mean = tuple(_float(v, "normalisation.mean")
                     for v in _list(_get(d, "mean", "normalisation"), "normalisation.mean"))
        std = tuple(_float(v, "normalisation.std")
                    for v in _list(_get(d, "std", "normalisation"), "normalisation.std"))
        if len(mean) != len(std):
            raise _fail("normalisation", f"has {len(mean)} mean(s) but {len(std)} std(s)")
        for i, s in enumerate(std):
            if s <= 0:
                raise _fail(f"normalisation.std[{i}]", f"is {s}; it must be positive")
            if not MIN_STD <= s <= MAX_STD:
                raise _fail(f"normalisation.std[{i}]",
                            f"is {s:g}, outside {MIN_STD:g}..{MAX_STD:g}")
        for i, m in enumerate(mean):
            if abs(m) > MAX_ABS_MEAN:
                raise _fail(f"normalisation.mean[{i}]", f"is {m:g}, beyond +-{MAX_ABS_MEAN:g}")
        return Normalisation(mean, std, str(d.get("method", "standardise")),
                             str(d.get("nodata_fill", "band mean (0 after standardisation)")))

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"method": self.method, "mean": list(self.mean), "std": list(self.std),
                "nodata_fill": self.nodata_fill}


@dataclass(frozen=True)
class ModelClass:
    """A class: its id in classes.tif (1..255), name and display colour."""

    id: int
    name: str
    colour: str = "#808080"

    @staticmethod
    def from_dict(d: Any) -> ModelClass:
        """Validated: id in 1..255, a name."""
        d = _obj(d, "classes[]")
        cid = _int(_get(d, "id", "classes[]"), "classes[].id")
        if not 1 <= cid <= MAX_CLASS_ID:
            raise _fail("classes[].id", f"is {cid}; class ids are 1..{MAX_CLASS_ID}")
        return ModelClass(cid, str(_get(d, "name", "classes[]")),
                          str(d.get("colour", "#808080")))

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"id": self.id, "name": self.name, "colour": self.colour}


@dataclass(frozen=True)
class TrainingRaster:
    """The raster a model was trained on: pixel size and CRS (checked at prediction)."""

    pixel_size: tuple[float, float]
    path: str = ""
    crs_wkt: str | None = None
    crs_epsg: int | None = None
    fingerprint: str = ""

    @staticmethod
    def from_dict(d: Any) -> TrainingRaster:
        """Validated: a positive pixel size (x, y)."""
        d = _obj(d, "training_raster")
        size = _list(_get(d, "pixel_size", "training_raster"), "training_raster.pixel_size")
        if len(size) != 2:
            raise _fail("training_raster.pixel_size", f"has {len(size)} value(s), not 2")
        px = (abs(_float(size[0], "training_raster.pixel_size")),
              abs(_float(size[1], "training_raster.pixel_size")))
        if min(px) <= 0:
            raise _fail("training_raster.pixel_size", f"is {list(px)}; it must be positive")
        epsg = d.get("crs_epsg")
        return TrainingRaster(px, str(d.get("path", "")), _opt_str(d.get("crs_wkt")),
                              None if epsg is None else _int(epsg, "training_raster.crs_epsg"),
                              str(d.get("fingerprint", "")))

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"path": self.path, "pixel_size": list(self.pixel_size),
                "crs_wkt": self.crs_wkt, "crs_epsg": self.crs_epsg,
                "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class LabelRecord:
    """The labels a model was trained on: path, fingerprint, pixels per class and split."""

    path: str = ""
    fingerprint: str = ""
    pixel_counts: Mapping[str, int] = field(default_factory=dict)
    split_pixel_counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @staticmethod
    def from_dict(d: Any) -> LabelRecord:
        """Lenient: a record only."""
        d = d if isinstance(d, Mapping) else {}
        return LabelRecord(str(d.get("path", "")), str(d.get("fingerprint", "")),
                           dict(d.get("pixel_counts") or {}),
                           dict(d.get("split_pixel_counts") or {}))

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"path": self.path, "fingerprint": self.fingerprint,
                "pixel_counts": dict(self.pixel_counts),
                "split_pixel_counts": dict(self.split_pixel_counts)}


@dataclass(frozen=True)
class TrainingRecord:
    """How the model was trained: options, epochs, best epoch and score, device."""

    options: Mapping[str, Any] = field(default_factory=dict)
    epochs_run: int | None = None
    best_epoch: int | None = None
    monitor: str | None = None
    best_score: float | None = None
    device: Mapping[str, Any] = field(default_factory=dict)
    init_model: str | None = None
    encoder: Mapping[str, Any] | None = None

    @staticmethod
    def from_dict(d: Any) -> TrainingRecord:
        """Lenient: a record only."""
        d = d if isinstance(d, Mapping) else {}
        enc = d.get("encoder")
        return TrainingRecord(dict(d.get("options") or {}), d.get("epochs_run"),
                              d.get("best_epoch"), _opt_str(d.get("monitor")),
                              d.get("best_score"), dict(d.get("device") or {}),
                              _opt_str(d.get("init_model")),
                              dict(enc) if isinstance(enc, Mapping) else None)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``encoder``: the pretrained encoder's file and provenance, when used)."""
        d = {"options": dict(self.options), "epochs_run": self.epochs_run,
             "best_epoch": self.best_epoch, "monitor": self.monitor,
             "best_score": self.best_score, "device": dict(self.device),
             "init_model": self.init_model}
        if self.encoder is not None:  # absent, not null, without one: older files round-trip
            d["encoder"] = dict(self.encoder)
        return d


@dataclass(frozen=True)
class Threshold:
    """Two-class models: P(class 1) threshold tuned on validation pixels, and its F1."""

    value: float
    f1: float | None = None

    @staticmethod
    def from_dict(d: Any) -> Threshold | None:
        """Validated: a value in 0..1 (None when absent)."""
        if d is None:
            return None
        d = _obj(d, "threshold")
        value = _float(_get(d, "value", "threshold"), "threshold.value")
        if not 0.0 <= value <= 1.0:
            raise _fail("threshold.value", f"is {value}, outside 0..1")
        f1 = d.get("f1")
        return Threshold(value, None if f1 is None else _float(f1, "threshold.f1"))

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"value": self.value, "f1": self.f1}


SPLIT_NAMES = ("train", "val", "test")
SPLIT_MODES = ("polygons", "blocks")


@dataclass(frozen=True)
class SplitRecord:
    """The train/validation/test split of the labelled regions, kept when retraining.

    Regions are named by their stable keys (``LabelSet.region_keys``: a hash of a polygon's
    class and geometry, or a label-raster region's class and pixel box). A run that retrains
    from this model (``--init-model``, or ``--split-from``) keeps every known region on its
    side and splits only the new ones among themselves.

    Attributes:
        mode: ``polygons`` or ``blocks``.
        seed: Seed of the split.
        split_block_px: Block size of mode ``blocks``.
        keys_by_split: ``train``/``val``/``test`` -> keys of the regions on that side.
        inherited_from: The model file whose split was kept, or None (a fresh split).
    """

    mode: str
    seed: int
    split_block_px: int
    keys_by_split: Mapping[str, tuple[str, ...]]
    inherited_from: str | None = None

    def split_of_key(self) -> dict[str, int]:
        """Region key -> split index (0 train, 1 val, 2 test)."""
        return {k: SPLIT_NAMES.index(s) for s, keys in self.keys_by_split.items() for k in keys}

    @staticmethod
    def from_dict(d: Any) -> SplitRecord | None:
        """Validated: known mode, seed, block size, keys in distinct splits (None: absent)."""
        if d is None:
            return None
        d = _obj(d, "split")
        mode = _get(d, "mode", "split")
        if mode not in SPLIT_MODES:
            raise _fail("split.mode", f"is {mode!r}, not one of {', '.join(SPLIT_MODES)}")
        seed = _int(_get(d, "seed", "split"), "split.seed", 0)
        block = _int(d.get("split_block_px", 256), "split.split_block_px", 1)
        raw = _obj(_get(d, "keys_by_split", "split"), "split.keys_by_split")
        keys_by_split: dict[str, tuple[str, ...]] = {}
        seen: set[str] = set()
        for name, keys in raw.items():
            if name not in SPLIT_NAMES:
                raise _fail(f"split.keys_by_split.{name}",
                            f"is not a split (one of {', '.join(SPLIT_NAMES)})")
            items = _list(keys, f"split.keys_by_split.{name}")
            if not all(isinstance(k, str) for k in items):
                raise _fail(f"split.keys_by_split.{name}", "holds a key that is not text")
            if seen.intersection(items):
                raise _fail(f"split.keys_by_split.{name}",
                            f"repeats region {sorted(seen.intersection(items))[0]!r} of "
                            "another split")
            seen.update(items)
            keys_by_split[name] = tuple(items)
        return SplitRecord(str(mode), seed, block, keys_by_split,
                           _opt_str(d.get("inherited_from")))

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"mode": self.mode, "seed": self.seed, "split_block_px": self.split_block_px,
                "keys_by_split": {k: list(v) for k, v in self.keys_by_split.items()},
                "inherited_from": self.inherited_from}


#: Top-level keys ModelMeta knows; any other key is kept in ``ModelMeta.other``.
KNOWN_KEYS = ("format", "format_version", "software", "created", "architecture", "geometry",
              "loss", "bands", "extra_rasters", "features", "normalisation", "classes",
              "class_map", "class_field", "training_raster", "labels", "training", "metrics",
              "threshold", "checkpoint", "split")


@dataclass(frozen=True)
class ModelMeta:
    """The metadata document of a model file, typed and validated."""

    architecture: Architecture
    geometry: Geometry
    bands: Bands
    normalisation: Normalisation
    classes: tuple[ModelClass, ...]
    training_raster: TrainingRaster
    software: Software = field(default_factory=Software)
    created: str = ""
    loss: str = ""
    extra_rasters: tuple[ExtraRaster, ...] = ()
    features: Features | None = None
    class_map: str | None = None
    class_field: str | None = None
    labels: LabelRecord = field(default_factory=LabelRecord)
    training: TrainingRecord = field(default_factory=TrainingRecord)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    threshold: Threshold | None = None
    checkpoint: str | None = None
    split: SplitRecord | None = None
    format_version: int = FORMAT_VERSION
    other: Mapping[str, Any] = field(default_factory=dict)

    # --- derived ------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """``patch`` or ``tile`` (the geometry's kind)."""
        return self.geometry.kind

    @property
    def class_names(self) -> list[str]:
        """Class names in model order."""
        return [c.name for c in self.classes]

    @property
    def class_dicts(self) -> list[dict[str, Any]]:
        """Classes as ``{"id", "name", "colour"}`` dicts (outputs' tags, exports)."""
        return [c.to_dict() for c in self.classes]

    @property
    def band_names(self) -> list[str]:
        """Names of every input channel in model order."""
        return list(self.bands.names)

    # --- JSON -----------------------------------------------------------------------------
    @staticmethod
    def from_dict(doc: Mapping[str, Any]) -> ModelMeta:
        """Validate a metadata document.

        Raises:
            ModelFileError: A key is missing or a value is out of range; the message names
                the field.
        """
        doc = _obj(doc, "(document)")
        arch = Architecture.from_dict(_get(doc, "architecture", ""))
        bands = Bands.from_dict(_get(doc, "bands", ""))
        norm = Normalisation.from_dict(_get(doc, "normalisation", ""))
        classes = tuple(ModelClass.from_dict(c)
                        for c in _list(_get(doc, "classes", ""), "classes"))
        extras = tuple(ExtraRaster.from_dict(e)
                       for e in _list(doc.get("extra_rasters") or [], "extra_rasters"))
        features = (Features.from_dict(doc["features"]) if doc.get("features") is not None
                    else None)
        meta = ModelMeta(
            architecture=arch, geometry=Geometry.from_dict(_get(doc, "geometry", "")),
            bands=bands, normalisation=norm, classes=classes,
            training_raster=TrainingRaster.from_dict(_get(doc, "training_raster", "")),
            software=Software.from_dict(doc.get("software")),
            created=str(doc.get("created", "")), loss=str(doc.get("loss") or ""),
            extra_rasters=extras, features=features,
            class_map=_opt_str(doc.get("class_map")),
            class_field=_opt_str(doc.get("class_field")),
            labels=LabelRecord.from_dict(doc.get("labels")),
            training=TrainingRecord.from_dict(doc.get("training")),
            metrics=dict(doc.get("metrics") or {}),
            threshold=Threshold.from_dict(doc.get("threshold")),
            checkpoint=_opt_str(doc.get("checkpoint")),
            split=SplitRecord.from_dict(doc.get("split")),
            format_version=int(doc.get("format_version", FORMAT_VERSION)),
            other={k: v for k, v in doc.items() if k not in KNOWN_KEYS})
        meta._check_consistency()
        return meta

    def _check_consistency(self) -> None:
        n = len(self.bands.names)
        if len(self.normalisation.mean) != n:
            raise _fail("normalisation.mean", f"has {len(self.normalisation.mean)} value(s) for "
                                              f"{n} input channel(s) in bands.names")
        if self.architecture.in_channels != n:
            raise _fail("architecture.params.in_channels",
                        f"is {self.architecture.in_channels} but bands.names lists {n} "
                        "channel(s)")
        if not self.classes:
            raise _fail("classes", "is empty")
        if self.architecture.num_classes != len(self.classes):
            raise _fail("architecture.params.num_classes",
                        f"is {self.architecture.num_classes} but {len(self.classes)} "
                        "class(es) are listed")
        ids = [c.id for c in self.classes]
        if len(set(ids)) != len(ids):
            raise _fail("classes", f"has repeated ids {ids}")
        if self.threshold is not None and len(self.classes) != 2:
            raise _fail("threshold", "is set for a model that does not have two classes")

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (format keys first, as written to the file)."""
        doc: dict[str, Any] = {
            "format": FORMAT, "format_version": self.format_version,
            "software": dataclasses.asdict(self.software), "created": self.created,
            "architecture": self.architecture.to_dict(), "geometry": self.geometry.to_dict(),
            "loss": self.loss, "bands": self.bands.to_dict(),
            "extra_rasters": [e.to_dict() for e in self.extra_rasters],
            "features": self.features.to_dict() if self.features else None,
            "normalisation": self.normalisation.to_dict(),
            "classes": self.class_dicts, "class_map": self.class_map,
            "class_field": self.class_field,
            "training_raster": self.training_raster.to_dict(),
            "labels": self.labels.to_dict(), "training": self.training.to_dict(),
            "metrics": dict(self.metrics),
            "threshold": self.threshold.to_dict() if self.threshold else None,
        }
        if self.checkpoint is not None:
            doc["checkpoint"] = self.checkpoint
        if self.split is not None:
            doc["split"] = self.split.to_dict()
        doc.update(self.other)
        return doc

    def replace(self, **changes: Any) -> ModelMeta:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def field_table() -> dict[str, list[str]]:
    """Top-level key -> nested field names, for docs/model-file.md's test."""
    nested = {"software": Software, "architecture": Architecture, "geometry": Geometry,
              "bands": Bands, "extra_rasters": ExtraRaster, "features": Features,
              "normalisation": Normalisation, "classes": ModelClass,
              "training_raster": TrainingRaster, "labels": LabelRecord,
              "training": TrainingRecord, "threshold": Threshold, "split": SplitRecord}
    return {k: [f.name for f in dataclasses.fields(nested[k])] if k in nested else []
            for k in KNOWN_KEYS}


def pixel_size_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """How many times larger the bigger of two pixel areas' side is (>= 1).

    Compares the geometric mean pixel side (sqrt(x * y)), so a 10 x 40 pixel and a
    20 x 20 pixel are alike. The one rule for "pixel size more than 2x off", used by the
    engine (refusal) and the plugin (warning).
    """
    ra = math.sqrt(abs(a[0] * a[1]))
    rb = math.sqrt(abs(b[0] * b[1]))
    if min(ra, rb) <= 0:
        return math.inf
    return max(ra, rb) / min(ra, rb)


MAX_PIXEL_RATIO = 2.0
