"""Panel section 'Export': class polygons and area statistics (overall, per zone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import QgsRasterLayer, QgsUnitTypes, QgsVectorLayer
from qgis.gui import QgsFieldComboBox, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QBrush, QColor
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QDoubleSpinBox,
    QFormLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from . import jobs, results
from .panel_common import group_box, layer_filter, save_file_name

#: The area table's percentage column: a share of the classified pixels only.
AREA_PERCENT_HEADER = "% of classified"
AREA_PERCENT_NOTE = ("Percentages are shares of the classified area: nodata pixels (no "
                     "class) are left out, and shown apart in a last row when there are any.")
NODATA_ROW = "nodata (not classified)"


class ExportPanelMixin:
    """Polygon and area-statistics exports of the panel.

    Mixed into :class:`~.dock.TerraSegDock`; relies on the panel's shared state and helpers
    (``_log``, ``_refuse``, ``_start_job``, ``_update_buttons``, ...).
    """

    def _export_target(self, path: str | Path | None, default_name: str, title: str,
                       file_filter: str) -> Path | None:
        """The export file: ``path``, or asked for (default beside the results).

        The suffix of ``default_name`` is enforced. None when the user cancels.
        """
        if path is None:
            default = Path(self.last_results["folder"]) / default_name
            # existing files are asked about once, by _check_targets
            chosen = save_file_name(self, title, str(default), file_filter)
            if not chosen:
                return None
            path = chosen
        target = Path(path)
        suffix = Path(default_name).suffix
        return target if target.suffix.lower() == suffix else target.with_suffix(suffix)

    def _build_export_box(self) -> QWidget:
        box = group_box("Export", "TerraSegExportBox")
        form = QFormLayout(box)
        self.export_min_area_spin = QDoubleSpinBox()
        self.export_min_area_spin.setRange(0.0, 1e9)
        self.export_min_area_spin.setDecimals(1)
        self.export_min_area_spin.setSuffix(" m²")
        self.export_min_area_spin.setToolTip(
            "Export polygons: regions smaller than this merge into their neighbours (the "
            "class map itself is cleaned up by Predict's 'Minimum region').")
        form.addRow("Minimum area", self.export_min_area_spin)
        self.vectorise_button = QPushButton("Export polygons…")
        self.vectorise_button.clicked.connect(lambda: self.export_polygons())
        form.addRow("", self.vectorise_button)
        self.zones_combo = QgsMapLayerComboBox()
        self.zones_combo.setFilters(layer_filter("PolygonLayer"))
        self.zones_combo.setAllowEmptyLayer(True)
        self.zones_combo.setLayer(None)
        self.zone_field_combo = QgsFieldComboBox()
        self.zone_field_combo.setAllowEmptyFieldName(True)
        self.zones_combo.layerChanged.connect(self.zone_field_combo.setLayer)
        form.addRow("Zones (optional)", self.zones_combo)
        form.addRow("Zone name field", self.zone_field_combo)
        self.areas_button = QPushButton("Area statistics…")
        self.areas_button.clicked.connect(lambda: self.export_areas())
        form.addRow("", self.areas_button)
        self.areas_table = QTableWidget(0, 3)
        self.areas_table.setHorizontalHeaderLabels(["Class", "Area (m²)", AREA_PERCENT_HEADER])
        self.areas_table.setToolTip(AREA_PERCENT_NOTE)
        self.areas_table.verticalHeader().setVisible(False)
        self.areas_table.horizontalHeader().setSectionResizeMode(
            0, QHeaderView.ResizeMode.Stretch)
        self.areas_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.areas_table.setMaximumHeight(130)
        form.addRow(self.areas_table)
        self.areas_note = QLabel()
        self.areas_note.setWordWrap(True)
        form.addRow(self.areas_note)
        self.export_summary = QLabel()
        self.export_summary.setWordWrap(True)
        form.addRow(self.export_summary)
        return box

    # ------------------------------------------------------------------------------------
    # Export
    # ------------------------------------------------------------------------------------
    def _check_targets(self, paths: list[Path]) -> bool | None:
        """None: cancelled; False: nothing exists; True: overwrite confirmed."""
        existing = [p for p in paths if p.exists()]
        if not existing:
            return False
        names = "\n".join(str(p) for p in existing)
        if not self._confirm("Replace files?", f"These files exist:\n{names}\n\nReplace them?"):
            return None
        for p in existing:
            results.remove_layers_with_source(p)
        return True

    def export_polygons(self, path: str | Path | None = None, min_area: float | None = None,
                        wait: bool = False, timeout_s: float = 3600.0) -> bool:
        """Vectorise the last class raster to a GeoPackage and add it to the project.

        Args:
            path: GeoPackage to write; None asks with a file dialog.
            min_area: Regions below this area (m2) merge into neighbours (default: panel).
            wait: Block until the job has ended.
            timeout_s: Longest wait.

        Returns:
            True when the job started (with ``wait``: when it also succeeded).
        """
        if not self.last_results:
            return self._refuse("Export", "Predict first: polygons come from the class raster.")
        if min_area is not None:
            self.export_min_area_spin.setValue(float(min_area))
        target = self._export_target(path, "classes.gpkg", "Export polygons",
                                     "GeoPackage (*.gpkg)")
        if target is None:
            return False
        overwrite = self._check_targets([target])
        if overwrite is None:
            return False
        job = jobs.vectorise_job(classes=self.last_results["classes"], out=str(target),
                                 min_area=self.export_min_area_spin.value(),
                                 model=self.last_results.get("model"), overwrite=overwrite)
        return self._start_job("vectorise", job, self._on_vectorise_result, wait, timeout_s)

    def _on_vectorise_result(self, result: dict[str, Any]) -> None:
        path = str(result["polygons"])
        classes = (self.last_results or {}).get("class_list") or self.result_classes()
        layer = results.add_vector_result(path, f"{Path(path).stem} polygons", classes)
        self.last_exports.update(polygons=path, polygons_layer=layer)
        self.export_summary.setText(f"{result.get('n_polygons', '?')} polygons: {path}")

    def export_areas(self, csv: str | Path | None = None,
                     zones_layer: QgsVectorLayer | None = None, zone_field: str | None = None,
                     wait: bool = False, timeout_s: float = 3600.0) -> bool:
        """Area per class (m2, %) of the last class raster, overall and per zone.

        The overall table goes to ``csv`` and the panel. With a zone layer a second job
        writes ``<csv>_zones.csv`` and ``<csv>_zones.gpkg`` (the zones with per-class area
        attributes), which is added to the project.

        Args:
            csv: CSV to write; None asks with a file dialog.
            zones_layer: Polygon zones (default: the layer chosen in the panel, if any).
            zone_field: Zone name attribute (default: the panel's choice).
            wait: Block until all jobs have ended.
            timeout_s: Longest wait.

        Returns:
            True when the job started (with ``wait``: when all succeeded).
        """
        if not self.last_results:
            return self._refuse("Export", "Predict first: areas come from the class raster.")
        if zones_layer is None:
            current = self.zones_combo.currentLayer()
            zones_layer = current if isinstance(current, QgsVectorLayer) else None
            if zone_field is None and zones_layer is not None:
                zone_field = self.zone_field_combo.currentField() or None
        target = self._export_target(csv, "areas.csv", "Area statistics", "CSV (*.csv)")
        if target is None:
            return False
        zones_csv = target.with_name(f"{target.stem}_zones.csv")
        zones_gpkg = target.with_name(f"{target.stem}_zones.gpkg")
        paths = [target] + ([zones_csv, zones_gpkg] if zones_layer is not None else [])
        overwrite = self._check_targets(paths)
        if overwrite is None:
            return False
        zones_path = None
        if zones_layer is not None:
            try:
                zones_path = jobs.vector_layer_path(zones_layer, self._temp_folder(),
                                                    layer_spec=False)
            except OSError as exc:
                return self._refuse("Export", str(exc))
        classes_tif, model = self.last_results["classes"], self.last_results.get("model")
        job = jobs.areas_job(classes=classes_tif, out_csv=str(target), model=model,
                             overwrite=overwrite)

        def after_overall(result: dict[str, Any]) -> None:
            rows = result.get("rows") or []
            nodata_m2 = self._nodata_area_m2(result, classes_tif)
            self._show_area_rows(rows, nodata_m2)
            self.last_exports.update(csv=str(result.get("csv", target)), area_rows=rows,
                                     nodata_m2=nodata_m2)
            self.export_summary.setText(f"Areas: {target}")
            if zones_path is None:
                return
            zone_job = jobs.areas_job(classes=classes_tif, out_csv=str(zones_csv),
                                      zones=zones_path, zone_field=zone_field,
                                      out_zones=str(zones_gpkg), model=model,
                                      overwrite=overwrite)
            self._next_step = lambda: self._start_job("areas", zone_job, after_zones)

        def after_zones(result: dict[str, Any]) -> None:
            zones_out = str(result.get("zones") or zones_gpkg)
            layer = results.add_vector_result(zones_out, f"{zones_layer.name()} class areas")
            self.last_exports.update(zones_csv=str(result.get("csv", zones_csv)),
                                     zones=zones_out, zones_layer=layer)
            self.export_summary.setText(f"Areas: {target}\nZones: {zones_out}")

        return self._start_job("areas", job, after_overall, wait, timeout_s)

    @staticmethod
    def _nodata_area_m2(result: dict[str, Any], classes_tif: str) -> float | None:
        """Area (m²) of the class raster's nodata pixels, which the percentages leave out.

        The engine's ``nodata_m2`` when it reports it, else the raster's area less the
        classified area of its rows (None when the raster cannot be measured in metres).
        """
        if isinstance(result.get("nodata_m2"), int | float):
            return float(result["nodata_m2"])
        layer = QgsRasterLayer(str(classes_tif), "classes", "gdal")
        crs = layer.crs()
        if not layer.isValid() or not crs.isValid() or crs.isGeographic():
            return None
        metres = QgsUnitTypes.fromUnitToUnitFactor(crs.mapUnits(),
                                                   QgsUnitTypes.DistanceMeters)
        pixel_m2 = layer.rasterUnitsPerPixelX() * layer.rasterUnitsPerPixelY() * metres ** 2
        if pixel_m2 <= 0:
            return None
        classified_m2 = sum(float(r.get("area_m2") or 0.0) for r in result.get("rows") or [])
        nodata_px = layer.width() * layer.height() - round(classified_m2 / pixel_m2)
        return max(0, nodata_px) * pixel_m2

    def _show_area_rows(self, rows: list[dict[str, Any]],
                        nodata_m2: float | None = None) -> None:
        """Classes with area and % of the classified area; nodata apart, without a %.

        The nodata row is shown when the class map has nodata pixels; the note under the
        table says what the percentages include either way.
        """
        extra = 1 if nodata_m2 else 0
        self.areas_table.setRowCount(len(rows) + extra)
        for r, row in enumerate(rows):
            self.areas_table.setItem(r, 0, QTableWidgetItem(str(row.get("class_name", ""))))
            for c, key, fmt in ((1, "area_m2", "{:,.0f}"), (2, "percent", "{:.2f}")):
                value = row.get(key)
                self.areas_table.setItem(r, c, _number_item(
                    fmt.format(value) if isinstance(value, int | float) else ""))
        classified = sum(float(r.get("area_m2") or 0.0) for r in rows)
        note = f"% = share of the classified area ({classified:,.0f} m²)"
        if nodata_m2 == 0:
            note += "; the class map has no nodata pixels"
        elif nodata_m2 is not None:
            r = len(rows)
            items = (QTableWidgetItem(NODATA_ROW), _number_item(f"{nodata_m2:,.0f}"),
                     _number_item("excluded"))
            for c, item in enumerate(items):
                font = item.font()
                font.setItalic(True)
                item.setFont(font)
                item.setForeground(QBrush(QColor("#666")))
                item.setToolTip("Pixels without a class (nodata): not part of the % column.")
                self.areas_table.setItem(r, c, item)
            whole = classified + nodata_m2
            share = f", {100 * nodata_m2 / whole:.1f} % of the raster" if whole > 0 else ""
            note += f"; nodata ({nodata_m2:,.0f} m²{share}) is excluded"
        self.areas_note.setText(note + ". The CSV's 'percent' column means the same.")


def _number_item(text: str) -> QTableWidgetItem:
    """A right-aligned table cell."""
    item = QTableWidgetItem(text)
    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item
