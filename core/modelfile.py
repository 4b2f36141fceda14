"""Model files: weights plus self-describing metadata in one safetensors file.

A TerraSeg model file (``.tsm``) is a `safetensors <https://github.com/huggingface/safetensors>`_
file: a JSON header and raw tensor bytes. Loading it never executes code (no pickle). The
header's ``__metadata__`` holds one key, ``terraseg``, with the JSON document described in
docs/model-file.md and typed as :class:`~terraseg.protocol.model_meta.ModelMeta`. The
header is read by :mod:`terraseg.protocol.model_header` (shared with the plugin); the
metadata is validated, and the network's size checked without allocating it, before any
network is built.
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
from terraseg.core.models.registry import (
    MAX_PARAMETERS,
    build_model,
    build_on_meta_device,
    config_from_params,
    get_entry,
)
from terraseg.core.raster import RasterSource
from terraseg.protocol.errors import ConfigError, ModelFileError, RasterError
from terraseg.protocol.model_header import META_KEY, read_model_document
from terraseg.protocol.model_meta import (
    FORMAT,
    FORMAT_VERSION,
    MAX_PIXEL_RATIO,
    ModelMeta,
    pixel_size_ratio,
)

__all__ = ["FORMAT", "FORMAT_VERSION", "META_KEY", "LoadedModel", "check_raster_fits",
           "load_model", "read_meta", "read_metadata", "save_model"]


@dataclass(frozen=True)
class LoadedModel:
    """A network in eval mode and its typed metadata."""

    network: nn.Module
    meta: ModelMeta = field(repr=False)

    @property
    def band_names(self) -> list[str]:
        """Band names in model order."""
        return self.meta.band_names

    @property
    def kind(self) -> Any:
        """The model kind (core/models/kinds.py) of its architecture."""
        return get_entry(self.meta.architecture.name).kind


def save_model(path: str | Path, network: nn.Module, meta: ModelMeta | dict[str, Any]) -> Path:
    """Write weights and metadata atomically (temp file + rename).

    Args:
        path: Target file.
        network: The trained network.
        meta: Metadata (a ModelMeta, or a document whose format keys are added).
    """
    path = Path(path)
    doc = (meta.to_dict() if isinstance(meta, ModelMeta)
           else {"format": FORMAT, "format_version": FORMAT_VERSION, **meta})
    tensors = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(doc)})
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata document of a model file as JSON, without loading weights.

    Raises:
        ModelFileError: Missing, truncated, foreign or newer file.
    """
    return read_model_document(path)


def read_meta(path: str | Path) -> ModelMeta:
    """The validated metadata of a model file, checked against the model registry.

    Raises:
        ModelFileError: Unreadable file, invalid metadata, an unknown architecture, a kind
            that disagrees with the registry, or a network too large to be real.
    """
    path = Path(path)
    doc = read_model_document(path)
    try:
        meta = ModelMeta.from_dict(doc)
    except ModelFileError as exc:
        raise ModelFileError(f"{path.name}: {exc.message}", exc.hint) from None
    check_architecture(meta, path.name)
    return meta


def check_architecture(meta: ModelMeta, name: str = "model") -> None:
    """Refuse metadata whose network the registry cannot build sensibly.

    Raises:
        ModelFileError: Unknown architecture or parameters, a geometry of another kind, or
            more than :data:`MAX_PARAMETERS` parameters.
    """
    arch = meta.architecture
    try:
        entry = get_entry(arch.name)
        config_from_params(arch.name, dict(arch.params))
    except (ConfigError, TypeError, ValueError) as exc:
        hint = exc.hint if isinstance(exc, ConfigError) else ""
        raise ModelFileError(f"{name}: model metadata 'architecture' is not buildable ({exc}).",
                             hint or "Update TerraSeg, or retrain the model.") from None
    if entry.kind.name != meta.geometry.kind:
        raise ModelFileError(
            f"{name}: model metadata 'geometry.kind' is {meta.geometry.kind!r} but a "
            f"'{arch.name}' network is of kind {entry.kind.name!r}.",
            "The file was edited by hand or is damaged: retrain or re-copy it.")
    try:
        skeleton = build_on_meta_device(arch.name, dict(arch.params))
        n = sum(p.numel() for p in skeleton.parameters())
    except (ConfigError, TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise ModelFileError(f"{name}: model metadata 'architecture.params' cannot build a "
                             f"'{arch.name}' network ({exc}).",
                             "The file was edited by hand or is damaged: retrain or re-copy "
                             "it.") from None
    if n > MAX_PARAMETERS:
        raise ModelFileError(
            f"{name}: model metadata 'architecture.params' describe a network of {n:,} "
            f"parameters (more than {MAX_PARAMETERS:,}).",
            "The file was edited by hand or is damaged: retrain or re-copy it.")
    problem = entry.kind.geometry_problem(meta.geometry, skeleton)
    if problem is not None:
        raise ModelFileError(f"{name}: model metadata {problem}.",
                             "The file was edited by hand or is damaged: retrain or re-copy "
                             "it.")


def load_model(path: str | Path) -> LoadedModel:
    """Validate the metadata, rebuild the network and load its weights (eval mode, CPU)."""
    meta = read_meta(path)
    arch = meta.architecture
    network = build_model(arch.name, dict(arch.params))
    try:
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        network.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise ModelFileError(f"Weights in {path} do not match its architecture ({exc}).",
                             "The file is damaged: retrain or re-copy it.") from exc
    network.eval()
    return LoadedModel(network=network, meta=meta)


def check_raster_fits(meta: ModelMeta, source: RasterSource) -> None:
    """Refuse, before any work, a raster whose bands or pixel size do not fit the model.

    Raises:
        RasterError: Band count differs, or the pixel size is off by more than a factor 2.
    """
    want = meta.band_names
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
    trained = meta.training_raster.pixel_size
    ratio = pixel_size_ratio(trained, source.grid.pixel_size)
    if ratio > MAX_PIXEL_RATIO:
        raise RasterError(
            f"Pixel size {source.grid.pixel_size} differs from the training raster's "
            f"{trained} by a factor {ratio:.1f} (> {MAX_PIXEL_RATIO:g}).",
            "Resample the raster to the model's pixel size or train a model at this one.",
        )
