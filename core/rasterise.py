"""Rasterise labels onto a raster's grid as a uint8 GeoTIFF of class ids (0 = unlabelled)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from terraseg.core.atomic import AtomicOutputs
from terraseg.core.classes import ClassMapping
from terraseg.core.labels import load_labels
from terraseg.core.output_targets import check_output_targets
from terraseg.core.preview import colormap_from_colours
from terraseg.core.raster import RasterSource


def rasterise_labels(raster: str, labels: str, out: str | Path, class_field: str | None,
                     class_map: str | None = None, all_touched: bool = False,
                     overwrite: bool = False) -> dict[str, Any]:
    """Write the label raster the engine would train on; returns path and pixel counts."""
    out = Path(out)
    check_output_targets([out], overwrite)
    with RasterSource(raster) as src:
        grid = src.grid
    ls = load_labels(labels, grid, class_field=class_field,
                     class_map=ClassMapping.parse(class_map), all_touched=all_touched)
    cmap = colormap_from_colours({c.id: c.colour for c in ls.classes})
    with AtomicOutputs(out.parent, overwrite=overwrite) as outputs:
        w = outputs.geotiff(out.name, grid, 1, "uint8", 0, ["class"], colormap=cmap)
        from rasterio.windows import Window

        w.write(ls.labels[None], Window(0, 0, grid.width_px, grid.height_px))
        w.close(overviews=True)
    return {"labels": str(out), "classes": [c.to_dict() for c in ls.classes],
            "pixel_counts": ls.pixel_counts}

