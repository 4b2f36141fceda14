"""Colouring class rasters: the GDAL colour table of a class GeoTIFF and an RGBA PNG preview."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning

from terraseg.core.atomic import remove_with_sidecars, temp_sibling
from terraseg.protocol.errors import OutputError


def _hex_to_rgb(colour: str) -> tuple[int, int, int]:
    text = colour.strip().lstrip("#")
    if len(text) != 6:
        raise ValueError(f"Colour {colour!r} is not of the form '#rrggbb'.")
    return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))


def colormap_from_colours(colours: dict[int, str]) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table ``{id: (r, g, b, 255)}`` from ``{id: "#rrggbb"}``; 0 transparent."""
    cmap: dict[int, tuple[int, int, int, int]] = {0: (0, 0, 0, 0)}
    for cid, colour in colours.items():
        if cid != 0:
            cmap[int(cid)] = (*_hex_to_rgb(colour), 255)
    return cmap


def write_preview_png(
    classes_tif: Path, png_path: Path, colours: dict[int, str], max_px: int = 1024
) -> None:
    """Write an RGBA PNG preview of a class raster, at most ``max_px`` on its longer side.

    The class raster is read decimated (nearest; overviews are used when present), class ids
    are coloured from ``colours`` ("#rrggbb"), 0 / nodata is transparent black and ids
    without a colour are opaque grey. The PNG is written to a temp file and moved into place.

    Args:
        classes_tif: Single-band class raster (e.g. classes.tif).
        png_path: PNG to write (replaced if it exists).
        colours: Colour per class id.
        max_px: Maximum width / height of the preview.

    Raises:
        OutputError: The PNG cannot be written.
    """
    if max_px < 1:
        raise ValueError(f"max_px must be >= 1, got {max_px}.")
    png_path = Path(png_path)
    with rasterio.open(classes_tif) as src:
        scale = max(src.height / max_px, src.width / max_px, 1.0)
        out_h = max(1, int(round(src.height / scale)))
        out_w = max(1, int(round(src.width / scale)))
        ids = src.read(1, out_shape=(out_h, out_w), resampling=Resampling.nearest)
        nodata = src.nodata
    lut = np.zeros((256, 4), dtype=np.uint8)
    lut[1:] = (128, 128, 128, 255)
    for cid, colour in colours.items():
        if 0 < int(cid) < 256:
            lut[int(cid)] = (*_hex_to_rgb(colour), 255)
    idx = np.clip(ids.astype(np.int64), 0, 255)
    rgba = lut[idx]
    transparent = ids == 0
    if nodata is not None:
        transparent |= ids == nodata
    rgba[transparent] = 0
    rgba = np.moveaxis(rgba, -1, 0)  # (4, h, w)

    tmp = temp_sibling(png_path)
    try:
        with warnings.catch_warnings(), rasterio.Env(GDAL_PAM_ENABLED="NO"):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(
                tmp, "w", driver="PNG", width=out_w, height=out_h, count=4, dtype="uint8"
            ) as dst:
                dst.write(rgba)
        os.replace(tmp, png_path)
    except (rasterio.errors.RasterioError, OSError) as exc:
        remove_with_sidecars(tmp)
        raise OutputError(
            f"Cannot write preview '{png_path}': {exc}.",
            "Check that the output directory is writable and has free space.",
        ) from exc
    except BaseException:
        remove_with_sidecars(tmp)
        raise
