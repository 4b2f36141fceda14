"""Model classes and class mappings (source class values/names -> model classes).

Conventions used everywhere in TerraSeg:
- Model classes have ids 1..K in model order; index ``i`` in tensors is class id ``i + 1``.
- In label arrays and ``classes.tif``, 0 means unlabelled / nodata.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from terraseg.protocol.errors import ConfigError, LabelError

MAX_CLASSES = 254

# Colours for well-known class names (QGIS users recognise these), else a qualitative palette.
KNOWN_COLOURS = {
    "sealed": "#d7191c",
    "developed": "#d7191c",
    "unsealed": "#1a9641",
    "landslide": "#a6611a",
    "no landslide": "#dfc27d",
    "no_landslide": "#dfc27d",
    "water": "#2b83ba",
    "forest": "#006d2c",
    "agriculture": "#fdae61",
    "herbaceous": "#a6d96a",
    "shrubland": "#66a61e",
    "sediment": "#bababa",
}
PALETTE = (
    "#1f78b4", "#33a02c", "#e31a1c", "#ff7f00", "#6a3d9a",
    "#b15928", "#a6cee3", "#b2df8a", "#fb9a99", "#fdbf6f", "#cab2d6", "#ffff99",
)  # fmt: skip


@dataclass(frozen=True)
class ClassInfo:
    """One model class.

    Attributes:
        id: Value in label arrays and classes.tif (1..K).
        name: Human-readable name.
        colour: "#rrggbb" colour for maps.
    """

    id: int
    name: str
    colour: str

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"id": self.id, "name": self.name, "colour": self.colour}


def make_classes(names: Iterable[str]) -> tuple[ClassInfo, ...]:
    """Model classes with ids 1..K and default colours, in the order given."""
    out = []
    for i, name in enumerate(names):
        colour = KNOWN_COLOURS.get(name.lower(), PALETTE[i % len(PALETTE)])
        out.append(ClassInfo(id=i + 1, name=name, colour=colour))
    if len(out) > MAX_CLASSES:
        raise LabelError(f"{len(out)} classes found; at most {MAX_CLASSES} are supported.",
                         "Merge classes with --class-map.")
    return tuple(out)


def classes_from_dicts(items: Iterable[dict]) -> tuple[ClassInfo, ...]:
    """Inverse of :meth:`ClassInfo.to_dict` for a list."""
    return tuple(ClassInfo(int(d["id"]), str(d["name"]), str(d["colour"])) for d in items)


@dataclass(frozen=True)
class ClassMapping:
    """Rules that map source classes (values or names) onto model class names.

    ``"developed=sealed,*=unsealed"`` maps the source class 'developed' to 'sealed' and
    every other source class to 'unsealed'. Sources match by name or by integer value as
    text; ``*`` is the fallback. Target order in the rules is the model class order.

    Attributes:
        rules: (source, target) pairs in the order given.
    """

    rules: tuple[tuple[str, str], ...]

    @staticmethod
    def parse(spec: str | None) -> ClassMapping | None:
        """Parse ``"a=x,b=x,*=y"``; None or empty gives None (identity)."""
        if spec is None or not spec.strip():
            return None
        rules = []
        for token in spec.split(","):
            if "=" not in token:
                raise ConfigError(
                    f"Class mapping entry '{token.strip()}' has no '='.",
                    "Write source=target pairs, e.g. --class-map developed=sealed,*=unsealed.",
                )
            src, dst = (s.strip() for s in token.split("=", 1))
            if not src or not dst:
                raise ConfigError(f"Class mapping entry '{token.strip()}' is incomplete.",
                                  "Write source=target pairs, e.g. developed=sealed.")
            rules.append((src, dst))
        return ClassMapping(tuple(rules))

    @property
    def targets(self) -> tuple[str, ...]:
        """Model class names in rule order, without repeats."""
        seen: list[str] = []
        for _, dst in self.rules:
            if dst not in seen:
                seen.append(dst)
        return tuple(seen)

    def target(self, source: object) -> str | None:
        """Model class name for a source value/name, or None if no rule matches."""
        key = _source_key(source)
        fallback = None
        for src, dst in self.rules:
            if src == "*":
                fallback = dst
            elif src == key or src.lower() == key.lower():
                return dst
        return fallback

    def to_str(self) -> str:
        """Back to the command-line form."""
        return ",".join(f"{s}={d}" for s, d in self.rules)


def _source_key(value: object) -> str:
    """Text form of a source class value (integers without '.0')."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
