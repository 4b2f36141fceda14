"""Label rasters: band 1 of a raster of class values, resampled onto a grid.

A label raster may be on any grid and in any CRS; it is resampled to the target grid by
nearest neighbour. 0 and the raster's nodata (or masked pixels) are unlabelled; other values
must be integers and are resolved to model classes by
:mod:`terraseg.core.class_resolution`; a class raster TerraSeg wrote (predict, quickmap,
pseudo-label) names its classes in a tag, used when no class map is given. Regions (for
spatial splits) are the connected components of each class, with 8-connectivity, within
tiles of 256 px (a dense map's components would span the scene); a
region's stable key (``LabelSet.region_keys``) is ``r:CLASS:row0,col0,row1,col1``, its
model class and its pixel bounding box on the grid (end exclusive), so a region keeps its
key across runs on the same grid as long as its extent does not change (one that grows, or
merges with new labels, is a new region).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.warp import Resampling, reproject
from scipy import ndimage

from terraseg.core.class_resolution import resolve_classes, value_key
from terraseg.core.classes import ClassInfo, ClassMapping
from terraseg.core.grid import Grid
from terraseg.core.label_extent import check_raster_overlap, grid_crs
from terraseg.core.label_set import LabelSet, make_label_set
from terraseg.core.layer_spec import check_exists
from terraseg.protocol.errors import LabelError

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
#: Label-raster regions are cut at tiles of this size (see :func:`raster_regions`).
REGION_TILE_PX = 256


def load_raster_labels(
    path: str | Path,
    grid: Grid,
    class_map: ClassMapping | None = None,
    classes: tuple[ClassInfo, ...] | None = None,
    require_two_classes: bool = True,
) -> LabelSet:
    """Resample a label raster (band 1) onto ``grid`` by nearest neighbour.

    0 and the raster's nodata (or masked pixels) are unlabelled; other values must be
    integers and are resolved to model classes as :mod:`terraseg.core.class_resolution`
    describes.
    Regions are the connected components (8-connectivity) of each class.

    Args:
        path: Label raster on any grid and CRS.
        grid: Target grid.
        class_map: Optional mapping of source values onto model classes.
        classes: Fixed model classes, or None when training.
        require_two_classes: When training (``classes`` is None), fail unless at least two
            classes have labelled pixels.

    Returns:
        The resampled labels.

    Raises:
        LabelError: File missing or unreadable, no CRS, no overlap, non-integer or unknown
            class values, a single class, or no labelled pixels on the grid.
        RasterError: ``grid`` has no CRS.
    """
    dst_crs = grid_crs(grid)
    name = Path(str(path)).name
    check_exists(str(path), "Label raster")
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise LabelError(
                    f"The label raster {name} has no coordinate reference system.",
                    "Assign its CRS (e.g. gdal_edit.py -a_srs EPSG:xxxx) and try again.",
                )
            check_raster_overlap(src.bounds, src.crs, grid, dst_crs, name)
            data = src.read(1)
            valid = src.read_masks(1) > 0
            if class_map is None and classes is None:
                class_map = tagged_class_map(src.tags().get("TERRASEG_CLASSES"))
            src_transform, src_crs = src.transform, src.crs
    except RasterioIOError as exc:
        raise LabelError(
            f"Cannot read label raster {path}: {exc}.",
            "Give a GDAL-readable single-band raster with integer class values.",
        ) from exc

    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data)
        frac = valid & (data != np.round(data))
        if frac.any():
            raise LabelError(
                f"The label raster {name} has non-integer values (e.g. {data[frac][0]}).",
                "Use a raster of integer class values with 0 (or nodata) for unlabelled pixels.",
            )
    src_values = np.where(valid, data, 0).astype(np.int64)
    lo, hi = np.iinfo(np.int32).min, np.iinfo(np.int32).max
    if src_values.size and (src_values.min() < lo or src_values.max() > hi):
        raise LabelError(
            f"The label raster {name} has values outside the 32-bit integer range.",
            "Use small integer class values (e.g. 1..254) with 0 for unlabelled pixels.",
        )
    warped = np.zeros((grid.height_px, grid.width_px), dtype=np.int32)
    try:
        reproject(
            source=src_values.astype(np.int32),
            destination=warped,
            src_transform=src_transform,
            src_crs=src_crs,
            src_nodata=0,
            dst_transform=grid.transform,
            dst_crs=dst_crs,
            dst_nodata=0,
            resampling=Resampling.nearest,
        )
    except RasterioError as exc:
        raise LabelError(
            f"Cannot resample the label raster {name} to the target grid: {exc}.",
            "Check that the label raster's CRS is correct.",
        ) from exc

    uniq, inverse = np.unique(warped, return_inverse=True)
    present = [int(v) for v in uniq if v != 0]
    if not present:
        raise LabelError(
            f"The label raster {name} has no labelled pixels (values other than 0/nodata) "
            "where it overlaps the raster.",
            "Check that the label raster covers the labelled area of the raster.",
        )
    model_classes, lookup = resolve_classes(present, class_map, classes, name)
    lut = np.array([0 if v == 0 else lookup[value_key(int(v))] for v in uniq], dtype=np.uint8)
    labels = lut[inverse.reshape(warped.shape)]

    regions, keys = raster_regions(labels, model_classes)
    return make_label_set(
        labels,
        regions,
        model_classes,
        None,
        (),
        repaired=(),
        skipped=(),
        feature_ids=(),
        notes=(),
        check_two=classes is None and require_two_classes,
        name=name,
        region_keys=tuple(keys),
    )


def raster_regions(labels: np.ndarray, classes: tuple[ClassInfo, ...],
                   tile_px: int = REGION_TILE_PX) -> tuple[np.ndarray, list[str]]:
    """Regions of a label raster: connected components of each class within each tile.

    A dense label raster (a coarse map, pseudo-labels) has components that span the scene;
    whole, one of them would go to one side of any split and leave the other side scraps.
    Cut at ``tile_px`` tiles on the grid, each piece is a region of its own. Keys name the
    class and the piece's pixel bounding box (:func:`raster_region_key`).

    Returns:
        int32 region ids (0 = unlabelled) and the key of each id (index id - 1).
    """
    h, w = labels.shape
    regions = np.zeros(labels.shape, dtype=np.int32)
    keys: list[str] = []
    for r0 in range(0, h, tile_px):
        for c0 in range(0, w, tile_px):
            tile = labels[r0:r0 + tile_px, c0:c0 + tile_px]
            out = regions[r0:r0 + tile_px, c0:c0 + tile_px]
            for info in classes:
                comp, n = ndimage.label(tile == info.id, structure=EIGHT_CONNECTED)
                if not n:
                    continue
                np.copyto(out, comp.astype(np.int32) + len(keys), where=comp > 0)
                keys.extend(raster_region_key(info.name, (
                    slice(box[0].start + r0, box[0].stop + r0),
                    slice(box[1].start + c0, box[1].stop + c0)))
                    for box in ndimage.find_objects(comp))
    return regions, keys


def tagged_class_map(tag: str | None) -> ClassMapping | None:
    """The class names of a class raster TerraSeg wrote (its ``TERRASEG_CLASSES`` tag).

    predict, quickmap and pseudo-label tag their classes.tif with the classes' ids and
    names; trained on as labels, the names come with them (``1=sealed,2=unsealed``) unless
    a class map is given. None for other rasters or an unreadable tag.
    """
    if not tag:
        return None
    try:
        items = json.loads(tag)
        rules = tuple((str(int(c["id"])), str(c["name"])) for c in items)
    except (ValueError, TypeError, KeyError):
        return None
    if not rules or any(not name or set(name) & set(",=") for _, name in rules):
        return None
    return ClassMapping(rules)


def raster_region_key(class_name: str, box: tuple[slice, slice]) -> str:
    """The stable key of a label-raster region: ``r:CLASS:row0,col0,row1,col1``."""
    rows, cols = box
    return f"r:{class_name}:{rows.start},{cols.start},{rows.stop},{cols.stop}"
