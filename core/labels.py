"""Training and reference labels: vector layers or label rasters -> a label array on a grid.

:func:`load_labels` looks at the path and hands it to one of two loaders:

- **Vector layers** (:mod:`terraseg.core.vector_labels`): GeoPackage, GeoJSON, Shapefile,
  FlatGeobuf, ... anything fiona reads, with a class attribute holding integers or names.
  Geometries are repaired when invalid (:mod:`terraseg.core.geometry_repair`), reprojected
  to the grid's CRS and burnt (:mod:`terraseg.core.burn`, with the overlap rule).
- **Label rasters** (:mod:`terraseg.core.label_raster`) on any grid (0 = unlabelled,
  nodata = unlabelled), resampled to the target grid by nearest neighbour.

Both resolve source values to model classes the same way
(:mod:`terraseg.core.class_resolution`; model class ids are 1..K, 0 = unlabelled) and return
a :class:`~terraseg.core.label_set.LabelSet`.
"""

from __future__ import annotations

from pathlib import Path

import fiona
from fiona.errors import FionaError

from terraseg.core.classes import ClassInfo, ClassMapping
from terraseg.core.grid import Grid
from terraseg.core.label_raster import load_raster_labels
from terraseg.core.label_set import LabelSet
from terraseg.core.layer_spec import check_exists, split_layer_spec
from terraseg.core.vector_labels import load_vector_labels
from terraseg.protocol.errors import LabelError

VECTOR_EXTENSIONS = frozenset(
    {".gpkg", ".geojson", ".json", ".shp", ".fgb", ".kml", ".gml", ".sqlite", ".gpx", ".tab"}
)
RASTER_EXTENSIONS = frozenset(
    {".tif", ".tiff", ".vrt", ".img", ".jp2", ".png", ".asc", ".nc", ".hdr", ".bil", ".sdat"}
)


def is_vector_labels(path: str | Path) -> bool:
    """Whether ``path`` names a vector layer (else a label raster).

    Known vector extensions and ``"path|layername=NAME"`` are vectors, known raster
    extensions rasters; anything else is tried with fiona.

    Raises:
        LabelError: An unknown extension and no such file.
    """
    file_path, _ = split_layer_spec(str(path))
    if "|" in str(path):
        return True
    ext = Path(file_path).suffix.lower()
    if ext in VECTOR_EXTENSIONS:
        return True
    if ext in RASTER_EXTENSIONS:
        return False
    check_exists(file_path, "Label file")
    try:
        return bool(fiona.listlayers(file_path))
    except (FionaError, OSError, ValueError):
        return False


def load_labels(
    path: str | Path,
    grid: Grid,
    class_field: str | None = None,
    class_map: ClassMapping | None = None,
    classes: tuple[ClassInfo, ...] | None = None,
    category_field: str | None = None,
    all_touched: bool = False,
    require_two_classes: bool = True,
) -> LabelSet:
    """Load labels from a vector layer or a label raster, whichever ``path`` is.

    Known vector extensions (.gpkg, .geojson, .json, .shp, .fgb, ...) and QGIS-style
    ``"path|layername=NAME"`` go to :func:`~terraseg.core.vector_labels.load_vector_labels`,
    known raster extensions (.tif, .vrt, ...) to
    :func:`~terraseg.core.label_raster.load_raster_labels`; anything else is tried with fiona
    first.

    Args:
        path: Vector or raster file.
        grid: Target grid (the raster the model sees).
        class_field: Class attribute; required for vector labels.
        class_map: Optional mapping of source classes onto model classes.
        classes: Fixed model classes (applying/evaluating a model), or None when training.
        category_field: Optional category attribute (vector labels only).
        all_touched: Burn every pixel a geometry touches (vector labels only).
        require_two_classes: When training, fail unless at least two classes have pixels.

    Returns:
        The labels on ``grid``.

    Raises:
        LabelError: The labels are missing, unreadable or unusable (see the loaders).
        RasterError: ``grid`` has no CRS.
    """
    file_path, _ = split_layer_spec(str(path))
    if is_vector_labels(path):
        if not class_field:
            raise LabelError(
                f"{Path(file_path).name} is a vector layer but no class field was given.",
                "Name the attribute that holds the class (integer or name), e.g. --class-field "
                "class.",
            )
        return load_vector_labels(
            path,
            grid,
            class_field,
            class_map=class_map,
            classes=classes,
            category_field=category_field,
            all_touched=all_touched,
            require_two_classes=require_two_classes,
        )
    return load_raster_labels(
        path, grid, class_map=class_map, classes=classes, require_two_classes=require_two_classes
    )
