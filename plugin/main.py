"""The QGIS plugin object: toolbar/menu action, the dock panel and the Processing provider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsApplication, QgsMessageLog
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

PLUGIN_NAME = "TerraSeg"
ICON_PATH = Path(__file__).resolve().parent.parent / "resources" / "icon.png"


class TerraSegPlugin:
    """Entry object QGIS creates through ``classFactory``.

    Attributes:
        iface: The QGIS interface.
        action: Toolbar/menu action that shows or hides the dock.
        dock: The :class:`~.dock.TerraSegDock` (created in :meth:`initGui`).
        provider: The Processing provider, or None when it could not be loaded.
    """

    def __init__(self, iface: Any) -> None:
        """Keep the interface; nothing is created before :meth:`initGui`."""
        self.iface = iface
        self.action: QAction | None = None
        self.dock: Any = None
        self.provider: Any = None

    def initGui(self) -> None:  # noqa: N802 - QGIS plugin API
        """Create the action, the dock (right area, hidden) and register Processing."""
        from .dock import TerraSegDock

        icon = QIcon(str(ICON_PATH)) if ICON_PATH.exists() else QIcon()
        self.action = QAction(icon, PLUGIN_NAME, self.iface.mainWindow())
        self.action.setObjectName("TerraSegShowDock")
        self.action.setCheckable(True)
        self.action.setToolTip("Show or hide the TerraSeg panel")

        self.dock = TerraSegDock(self.iface, self.iface.mainWindow())
        self.dock.setObjectName("TerraSegDock")
        self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.dock.hide()
        self.dock.setToggleVisibilityAction(self.action)  # checked <-> dock open
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToMenu(PLUGIN_NAME, self.action)
        self._register_provider()

    def initProcessing(self) -> None:  # noqa: N802 - QGIS plugin API (qgis_process calls it)
        """Register the Processing provider (also without a GUI, for qgis_process)."""
        if self.provider is None:
            self._register_provider()

    def _register_provider(self) -> None:
        if self.provider is not None:
            return
        try:
            from .processing.provider import TerraSegProvider

            self.provider = TerraSegProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)
        except Exception as exc:  # noqa: BLE001 - the dock works without Processing
            self.provider = None
            QgsMessageLog.logMessage(f"Processing provider not loaded: {exc}", PLUGIN_NAME,
                                     Qgis.MessageLevel.Warning)

    def unload(self) -> None:
        """Remove the action, the dock and the Processing provider; stop running jobs."""
        if self.provider is not None:
            try:
                QgsApplication.processingRegistry().removeProvider(self.provider)
            except Exception:  # noqa: BLE001 - QGIS is shutting down
                pass
            self.provider = None
        if self.dock is not None:
            self.dock.shutdown()
            self.iface.removeDockWidget(self.dock)
            self.dock.setParent(None)
            self.dock.deleteLater()
            self.dock = None
        if self.action is not None:
            self.iface.removePluginMenu(PLUGIN_NAME, self.action)
            self.iface.removeToolBarIcon(self.action)
            self.action.deleteLater()
            self.action = None
