"""Model file metadata without torch: the safetensors header, read with pure Python.

A ``.tsm`` file starts with an 8-byte little-endian header length, then a JSON header whose
``__metadata__.terraseg`` entry is the TerraSeg metadata as a JSON string
(docs/model-file.md). Only the header is read, never the weights.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

MAX_HEADER_BYTES = 100 * 1024 * 1024
MAX_PIXEL_RATIO = 2.0


class ModelInfoError(ValueError):
    """The file is not a readable TerraSeg model."""


def read_model_metadata(path: str | Path) -> dict[str, Any]:
    """The TerraSeg metadata of a model file.

    Args:
        path: A ``.tsm`` file.

    Returns:
        The parsed ``__metadata__.terraseg`` document.

    Raises:
        ModelInfoError: Missing, truncated or foreign file.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ModelInfoError(f"{p.name} is too short to be a TerraSeg model.")
            (length,) = struct.unpack("<Q", head)
            if length <= 1 or length > MAX_HEADER_BYTES:
                raise ModelInfoError(f"{p.name} is not a safetensors model file.")
            raw = fh.read(length)
    except OSError as exc:
        raise ModelInfoError(f"Cannot read {p}: {exc.strerror or exc}.") from exc
    if len(raw) < length:
        raise ModelInfoError(f"{p.name} is truncated (header incomplete).")
    try:
        header = json.loads(raw.decode("utf-8"))
        text = header["__metadata__"]["terraseg"]
        meta = json.loads(text) if isinstance(text, str) else text
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelInfoError(f"{p.name} is not a TerraSeg model (no TerraSeg metadata).") from exc
    if not isinstance(meta, dict) or meta.get("format") != "terraseg-model":
        raise ModelInfoError(f"{p.name} is not a TerraSeg model (format is not terraseg-model).")
    return meta


def model_classes(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Classes (``id``, ``name``, ``colour``) in model order."""
    return sorted((dict(c) for c in meta.get("classes", [])), key=lambda c: int(c["id"]))


def model_bands(meta: dict[str, Any]) -> list[tuple[int, str]]:
    """(1-based band index, name) in model order."""
    bands = meta.get("bands") or {}
    indices = [int(i) for i in bands.get("indices", [])]
    names = list(bands.get("names") or [])
    names += [f"band_{i}" for i in indices[len(names):]]
    return list(zip(indices, names, strict=False))


def training_pixel_size(meta: dict[str, Any]) -> tuple[float, float] | None:
    """Pixel size (x, y) of the training raster, if recorded."""
    size = (meta.get("training_raster") or {}).get("pixel_size")
    if not size or len(size) < 2:
        return None
    return abs(float(size[0])), abs(float(size[1]))


def compatibility_problems(meta: dict[str, Any], band_count: int,
                           pixel_size: tuple[float, float] | None) -> list[str]:
    """Why running the model on a raster may fail or mislead (empty when it fits).

    Args:
        meta: Model metadata.
        band_count: Number of bands of the raster.
        pixel_size: Its pixel size (x, y) in CRS units, if known.
    """
    problems = []
    bands = model_bands(meta)
    if bands:
        needed = max(i for i, _ in bands)
        if band_count < needed:
            problems.append(f"The model reads band {needed} but the raster has only "
                            f"{band_count} band(s).")
        elif band_count != len(bands):
            problems.append(f"The model uses {len(bands)} band(s) "
                            f"({', '.join(f'{n}={i}' for i, n in bands)}); the raster has "
                            f"{band_count}. Check that the band numbers mean the same.")
    trained_px = training_pixel_size(meta)
    if trained_px and pixel_size and min(pixel_size) > 0 and min(trained_px) > 0:
        ratio = max(pixel_size[0] / trained_px[0], trained_px[0] / pixel_size[0],
                    pixel_size[1] / trained_px[1], trained_px[1] / pixel_size[1])
        if ratio > MAX_PIXEL_RATIO:
            problems.append(
                f"Pixel size {pixel_size[0]:g} x {pixel_size[1]:g} differs more than "
                f"{MAX_PIXEL_RATIO:g}x from the training raster's "
                f"{trained_px[0]:g} x {trained_px[1]:g}.")
    return problems


def summary(meta: dict[str, Any]) -> str:
    """One or two lines describing a model for the panel."""
    classes = ", ".join(c["name"] for c in model_classes(meta))
    bands = ", ".join(f"{n}={i}" for i, n in model_bands(meta))
    training = meta.get("training") or {}
    val = ((meta.get("metrics") or {}).get("val") or {}).get("accuracy")
    parts = [f"classes: {classes}", f"bands: {bands}"]
    if training.get("epochs_run") is not None:
        parts.append(f"epochs: {training['epochs_run']}")
    if isinstance(val, int | float):
        parts.append(f"val accuracy: {val:.3f}")
    created = meta.get("created")
    if created:
        parts.append(f"created {created}")
    return "; ".join(parts)
