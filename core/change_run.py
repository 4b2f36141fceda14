"""``terraseg change`` by classification difference: compare two class maps, write the outputs.

Writes into ``out_dir``, all together or nothing (core/atomic.py), refusing existing files
without ``overwrite``:

- ``fromto.tif``: from-to code per pixel (core/change.py), colour table, tag
  ``TERRASEG_CLASSES`` naming each code ``from -> to`` (so ``terraseg vectorise``/``areas``
  name them), band description listing the code rule;
- ``change_mask.tif``: 1 changed, 0 unchanged, 255 nodata or unknown: the class differs
  and, when both probability rasters are given, the change probability is at least
  ``threshold`` (an unsure pixel of the same class on both dates has a change probability
  of 0.5 or more, but is no change);
- ``change_probability.tif`` (float32, -1 nodata): only with both probability rasters;
- ``fromto_area.csv``: rows from, columns to, m2 and % of the compared area;
- ``fromto.json``: the summary (also the command's result);
- ``fromto_zones.csv`` with zones: one row per zone, from and to class;
- ``transitions.tif`` and ``transitions.gpkg`` for transitions of interest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fiona
import numpy as np
from rasterio.features import shapes
from rasterio.windows import Window
from shapely.geometry import shape

from terraseg.core.atomic import AtomicOutputs
from terraseg.core.change import (
    change_probability,
    changed_codes,
    fromto_codes,
    fromto_dtype,
    fromto_matrix,
    fromto_rows,
    near_boundary,
    top_transitions,
    transition_mask,
)
from terraseg.core.change_legend import (
    ChangeClasses,
    fromto_colormap,
    make_classes,
    parse_transitions,
)
from terraseg.core.change_pair import NO_PROB, AlignedPair, PairInputs, load_pair
from terraseg.core.change_zones import zone_rows
from terraseg.core.export import open_class_raster, pixel_area_m2
from terraseg.core.output_targets import check_output_dir
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import ConfigError

MASK_NODATA = 255


@dataclass(frozen=True)
class ChangeOptions:
    """How the two maps are compared (see ``terraseg change --help``).

    Attributes:
        legend: CSV code,name[,colour], or None.
        max_shift_px: Largest misregistration accepted; negative: not checked.
        correct_shift: Move B by the measured shift instead of refusing.
        border_px: Pixels within this distance of a class boundary are unknown.
        threshold: Change probability from which a pixel is changed.
        zones: Zone polygons for a per-zone table, or None.
        zone_field: Zone attribute naming each zone (default: its number).
        transitions: ``FROM=TO`` transitions of interest.
    """

    legend: str | None = None
    max_shift_px: float = 0.5
    correct_shift: bool = False
    border_px: int = 0
    threshold: float = 0.5
    zones: str | None = None
    zone_field: str | None = None
    transitions: tuple[str, ...] = field(default_factory=tuple)


def output_names(inputs: PairInputs, opts: ChangeOptions) -> list[str]:
    """The files a run writes into the output folder."""
    names = ["fromto.tif", "change_mask.tif", "fromto_area.csv", "fromto.json"]
    if inputs.probability_a and inputs.probability_b:
        names.insert(2, "change_probability.tif")
    if opts.zones:
        names.append("fromto_zones.csv")
    if opts.transitions:
        names += ["transitions.tif", "transitions.gpkg"]
    return names


def check_options(opts: ChangeOptions) -> None:
    """Option values, before any raster is read.

    Raises:
        ConfigError: A negative border, a threshold outside (0, 1].
    """
    if opts.border_px < 0:
        raise ConfigError(f"--border is {opts.border_px}; it is a width in pixels.",
                          "Use 0 (compare every pixel) or e.g. --border 1.")
    if not 0.0 < opts.threshold <= 1.0:
        raise ConfigError(f"--threshold is {opts.threshold}; a change probability "
                          "threshold lies in (0, 1].", "Use e.g. --threshold 0.5.")
    if opts.zone_field and not opts.zones:
        raise ConfigError("--zone-field is given without --zones.",
                          "Add --zones FILE, or leave --zone-field out.")


def run_change(inputs: PairInputs, opts: ChangeOptions, out_dir: str | Path,
               reporter: Reporter, overwrite: bool = False) -> dict[str, Any]:
    """Compare the two dates and write the outputs (module docstring); returns the summary."""
    check_options(opts)
    out = Path(out_dir)
    names = output_names(inputs, opts)
    check_output_dir(out, names, overwrite)
    with open_class_raster(inputs.classes_a) as ds:
        px_area = pixel_area_m2(ds)
    reporter.progress(0.05, "change", "aligning the second date")
    pair = load_pair(inputs, opts.max_shift_px, opts.correct_shift)
    if pair.shift is not None:
        reporter.log(f"misregistration: dx {pair.shift.dx_px:+.2f} px, dy "
                     f"{pair.shift.dy_px:+.2f} px ({pair.shift.length_px:.2f} px)"
                     + (f"; corrected, residual {pair.residual.length_px:.2f} px"
                        if pair.residual else ""))
    codes = set(np.unique(pair.a[pair.valid_a]).tolist()) | \
        set(np.unique(pair.b[pair.valid_b]).tolist())
    classes = make_classes(codes, pair.tagged, opts.legend)
    dtype = fromto_dtype(classes.k)
    pairs = parse_transitions(list(opts.transitions), classes)
    reporter.progress(0.4, "change", "comparing")
    unknown = near_boundary(pair.a, pair.valid_a, opts.border_px) | \
        near_boundary(pair.b, pair.valid_b, opts.border_px)
    both = pair.valid_a & pair.valid_b
    compared = both & ~unknown
    ft = fromto_codes(pair.a, pair.b, compared, classes)
    matrix = fromto_matrix(ft, classes.k)
    prob = _change_probability(pair, classes)
    class_changed = changed_codes(classes.k)[ft]
    if prob is not None:
        known = (ft > 0) & (prob >= 0)  # a class flip the models are unsure of is no change
        mask = np.where(known, class_changed & (prob >= opts.threshold), MASK_NODATA)
    else:
        known = ft > 0
        mask = np.where(known, class_changed, MASK_NODATA)
    mask = mask.astype(np.uint8)
    summary = _summary(pair, classes, matrix, mask, px_area, opts, int((both & unknown).sum()))
    zones = zone_rows(opts.zones, opts.zone_field, ft, pair.grid, classes, px_area) \
        if opts.zones else None
    reporter.progress(0.7, "change", "writing")
    with AtomicOutputs(out, overwrite) as outputs:
        _write_fromto(outputs, pair, classes, ft.astype(dtype), dtype)
        w = outputs.geotiff("change_mask.tif", pair.grid, 1, "uint8", MASK_NODATA,
                            ["change (1 changed, 0 unchanged)"],
                            colormap={0: (230, 230, 230, 255), 1: (220, 30, 30, 255),
                                      MASK_NODATA: (0, 0, 0, 0)})
        w.write(mask, _full(pair))
        if prob is not None:
            w = outputs.geotiff("change_probability.tif", pair.grid, 1, "float32", NO_PROB,
                                ["change probability 1 - sum_k p1_k p2_k"])
            w.write(prob, _full(pair))
        rows = fromto_rows(matrix, classes, px_area)
        _write_csv(outputs, "fromto_area.csv", rows)
        if zones is not None:
            _write_csv(outputs, "fromto_zones.csv", zones)
        if pairs:
            summary["transitions"] = _write_transitions(outputs, pair, classes, ft, pairs,
                                                        px_area)
        summary.update({n.replace(".", "_"): str(out / n) for n in names})
        outputs.temp_path("fromto.json").write_text(json.dumps(summary, indent=2))
    reporter.progress(1.0, "change")
    return summary


def _full(pair: AlignedPair) -> Window:
    return Window(0, 0, pair.grid.width_px, pair.grid.height_px)


def _change_probability(pair: AlignedPair, classes: ChangeClasses) -> np.ndarray | None:
    """1 - sum_k p1_k p2_k over the classes of both dates (-1 where either lacks data)."""
    if pair.prob_a is None or pair.prob_b is None:
        return None
    stacks = []
    for p, codes in (pair.prob_a, pair.prob_b):
        full = np.zeros((classes.k, *p.shape[1:]), dtype=np.float32)
        for band, code in enumerate(codes):
            if code in classes.codes:
                full[classes.codes.index(code)] = p[band]
        stacks.append((full, np.all(p != NO_PROB, axis=0)))
    (pa, va), (pb, vb) = stacks
    return np.where(va & vb, change_probability(pa, pb), NO_PROB).astype(np.float32)


def _summary(pair: AlignedPair, classes: ChangeClasses, matrix: np.ndarray, mask: np.ndarray,
             px_area: float, opts: ChangeOptions, unknown_px: int) -> dict[str, Any]:
    compared = int(matrix.sum())
    class_changed = compared - int(np.trace(matrix))
    changed = int((mask == 1).sum())
    s = pair.shift
    shift = None if s is None else {
        "dx_px": round(s.dx_px, 3), "dy_px": round(s.dy_px, 3),
        "length_px": round(s.length_px, 3), "peak": round(s.peak, 4),
        "measured_on": pair.shift_source, "corrected": pair.corrected,
        "correction": ("B's georeference moved by the sub-pixel estimate, classes "
                       "resampled by nearest neighbour" if pair.corrected else None),
        "residual_px": round(pair.residual.length_px, 3) if pair.residual else None}
    return {"k": classes.k, "classes": classes.as_dicts(), "code_rule":
            "(from_index - 1) * K + to_index; 0 = nodata or unknown",
            "pixel_area_m2": px_area, "shift": shift, "max_shift_px": opts.max_shift_px,
            "border_px": opts.border_px, "unknown_px": unknown_px,
            "compared_px": compared, "compared_m2": round(compared * px_area, 3),
            "changed_px": changed, "changed_m2": round(changed * px_area, 3),
            "class_changed_px": class_changed,
            "changed_by": "probability" if pair.prob_a is not None and pair.prob_b is not None
            else "class", "threshold": opts.threshold,
            "top_transitions": top_transitions(matrix, classes, px_area)}


def _write_fromto(outputs: AtomicOutputs, pair: AlignedPair, classes: ChangeClasses,
                  ft: np.ndarray, dtype: str) -> None:
    k = classes.k
    labels = [{"id": i * k + j + 1, "name": f"{classes.name(f)} -> {classes.name(t)}"}
              for i, f in enumerate(classes.codes) for j, t in enumerate(classes.codes)]
    w = outputs.geotiff("fromto.tif", pair.grid, 1, dtype, 0,
                        [f"from-to code (from_index - 1) * {k} + to_index"],
                        colormap=fromto_colormap(classes))
    w.set_tags(TERRASEG_CLASSES=json.dumps(labels),
               TERRASEG_CHANGE_CLASSES=json.dumps(classes.as_dicts()))
    w.write(ft, _full(pair))


def _write_csv(outputs: AtomicOutputs, name: str, rows: list[dict]) -> None:
    import csv

    with open(outputs.temp_path(name), "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["from_code"])
        writer.writeheader()
        writer.writerows(rows)


def _write_transitions(outputs: AtomicOutputs, pair: AlignedPair, classes: ChangeClasses,
                       ft: np.ndarray, pairs: list[tuple[int, int]], px_area: float
                       ) -> list[dict]:
    """transitions.tif (pair number 1..n, 0 elsewhere) and its polygons with area_m2."""
    mask = transition_mask(ft, pairs, classes)
    labels = [f"{classes.name(f)} -> {classes.name(t)}" for f, t in pairs]
    w = outputs.geotiff("transitions.tif", pair.grid, 1, "uint8", 0,
                        ["transition of interest (1..n)"])
    w.set_tags(TERRASEG_CLASSES=json.dumps(
        [{"id": n, "name": lab} for n, lab in enumerate(labels, start=1)]))
    w.write(mask, _full(pair))
    schema = {"geometry": "Polygon", "properties": {
        "transition": "str", "from_class": "str", "to_class": "str", "area_m2": "float"}}
    tr = pair.grid.transform
    unit_m2 = px_area / abs(tr.a * tr.e)  # CRS units^2 -> m2
    with fiona.open(outputs.temp_path("transitions.gpkg"), "w", driver="GPKG",
                    crs_wkt=pair.grid.crs_wkt, schema=schema, layer="transitions") as dst:
        for geom, value in shapes(mask, mask=mask > 0, connectivity=8,
                                  transform=pair.grid.transform):
            f, t = pairs[int(value) - 1]
            dst.write({"geometry": geom, "properties": {
                "transition": labels[int(value) - 1], "from_class": classes.name(f),
                "to_class": classes.name(t), "area_m2": float(shape(geom).area) * unit_m2}})
    counts = np.bincount(mask.ravel(), minlength=len(pairs) + 1)
    return [{"transition": lab, "pixels": int(counts[n]),
             "area_m2": round(float(counts[n]) * px_area, 3)}
            for n, lab in enumerate(labels, start=1)]

