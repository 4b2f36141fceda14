"""Layer specifications: which file, and which layer in it, a vector path names.

QGIS names a layer of a multi-layer file (a GeoPackage, a Shapefile folder) as
``"file|layername=NAME"`` or ``"file|layerid=N"``; the engine accepts the same strings
wherever it reads vector layers (labels, reference points, zones).
"""

from __future__ import annotations

from pathlib import Path

import fiona
from fiona.errors import FionaError

from terraseg.protocol.errors import LabelError


def split_layer_spec(path: str) -> tuple[str, str | int | None]:
    """Split QGIS's ``"file|layername=NAME"`` / ``"file|layerid=N"`` into (file, layer).

    Args:
        path: A file path, optionally with ``|``-separated layer options.

    Returns:
        The file path and the layer: a name, an index, or None (the first layer).
    """
    if "|" not in path:
        return path, None
    file_path, *options = path.split("|")
    layer: str | int | None = None
    for opt in options:
        key, _, value = opt.partition("=")
        key = key.strip().lower()
        if key == "layername" and value:
            layer = value
        elif key == "layerid" and value.strip().isdigit():
            layer = int(value)
    return file_path, layer


def check_exists(path: str, what: str) -> None:
    """Refuse a missing local label file; URLs and GDAL virtual paths are not checked.

    Args:
        path: File path (no layer options).
        what: What the file is, for the message (e.g. "Label file").

    Raises:
        LabelError: The file does not exist.
    """
    if "://" in path or path.startswith("/vsi"):
        return
    if not Path(path).exists():
        raise LabelError(f"{what} not found: {path}.", "Check the path to the labels.")


def resolve_layer(path: str, layer: str | int | None) -> str:
    """Name of the layer to read: the given one (checked) or the first.

    Args:
        path: Vector file.
        layer: Layer name, layer index, or None for the first layer.

    Returns:
        The layer's name.

    Raises:
        LabelError: The file cannot be read, has no layer, or has no such layer.
    """
    try:
        layers = fiona.listlayers(path)
    except (FionaError, OSError, ValueError) as exc:
        raise LabelError(
            f"Cannot read vector labels {path}: {exc}.",
            "Give a readable vector layer (GeoPackage, GeoJSON, Shapefile, ...).",
        ) from exc
    if not layers:
        raise LabelError(f"{Path(path).name} contains no vector layer.",
                         "Give a file with a polygon or point layer.")
    if layer is None:
        return layers[0]
    if isinstance(layer, int):
        if 0 <= layer < len(layers):
            return layers[layer]
    elif layer in layers:
        return layer
    raise LabelError(
        f"Layer '{layer}' not found in {Path(path).name}; it has: {', '.join(layers)}.",
        "Pick one of the listed layers.",
    )
