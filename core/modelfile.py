"""Model files: weights plus self-describing metadata in one safetensors file.

A TerraSeg model file (``.tsm``) is a `safetensors <https://github.com/huggingface/safetensors>`_
file: a JSON header and raw tensor bytes. Loading it never executes code (no pickle). The
header's ``__metadata__`` holds one key, ``terraseg``, with the JSON document described in
docs/model-file.md: architecture and parameters, bands, normalisation, classes, geometry,
training raster pixel size and CRS, training metrics, label fingerprint, software version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from terraseg.core.atomic import atomic_path
from terraseg.core.models.registry import build_model
from terraseg.core.raster import RasterSource, pixel_size_ratio
from terraseg.protocol.errors import ModelFileError, RasterError

FORMAT = "terraseg-model"
FORMAT_VERSION = 1
META_KEY = "terraseg"


@dataclass(frozen=True)
class LoadedModel:
    """A network in eval mode and its metadata document."""

    network: nn.Module
    meta: dict[str, Any] = field(repr=False)

    @property
    def band_names(self) -> list[str]:
        """Band names in model order."""
        return list(self.meta["bands"]["names"])


def save_model(path: str | Path, network: nn.Module, meta: dict[str, Any]) -> Path:
    """Write weights and metadata atomically (temp file + rename).

    Args:
        path: Target file.
        network: The trained network.
        meta: Metadata document (architecture, bands, classes, ...); format keys are added.
    """
    path = Path(path)
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    tensors = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(doc)})
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata document of a model file, without loading weights."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Model file not found: {path}.", "Check the --model path.")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(
            f"{path} is not a readable TerraSeg model file (truncated or another format: "
            f"{exc}).",
            "Use a .tsm file written by 'terraseg train'; re-copy it if it was cut short.",
        ) from exc
    if META_KEY not in header:
        raise ModelFileError(f"{path} is a safetensors file but not a TerraSeg model.",
                             "Use a .tsm file written by 'terraseg train'.")
    try:
        doc = json.loads(header[META_KEY])
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path} has corrupt TerraSeg metadata ({exc}).",
                             "Retrain or re-copy the model file.") from exc
    if not isinstance(doc, dict):
        raise ModelFileError(f"{path} has corrupt TerraSeg metadata (not a JSON object).",
                             "Retrain or re-copy the model file.")
    if doc.get("format") != FORMAT or int(doc.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has format {doc.get('format')} v{doc.get('format_version')}; this "
            f"TerraSeg reads {FORMAT} up to v{FORMAT_VERSION}.",
            "Update TerraSeg to open this model.",
        )
    return doc


def load_model(path: str | Path) -> LoadedModel:
    """Rebuild the network from metadata and load its weights (eval mode, CPU)."""
    meta = read_metadata(path)
    arch = meta["architecture"]
    network = build_model(arch["name"], arch["params"])
    try:
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        network.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise ModelFileError(f"Weights in {path} do not match its architecture ({exc}).",
                             "The file is damaged: retrain or re-copy it.") from exc
    network.eval()
    return LoadedModel(network=network, meta=meta)


def check_raster_fits(meta: dict[str, Any], source: RasterSource) -> None:
    """Refuse, before any work, a raster whose bands or pixel size do not fit the model.

    Raises:
        RasterError: Band count differs, or the pixel size is off by more than a factor 2.
    """
    want = meta["bands"]["names"]
    if source.grid.crs is None:
        raise RasterError(f"Raster {source.path} has no CRS, so the outputs could not be "
                          "placed on the map.",
                          "Assign the raster's CRS (QGIS: Layer properties > Source; or "
                          "gdal_edit.py -a_srs) and run again.")
    if source.count != len(want):
        raise RasterError(
            f"The model expects {len(want)} band(s) {want} but the raster mapping gives "
            f"{source.count} ({list(source.bands.names)}).",
            f"Pass --bands with {len(want)} band numbers in the model's order.",
        )
    trained = tuple(meta["training_raster"]["pixel_size"])
    ratio = pixel_size_ratio(trained, source.grid.pixel_size)
    if ratio > 2.0:
        raise RasterError(
            f"Pixel size {source.grid.pixel_size} differs from the training raster's "
            f"{trained} by a factor {ratio:.1f} (> 2).",
            "Resample the raster to the model's pixel size or train a model at this one.",
        )


