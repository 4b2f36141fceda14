"""Labelled area per class in the panel: inside and outside the raster; the check before training.

With a raster chosen, the areas are those inside the raster's extent (the label layer's
geometries transformed into the raster's CRS, :func:`.label_layer.label_stats`); polygons
wholly or partly outside it are counted apart, and training is refused or asked about when
a class lies only outside.
"""

from __future__ import annotations

from qgis.core import QgsMapLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QTableWidgetItem

from . import label_layer
from .panel_common import colour_icon

AREA_COLUMNS = (
    ("Class", "Class value of the label polygons."),
    ("Polygons", "Polygons with some area inside the chosen raster (all of them when no "
                 "raster is chosen)."),
    ("Area (m²)", "Labelled area inside the chosen raster's extent (the inside part of "
                  "polygons partly outside)."),
    ("%", "Share of the labelled area inside the raster among the task's classes; the area "
          "outside the raster and features of other classes are left out."),
    ("Outside raster", "Polygons wholly outside the raster (+ partly outside) and their area "
                       "outside it: not used for training."),
)


def _outside_text(st: label_layer.ClassLabelStats) -> str:
    """'Outside raster' cell: polygons wholly (and partly) outside and the area outside."""
    if not st.has_outside:
        return ""
    partly = f" (+{st.partly_outside_count} partly)" if st.partly_outside_count else ""
    return f"{st.outside_count}{partly}, {st.outside_area_m2:,.0f} m²"


class LabelAreasPanelMixin:
    """The 'Labelled area' table of the Labels section and :meth:`confirm_labels_inside`.

    Mixed into :class:`~.dock.TerraSegDock`; the table itself is built by
    :class:`~.panel_labels.LabelsPanelMixin`.
    """

    def refresh_areas(self) -> dict[str, float]:
        """Recompute and show the labelled area per class; returns {class: m2}.

        With a raster chosen, the areas are those inside the raster's extent (the label
        layer's geometries transformed into the raster's CRS); polygons wholly or partly
        outside it are counted apart (column 'Outside raster' and the note below the table).
        :attr:`label_stats` keeps the numbers per class (:class:`.label_layer.ClassLabelStats`).
        """
        layer = self._label_layer
        classes = self.classes()
        raster = self.raster_layer()
        if layer is None or not label_layer.is_label_layer(layer):
            stats = {c.name: label_layer.ClassLabelStats() for c in classes}
        else:
            stats = label_layer.label_stats(layer, classes, raster)
        self.label_stats = stats
        self.class_area_m2 = {k: v.area_m2 for k, v in stats.items()}
        names = {c.name for c in classes}
        task_area = sum(v.area_m2 for k, v in stats.items() if k in names)
        self.area_table.setRowCount(len(stats))
        colours = {c.name: c.colour for c in classes}
        for r, (name, st) in enumerate(stats.items()):
            item = QTableWidgetItem(name or "(no class)")
            if name in colours:
                item.setIcon(colour_icon(colours[name]))
            self.area_table.setItem(r, 0, item)
            share = (f"{100 * st.area_m2 / task_area:.1f}" if name in names and task_area > 0
                     else "–")
            outside = _outside_text(st)
            for col, text in ((1, str(st.count)), (2, f"{st.area_m2:,.0f}"), (3, share),
                              (4, outside)):
                cell = QTableWidgetItem(text)
                cell.setTextAlignment(Qt.AlignmentFlag.AlignRight
                                      | Qt.AlignmentFlag.AlignVCenter)
                self.area_table.setItem(r, col, cell)
        self._show_area_note(stats, names, raster)
        return dict(self.class_area_m2)

    def _show_area_note(self, stats: dict[str, label_layer.ClassLabelStats], names: set[str],
                        raster: QgsMapLayer | None) -> None:
        """Say what the percentages leave out and what lies outside the raster."""
        left_out = ["the area outside the raster"] if raster is not None else []
        if any(k not in names and v.total_count for k, v in stats.items()):
            left_out.append("features of other or no class")
        where = f" inside raster '{raster.name()}'" if raster is not None else ""
        share = f"% = share of the labelled area{where} among the task's classes"
        parts = [share + (f" ({' and '.join(left_out)} left out)" if left_out else "")]
        warn = False
        outside = [v for v in stats.values() if v.has_outside]
        if raster is not None and outside:
            wholly = sum(v.outside_count for v in outside)
            partly = sum(v.partly_outside_count for v in outside)
            area = sum(v.outside_area_m2 for v in outside)
            parts.append(f"{wholly} polygon(s) wholly and {partly} partly outside the raster "
                         f"({area:,.0f} m² outside): training uses only the labels inside it")
            warn = True
        self.area_note.setText(". ".join(parts) + ".")
        self.area_note.setStyleSheet("color: #a60" if warn else "")

    def confirm_labels_inside(self) -> bool:
        """Before training: refuse or ask when a class has no labelled area inside the raster.

        A class whose polygons all lie outside the chosen raster's extent cannot be learnt.
        With fewer than two classes labelled inside the raster training would fail, so it
        is refused; otherwise the analyst is asked (``auto_answer`` answers in tests).

        Returns:
            True when training may go on (also without a raster or label layer: other
            checks refuse those).
        """
        layer = self._label_layer
        raster = self.raster_layer()
        if raster is None or layer is None or not label_layer.is_label_layer(layer):
            return True
        classes = self.classes()
        self.refresh_areas()
        stats = self.label_stats
        only_outside = [c.name for c in classes
                        if stats[c.name].area_m2 <= 0.0 and stats[c.name].outside_count > 0]
        if not only_outside:
            return True
        described = "; ".join(
            f"'{name}': {stats[name].outside_count} polygon(s), "
            f"{stats[name].outside_area_m2:,.0f} m²" for name in only_outside)
        text = (f"No labelled area inside raster '{raster.name()}' for "
                f"{', '.join(repr(n) for n in only_outside)}: the polygons lie outside the "
                f"raster ({described}).")
        inside = [c.name for c in classes if stats[c.name].area_m2 > 0.0]
        if len(inside) < 2:
            return self._refuse(
                "Train", f"{text} Training needs labelled areas of at least two classes "
                f"inside the raster (inside: {', '.join(inside) or 'none'}).",
                "Draw polygons of these classes over the raster, or choose the raster the "
                "labels were drawn on in 'Data & task'.")
        return self._confirm("Labels outside the raster",
                             f"{text}\n\nThe model will not learn "
                             f"{'this class' if len(only_outside) == 1 else 'these classes'}."
                             " Train anyway?")
