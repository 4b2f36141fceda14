"""Train's 'Recipe': a study's settings filled into the panel's training widgets (issue 11).

A recipe is the engine's training preset (protocol/presets.py ``TRAIN_PRESETS``) on top of
the panel's own defaults (protocol.options ``DEFAULTS`` with QGIS's interactive epochs,
tile size and U-Net batches). The panel sends every training value from its widgets, and
explicit values win over an engine preset, so choosing a recipe fills the widgets instead
of sending ``preset``. The few options a recipe sets that the panel has no widget for
(``seed003``: optimizer, weight decay, loss) are sent with the train job while that recipe
is chosen. Edits after choosing keep the user's values; the combo keeps the recipe's name.

Until the user chooses a recipe (or sets training options from code), a new raster picks
one by its pixel size for Sealed surfaces and Land cover: >= 5 m the few-polygon recipe
(5 px context), else the aerial one. Landslides keeps its U-Net.
"""

from __future__ import annotations

import math
from typing import Any

from qgis.core import QgsRasterLayer, QgsUnitTypes
from qgis.PyQt.QtWidgets import QComboBox, QLabel

from ..protocol.options import interactive_default
from ..protocol.presets import TRAIN_PRESETS
from . import presets
from .panel_common import narrow_combo

AERIAL = "Aerial imagery (51 px context, study 000)"
FEW_POLYGONS = "Few polygons, 10-30 m imagery (5 px context)"
COARSE_LABELS = "Coarse labels, U-Net ResNet-50 (study 003)"
#: Recipe title -> engine preset name (None: the panel's defaults).
RECIPES: dict[str, str | None] = {AERIAL: None, FEW_POLYGONS: "few_polygons",
                                  COARSE_LABELS: "seed003"}
#: Pixel size (m) from which a new raster gets the few-polygon recipe.
COARSE_PIXEL_M = 5.0
#: Metres per degree of latitude (a geographic CRS's pixel size is converted with it).
M_PER_DEGREE = 111_320.0
#: Job keys of the training options the panel has widgets for and recipes fill (the model
#: first: it enables the widgets of its kind).
WIDGET_KEYS = ("model", "patch_size", "block_size", "stride", "planes", "blocks",
               "tile_size", "epochs", "patience", "lr", "batch_size", "samples_per_epoch",
               "augment")
#: Tasks whose recipe follows the raster's pixel size.
PIXEL_SIZE_TASKS = (presets.SEALED, presets.LAND_COVER)


def recipe_values(name: str) -> dict[str, Any]:
    """Every widget value of recipe ``name`` by job key (tuples for planes and blocks).

    The panel's defaults (interactive ones; U-Nets: small batches of whole tiles) with the
    engine preset on top, for :data:`WIDGET_KEYS` only.
    """
    preset = TRAIN_PRESETS[RECIPES[name]] if RECIPES[name] else {}
    tile = preset.get("model", interactive_default("model")) in presets.TILE_MODELS
    base = {key: interactive_default(key, tile_network=tile) for key in WIDGET_KEYS}
    return {**base, **{k: v for k, v in preset.items() if k in WIDGET_KEYS}}


def recipe_extras(name: str) -> dict[str, Any]:
    """Options of recipe ``name`` without a panel widget (sent with the train job)."""
    preset = TRAIN_PRESETS[RECIPES[name]] if RECIPES.get(name) else {}
    return {k: v for k, v in preset.items() if k not in WIDGET_KEYS}


def recipe_tooltip() -> str:
    """What each recipe sets, and what the panel cannot show."""
    lines = ["Fills the training settings below with a study's values; edit them "
             "afterwards as you like (your values are kept, the name stays)."]
    for title in RECIPES:
        values = recipe_values(title)
        shown = ", ".join(f"{k} {_text(values[k])}" for k in WIDGET_KEYS
                          if k not in ("batch_size", "samples_per_epoch", "augment"))
        extras = recipe_extras(title)
        line = f"• {title}: {shown}"
        if extras:
            line += ("; no widget for " + ", ".join(f"{k} {_text(v)}" for k, v in extras.items())
                     + ": sent with the train job while this recipe is chosen")
        lines.append(line)
    lines.append(f"Until you choose one, a new raster picks it by pixel size (>= "
                 f"{COARSE_PIXEL_M:g} m: few polygons) for Sealed surfaces and Land cover.")
    return "\n".join(lines)


def _text(value: Any) -> str:
    """A value as the panel's widgets hold it (``4,8,16``, ``0.001``)."""
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def pixel_size_m(layer: QgsRasterLayer) -> float | None:
    """The raster's mean pixel size in metres; None when its CRS gives no unit.

    A geographic CRS (degrees) is converted roughly: a degree of latitude is
    :data:`M_PER_DEGREE`, a degree of longitude that times the cosine of the extent's
    centre latitude.
    """
    crs = layer.crs()
    if not crs.isValid():
        return None
    x, y = abs(layer.rasterUnitsPerPixelX()), abs(layer.rasterUnitsPerPixelY())
    if crs.isGeographic():
        lat = math.radians(layer.extent().center().y())
        return (x * math.cos(lat) + y) / 2 * M_PER_DEGREE
    if crs.mapUnits() == QgsUnitTypes.DistanceUnknownUnit:
        return None
    factor = QgsUnitTypes.fromUnitToUnitFactor(crs.mapUnits(), QgsUnitTypes.DistanceMeters)
    return (x + y) / 2 * factor if factor else None


def recipe_for_pixel(pixel_m: float) -> str:
    """The recipe a raster of ``pixel_m`` metre pixels starts with."""
    return FEW_POLYGONS if pixel_m >= COARSE_PIXEL_M else AERIAL


class RecipePanelMixin:
    """Train's Recipe combo and its pixel-size default (mixed into the Train section).

    Relies on :class:`~.panel_train.TrainPanelMixin`'s ``_set_options`` and
    ``_widget_values`` and on the panel's ``_log``, ``preset_name``.
    """

    def _build_recipe_combo(self) -> QComboBox:
        self._recipe_chosen = False  # by the user (or code) in this session
        self._recipe_auto = False  # the pixel-size default is setting the combo
        self.recipe_combo = narrow_combo(18)  # the long titles must not widen the dock
        self.recipe_combo.addItems(list(RECIPES))
        self.recipe_combo.setToolTip(recipe_tooltip())
        self.recipe_combo.currentTextChanged.connect(self._on_recipe_changed)
        self.recipe_note = QLabel()
        self.recipe_note.setWordWrap(True)
        self.recipe_note.setVisible(False)
        return self.recipe_combo

    def recipe_name(self) -> str:
        """The chosen recipe's title."""
        return self.recipe_combo.currentText()

    def set_recipe(self, name: str) -> None:
        """Choose recipe ``name`` (a title of :data:`RECIPES`) as the user: fills the widgets."""
        if name not in RECIPES:
            raise KeyError(f"Unknown recipe {name!r}; use one of {list(RECIPES)}.")
        self._recipe_chosen = True
        if self.recipe_combo.currentText() == name:
            self._apply_recipe(name)
        else:
            self.recipe_combo.setCurrentText(name)

    def _on_recipe_changed(self, name: str) -> None:
        if name not in RECIPES:
            return
        if not self._recipe_auto:
            self._recipe_chosen = True
            self.recipe_note.setVisible(False)
        self._apply_recipe(name)

    def _apply_recipe(self, name: str) -> None:
        self._set_options(**recipe_values(name))

    def _recipe_untouched(self) -> bool:
        """Whether every widget a recipe fills still holds the chosen recipe's value."""
        want = recipe_values(self.recipe_name())
        have = self._widget_values()
        return all(_text(want[k]) == _text(have[k]) for k in WIDGET_KEYS)

    def _pick_recipe(self, name: str) -> None:
        """Set the combo without counting it as the user's choice."""
        self._recipe_auto = True
        try:
            if self.recipe_combo.currentText() == name:
                self._apply_recipe(name)
            else:
                self.recipe_combo.setCurrentText(name)
        finally:
            self._recipe_auto = False

    def _suggest_recipe(self, layer: Any) -> str | None:
        """Pick the recipe by ``layer``'s pixel size; returns why, or None when left alone.

        Left alone: a recipe the user chose, edited training widgets, Landslides (its
        U-Net), no raster or a CRS without unit.
        """
        if (self._recipe_chosen or self.preset_name() not in PIXEL_SIZE_TASKS
                or not isinstance(layer, QgsRasterLayer) or not layer.isValid()
                or not self._recipe_untouched()):
            return None
        pixel_m = pixel_size_m(layer)
        if pixel_m is None:
            return None
        name = recipe_for_pixel(pixel_m)
        context = "the 5 px context recipe" if name == FEW_POLYGONS else (
            "the 51 px context recipe")
        why = f"{pixel_m:.3g} m pixels: {context} ({name})."
        changed = name != self.recipe_name()
        self._pick_recipe(name)
        self.recipe_note.setText(why)
        self.recipe_note.setVisible(True)
        if changed:
            self._log("info", f"Recipe: {why}")
        return why

    def _withdraw_auto_recipe(self) -> None:
        """Scripted options: an untouched automatic recipe goes back to the panel defaults.

        So ``set_training_options`` means the same on any raster; afterwards the recipe
        counts as chosen (a later raster does not change the options).
        """
        if not self._recipe_chosen and self.recipe_name() != AERIAL and (
                self._recipe_untouched()):
            self._pick_recipe(AERIAL)
            self.recipe_note.setVisible(False)
        self._recipe_chosen = True

    def recipe_job_options(self) -> dict[str, Any]:
        """The chosen recipe's options without widgets (:func:`recipe_extras`)."""
        return recipe_extras(self.recipe_name())
