"""Layers and tables of a ``terraseg change`` result, shared by the panel and Processing.

The engine writes ``fromto.tif`` (one code per class pair, ``(from_index - 1) * K +
to_index``, 0 = nodata or not compared) with a colour table and a ``TERRASEG_CLASSES`` tag
naming each code ``from -> to``; ``change_mask.tif`` (1 changed, 0 unchanged, 255 nodata);
``transitions.gpkg`` (layer ``transitions``) for the transitions of interest. Here they
become styled layers: the from-to raster paletted in the engine's colours with the tag's
names (or names made from the result's classes when the tag cannot be read), the mask in
one colour, the transitions by transition. :func:`transition_rows` turns the result's top
transitions into the rows the panel's table shows.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from typing import Any

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsFillSymbol,
    QgsPalettedRasterRenderer,
    QgsRasterLayer,
    QgsRendererCategory,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

TRANSITIONS_LAYER = "transitions"
"""The layer of ``transitions.gpkg``."""
CHANGED_COLOUR = "#e31a1c"
UNCHANGED_COLOUR = "#d7d7d7"
TRANSITION_COLOURS = ("#e31a1c", "#1f78b4", "#33a02c", "#ff7f00", "#6a3d9a", "#b15928")
_TAG = re.compile(r"<li>TERRASEG_CLASSES=(.*?)</li>", re.DOTALL)


def tagged_names(layer: QgsRasterLayer) -> dict[int, str]:
    """Code -> name from the raster's ``TERRASEG_CLASSES`` tag (GDAL metadata; {} without)."""
    match = _TAG.search(layer.dataProvider().htmlMetadata())
    if not match:
        return {}
    try:
        items = json.loads(html.unescape(match.group(1)))
    except (json.JSONDecodeError, TypeError):
        return {}
    return {int(c["id"]): str(c["name"]) for c in items if isinstance(c, dict) and "id" in c}


def fromto_names(result: dict[str, Any]) -> dict[int, str]:
    """Code -> ``from -> to`` from a change result's ``classes`` and the engine's code rule."""
    classes = sorted(result.get("classes") or [], key=lambda c: int(c["index"]))
    k = len(classes)
    return {(int(f["index"]) - 1) * k + int(t["index"]): f"{f['name']} -> {t['name']}"
            for f in classes for t in classes}


def style_fromto(layer: QgsRasterLayer, fallback: dict[int, str] | None = None
                 ) -> dict[int, str]:
    """Paletted renderer of a from-to raster: the engine's colours, one name per code.

    Args:
        layer: ``fromto.tif``.
        fallback: Names to use when the tag cannot be read (:func:`fromto_names`).

    Returns:
        The names given, by code.
    """
    names = tagged_names(layer) or dict(fallback or {})
    provider = layer.dataProvider()
    table = provider.colorTable(1) if hasattr(provider, "colorTable") else []
    colours = {int(c.value): c.color for c in
               QgsPalettedRasterRenderer.colorTableToClassData(table)} if table else {}
    palette = [QgsPalettedRasterRenderer.Class(code, colours.get(code, QColor("#808080")),
                                               name)
               for code, name in sorted(names.items())]
    layer.setRenderer(QgsPalettedRasterRenderer(provider, 1, palette))
    layer.triggerRepaint()
    return names


def style_change_mask(layer: QgsRasterLayer) -> None:
    """Changed pixels red, unchanged pale grey (255, nodata, not drawn)."""
    palette = [QgsPalettedRasterRenderer.Class(0, QColor(UNCHANGED_COLOUR), "unchanged"),
               QgsPalettedRasterRenderer.Class(1, QColor(CHANGED_COLOUR), "changed")]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, palette))
    layer.triggerRepaint()


def style_transitions(layer: QgsVectorLayer, transitions: Sequence[str] = ()) -> None:
    """Categorised fill on ``transition``: one colour per transition of interest."""
    if not transitions:
        index = layer.fields().indexOf("transition")
        transitions = sorted(str(v) for v in layer.uniqueValues(index)) if index >= 0 else []
    cats = []
    for i, name in enumerate(transitions):
        symbol = QgsFillSymbol.createSimple({
            "color": TRANSITION_COLOURS[i % len(TRANSITION_COLOURS)],
            "outline_color": "#000000", "outline_width": "0.3"})
        cats.append(QgsRendererCategory(name, symbol, name, True))
    layer.setRenderer(QgsCategorizedSymbolRenderer("transition", cats))
    layer.triggerRepaint()


def transition_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The result's top transitions with ``area_ha`` and ``percent`` of the compared area.

    Returns:
        ``[{from, to, pixels, area_m2, area_ha, percent}]``, largest first as the engine
        sorted them.
    """
    compared = float(result.get("compared_m2") or 0.0)
    rows = []
    for t in result.get("top_transitions") or []:
        area = float(t.get("area_m2", 0.0))
        rows.append({"from": str(t.get("from")), "to": str(t.get("to")),
                     "pixels": int(t.get("pixels", 0)), "area_m2": area,
                     "area_ha": area / 1e4,
                     "percent": 100.0 * area / compared if compared else 0.0})
    return rows


def shift_text(shift: dict[str, Any] | None) -> str:
    """The measured misregistration in words (``not checked`` without one)."""
    if not shift:
        return "not checked"
    text = f"dx {shift['dx_px']:+.2f} px, dy {shift['dy_px']:+.2f} px"
    if shift.get("corrected"):
        text += f" (corrected, residual {shift.get('residual_px') or 0:.2f} px)"
    return text


def change_summary(result: dict[str, Any]) -> str:
    """One line: changed of compared area, how change was decided, shift, border."""
    compared = float(result.get("compared_m2") or 0.0)
    changed = float(result.get("changed_m2") or 0.0)
    share = f" ({100.0 * changed / compared:.2f} %)" if compared else ""
    how = ("change probability" if result.get("changed_by") == "probability"
           else "class differs")
    return (f"Changed {changed / 1e4:.2f} ha of {compared / 1e4:.2f} ha compared{share} "
            f"({how}); {result.get('k')} classes; misregistration "
            f"{shift_text(result.get('shift'))}; border {result.get('border_px', 0)} px")
