"""Class codes, names and colours of the two maps compared by ``terraseg change``.

The classes are the union of the codes of both maps: the codes present in their data, and
for TerraSeg class rasters also the classes their ``TERRASEG_CLASSES`` tag lists (so K does
not depend on which classes happen to occur). Names and colours come from ``--legend`` when
given, else from the tags, else the code itself is the name.

A legend is a CSV ``code,name[,colour]`` (with or without a header; colour ``#rrggbb``).
With a header, ``code`` may also be ``grid_code`` or ``value`` and ``name`` may be
``clc_code``, ``label`` or ``level3_label``, so CORINE's raster legend
(``grid_code,clc_code,...``) names grid codes by their CLC codes as it is.

Transitions of interest are written ``FROM=TO`` with class names or codes; ``*`` on either
side stands for every class (``*=131``: anything that became 131). A pair of the same class
is no change and is refused.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from terraseg.protocol.errors import ConfigError

CODE_COLUMNS = ("code", "grid_code", "value", "id")
NAME_COLUMNS = ("name", "clc_code", "label", "level3_label", "class_name")
COLOUR_COLUMNS = ("colour", "color")
#: Colour of unchanged pixels in fromto.tif.
UNCHANGED_RGB = (215, 215, 215)


@dataclass(frozen=True)
class ChangeClasses:
    """The K classes compared, in index order 1..K.

    Attributes:
        codes: Class code of index 1..K (ascending codes).
        names: Name of each code.
        colours: ``#rrggbb`` of the codes that have one.
    """

    codes: tuple[int, ...]
    names: dict[int, str]
    colours: dict[int, str]

    @property
    def k(self) -> int:
        """Number of classes."""
        return len(self.codes)

    def name(self, code: int) -> str:
        """The name of a class code (the code when it has none)."""
        return self.names.get(code, str(code))

    def index_lut(self) -> np.ndarray:
        """Code -> index 1..K lookup (0 for codes that are not classes), 65536 entries."""
        lut = np.zeros(65536, dtype=np.int32)
        lut[list(self.codes)] = np.arange(1, self.k + 1)
        return lut

    def as_dicts(self) -> list[dict]:
        """``[{index, code, name}]`` for JSON payloads."""
        return [{"index": i, "code": c, "name": self.name(c)}
                for i, c in enumerate(self.codes, start=1)]


def tagged_classes(ds: rasterio.DatasetReader) -> list[dict]:
    """The ``TERRASEG_CLASSES`` of a raster TerraSeg wrote (``[]`` for others)."""
    try:
        classes = json.loads(ds.tags().get("TERRASEG_CLASSES", "null")) or []
    except json.JSONDecodeError:
        return []
    return [c for c in classes if isinstance(c, dict) and "id" in c]


def read_legend(path: str | Path) -> tuple[dict[int, str], dict[int, str]]:
    """Names and colours by code from a legend CSV (see the module docstring).

    Raises:
        ConfigError: Missing file, no code and name columns, or a code that is not an
            integer.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Legend file {p} does not exist.",
                          "Give a CSV with rows code,name[,colour], or leave --legend out.")
    with p.open(newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if r and any(v.strip() for v in r)]
    if not rows:
        raise ConfigError(f"Legend file {p} is empty.", "Write one row code,name per class.")
    head = [h.strip().lower() for h in rows[0]]
    if head[0].lstrip("-").isdigit():  # no header: code,name[,colour]
        ci, ni, oi = 0, 1, 2 if len(head) > 2 else None
        body = rows
    else:
        ci = next((head.index(c) for c in CODE_COLUMNS if c in head), None)
        ni = next((head.index(c) for c in NAME_COLUMNS if c in head), None)
        oi = next((head.index(c) for c in COLOUR_COLUMNS if c in head), None)
        body = rows[1:]
        if ci is None or ni is None:
            raise ConfigError(f"Legend file {p.name} has columns {rows[0]}: it needs a code "
                              f"column ({', '.join(CODE_COLUMNS)}) and a name column "
                              f"({', '.join(NAME_COLUMNS)}).",
                              "Write the legend as code,name[,colour].")
    names, colours = {}, {}
    for i, r in enumerate(body, start=1):
        try:
            code = int(r[ci].strip())
        except (ValueError, IndexError):
            raise ConfigError(f"Row {i} of {p.name} has no integer code: {r}.",
                              "Give each row an integer class code first.") from None
        if ni < len(r) and r[ni].strip():
            names[code] = r[ni].strip()
        if oi is not None and oi < len(r) and r[oi].strip().startswith("#"):
            colours[code] = r[oi].strip()
    return names, colours


def make_classes(codes: set[int], tagged: list[dict], legend: str | Path | None
                 ) -> ChangeClasses:
    """The compared classes: ``codes`` and the tagged classes, named by legend or tags."""
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in tagged}
    colours = {int(c["id"]): str(c["colour"]) for c in tagged
               if str(c.get("colour", "")).startswith("#")}
    if legend:
        leg_names, leg_colours = read_legend(legend)
        names.update(leg_names)
        colours.update(leg_colours)
    all_codes = sorted({int(c) for c in codes} | {int(c["id"]) for c in tagged} - {0})
    return ChangeClasses(tuple(all_codes), {c: names[c] for c in all_codes if c in names},
                         {c: colours[c] for c in all_codes if c in colours})


def parse_transitions(specs: list[str], classes: ChangeClasses) -> list[tuple[int, int]]:
    """``FROM=TO`` specs as (from code, to code) pairs, ``*`` expanded; order kept.

    Raises:
        ConfigError: A spec without ``=``, a class that is not one of the compared ones,
            or a pair of the same class.
    """
    pairs: list[tuple[int, int]] = []
    for spec in specs:
        if spec.count("=") != 1:
            raise ConfigError(f"--transition '{spec}' is not FROM=TO.",
                              "Write e.g. --transition 211=131 (class names or codes).")
        left, right = (_class_codes(s.strip(), classes, spec) for s in spec.split("="))
        found = [(f, t) for f in left for t in right if f != t]
        if not found:
            raise ConfigError(f"--transition '{spec}' pairs a class with itself, which is no "
                              "change.", "Give two different classes, e.g. 211=131.")
        pairs += [p for p in found if p not in pairs]
    return pairs


def _class_codes(token: str, classes: ChangeClasses, spec: str) -> list[int]:
    if token == "*":
        return list(classes.codes)
    by_name = {classes.name(c).lower(): c for c in classes.codes}
    if token.lower() in by_name:
        return [by_name[token.lower()]]
    if token.lstrip("-").isdigit() and int(token) in classes.codes:
        return [int(token)]
    listed = ", ".join(classes.name(c) for c in classes.codes)
    raise ConfigError(f"--transition '{spec}': '{token}' is not a class of the two maps.",
                      f"Use one of: {listed} (or * for any).")


def fromto_colormap(classes: ChangeClasses) -> dict[int, tuple[int, int, int, int]]:
    """Colour table of fromto.tif: unchanged pairs grey, a change the colour of its target.

    Classes without a colour get a fixed pseudo-random one; 0 (nodata) is transparent.
    """
    rng = np.random.default_rng(7)
    own = {c: _rgb(classes.colours[c]) if c in classes.colours
           else tuple(int(v) for v in rng.integers(40, 240, 3)) for c in classes.codes}
    cmap: dict[int, tuple[int, int, int, int]] = {0: (0, 0, 0, 0)}
    k = classes.k
    for i in range(k):
        for j, t in enumerate(classes.codes):
            cmap[i * k + j + 1] = ((*UNCHANGED_RGB, 255) if i == j else (*own[t], 255))
    return cmap


def _rgb(colour: str) -> tuple[int, int, int]:
    text = colour.strip().lstrip("#")
    return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))
