"""Class resolution: source class values (attributes or raster values) -> model class ids.

Conventions (see :mod:`terraseg.core.classes`): model class ids are 1..K, 0 = unlabelled.
Source values are compared by :func:`value_key` (integral floats without ``.0``, text
stripped), so ``3``, ``3.0`` and ``" 3 "`` are one class.

- ``classes`` given (applying or evaluating a model): every source class, after
  ``class_map``, must match one of the class names (case-insensitive). Without a
  ``class_map``, an integer source value equal to a class id is accepted as that id.
- ``classes`` is None (training) with a ``class_map``: the model classes are the mapping's
  targets in rule order (ids 1..K).
- ``classes`` is None without a ``class_map``: if every source value is an integer, the model
  classes are the distinct values in ascending order, named ``str(value)``, with ids 1..K
  (so values {3, 7} become classes "3" (id 1) and "7" (id 2)); otherwise the model classes are
  the distinct text values in sorted order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from terraseg.core.classes import ClassInfo, ClassMapping, make_classes
from terraseg.protocol.errors import LabelError


def resolve_classes(
    values: Iterable[object],
    class_map: ClassMapping | None,
    classes: tuple[ClassInfo, ...] | None,
    name: str,
) -> tuple[tuple[ClassInfo, ...], dict[str, int]]:
    """Model classes and a lookup ``value_key(source value) -> class id``.

    Args:
        values: Source class values (repeats allowed).
        class_map: Optional mapping of source classes onto model classes.
        classes: Fixed model classes (applying/evaluating a model), or None when training.
        name: Name of the label source, for messages.

    Returns:
        The model classes (``classes`` when given) and the lookup.

    Raises:
        LabelError: Values not covered by ``class_map``, or not among ``classes``.
    """
    distinct: dict[str, object] = {}
    for v in values:
        distinct.setdefault(value_key(v), v)

    targets: dict[str, str] = {}
    if class_map is not None:
        unmapped = sorted(k for k, v in distinct.items() if class_map.target(v) is None)
        if unmapped:
            raise LabelError(
                f"Class value(s) {_fmt_values(unmapped)} in {name} are not covered by the "
                f"class mapping '{class_map.to_str()}'.",
                "Add rules for these values or a fallback rule '*=<class>' to the mapping.",
            )
        targets = {k: str(class_map.target(v)) for k, v in distinct.items()}

    if classes is not None:
        by_name = {c.name.lower(): c.id for c in classes}
        ids = {c.id for c in classes}
        lookup: dict[str, int] = {}
        unknown: list[str] = []
        for key, value in distinct.items():
            target = targets[key] if class_map is not None else key
            as_integer = as_int(value)
            if target.lower() in by_name:
                lookup[key] = by_name[target.lower()]
            elif class_map is None and as_integer is not None and as_integer in ids:
                lookup[key] = as_integer
            else:
                unknown.append(target if class_map is None else f"{key}->{target}")
        if unknown:
            known = ", ".join(f"{c.id}={c.name}" for c in classes)
            raise LabelError(
                f"Unknown class value(s) {_fmt_values(sorted(unknown))} in {name}; the model's "
                f"classes are {known}.",
                "Use the model's class names or ids in the class field, or give a class mapping "
                "onto them.",
            )
        return classes, lookup

    if class_map is not None:
        model_classes = make_classes(class_map.targets)
        by_name = {c.name: c.id for c in model_classes}
        return model_classes, {k: by_name[t] for k, t in targets.items()}

    ints = {k: as_int(v) for k, v in distinct.items()}
    if all(i is not None for i in ints.values()):
        order = sorted(distinct, key=lambda k: ints[k])
    else:
        order = sorted(distinct)
    model_classes = make_classes(order)
    return model_classes, {k: i + 1 for i, k in enumerate(order)}


def value_key(value: object) -> str:
    """Text key of a source class value (integral floats without '.0', stripped text)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return str(value).strip()


def as_int(value: object) -> int | None:
    """The value as an int when it is an integer (or integral float), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return None


def is_missing(value: object) -> bool:
    """Whether an attribute value is absent: None, NaN or blank text."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and not value.strip()
    )


def _fmt_values(values: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")
