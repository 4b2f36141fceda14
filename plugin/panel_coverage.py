"""Band coverage and nodata of the panel's raster (``terraseg inspect`` in a worker).

When a raster is chosen or its bands change, ``terraseg inspect`` runs in a worker of its
own (never blocking the panel, deferred while another job runs): the band table shows
which share of the raster (and of the labelled pixels) each band covers, 'Use best bands'
applies the engine's suggested set, and a likely undeclared nodata value is offered for the
'Nodata value' box, which train, predict, evaluate and quick-map jobs carry (``nodata``).
The widgets are built by :class:`~.panel_data.DataPanelMixin` (the band table and the box).
"""

from __future__ import annotations

from typing import Any

from qgis.PyQt.QtCore import QEventLoop, QTimer
from qgis.PyQt.QtWidgets import QTableWidgetItem

from . import jobs, label_layer
from .panel_common import exec_qt
from .worker_job import WorkerJob

#: Column of the band table that shows each band's coverage.
COVERAGE_COLUMN = 4
#: Before training, ask when the chosen bands cover this much less than the suggested ones
#: (a share of the raster or of the labelled pixels).
COVERAGE_WARN_GAP = 0.02
#: Commands whose jobs read the panel's raster and so carry its nodata value.
NODATA_COMMANDS = ("train", "predict", "evaluate", "quickmap")


class CoveragePanelMixin:
    """Band coverage, suggested bands and the nodata value of the panel.

    Mixed into :class:`~.dock.TerraSegDock` before :class:`~.panel_jobs.JobsPanelMixin`
    (its ``_start_job`` adds the nodata value to the jobs that read the raster).
    """

    def nodata_value(self) -> float | None:
        """The 'Nodata value' box: a number, or None (blank: the raster's own).

        Raises:
            ValueError: The box holds text that is not a finite number.
        """
        text = self.nodata_edit.text().strip().replace(",", ".")
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"Nodata value '{self.nodata_edit.text()}' is not a number; "
                             "enter e.g. 0, or leave the box blank for the raster's own.")
        return value

    def set_nodata_value(self, value: float | None) -> None:
        """Fill the 'Nodata value' box (None: blank) and inspect the raster again."""
        self.nodata_edit.setText("" if value is None else f"{value:g}")
        self._on_nodata_edited()

    def _on_nodata_edited(self) -> None:
        self._schedule_inspect()

    def _on_band_item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() == 2:  # a band ticked or unticked
            self._schedule_inspect()

    def _schedule_inspect(self) -> None:
        if self.raster_layer() is not None:
            self._inspect_timer.start()

    def _start_job(self, kind: str, job: dict[str, Any], on_result: Any, wait: bool = False,
                   timeout_s: float = 3600.0) -> bool:
        """Every train, predict and evaluate job of the panel's raster carries its nodata."""
        if job.get("command") in NODATA_COMMANDS and "nodata" not in job.get("args", {}):
            try:
                nodata = self.nodata_value()
            except ValueError as exc:
                return self._refuse(kind.capitalize(), str(exc))
            if nodata is not None:
                job = {**job, "args": {**job.get("args", {}), "nodata": nodata}}
        return super()._start_job(kind, job, on_result, wait, timeout_s)  # type: ignore[misc]

    def _labels_key(self) -> tuple[str, int] | None:
        """The label layer's id and feature count when it has polygons, else None."""
        layer = self._label_layer
        if layer is None or not label_layer.is_label_layer(layer) or not layer.featureCount():
            return None
        return layer.id(), int(layer.featureCount())

    def _inspect_key(self) -> tuple[Any, ...] | None:
        """What a coverage measurement depends on now: raster, bands, nodata, labels.

        Labels count by layer and number of polygons: the coverage of the labelled pixels is
        measured again before training when polygons were added since.
        """
        raster = self.raster_layer()
        if raster is None:
            return None
        try:
            raster_path = jobs.raster_layer_path(raster)
            nodata = self.nodata_value()
        except ValueError:
            return None
        chosen = tuple(i for i, _role, include in self.band_rows() if include)
        return raster_path, chosen, nodata, self._labels_key()

    def _inspect_request_now(self) -> dict[str, Any] | None:
        """The inspect job for the raster, bands, labels and nodata as chosen now."""
        key = self._inspect_key()
        if key is None:
            return None
        raster_path, chosen, nodata, labels_key = key
        labels, class_field = None, None
        layer = self._label_layer
        if labels_key is not None and layer is not None:
            try:
                labels = jobs.vector_layer_path(layer, self._temp_folder(), layer_spec=True)
                class_field = label_layer.CLASS_FIELD
            except OSError:
                labels = None
        return jobs.inspect_job(raster_path, ",".join(map(str, chosen)) or None, labels,
                                class_field, nodata)

    def inspect_raster(self) -> bool:
        """Run ``terraseg inspect`` for the raster and bands chosen now, in its own worker.

        While another job of the panel runs, it waits until that job has ended. A newer
        request replaces a running one. Returns whether a worker was started.
        """
        self._inspect_timer.stop()
        job = self._inspect_request_now()
        if job is None:
            return False
        if self.is_busy():
            self._inspect_deferred = True
            return False
        loc = self._find_engine()
        if loc is None:
            self.coverage_label.setText("Band coverage needs the engine (Settings…).")
            return False
        self.coverage_label.setText("Measuring band coverage…")
        self._launch_inspect(loc, job, self._inspect_key())
        return True

    def _launch_inspect(self, loc: Any, job: dict[str, Any], request: Any) -> None:
        """Start ``job`` in a worker of its own; its result answers ``request`` (a key)."""
        if self._inspect_worker is not None and self._inspect_worker.is_running():
            self._inspect_worker.cancel()
        self._inspect_generation += 1
        generation = self._inspect_generation
        worker = WorkerJob(loc, self)
        worker.result.connect(lambda result: self._on_inspect_result(generation, request,
                                                                     result))
        worker.error.connect(lambda kind, message, _hint: self._on_inspect_error(
            generation, job, request, kind, message))
        worker.finished.connect(lambda _code: self._on_inspect_finished(worker))
        self._inspect_worker = worker
        worker.start(job)

    def stop_inspect(self) -> None:
        """Stop a running coverage measurement and forget a pending one (plugin unload)."""
        self._inspect_timer.stop()
        self._inspect_deferred = False
        worker, self._inspect_worker = self._inspect_worker, None
        if worker is not None and worker.is_running():
            worker.cancel()
            worker.wait(5000)

    def _on_inspect_finished(self, worker: WorkerJob) -> None:
        if self._inspect_worker is worker:
            self._inspect_worker = None
        worker.deleteLater()

    def _run_deferred_inspect(self) -> None:
        if self._inspect_deferred and not self.is_busy():
            self._inspect_deferred = False
            self._schedule_inspect()

    def wait_for_inspect(self, timeout_s: float = 60.0) -> bool:
        """Run the Qt event loop until the band coverage of the current choice is known."""
        loop = QEventLoop()
        timer = QTimer()
        timer.setInterval(50)
        timer.timeout.connect(loop.quit)
        timer.start()
        deadline = QTimer()
        deadline.setSingleShot(True)
        deadline.start(int(timeout_s * 1000))
        while deadline.isActive() and not self._coverage_current():
            if self._inspect_failed is not None and self._inspect_failed == self._inspect_key():
                break  # the engine could not measure this choice
            if not self._inspect_timer.isActive() and self._inspect_worker is None:
                if not self.inspect_raster():
                    break
            exec_qt(loop)
        timer.stop()
        return self._coverage_current()

    def _coverage_current(self) -> bool:
        """Whether :attr:`band_coverage` answers the request the panel would send now."""
        return (self.band_coverage is not None and self._inspect_request is not None
                and self._inspect_request == self._inspect_key()
                and not self._inspect_timer.isActive())

    def _on_inspect_error(self, generation: int, job: dict[str, Any], request: Any,
                          kind: str, message: str) -> None:
        if generation != self._inspect_generation or kind == "CancelledError":
            return
        loc = self._find_engine()
        if job["args"].get("labels") and loc is not None:
            # labels not usable (yet): the raster's coverage alone
            self._log("debug", f"band coverage of the labelled pixels not measured: {message}")
            args = {k: v for k, v in job["args"].items() if k not in ("labels", "class_field")}
            self._launch_inspect(loc, {**job, "args": args}, request)
            return
        self._inspect_failed = request
        self.coverage_label.setText(f"Band coverage not measured: {message}")
        self._log("warning", f"Band coverage not measured: {kind}: {message}")

    def _on_inspect_result(self, generation: int, request: Any,
                           result: dict[str, Any]) -> None:
        if generation != self._inspect_generation:
            return  # an older request
        self._inspect_request, self._inspect_failed = request, None
        self.band_coverage = result
        by_band = {int(b["index"]): b for b in result.get("bands", [])}
        self.band_table.blockSignals(True)
        for r in range(self.band_table.rowCount()):
            band = by_band.get(int(self.band_table.item(r, 0).text()))
            item = self.band_table.item(r, COVERAGE_COLUMN)
            if band is None or item is None:
                continue
            raster_share = f"{100 * band['valid_fraction']:.1f}"
            text = raster_share
            tip = f"Band {band.get('index', r + 1)} holds data on {raster_share} % of the raster"
            if band.get("labelled_fraction") is not None:
                labelled = f"{100 * band['labelled_fraction']:.1f}"
                text += f" / {labelled}"  # short: the header's tooltip says which is which
                tip += f" and on {labelled} % of the labelled pixels"
            item.setText(text)
            item.setToolTip(tip + ".")
        self.band_table.blockSignals(False)
        self.coverage_label.setText(self._coverage_summary(result))
        chosen = [i for i, _role, include in self.band_rows() if include]
        self.best_bands_button.setEnabled(chosen != list(result.get("suggested_bands", [])))
        self._offer_nodata(result)

    @staticmethod
    def _coverage_summary(result: dict[str, Any]) -> str:
        def share(key: str) -> str:
            value = result.get(key)
            return "" if value is None else f"{100 * value:.1f} %"

        text = f"Chosen bands cover {share('valid_fraction')} of the raster"
        if result.get("labelled_fraction") is not None:
            text += f" and {share('labelled_fraction')} of the labelled pixels"
        best = ", ".join(str(i) for i in result.get("suggested_bands", []))
        if result.get("suggested_bands") != result.get("chosen_bands"):
            text += f"; bands {best} cover {share('suggested_valid_fraction')}"
            if result.get("suggested_labelled_fraction") is not None:
                text += f" ({share('suggested_labelled_fraction')} of the labelled pixels)"
        return text + "."

    def _offer_nodata(self, result: dict[str, Any]) -> None:
        """Ask (once per raster and value) whether to use a suspected undeclared nodata."""
        suspect = result.get("nodata_suspect")
        if not suspect or self.nodata_edit.text().strip():
            return
        key = (str(self._coverage_raster_id), float(suspect["value"]))
        if key in self._nodata_asked:
            return
        self._nodata_asked.add(key)
        value = float(suspect["value"])
        if self._confirm("Undeclared nodata?",
                         f"The raster seems to fill its outside with {value:g} without "
                         f"declaring it as nodata: {suspect['evidence']}.\n\nTreat {value:g} "
                         "as nodata (Nodata value box)? Otherwise these pixels are classified "
                         "like data."):
            self.set_nodata_value(value)

    def use_best_bands(self) -> list[int]:
        """Tick the suggested bands of the last coverage measurement; returns them."""
        if not self.band_coverage:
            return []
        best = [int(i) for i in self.band_coverage.get("suggested_bands", [])]
        for index, _role, _include in self.band_rows():
            self.set_band_row(index, include=index in best)
        self._log("info", f"Bands {', '.join(map(str, best))}: the best coverage of the "
                          "raster")
        return best

    def confirm_band_coverage(self) -> bool:
        """Before training: ask when the chosen bands cover noticeably less than the best.

        Noticeably: more than :data:`COVERAGE_WARN_GAP` (2 points) of the raster or of the
        labelled pixels. Measures the coverage first when the last measurement is stale.
        Returns True to go on (also when the coverage cannot be measured).
        """
        if self.raster_layer() is None:
            return True
        if not self._coverage_current() and not self.wait_for_inspect(120.0):
            return True
        result = self.band_coverage or {}
        gaps = []
        for chosen_key, best_key, what in (
                ("valid_fraction", "suggested_valid_fraction", "of the raster"),
                ("labelled_fraction", "suggested_labelled_fraction", "of the labelled pixels")):
            chosen, best = result.get(chosen_key), result.get(best_key)
            if chosen is not None and best is not None and best - chosen > COVERAGE_WARN_GAP:
                gaps.append(f"{100 * chosen:.1f} % {what} instead of {100 * best:.1f} %")
        if not gaps:
            return True
        best = ", ".join(str(i) for i in result.get("suggested_bands", []))
        return self._confirm(
            "Bands cut coverage",
            f"The chosen bands hold data on only {' and '.join(gaps)} (bands {best}); "
            "pixels where any chosen band is nodata get no prediction.\n\nTrain with these "
            "bands anyway? (No: click 'Use best bands' first.)")
