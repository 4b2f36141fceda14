"""Job dicts for the engine worker (docs/worker-protocol.md), shared by panel and Processing.

Every builder returns :meth:`terraseg.protocol.jobs.Job.to_dict` of
:meth:`~terraseg.protocol.jobs.Job.make`: ``{"command": ..., "args": {...}}`` whose
``args`` use the command line's option names with underscores (``class_field`` for
``--class-field``). ``None`` values are dropped (the option keeps its engine default),
``True`` turns a flag on, lists become comma-separated values. Keyword ``**options`` pass
any further option of the command (see ``terraseg <command> --help``), so the panel and the
Processing algorithms reach every engine option through one code path.

The helpers at the end turn QGIS layers into paths the engine can read.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..protocol.jobs import Job as JobSpec

if TYPE_CHECKING:
    from qgis.core import QgsMapLayer, QgsVectorLayer

Job = dict[str, Any]


def make_job(command: str, **args: Any) -> Job:
    """A job for any worker command.

    Args:
        command: One of :data:`terraseg.protocol.jobs.COMMANDS` (``train``, ``predict``,
            ``evaluate``, ``grid``, ``cv``, ``compare``, ``info``, ``rasterise``,
            ``vectorise``, ``areas``, ``mosaic``, ``env``, ``pseudo-label``).
        **args: Options by their command-line names (underscores or dashes).

    Returns:
        The job dict (``None`` values and ``False`` flags left out).
    """
    return JobSpec.make(command, **args).to_dict()


def train_job(raster: str, labels: str, out: str, class_field: str | None = None,
              class_map: str | None = None, bands: str | None = None,
              epochs: int | None = None, patience: int | None = None,
              patch_size: int | None = None, block_size: int | None = None,
              init_model: str | None = None, cache_dir: str | None = None,
              overwrite: bool = False, **options: Any) -> Job:
    """Train a model (``terraseg train``).

    Args:
        raster: Raster file (GDAL-readable).
        labels: Vector labels (``file`` or ``file|layername=NAME``) or a label raster.
        out: Model file to write (``.tsm``).
        class_field: Class attribute of vector labels.
        class_map: Merge source classes, e.g. ``developed=sealed,*=unsealed``.
        bands: Band mapping, ``1,2,3,4`` or ``red=1,green=2,...``.
        epochs: Maximum epochs.
        patience: Early-stopping patience.
        patch_size: Input cutout in pixels (odd).
        block_size: Predicted centre block in pixels (odd).
        init_model: Fine-tune from this model file.
        cache_dir: Zarr cache folder.
        overwrite: Replace an existing model file.
        **options: Further ``train`` options (``blocks``, ``planes``, ``lr``, ``seed``,
            ``samples_per_epoch``, ``accelerator``, ...).

    Returns:
        The job dict.
    """
    return make_job("train", raster=raster, labels=labels, out=out, class_field=class_field,
                    class_map=class_map, bands=bands, epochs=epochs, patience=patience,
                    patch_size=patch_size, block_size=block_size, init_model=init_model,
                    cache_dir=cache_dir, overwrite=overwrite, **options)


def predict_job(model: str, raster: str, out_dir: str, bands: str | None = None,
                window: tuple[int, int, int, int] | list[int] | str | None = None,
                extent_layer: str | None = None, preview: bool = False,
                overwrite: bool = False, **options: Any) -> Job:
    """Probability and class rasters (``terraseg predict``).

    Args:
        model: Model file (``.tsm``).
        raster: Raster file.
        out_dir: Folder receiving ``probability.tif`` and ``classes.tif``.
        bands: Band mapping (default: the model's band indices).
        window: ``(col, row, width, height)`` in pixels of the raster.
        extent_layer: Predict over this vector file's extent (plain file path).
        preview: Also write ``preview.png``.
        overwrite: Replace existing outputs.
        **options: Further ``predict`` options (``tile_size``, ``device``, ``precision``).

    Returns:
        The job dict.
    """
    return make_job("predict", model=model, raster=raster, out_dir=out_dir, bands=bands,
                    window=window, extent_layer=extent_layer, preview=preview,
                    overwrite=overwrite, **options)


def evaluate_job(model: str, raster: str, reference: str, out_dir: str,
                 class_field: str | None = None, class_map: str | None = None,
                 category_field: str | None = None, bands: str | None = None,
                 overwrite: bool = False, **options: Any) -> Job:
    """Accuracy against an independent reference layer (``terraseg evaluate``).

    Args:
        model: Model file.
        raster: Raster file.
        reference: Reference points or polygons (or a raster).
        out_dir: Folder receiving ``metrics.json``, ``per_class.csv``,
            ``confusion_matrix.csv`` (and ``per_category.csv``).
        class_field: Class attribute of the reference layer.
        class_map: Class mapping, e.g. ``developed=sealed,*=unsealed``.
        category_field: Attribute for accuracy per category.
        bands: Band mapping (default: the model's band indices).
        overwrite: Replace existing outputs.
        **options: Further ``evaluate`` options (``device``).

    Returns:
        The job dict.
    """
    return make_job("evaluate", model=model, raster=raster, reference=reference,
                    out_dir=out_dir, class_field=class_field, class_map=class_map,
                    category_field=category_field, bands=bands, overwrite=overwrite,
                    **options)


def quickmap_job(raster: str, labels: str, out_dir: str, class_field: str | None = None,
                 class_map: str | None = None, bands: str | None = None,
                 overwrite: bool = False, **options: Any) -> Job:
    """A first map from a random forest of pixels, no model file (``terraseg quickmap``).

    Args:
        raster: Raster file.
        labels: Vector labels (``file`` or ``file|layername=NAME``) or a label raster.
        out_dir: Folder receiving ``probability.tif`` and ``classes.tif``.
        class_field: Class attribute of vector labels.
        class_map: Class mapping, e.g. ``developed=sealed,*=unsealed``.
        bands: Band mapping, ``1,2,3,4`` or ``red=1,green=2,...``.
        overwrite: Replace existing outputs.
        **options: Further ``quickmap`` options (``trees``, ``max_samples``,
            ``val_fraction``, ``seed``, ``window``, ``features``).

    Returns:
        The job dict.
    """
    return make_job("quickmap", raster=raster, labels=labels, out_dir=out_dir,
                    class_field=class_field, class_map=class_map, bands=bands,
                    overwrite=overwrite, **options)


def pseudo_label_job(raster: str, labels: str, out_dir: str, class_field: str | None = None,
                     class_map: str | None = None, bands: str | None = None,
                     nodata: float | None = None, overwrite: bool = False,
                     **options: Any) -> Job:
    """Dense pseudo-labels from coarse or noisy labels (``terraseg pseudo-label``).

    A random forest of single pixels is fitted on labelled pixels sampled from ``labels``;
    its classes over the whole raster are the pseudo-labels. No model file is written.

    Args:
        raster: Raster file.
        labels: Vector labels (``file`` or ``file|layername=NAME``) or a label raster on
            any grid (resampled onto the raster's by nearest neighbour).
        out_dir: Folder receiving ``classes.tif`` (the pseudo-labels) and
            ``probability.tif``.
        class_field: Class attribute of vector labels.
        class_map: Class mapping, e.g. ``developed=sealed,*=unsealed``.
        bands: Band mapping, ``1,2,3,4`` or ``red=1,green=2,...``.
        nodata: Nodata value replacing the raster's own.
        overwrite: Replace existing outputs.
        **options: Further ``pseudo-label`` options (``strategy``, ``quota``, ``k``,
            ``trees``, ``max_depth``, ``class_weight``, ``seed``, ``zero_disagreeing``,
            ``features``).

    Returns:
        The job dict.
    """
    return make_job("pseudo-label", raster=raster, labels=labels, out_dir=out_dir,
                    class_field=class_field, class_map=class_map, bands=bands, nodata=nodata,
                    overwrite=overwrite, **options)


def rasterise_job(raster: str, labels: str, out: str, class_field: str | None = None,
                  class_map: str | None = None, all_touched: bool = False,
                  overwrite: bool = False) -> Job:
    """Rasterise labels onto a raster's grid (``terraseg rasterise``).

    Args:
        raster: Raster whose grid the labels take.
        labels: Vector labels.
        out: uint8 GeoTIFF of class ids to write (0 = unlabelled).
        class_field: Class attribute.
        class_map: Class mapping.
        all_touched: Burn all pixels a polygon touches.
        overwrite: Replace an existing output.

    Returns:
        The job dict.
    """
    return make_job("rasterise", raster=raster, labels=labels, out=out,
                    class_field=class_field, class_map=class_map, all_touched=all_touched,
                    overwrite=overwrite)


def vectorise_job(classes: str, out: str, min_area: float | None = None,
                  model: str | None = None, overwrite: bool = False) -> Job:
    """Polygons of a class raster (``terraseg vectorise``).

    Args:
        classes: ``classes.tif`` from predict.
        out: GeoPackage to write.
        min_area: Merge regions smaller than this (m2) into their neighbours.
        model: Model file for the class names.
        overwrite: Replace an existing output.

    Returns:
        The job dict.
    """
    return make_job("vectorise", classes=classes, out=out, min_area=min_area, model=model,
                    overwrite=overwrite)


def areas_job(classes: str, out_csv: str, zones: str | None = None,
              zone_field: str | None = None, out_zones: str | None = None,
              model: str | None = None, overwrite: bool = False) -> Job:
    """Area per class, overall or per zone (``terraseg areas``).

    Args:
        classes: ``classes.tif`` from predict.
        out_csv: CSV to write.
        zones: Polygon layer (plain file path: the engine opens its first layer).
        zone_field: Zone name attribute.
        out_zones: GeoPackage of the zones with per-class area attributes.
        model: Model file for the class names.
        overwrite: Replace existing outputs.

    Returns:
        The job dict.
    """
    return make_job("areas", classes=classes, out_csv=out_csv, zones=zones,
                    zone_field=zone_field, out_zones=out_zones, model=model,
                    overwrite=overwrite)


def grid_job(raster: str, labels: str, out_dir: str, **options: Any) -> Job:
    """Hyperparameter grid (``terraseg grid``).

    Args:
        raster: Raster file.
        labels: Vector labels.
        out_dir: Folder for the models and ``grid.csv``.
        **options: Further ``grid``/``train`` options (``lrs``, ``weight_decays``, ...).

    Returns:
        The job dict.
    """
    return make_job("grid", raster=raster, labels=labels, out_dir=out_dir, **options)


def info_job(model: str) -> Job:
    """A model file's metadata (``terraseg info``).

    Args:
        model: Model file.

    Returns:
        The job dict.
    """
    return make_job("info", model=model)


def inspect_job(raster: str, bands: str | None = None, labels: str | None = None,
                class_field: str | None = None, nodata: float | None = None) -> Job:
    """Band coverage, suggested bands and undeclared nodata (``terraseg inspect``).

    Args:
        raster: Raster file.
        bands: The bands asked about (default: all).
        labels: Vector labels or a label raster: coverage of the labelled pixels too.
        class_field: Class attribute of vector labels.
        nodata: Nodata value replacing the raster's own (train, predict and evaluate take
            ``nodata=`` the same way, through their ``**options``).

    Returns:
        The job dict.
    """
    return make_job("inspect", raster=raster, bands=bands, labels=labels,
                    class_field=class_field, nodata=nodata)


def env_job() -> Job:
    """The engine's Python, package versions and device (``terraseg env``).

    Returns:
        The job dict.
    """
    return make_job("env")


# --------------------------------------------------------------------------------------------
# QGIS layers -> engine paths
# --------------------------------------------------------------------------------------------


def split_source(source: str) -> tuple[str, dict[str, str]]:
    """Split a QGIS data source ``file|key=value|...`` into the file and its options.

    Args:
        source: A layer's ``source()``.

    Returns:
        ``(file, {"layername": ..., "layerid": ..., "subset": ...})``.
    """
    path, *parts = source.split("|")
    options = {}
    for part in parts:
        key, _, value = part.partition("=")
        options[key.strip().lower()] = value
    return path, options


def raster_layer_path(layer: QgsMapLayer) -> str:
    """The file of a raster layer, for the engine.

    Args:
        layer: A raster layer read by GDAL.

    Returns:
        Its file path (or GDAL data source string).

    Raises:
        ValueError: The layer is not read by GDAL (web services, ...).
    """
    provider = layer.dataProvider().name() if layer.dataProvider() else ""
    if provider != "gdal":
        raise ValueError(f"Raster layer '{layer.name()}' is not a file ({provider} provider); "
                         "save it as a GeoTIFF first.")
    return layer.source()


def vector_layer_path(layer: QgsVectorLayer, folder: str | None = None,
                      layer_spec: bool = True) -> str:
    """A file the engine can read with the features of a vector layer.

    File-based OGR layers without a filter and unsaved edits are used in place
    (``file|layername=NAME`` when ``layer_spec`` allows it); other layers (memory,
    database, filtered, edited or with a layer name where none is allowed) are written to
    a temporary GeoPackage first.

    Args:
        layer: The vector layer.
        folder: Where temporary GeoPackages go (default: the system's temp folder).
        layer_spec: Whether the consumer understands ``file|layername=NAME`` (labels and
            reference layers do; ``extent_layer`` and ``zones`` need a plain file).

    Returns:
        The path to hand to the engine.

    Raises:
        OSError: The temporary GeoPackage cannot be written.
    """
    source = layer.source()
    path, options = split_source(source)
    in_place = (layer.providerType() == "ogr" and Path(path).is_file()
                and not layer.subsetString() and not options.get("subset")
                and not (layer.isEditable() and layer.isModified()))
    if in_place and not (set(options) - {"layername", "layerid"}):
        if not options:
            return path
        if layer_spec:
            return source
    return export_vector_layer(layer, folder)


def export_vector_layer(layer: QgsVectorLayer, folder: str | None = None) -> str:
    """Write a vector layer (all features, current edits included) to a new GeoPackage.

    Args:
        layer: The layer.
        folder: Target folder (default: the system's temp folder).

    Returns:
        The GeoPackage path (one layer).

    Raises:
        OSError: Writing failed.
    """
    from qgis.core import QgsCoordinateTransformContext, QgsProject, QgsVectorFileWriter

    target_dir = Path(folder or tempfile.gettempdir())
    target_dir.mkdir(parents=True, exist_ok=True)
    out = target_dir / f"terraseg_{uuid.uuid4().hex[:12]}.gpkg"
    opts = QgsVectorFileWriter.SaveVectorOptions()
    opts.driverName = "GPKG"
    opts.fileEncoding = "UTF-8"
    opts.layerName = "labels"
    ctx = (QgsProject.instance().transformContext() if QgsProject.instance()
           else QgsCoordinateTransformContext())
    result = QgsVectorFileWriter.writeAsVectorFormatV3(layer, str(out), ctx, opts)
    code, message = result[0], result[1] if len(result) > 1 else ""
    if code != QgsVectorFileWriter.NoError:
        raise OSError(f"Cannot write layer '{layer.name()}' to {out}: {message}")
    return str(out)
