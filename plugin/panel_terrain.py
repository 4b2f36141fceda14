"""Panel section 'Terrain inputs': a DEM, slope derived from it, or a slope raster.

The engine warps these onto the image grid (bilinear) and stacks them after the image
bands; a model trained with them records their names, and prediction must be given the
same inputs again, which this section supplies.
"""

from __future__ import annotations

from typing import Any

from qgis.core import QgsRasterLayer
from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import QCheckBox, QFormLayout, QLabel, QWidget

from . import jobs
from .panel_common import group_box, layer_filter

SLOPE = "slope"
DEM = "dem"


class TerrainPanelMixin:
    """DEM / slope inputs of the panel (used by the Landslides task, open to every task).

    Mixed into :class:`~.dock.TerraSegDock`.
    """

    def _build_terrain_box(self) -> QWidget:
        box = group_box("Terrain inputs (DEM, slope)", "TerraSegTerrainBox", collapsed=True)
        form = QFormLayout(box)
        self.dem_combo = QgsMapLayerComboBox()
        self.dem_combo.setFilters(layer_filter("RasterLayer"))
        self.dem_combo.setAllowEmptyLayer(True)
        self.dem_combo.setLayer(None)
        self.dem_combo.setToolTip("Elevation model, any grid and CRS: resampled bilinearly "
                                  "onto the image grid and added as channel 'dem'.")
        form.addRow("DEM", self.dem_combo)
        self.slope_from_dem_check = QCheckBox("Slope from the DEM")
        self.slope_from_dem_check.setToolTip("Add slope in degrees, derived from the DEM, as "
                                             "channel 'slope'.")
        form.addRow("", self.slope_from_dem_check)
        self.slope_combo = QgsMapLayerComboBox()
        self.slope_combo.setFilters(layer_filter("RasterLayer"))
        self.slope_combo.setAllowEmptyLayer(True)
        self.slope_combo.setLayer(None)
        self.slope_combo.setToolTip("A ready-made slope raster (instead of deriving it).")
        form.addRow("Slope raster", self.slope_combo)
        note = QLabel("Prediction with a model trained on terrain inputs uses the layers "
                      "chosen here.")
        note.setWordWrap(True)
        form.addRow("", note)
        self.terrain_box = box
        return box

    def set_terrain(self, dem: QgsRasterLayer | None = None, slope_from_dem: bool = False,
                    slope: QgsRasterLayer | None = None) -> None:
        """Choose the terrain inputs (None: none)."""
        self.dem_combo.setLayer(dem)
        self.slope_from_dem_check.setChecked(slope_from_dem)
        self.slope_combo.setLayer(slope)

    def _terrain_layers(self) -> tuple[QgsRasterLayer | None, bool, QgsRasterLayer | None]:
        dem = self.dem_combo.currentLayer()
        slope = self.slope_combo.currentLayer()
        return (dem if isinstance(dem, QgsRasterLayer) else None,
                self.slope_from_dem_check.isChecked(),
                slope if isinstance(slope, QgsRasterLayer) else None)

    def terrain_options(self) -> dict[str, Any]:
        """Engine options for the chosen terrain inputs (``dem``, ``slope_from_dem``, ...).

        Raises:
            ValueError: Slope from the DEM without a DEM, both a slope raster and a derived
                slope, or a layer that is not a local file.
        """
        dem, derive, slope = self._terrain_layers()
        if derive and dem is None:
            raise ValueError("Choose a DEM to derive the slope from (Terrain inputs).")
        if derive and slope is not None:
            raise ValueError("Choose either a slope raster or 'slope derived from the DEM', "
                             "not both.")
        opts: dict[str, Any] = {}
        if slope is not None:
            opts["extra_raster"] = f"{SLOPE}={jobs.raster_layer_path(slope)}"
        if dem is not None:
            opts["dem"] = jobs.raster_layer_path(dem)
            if derive:
                opts["slope_from_dem"] = True
        return opts

    def terrain_for_model(self, meta: dict[str, Any]) -> dict[str, Any]:
        """The terrain options a model needs, from the layers chosen here.

        Raises:
            ValueError: The model needs an input that is not chosen, or has extra inputs
                the panel cannot supply (trained on the command line).
        """
        wanted = [(e.get("name"), e.get("kind")) for e in meta.get("extra_rasters") or []]
        if not wanted:
            return {}
        supported = {(SLOPE, "continuous"), (DEM, "continuous"), (SLOPE, "slope_from_dem")}
        other = [n for n, k in wanted if (n, k) not in supported]
        if other:
            raise ValueError(f"The model needs extra rasters {other}; predict it with the "
                             "terraseg command line (--extra-raster NAME=PATH).")
        dem, _, slope = self._terrain_layers()
        names = [n for n, _ in wanted]
        if DEM in names and dem is None:
            raise ValueError("The model was trained with a DEM: choose it under Terrain "
                             "inputs.")
        if (SLOPE, "continuous") in wanted and slope is None:
            raise ValueError("The model was trained with a slope raster: choose it under "
                             "Terrain inputs.")
        opts: dict[str, Any] = {}
        if (SLOPE, "continuous") in wanted and slope is not None:
            opts["extra_raster"] = f"{SLOPE}={jobs.raster_layer_path(slope)}"
        if dem is not None and DEM in names:
            opts["dem"] = jobs.raster_layer_path(dem)
        if (SLOPE, "slope_from_dem") in wanted:
            if dem is None:
                raise ValueError("The model uses slope derived from a DEM: choose the DEM "
                                 "under Terrain inputs.")
            opts["dem"] = jobs.raster_layer_path(dem)
            opts["slope_from_dem"] = True
        return opts
