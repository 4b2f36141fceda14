"""Class hierarchies: fine classes grouped into coarser levels (CORINE's 3-level legend).

A hierarchy file is a CSV with one row per fine class: a ``code`` column, then one name
column per level from the coarsest (``level1``, ``level2``, ``level3``, ...). CORINE's
legend as published (``grid_code,clc_code,level1,level2,level3_label``) reads as it is:
``clc_code`` is the code and ``level3_label`` the third level. A model class belongs to the
row whose code, ``grid_code`` or finest-level name equals its name (case-insensitive), so a
model trained on CORINE codes (``111``), on grid codes (``1``) or on level-3 names works.

Metrics at a coarser level are the fine class ids mapped onto that level's groups before
scoring (core/metrics.py), so they are exactly what a map at that level would score.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from terraseg.core.classes import ClassInfo, make_classes
from terraseg.core.metrics import compute_metrics
from terraseg.protocol.errors import ConfigError

#: Hierarchies shipped with TerraSeg, by the name ``--hierarchy`` takes instead of a file.
SHIPPED = {"corine": Path(__file__).resolve().parents[1] / "resources" / "hierarchies"
           / "corine_land_cover.csv"}
CODE_COLUMNS = ("code", "clc_code")
EXTRA_KEY_COLUMNS = ("grid_code",)
LEVEL_ALIASES = {"level3_label": "level3"}


@dataclass(frozen=True)
class ClassHierarchy:
    """Fine classes and their group at every level.

    Attributes:
        path: The file it was read from.
        levels: Level names, coarsest first (``level1``, ``level2``, ...).
        rows: Per fine class: (keys it matches, lower case; group name per level).
    """

    path: str
    levels: tuple[str, ...]
    rows: tuple[tuple[frozenset[str], tuple[str, ...]], ...]

    def groups_of(self, class_name: str) -> tuple[str, ...] | None:
        """The group names of a model class at every level (None: not in the file)."""
        key = class_name.strip().lower()
        for keys, groups in self.rows:
            if key in keys:
                return groups
        return None


def load_hierarchy(path: str | Path) -> ClassHierarchy:
    """Read a hierarchy CSV (see the module docstring), or a shipped one by name.

    ``corine``: CORINE Land Cover's 44 classes in 3 levels (resources/hierarchies/).

    Raises:
        ConfigError: Missing file, no code column, no level columns, or an empty level name.
    """
    p = SHIPPED.get(str(path).strip().lower(), Path(path))
    if not p.is_file():
        raise ConfigError(f"Hierarchy file {p} does not exist.",
                          "Give a CSV with columns code, level1, level2, ..., or "
                          f"one of the shipped ones: {', '.join(sorted(SHIPPED))}.")
    with p.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [(h or "").strip() for h in reader.fieldnames or []]
        raw_rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()}
                    for r in reader]
    columns = {LEVEL_ALIASES.get(h.lower(), h.lower()): h for h in fields}
    code = next((columns[c] for c in CODE_COLUMNS if c in columns), None)
    levels = sorted((c for c in columns if c.startswith("level") and c[5:].isdigit()),
                    key=lambda c: int(c[5:]))
    if code is None or not levels:
        raise ConfigError(
            f"Hierarchy file {p.name} has columns {fields}: it needs a 'code' column and "
            "one name column per level ('level1', 'level2', ...).",
            "Write the CSV as code,level1,level2,level3 (one row per fine class).")
    extra = [columns[c] for c in EXTRA_KEY_COLUMNS if c in columns]
    rows = []
    for i, r in enumerate(raw_rows, start=2):
        groups = tuple(r.get(columns[lv], "") for lv in levels)
        if not r.get(code) or not all(groups):
            raise ConfigError(f"Row {i} of {p.name} has an empty code or level name.",
                              "Fill in the code and every level of each row.")
        keys = {r[code].lower(), groups[-1].lower(), *(r[c].lower() for c in extra if r[c])}
        rows.append((frozenset(keys), groups))
    return ClassHierarchy(str(p), tuple(levels), tuple(rows))


def level_lookup(hierarchy: ClassHierarchy, classes: tuple[ClassInfo, ...], level: int
                 ) -> tuple[np.ndarray, tuple[ClassInfo, ...]]:
    """Fine class id -> group id at ``level`` (0-based), and the groups as classes.

    Groups are numbered in the order their first fine class appears.

    Raises:
        ConfigError: A model class the hierarchy does not list.
    """
    missing = [c.name for c in classes if hierarchy.groups_of(c.name) is None]
    if missing:
        raise ConfigError(
            f"Class(es) {missing} of the model are not in the hierarchy "
            f"{Path(hierarchy.path).name}.",
            "Name the model's classes by the file's codes or finest-level names, or add "
            "rows for them.")
    names: list[str] = []
    lut = np.zeros(max(c.id for c in classes) + 1, dtype=np.int64)
    for c in classes:
        group = hierarchy.groups_of(c.name)[level]  # type: ignore[index]
        if group not in names:
            names.append(group)
        lut[c.id] = names.index(group) + 1
    return lut, make_classes(names)


def metrics_by_level(hierarchy: ClassHierarchy, classes: tuple[ClassInfo, ...],
                     truth: np.ndarray, pred: np.ndarray) -> dict[str, dict[str, Any]]:
    """core/metrics.py's dict at every level of the hierarchy, coarsest first.

    Args:
        hierarchy: The class hierarchy.
        classes: The model's (fine) classes.
        truth: Reference class ids (0 = none).
        pred: Predicted class ids (0 = nodata).
    """
    out = {}
    for i, level in enumerate(hierarchy.levels):
        lut, groups = level_lookup(hierarchy, classes, i)
        out[level] = compute_metrics(lut[truth], lut[pred], groups).to_dict()
    return out


def level_output_names(level: int) -> tuple[str, str]:
    """The files of the map at ``level`` (1-based): probability and classes."""
    return f"level{level}_probability.tif", f"level{level}_classes.tif"


def check_level(hierarchy: ClassHierarchy, classes: tuple[ClassInfo, ...], level: int) -> None:
    """Refuse a level the hierarchy does not have, or model classes it does not list.

    Raises:
        ConfigError: Naming the valid levels or the missing classes.
    """
    if not 1 <= level <= len(hierarchy.levels):
        raise ConfigError(f"--level {level} is not a level of {Path(hierarchy.path).name}, "
                          f"which has {len(hierarchy.levels)}.",
                          f"Use --level 1 to {len(hierarchy.levels)}.")
    level_lookup(hierarchy, classes, level - 1)


def write_level_map(probability_tif: str | Path, classes: tuple[ClassInfo, ...],
                    hierarchy: ClassHierarchy, level: int, out_dir: str | Path,
                    overwrite: bool = False) -> dict[str, Any]:
    """The map at ``level`` (1-based) from a prediction's fine class probabilities.

    A group's probability is the sum of its fine classes' probabilities, and its class is
    the most probable group, so the coarse map is consistent with the fine probabilities.
    Written window by window next to the fine outputs (``level{N}_probability.tif``,
    ``level{N}_classes.tif``), both committed together or not at all.

    Returns:
        ``probability``, ``classes``, ``level``, ``level_name``, ``class_list``.
    """
    import rasterio
    from rasterio.windows import Window

    from terraseg.core.atomic import AtomicOutputs
    from terraseg.core.forest import class_map_writers, map_windows
    from terraseg.core.grid import Grid
    from terraseg.core.inference import CLASS_NODATA, PROB_NODATA, WRITE_CACHE_MB

    lut, groups = level_lookup(hierarchy, classes, level - 1)
    members = [np.array([c.id - 1 for c in classes if lut[c.id] == g.id]) for g in groups]
    names = level_output_names(level)
    with rasterio.open(probability_tif) as src, rasterio.Env(GDAL_CACHEMAX=WRITE_CACHE_MB), \
            AtomicOutputs(Path(out_dir), overwrite=overwrite) as outputs:
        grid = Grid(src.height, src.width, src.transform, src.crs.to_wkt() if src.crs else "")
        prob_w, cls_w = class_map_writers(outputs, grid, groups, names)
        for win in map_windows(Window(0, 0, src.width, src.height)):
            p = src.read(window=win)
            valid = p[0] != PROB_NODATA
            coarse = np.stack([p[m].sum(axis=0) for m in members])
            coarse[:, ~valid] = PROB_NODATA
            cls = np.where(valid, coarse.argmax(axis=0) + 1, CLASS_NODATA).astype(np.uint8)
            prob_w.write(coarse.astype(np.float32), win)
            cls_w.write(cls[None], win)
    out = Path(out_dir)
    return {"probability": str(out / names[0]), "classes": str(out / names[1]),
            "level": level, "level_name": hierarchy.levels[level - 1],
            "class_list": [g.to_dict() for g in groups]}
