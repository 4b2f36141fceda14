"""Task presets of the dock: which classes a model separates and in which colours.

A preset fixes the model's class order (class id ``i + 1`` is ``classes[i]``) through the
engine's ``--class-map`` (``sealed=sealed,unsealed=unsealed``), so class ids and colours
stay the same between training runs, predictions and the label layer.

Imports only the standard library (usable from tests without QGIS).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SEALED = "Sealed surfaces"
LANDSLIDES = "Landslides"
LAND_COVER = "Land cover"

# Characters that would break the engine's "a=b,c=d" class-map syntax.
FORBIDDEN_NAME_CHARS = ",="

# Default band role names (lower case) recognised in raster band descriptions. The engine's
# engineered channels read bands by these roles (ndvi: red, nir; ndmi: nir, swir1; nbr: nir,
# swir2).
BAND_ROLES = ("red", "green", "blue", "nir")
_ROLE_ALIASES = {
    "r": "red", "red": "red", "rot": "red",
    "g": "green", "green": "green", "gruen": "green", "grün": "green",
    "b": "blue", "blue": "blue", "blau": "blue",
    "nir": "nir", "near infrared": "nir", "near-infrared": "nir", "infrared": "nir",
    "nearinfrared": "nir", "ir": "nir", "nir1": "nir",
    "swir1": "swir1", "swir 1": "swir1", "swir-1": "swir1", "swir_1": "swir1",
    "swir16": "swir1", "swir 16": "swir1", "shortwave infrared 1": "swir1",
    "swir2": "swir2", "swir 2": "swir2", "swir-2": "swir2", "swir_2": "swir2",
    "swir22": "swir2", "swir 22": "swir2", "shortwave infrared 2": "swir2",
    "coastal": "coastal", "coastal aerosol": "coastal", "aerosol": "coastal",
    "red edge 1": "rededge1", "rededge1": "rededge1", "red edge 2": "rededge2",
    "rededge2": "rededge2", "red edge 3": "rededge3", "rededge3": "rededge3",
    "nir08": "nir08", "narrow nir": "nir08", "nir narrow": "nir08",
}  # fmt: skip
# Band codes of the common sensors ("B11", "B8A", "SR_B6"): Sentinel-2 MSI, Landsat 8/9 OLI,
# Landsat 4-7 TM/ETM+ (which has no reflective band 6).
_SENTINEL2 = {
    "b1": "coastal", "b2": "blue", "b3": "green", "b4": "red", "b5": "rededge1",
    "b6": "rededge2", "b7": "rededge3", "b8": "nir", "b8a": "nir08", "b9": "water_vapour",
    "b10": "cirrus", "b11": "swir1", "b12": "swir2",
}  # fmt: skip
_LANDSAT_OLI = {"b1": "coastal", "b2": "blue", "b3": "green", "b4": "red", "b5": "nir",
                "b6": "swir1", "b7": "swir2", "b8": "pan", "b9": "cirrus"}
_LANDSAT_TM = {"b1": "blue", "b2": "green", "b3": "red", "b4": "nir", "b5": "swir1",
               "b7": "swir2", "b8": "pan"}


@dataclass(frozen=True)
class ClassDef:
    """One class of a task.

    Attributes:
        name: Class name (value of the label layer's ``class`` field).
        colour: ``#rrggbb`` colour used in the label style and the results.
    """

    name: str
    colour: str


@dataclass(frozen=True)
class Preset:
    """A task preset.

    Attributes:
        name: Title shown in the panel (key of :data:`PRESETS`).
        slug: Short name used in model file names (``2026-11-23_1530_sealed.tsm``).
        classes: Default classes in model order.
        editable: Whether the user defines the classes (Land cover).
        model: Default architecture (engine registry name).
        tile_px: Training tile of tile networks (U-Nets), pixels.
        terrain: Whether the task uses terrain inputs (the panel opens them).
    """

    name: str
    slug: str
    classes: tuple[ClassDef, ...]
    editable: bool = False
    model: str = "patch_cnn"
    tile_px: int = 64
    terrain: bool = False


PRESETS: dict[str, Preset] = {
    SEALED: Preset(SEALED, "sealed",
                   (ClassDef("sealed", "#d7191c"), ClassDef("unsealed", "#1a9641"))),
    LANDSLIDES: Preset(LANDSLIDES, "landslides",
                       (ClassDef("landslide", "#a6611a"), ClassDef("no landslide", "#dfc27d")),
                       model="unet_small", tile_px=64, terrain=True),
    LAND_COVER: Preset(LAND_COVER, "landcover",
                       (ClassDef("water", "#2b83ba"), ClassDef("forest", "#006d2c"),
                        ClassDef("agriculture", "#fdae61"), ClassDef("built-up", "#d7191c")),
                       editable=True),
}

# Architectures offered in the panel (the engine's registry names): the patch CNN of
# study 000 and the U-Net family of study 001 (tile networks, trained on whole tiles).
PATCH_MODELS = ("patch_cnn",)
TILE_MODELS = ("unet_small", "unet", "unet_residual", "unet_se", "unet_cbam", "unet_multires",
               *(f"{family}_resnet{depth}" for family in ("unet", "fpn", "deeplabv3plus")
                 for depth in (18, 34, 50)), "fc_ef", "fc_siam_diff")
# tile sizes are multiples of the U-Nets' total stride (16); the ResNet U-Net and FPN need
# 32 and the engine names the nearest valid sizes otherwise
TILE_STRIDE_PX = 16

# Colours for new user-defined classes (the engine's qualitative palette).
PALETTE = (
    "#1f78b4", "#33a02c", "#e31a1c", "#ff7f00", "#6a3d9a",
    "#b15928", "#a6cee3", "#b2df8a", "#fb9a99", "#fdbf6f", "#cab2d6", "#ffff99",
)  # fmt: skip


def next_colour(used: Iterable[str]) -> str:
    """A palette colour not in ``used`` (cycles when all are taken)."""
    taken = {c.lower() for c in used}
    for colour in PALETTE:
        if colour not in taken:
            return colour
    return PALETTE[len(taken) % len(PALETTE)]


def validate_classes(classes: Sequence[ClassDef]) -> str | None:
    """Why these classes cannot train a model, or None when they can."""
    names = [c.name.strip() for c in classes]
    if len(names) < 2:
        return "Define at least two classes."
    if any(not n for n in names):
        return "Every class needs a name."
    bad = [n for n in names if any(ch in n for ch in FORBIDDEN_NAME_CHARS)]
    if bad:
        return f"Class names cannot contain ',' or '=': {', '.join(bad)}."
    lowered = [n.lower() for n in names]
    if len(set(lowered)) != len(lowered):
        return "Class names must be unique."
    return None


def class_map(classes: Sequence[ClassDef]) -> str:
    """The engine's ``--class-map`` that keeps the class order: ``a=a,b=b``."""
    return ",".join(f"{c.name}={c.name}" for c in classes)


def preset_for_classes(names: Sequence[str]) -> str:
    """The preset whose classes are ``names`` (case-insensitive), else Land cover."""
    wanted = [n.lower() for n in names]
    for preset in PRESETS.values():
        if not preset.editable and [c.name.lower() for c in preset.classes] == wanted:
            return preset.name
    return LAND_COVER


def slug_for(preset_name: str, classes: Sequence[ClassDef] = ()) -> str:
    """File-name friendly task name for a preset."""
    preset = PRESETS.get(preset_name)
    if preset is not None:
        return preset.slug
    text = "-".join(c.name for c in classes)[:30] or "model"
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").lower() or "model"


def band_role(description: str, index: int, codes: dict[str, str] | None = None) -> str:
    """Default role name of a band from its description (``red``, ``swir1``, ``band_5``).

    Args:
        description: The band's description ("SWIR1", "swir 1", "B11", "SR_B6", "Red").
        index: 1-based band number (the fallback ``band_<index>``).
        codes: Sensor band codes (``b11`` -> ``swir1``) for descriptions such as "B11";
            default Sentinel-2's (see :func:`default_band_roles`, which picks the sensor).
    """
    text = description.strip().lower()
    if text in _ROLE_ALIASES:
        return _ROLE_ALIASES[text]
    code = _band_code(text)
    if code is not None:
        table = codes if codes is not None else _SENTINEL2
        if code in table:
            return table[code]
    words = text.replace("_", " ").replace("-", " ").replace("(", " ").replace(")", " ")
    words = " ".join(words.split())
    for alias in sorted(_ROLE_ALIASES, key=len, reverse=True):
        if len(alias) > 3 and f" {alias} " in f" {words} ":
            return _ROLE_ALIASES[alias]
    for word in words.split():
        if word in ("red", "green", "blue", "nir", "swir1", "swir2"):
            return word
    if "infrared" in text and ("near" in text or "nir" in text):
        return "nir"
    return f"band_{index}"


def _band_code(text: str) -> str | None:
    """``b11`` of "B11", "B011", "SR_B6", "sentinel-2 b8a"; None for other descriptions."""
    words = text.replace("-", " ").replace(":", " ").split()
    if not words:
        return None
    last = words[-1]
    for prefix in ("sr_", "toa_", "band_"):
        if last.startswith(prefix):
            last = last[len(prefix):]
    if len(last) >= 2 and last[0] == "b" and last[1:].rstrip("a").isdigit():
        digits = last[1:].rstrip("a")
        return "b" + str(int(digits)) + last[1 + len(digits):]
    return None


def _sensor_codes(descriptions: Sequence[str]) -> dict[str, str]:
    """The band-code table the descriptions suggest: Landsat (``SR_B``) or Sentinel-2."""
    lowered = [d.strip().lower() for d in descriptions]
    if any(d.startswith(("sr_b", "toa_b")) or "landsat" in d for d in lowered):
        codes = {_band_code(d) for d in lowered}
        return _LANDSAT_OLI if "b6" in codes or any("oli" in d for d in lowered) else _LANDSAT_TM
    return _SENTINEL2


def default_band_roles(descriptions: Sequence[str]) -> list[tuple[str, bool]]:
    """(role, include) per band: named roles from descriptions, unique, all included.

    Band codes ("B11", "SR_B6") are read as the sensor the descriptions suggest (Landsat
    collection names ``SR_B*``, else Sentinel-2). Without any recognisable description a
    3- or 4-band raster is taken as R, G, B(, NIR).
    """
    codes = _sensor_codes(descriptions)
    roles = [band_role(d, i, codes) for i, d in enumerate(descriptions, start=1)]
    if all(r.startswith("band_") for r in roles) and len(roles) in (3, 4):
        roles = list(BAND_ROLES[: len(roles)])
    seen: set[str] = set()
    out = []
    for i, role in enumerate(roles, start=1):
        if role in seen:
            role = f"{role}_{i}"
        seen.add(role)
        out.append((role, True))
    return out


def model_mapping_fits(model_bands: Sequence[tuple[int, str]],
                       descriptions: Sequence[str]) -> bool:
    """Whether a model's band mapping applies to a raster as it is.

    It fits when the raster has every band the model reads and either the raster's band
    descriptions give those bands the model's roles (or names), or, without descriptions,
    the raster has exactly as many bands as the model's highest band number. A model
    trained on one band therefore does not shape the band table of a 6-band raster.

    Args:
        model_bands: (1-based band number, role) per model band.
        descriptions: The raster's band descriptions ("" where none).
    """
    if not model_bands or max(i for i, _ in model_bands) > len(descriptions):
        return False
    codes = _sensor_codes(descriptions)
    described = [(i, n) for i, n in model_bands if descriptions[i - 1].strip()]
    if described:
        return all(n.strip().lower() in (descriptions[i - 1].strip().lower(),
                                         band_role(descriptions[i - 1], i, codes))
                   for i, n in described)
    return len(descriptions) == max(i for i, _ in model_bands)


def bands_spec(rows: Iterable[tuple[int, str, bool]]) -> str:
    """The engine's ``--bands`` string from (band number, role, include) rows.

    Raises:
        ValueError: No band is included, or a role name is empty, repeated or contains
            ',' or '='.
    """
    parts = []
    seen: set[str] = set()
    for index, role, include in rows:
        if not include:
            continue
        role = role.strip()
        if not role:
            raise ValueError(f"Band {index} has no role name.")
        if any(ch in role for ch in FORBIDDEN_NAME_CHARS):
            raise ValueError(f"Band role '{role}' cannot contain ',' or '='.")
        if role.lower() in seen:
            raise ValueError(f"Band role '{role}' is used twice.")
        seen.add(role.lower())
        parts.append(f"{role}={index}")
    if not parts:
        raise ValueError("Include at least one band.")
    return ",".join(parts)
