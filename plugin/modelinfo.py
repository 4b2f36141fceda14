"""Model file metadata for the panels, without torch (docs/model-file.md).

The header is read by :func:`terraseg.protocol.model_header.read_model_document`, the one
reader the engine uses too, so a truncated, foreign or newer file gets the same message on
both sides; only the header is read, never the weights. The panels work on the plain JSON
document; :func:`compatibility_problems` applies the engine's pixel-size rule
(:func:`terraseg.protocol.model_meta.pixel_size_ratio`) as a warning.

Training writes two files: ``NAME.tsm``, the best epoch's weights (the model to predict
with), and, when they differ, ``NAME.last.tsm``, the last epoch's weights (a checkpoint to
resume training from; its metadata says ``"checkpoint": "last"``).
:func:`checkpoint_note` names such a file for the analyst and :data:`MODEL_FILES_HELP`
explains the pair in file dialogs and Processing's help.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..protocol.errors import ModelFileError
from ..protocol.model_header import read_model_document
from ..protocol.model_meta import MAX_PIXEL_RATIO, pixel_size_ratio

#: The error of an unreadable model file (the protocol's ``ModelFileError``).
ModelInfoError = ModelFileError

#: How training names the last epoch's weights next to ``NAME.tsm`` (training/train.py).
LAST_SUFFIX = ".last.tsm"
#: The two files training writes, for file dialogs and Processing's help.
MODEL_FILES_HELP = ("NAME.tsm holds the best epoch's weights: predict with it. "
                    "NAME.last.tsm, written beside it when the last epoch was not the best, "
                    "holds the last epoch's weights: a checkpoint to resume training from "
                    "(fine-tune from it), not the model to predict with.")
#: File dialog filters: every model, and best-epoch models by name (Qt cannot exclude).
MODEL_FILE_FILTERS = ("TerraSeg model (*.tsm);;"
                      "TerraSeg model, last epoch: checkpoint to resume (*.last.tsm)")


def read_model_metadata(path: str | Path) -> dict[str, Any]:
    """The TerraSeg metadata of a model file.

    Args:
        path: A ``.tsm`` file.

    Returns:
        The parsed ``__metadata__.terraseg`` document.

    Raises:
        ModelInfoError: Missing, truncated, foreign or newer file (message and hint).
    """
    return read_model_document(path)


def is_last_checkpoint(path: str | Path | None, meta: dict[str, Any] | None = None) -> bool:
    """Whether a model file holds the last epoch's weights (``NAME.last.tsm``).

    Args:
        path: The model file (its name decides when ``meta`` is None).
        meta: Its metadata (``"checkpoint": "last"`` decides).
    """
    if meta is not None and meta.get("checkpoint") is not None:
        return meta.get("checkpoint") == "last"
    return bool(path) and Path(path).name.lower().endswith(LAST_SUFFIX)


def best_model_path(path: str | Path) -> Path:
    """``NAME.tsm`` for ``NAME.last.tsm`` (the file itself for any other name)."""
    file = Path(path)
    if file.name.lower().endswith(LAST_SUFFIX):
        return file.with_name(file.name[:-len(LAST_SUFFIX)] + ".tsm")
    return file


def checkpoint_note(path: str | Path | None, meta: dict[str, Any] | None = None) -> str:
    """What a model file is for, when it is not the model to predict with.

    Args:
        path: The model file.
        meta: Its metadata.

    Returns:
        ``""`` for a best-epoch model, else e.g. ``"last epoch (checkpoint to resume), the
        best epoch is sealed.tsm"`` (``... is not here`` when that file is missing).
    """
    if not is_last_checkpoint(path, meta):
        return ""
    if not path:
        return "last epoch (checkpoint to resume), not the best epoch"
    best = best_model_path(path)
    if best == Path(path):
        return "last epoch (checkpoint to resume), not the best epoch"
    where = "" if best.is_file() else " (not in this folder)"
    return f"last epoch (checkpoint to resume), the best epoch is {best.name}{where}"


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
        if pixel_size_ratio(pixel_size, trained_px) > MAX_PIXEL_RATIO:
            problems.append(
                f"Pixel size {pixel_size[0]:g} x {pixel_size[1]:g} differs more than "
                f"{MAX_PIXEL_RATIO:g}x from the training raster's "
                f"{trained_px[0]:g} x {trained_px[1]:g}.")
    return problems


def summary(meta: dict[str, Any], path: str | Path | None = None) -> str:
    """One or two lines describing a model for the panel.

    Args:
        meta: Model metadata.
        path: Its file; a last-epoch checkpoint is named first (:func:`checkpoint_note`).
    """
    classes = ", ".join(c["name"] for c in model_classes(meta))
    bands = ", ".join(f"{n}={i}" for i, n in model_bands(meta))
    training = meta.get("training") or {}
    val = ((meta.get("metrics") or {}).get("val") or {}).get("accuracy")
    parts = [f"classes: {classes}", f"bands: {bands}"]
    note = checkpoint_note(path, meta)
    if note:
        parts.insert(0, note)
    if training.get("epochs_run") is not None:
        parts.append(f"epochs: {training['epochs_run']}")
    if isinstance(val, int | float):
        parts.append(f"val accuracy: {val:.3f}")
    created = meta.get("created")
    if created:
        parts.append(f"created {created}")
    return "; ".join(parts)
