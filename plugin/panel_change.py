"""Panel section 'Change': what changed between two dates (classification difference).

'Map change' runs the engine's ``change`` command in a worker. By default the last model
predicts both dates - Data & task's raster (the first date, whose grid the outputs take) and
the raster chosen here as the second date; 'Two class layers' compares two class rasters
instead (two predictions, two land-cover maps). The second date is put on the first's grid
and its misregistration measured: above 'Largest shift' the engine refuses with the figure,
unless 'Correct the shift' is ticked; a border band leaves pixels near class boundaries
uncompared. Transitions of interest (``from=to``, picked from the classes with Add) get their
own raster and polygons.

The outputs go to a new folder ``change/<time>`` beside the models folder (beside the first
date's file before the project is saved). On the result the from-to raster (the engine's
colours, each code named ``from -> to`` from its ``TERRASEG_CLASSES`` tag), the change mask
and the transitions' polygons are added to the map, and the largest transitions are listed
in m2, ha and % of the compared area; 'Export table…' copies ``fromto_area.csv`` (rows from,
columns to).
"""

from __future__ import annotations

import datetime as _dt
import shutil
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from . import change_layers, jobs, modelinfo, results
from .panel_common import (
    TITLE,
    group_box,
    layer_filter,
    narrow_combo,
    save_file_name,
    unique_path,
)

CHANGE_BUTTON_TEXT = "Map change"
CHANGE_FOLDER = "change"
"""Folder beside the models folder holding one ``<time>`` folder per change run."""
SOURCES = {"model": "Predict both dates with the last model",
           "classes": "Two class layers"}
"""What is compared: ``model`` (the default) or ``classes``, and the combo's texts."""
ANY_CLASS = "*"
DEFAULT_MAX_SHIFT_PX = 1.0
TABLE_COLUMNS = ("From", "To", "Area (m²)", "Area (ha)", "% of compared")
LAYER_NAMES = {"fromto": "Change from-to", "mask": "Change mask",
               "transitions": "Transitions of interest"}


def split_transitions(text: str) -> list[str]:
    """``from=to`` pairs of the Transitions box (';' or ',' between pairs, blanks trimmed).

    Raises:
        ValueError: A pair without one '=' or with an empty side.
    """
    pairs = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    bad = [p for p in pairs if p.count("=") != 1 or not all(s.strip() for s in p.split("="))]
    if bad:
        raise ValueError(f"Write transitions of interest as from=to separated by ';' (class "
                         f"names, * for any): not {', '.join(bad)}.")
    return ["=".join(s.strip() for s in p.split("=")) for p in pairs]


def layers_overlap(a: QgsRasterLayer, b: QgsRasterLayer) -> bool:
    """Whether two layers' extents overlap (``b`` transformed into ``a``'s CRS)."""
    extent = b.extent()
    if a.crs().isValid() and b.crs().isValid() and a.crs() != b.crs():
        try:
            transform = QgsCoordinateTransform(b.crs(), a.crs(), QgsProject.instance())
            extent = transform.transformBoundingBox(extent)
        except Exception:  # noqa: BLE001 - the engine checks again, with its own message
            return True
    inter = a.extent().intersect(extent)
    return not inter.isEmpty() and inter.width() > 0 and inter.height() > 0


class ChangePanelMixin:
    """The 'Change' section: compare two dates, show the from-to layers and area table.

    Mixed into :class:`~.dock.TerraSegDock`; relies on the panel's shared state and helpers
    (``_log``, ``_refuse``, ``_start_job``, ``_confirm``, ``raster_layer``, ``last_model``,
    ``model_meta``, ``models_dir``, ``bands_spec``, ``classes``).

    Attributes:
        last_change: The last change run: ``folder``, ``result`` (engine payload),
            ``layer_ids`` (its layers in the project, by ``fromto``, ``mask``,
            ``transitions``), ``rows`` (the table's rows), ``names`` (from-to code -> name).
    """

    def _build_change_box(self) -> QWidget:
        box = group_box("Change", "TerraSegChangeBox", collapsed=True)
        self._change_box = box
        layout = QVBoxLayout(box)
        intro = QLabel("What changed between two dates: the first date is the raster in "
                       "Data & task, the second is chosen here; both are classified and "
                       "compared class by class.")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        self.change_source_combo = narrow_combo(16)
        for value, label in SOURCES.items():
            self.change_source_combo.addItem(label, value)
        self.change_source_combo.setToolTip(
            "Predict both dates with the last model (trained or loaded), or compare two "
            "class rasters you already have (two predictions, two land-cover maps).")
        form.addRow("Compare", self.change_source_combo)
        self.change_raster_combo = QgsMapLayerComboBox()
        self.change_raster_combo.setFilters(layer_filter("RasterLayer"))
        self.change_raster_combo.setAllowEmptyLayer(True)
        self.change_raster_combo.setLayer(None)
        self.change_raster_combo.setToolTip("The image of the second date (same bands as the "
                                            "first; any grid: it is put on the first's).")
        form.addRow("Second date", self.change_raster_combo)
        self.change_classes_a_combo = QgsMapLayerComboBox()
        self.change_classes_b_combo = QgsMapLayerComboBox()
        for combo, which in ((self.change_classes_a_combo, "first"),
                             (self.change_classes_b_combo, "second")):
            combo.setFilters(layer_filter("RasterLayer"))
            combo.setAllowEmptyLayer(True)
            combo.setLayer(None)
            combo.setToolTip(f"Class raster of the {which} date (class codes; TerraSeg's "
                             "classes.tif names its classes).")
        form.addRow("Classes, first date", self.change_classes_a_combo)
        form.addRow("Classes, second date", self.change_classes_b_combo)
        self._change_form = form
        self.change_max_shift_spin = QDoubleSpinBox()
        self.change_max_shift_spin.setRange(0.0, 100.0)
        self.change_max_shift_spin.setDecimals(2)
        self.change_max_shift_spin.setSingleStep(0.25)
        self.change_max_shift_spin.setValue(DEFAULT_MAX_SHIFT_PX)
        self.change_max_shift_spin.setToolTip(
            "Largest misregistration (pixels, measured by phase correlation) accepted; above "
            "it the run is refused with the figure, unless 'Correct the shift' is ticked.")
        form.addRow("Largest shift (px)", self.change_max_shift_spin)
        self.change_correct_shift_check = QCheckBox("Correct the shift")
        self.change_correct_shift_check.setToolTip(
            "Move the second date by the measured shift instead of refusing.")
        form.addRow("", self.change_correct_shift_check)
        self.change_border_spin = QSpinBox()
        self.change_border_spin.setRange(0, 50)
        self.change_border_spin.setToolTip(
            "Pixels within this distance of a class boundary of either date are not "
            "compared: removes sliver changes where the two maps are drawn slightly apart.")
        form.addRow("Border band (px)", self.change_border_spin)
        layout.addLayout(form)
        layout.addWidget(self._build_transition_row())
        self.change_button = QPushButton(CHANGE_BUTTON_TEXT)
        self.change_button.setToolTip(
            "Classifies both dates (or reads the two class layers), compares them pixel by "
            "pixel and adds the from-to classes, the change mask and the transitions of "
            "interest to the map.")
        self.change_button.clicked.connect(lambda: self.map_change())
        layout.addWidget(self.change_button)
        self.change_summary = QLabel()
        self.change_summary.setWordWrap(True)
        self.change_summary.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.change_summary)
        self.change_table = QTableWidget(0, len(TABLE_COLUMNS))
        self.change_table.setHorizontalHeaderLabels(list(TABLE_COLUMNS))
        self.change_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.change_table.verticalHeader().setVisible(False)
        self.change_table.setMinimumHeight(120)
        layout.addWidget(self.change_table)
        self.change_export_button = QPushButton("Export table…")
        self.change_export_button.setToolTip(
            "Saves the from-to area table (rows from, columns to; m² and % of the compared "
            "area) as CSV.")
        self.change_export_button.clicked.connect(lambda: self.export_change_table())
        layout.addWidget(self.change_export_button)
        self.last_change: dict[str, Any] | None = None
        self._show_change_source()
        self.change_source_combo.currentIndexChanged.connect(self._on_change_source)
        for combo in (self.change_raster_combo, self.change_classes_a_combo,
                      self.change_classes_b_combo):
            combo.layerChanged.connect(lambda _layer: self._update_buttons())
        return box

    def _build_transition_row(self) -> QWidget:
        """Transitions of interest: a from and a to class, Add, and the editable list."""
        row = QWidget()
        grid = QVBoxLayout(row)
        grid.setContentsMargins(0, 0, 0, 0)
        pick = QHBoxLayout()
        self.change_from_combo = narrow_combo(3)
        self.change_to_combo = narrow_combo(3)
        self.change_from_combo.setToolTip("Class of the first date (* = any).")
        self.change_to_combo.setToolTip("Class of the second date (* = any).")
        self.change_add_transition_button = QPushButton("Add")
        self.change_add_transition_button.setToolTip(
            "Adds 'from=to' to the transitions of interest (their own layer and polygons).")
        self.change_add_transition_button.clicked.connect(lambda: self.add_transition())
        pick.addWidget(self.change_from_combo, 1)
        pick.addWidget(QLabel("→"))
        pick.addWidget(self.change_to_combo, 1)
        pick.addWidget(self.change_add_transition_button)
        grid.addLayout(pick)
        self.change_transitions_edit = QLineEdit()
        self.change_transitions_edit.setPlaceholderText("e.g. unsealed=sealed; *=water")
        self.change_transitions_edit.setToolTip(
            "Transitions of interest, from=to separated by ';' (class names or codes, * = "
            "any): each gets its own layer and polygons with their area.")
        grid.addWidget(self.change_transitions_edit)
        self._change_class_names: list[str] = []
        return row

    # ------------------------------------------------------------------------------------
    # State of the controls
    # ------------------------------------------------------------------------------------
    def change_source(self) -> str:
        """``model`` (predict both dates) or ``classes`` (two class layers)."""
        return str(self.change_source_combo.currentData() or "model")

    def _on_change_source(self, *_args: Any) -> None:
        self._show_change_source()
        self._update_buttons()  # type: ignore[attr-defined]

    def _show_change_source(self) -> None:
        """Show the second date's raster, or the two class layers, as the source asks."""
        by_model = self.change_source() == "model"
        for widget, show in ((self.change_raster_combo, by_model),
                             (self.change_classes_a_combo, not by_model),
                             (self.change_classes_b_combo, not by_model)):
            widget.setVisible(show)
            label = self._change_form.labelForField(widget)
            if label is not None:
                label.setVisible(show)

    def change_class_names(self) -> list[str]:
        """Classes offered for transitions: the last model's (predicting), else the task's."""
        if self.change_source() == "model" and self.model_meta:
            names = [str(c["name"]) for c in modelinfo.model_classes(self.model_meta)]
            if names:
                return names
        return [c.name for c in self.classes()]  # type: ignore[attr-defined]

    def _refresh_transition_classes(self) -> None:
        names = self.change_class_names()
        if names == self._change_class_names:
            return
        self._change_class_names = names
        for combo, default in ((self.change_from_combo, 0), (self.change_to_combo, 1)):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([*names, ANY_CLASS])
            index = combo.findText(current)
            combo.setCurrentIndex(index if index >= 0 else min(default, len(names) - 1))
            combo.blockSignals(False)

    def add_transition(self, from_class: str | None = None, to_class: str | None = None) -> str:
        """Add ``from=to`` (default: the two combos) to the transitions of interest.

        Returns:
            The Transitions box's text afterwards (unchanged for a pair of one class or a
            pair already listed).
        """
        src = from_class if from_class is not None else self.change_from_combo.currentText()
        dst = to_class if to_class is not None else self.change_to_combo.currentText()
        edit = self.change_transitions_edit
        if not src or not dst or (src == dst and src != ANY_CLASS) or src == dst == ANY_CLASS:
            self._log("warning", f"Transition {src} -> {dst} is no change: choose two "  # type: ignore[attr-defined]
                                 "different classes.")
            return edit.text()
        pair = f"{src}={dst}"
        try:
            pairs = split_transitions(edit.text())
        except ValueError:
            pairs = [edit.text().strip()] if edit.text().strip() else []
        if pair not in pairs:
            pairs.append(pair)
        edit.setText("; ".join(pairs))
        return edit.text()

    def change_raster_layer(self) -> QgsRasterLayer | None:
        """The second date's raster chosen here."""
        layer = self.change_raster_combo.currentLayer()
        return layer if isinstance(layer, QgsRasterLayer) else None

    def change_class_layers(self) -> tuple[QgsRasterLayer | None, QgsRasterLayer | None]:
        """The two class layers (first, second date)."""
        layers = [c.currentLayer() for c in (self.change_classes_a_combo,
                                             self.change_classes_b_combo)]
        a, b = (lay if isinstance(lay, QgsRasterLayer) else None for lay in layers)
        return a, b

    def _update_change_controls(self, busy: bool, has_raster: bool) -> None:
        """Enable Map change as the inputs allow (called by ``dock._update_buttons``)."""
        self._refresh_transition_classes()
        self.change_button.setEnabled(not busy and not self._change_blockers())
        self.change_export_button.setEnabled(
            bool((self.last_change or {}).get("result", {}).get("fromto_area_csv")))

    def _change_blockers(self) -> list[str]:
        if self.change_source() == "classes":
            a, b = self.change_class_layers()
            return ([] if a is not None and b is not None else
                    ["Choose the class layers of both dates under Change."])
        out = []
        if self.raster_layer() is None:  # type: ignore[attr-defined]
            out.append("Choose the first date's raster under Data & task.")
        if self.change_raster_layer() is None:
            out.append("Choose the second date's raster under Change.")
        if not self.last_model:  # type: ignore[attr-defined]
            out.append("No model yet: train one, or load one (Load model… in Data & task).")
        return out

    def button_blockers(self) -> dict[str, list[str]]:
        """The other sections' blockers and Map change's."""
        blockers = super().button_blockers()  # type: ignore[misc]
        busy = self.busy_blockers()  # type: ignore[attr-defined]
        blockers["change_button"] = busy + self._change_blockers()
        return blockers

    # ------------------------------------------------------------------------------------
    # Run
    # ------------------------------------------------------------------------------------
    def change_dir(self, first_input: str) -> Path:
        """A new folder ``change/<time>`` beside the models folder, else beside the input."""
        models = self.models_dir()  # type: ignore[attr-defined]
        base = models.parent if models is not None else Path(first_input).resolve().parent
        stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H%M%S")
        return unique_path(base / CHANGE_FOLDER / stamp)

    def change_options(self) -> dict[str, Any]:
        """The comparison options of the section as job fields.

        Raises:
            ValueError: A transition of interest is not written ``from=to``.
        """
        return {"max_shift": self.change_max_shift_spin.value(),
                "correct_shift": self.change_correct_shift_check.isChecked(),
                "border": self.change_border_spin.value(),
                "transition": split_transitions(self.change_transitions_edit.text()) or None}

    def _change_inputs(self) -> tuple[dict[str, Any], QgsRasterLayer, QgsRasterLayer]:
        """(input job fields, first layer, second layer) of the chosen source.

        Raises:
            ValueError: A layer is missing or is not a file the engine can read.
        """
        if self.change_source() == "classes":
            a, b = self.change_class_layers()
            if a is None or b is None:
                raise ValueError("Choose the class layers of both dates first.")
            return ({"classes_a": jobs.raster_layer_path(a),
                     "classes_b": jobs.raster_layer_path(b)}, a, b)
        a, b = self.raster_layer(), self.change_raster_layer()  # type: ignore[attr-defined]
        if a is None:
            raise ValueError("Choose the first date's raster in Data & task first.")
        if b is None:
            raise ValueError("Choose the second date's raster under Change first.")
        if not self.last_model:  # type: ignore[attr-defined]
            raise ValueError("No model yet: train one, or load one (Load model… in Data & "
                             "task).")
        bands = None
        try:
            spec = self.bands_spec()  # type: ignore[attr-defined]
            if len(spec.split(",")) == len(modelinfo.model_bands(self.model_meta or {})):
                bands = spec
        except ValueError:
            bands = None
        return ({"model": self.last_model, "raster_a": jobs.raster_layer_path(a),  # type: ignore[attr-defined]
                 "raster_b": jobs.raster_layer_path(b), "bands": bands}, a, b)

    def map_change(self, wait: bool = False, timeout_s: float = 1800.0) -> bool:
        """Compare the two dates (a worker ``change`` job) and show the result.

        Args:
            wait: Block (running the Qt event loop) until the job has ended.
            timeout_s: Longest wait.

        Returns:
            True when the job started (with ``wait``: when it also succeeded).
        """
        title = CHANGE_BUTTON_TEXT
        try:
            inputs, first, second = self._change_inputs()
            options = self.change_options()
        except (ValueError, OSError) as exc:
            return self._refuse(title, str(exc))  # type: ignore[attr-defined]
        if not layers_overlap(first, second):
            return self._refuse(  # type: ignore[attr-defined]
                title, f"'{second.name()}' does not overlap '{first.name()}': the two dates "
                "must cover the same place.",
                "Choose a second date of the same area, or check both layers' CRS.")
        out_dir = self.change_dir(next(iter(inputs.values())))
        job = jobs.make_job("change", **inputs, **options, out_dir=str(out_dir))
        how = (f"predicting both with {Path(str(inputs['model'])).name}"
               if "model" in inputs else "class maps")
        self._log("info", f"Mapping change from {first.name()} to {second.name()} ({how}; "  # type: ignore[attr-defined]
                          f"largest shift {options['max_shift']:g} px, border "
                          f"{options['border']} px) into {out_dir}")
        request = {"folder": str(out_dir), "first": first.name(), "second": second.name()}
        return self._start_job("change", job,  # type: ignore[attr-defined]
                               lambda result: self._on_change_result(request, result),
                               wait, timeout_s)

    def _on_change_result(self, request: dict[str, Any], result: dict[str, Any]) -> None:
        self.show_change(result, request)
        self.iface.messageBar().pushMessage(  # type: ignore[attr-defined]
            TITLE, self.change_summary.text().splitlines()[0], Qgis.MessageLevel.Success, 8)

    # ------------------------------------------------------------------------------------
    # Show a result
    # ------------------------------------------------------------------------------------
    def _remove_change_layers(self) -> None:
        project = QgsProject.instance()
        for layer_id in ((self.last_change or {}).get("layer_ids") or {}).values():
            if project.mapLayer(layer_id) is not None:
                project.removeMapLayer(layer_id)

    def _add_change_layer(self, layer: Any, path: str) -> str:
        if not layer.isValid():
            raise results.ResultLayerError(f"Cannot open the change result {path}.")
        project = QgsProject.instance()
        project.addMapLayer(layer, False)
        results.results_group(project, self._label_layer).insertLayer(0, layer)  # type: ignore[attr-defined]
        return layer.id()

    def show_change(self, result: dict[str, Any], request: dict[str, Any] | None = None) -> None:
        """Add a change result's layers to the map and fill the area table.

        Replaces the layers of the previous change run (one at a time: the newest).

        Args:
            result: The engine's ``change`` result (``fromto_tif``, ``top_transitions``, ...).
            request: What the panel sent (``folder``, ``first``, ``second``).

        Raises:
            results.ResultLayerError: A result file cannot be opened.
        """
        request = request or {"folder": str(Path(str(result.get("fromto_tif", ""))).parent)}
        self._remove_change_layers()
        ids: dict[str, str] = {}
        # added in reverse drawing order: each goes on top of the results group
        fromto = QgsRasterLayer(str(result["fromto_tif"]), LAYER_NAMES["fromto"], "gdal")
        names = change_layers.style_fromto(fromto, change_layers.fromto_names(result)) \
            if fromto.isValid() else {}
        ids["fromto"] = self._add_change_layer(fromto, str(result["fromto_tif"]))
        mask = QgsRasterLayer(str(result["change_mask_tif"]), LAYER_NAMES["mask"], "gdal")
        if mask.isValid():
            change_layers.style_change_mask(mask)
        ids["mask"] = self._add_change_layer(mask, str(result["change_mask_tif"]))
        gpkg = result.get("transitions_gpkg")
        if gpkg:
            polygons = QgsVectorLayer(f"{gpkg}|layername={change_layers.TRANSITIONS_LAYER}",
                                      LAYER_NAMES["transitions"], "ogr")
            if polygons.isValid():
                change_layers.style_transitions(
                    polygons, [t["transition"] for t in result.get("transitions") or []])
            ids["transitions"] = self._add_change_layer(polygons, str(gpkg))
        rows = change_layers.transition_rows(result)
        self._fill_change_table(rows)
        self.last_change = {**request, "result": result, "layer_ids": ids, "rows": rows,
                            "names": names}
        text = change_layers.change_summary(result)
        extra = [f"{t['transition']}: {float(t['area_m2']) / 1e4:.2f} ha"
                 for t in result.get("transitions") or []]
        self.change_summary.setText(text + (f".\nTransitions of interest: {'; '.join(extra)}"
                                            if extra else "."))
        self._change_box.setCollapsed(False)
        self._log("info", f"Change: {text}; files in {request.get('folder')}")  # type: ignore[attr-defined]
        self._update_buttons()  # type: ignore[attr-defined]

    def _fill_change_table(self, rows: list[dict[str, Any]]) -> None:
        table = self.change_table
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            values = (row["from"], row["to"], f"{row['area_m2']:,.1f}",
                      f"{row['area_ha']:,.2f}", f"{row['percent']:.2f}")
            for c, value in enumerate(values):
                item = QTableWidgetItem(value)
                if c >= 2:
                    item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight
                                              | Qt.AlignmentFlag.AlignVCenter))
                table.setItem(r, c, item)
        table.resizeColumnsToContents()

    def change_layer(self, kind: str) -> Any:
        """The last change run's layer ``fromto``, ``mask`` or ``transitions`` (or None)."""
        layer_id = ((self.last_change or {}).get("layer_ids") or {}).get(kind)
        return QgsProject.instance().mapLayer(layer_id) if layer_id else None

    def export_change_table(self, path: str | Path | None = None) -> Path | None:
        """Copy the last run's ``fromto_area.csv`` to ``path`` (default: ask with a dialog).

        Returns:
            The file written, or None (no result, cancelled, or not replaced).
        """
        title = "Export change table"
        source = (self.last_change or {}).get("result", {}).get("fromto_area_csv")
        if not source or not Path(source).is_file():
            self._refuse(title, "No change table yet: run Map change first.")  # type: ignore[attr-defined]
            return None
        if path is None:
            home = QgsProject.instance().absolutePath() or str(Path(source).parent)
            path = save_file_name(self, title, str(Path(home) / "fromto_area.csv"),  # type: ignore[arg-type]
                                  "CSV (*.csv)")
            if not path:
                return None
        target = Path(path)
        if target.suffix.lower() != ".csv":
            target = target.with_suffix(".csv")
        if target.resolve() == Path(source).resolve():
            return target
        if target.exists() and not self._confirm(title, f"Replace {target}?"):  # type: ignore[attr-defined]
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        self._log("info", f"Change table exported to {target}")  # type: ignore[attr-defined]
        return target
