"""Panel section 'Export': class polygons and area statistics (overall, per zone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import QgsVectorLayer
from qgis.gui import QgsFieldComboBox, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from . import jobs, results
from .panel_common import group_box, layer_filter


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
            chosen, _ = QFileDialog.getSaveFileName(self, title, str(default), file_filter)
            if not chosen:
                return None
            path = chosen
        target = Path(path)
        suffix = Path(default_name).suffix
        return target if target.suffix.lower() == suffix else target.with_suffix(suffix)

    def _build_export_box(self) -> QWidget:
        box = group_box("Export", "TerraSegExportBox")
        form = QFormLayout(box)
        self.min_area_spin = QDoubleSpinBox()
        self.min_area_spin.setRange(0.0, 1e9)
        self.min_area_spin.setDecimals(1)
        self.min_area_spin.setSuffix(" m²")
        self.min_area_spin.setToolTip("Regions smaller than this merge into their neighbours.")
        form.addRow("Minimum area", self.min_area_spin)
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
        self.areas_table.setHorizontalHeaderLabels(["Class", "Area (m²)", "%"])
        self.areas_table.verticalHeader().setVisible(False)
        self.areas_table.horizontalHeader().setSectionResizeMode(
            0, QHeaderView.ResizeMode.Stretch)
        self.areas_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.areas_table.setMaximumHeight(130)
        form.addRow(self.areas_table)
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
            self.min_area_spin.setValue(float(min_area))
        target = self._export_target(path, "classes.gpkg", "Export polygons",
                                     "GeoPackage (*.gpkg)")
        if target is None:
            return False
        overwrite = self._check_targets([target])
        if overwrite is None:
            return False
        job = jobs.vectorise_job(classes=self.last_results["classes"], out=str(target),
                                 min_area=self.min_area_spin.value(),
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
            self._show_area_rows(result.get("rows") or [])
            self.last_exports.update(csv=str(result.get("csv", target)),
                                     area_rows=result.get("rows") or [])
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

    def _show_area_rows(self, rows: list[dict[str, Any]]) -> None:
        self.areas_table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            self.areas_table.setItem(r, 0, QTableWidgetItem(str(row.get("class_name", ""))))
            for c, key, fmt in ((1, "area_m2", "{:,.0f}"), (2, "percent", "{:.2f}")):
                value = row.get(key)
                item = QTableWidgetItem(fmt.format(value) if isinstance(value, int | float)
                                        else "")
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.areas_table.setItem(r, c, item)
