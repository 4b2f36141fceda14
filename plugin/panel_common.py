"""Shared pieces of the TerraSeg panel sections: title, formatting and widget helpers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsMapLayerProxyModel
from qgis.gui import QgsCollapsibleGroupBox
from qgis.PyQt.QtGui import QColor, QIcon, QPixmap
from qgis.PyQt.QtWidgets import QComboBox, QFileDialog, QSpinBox, QWidget

TITLE = "TerraSeg"
METRIC_COLUMNS = ("train_loss", "train_acc", "val_loss", "val_acc")
LOG_LIMIT = 5000


def fmt_seconds(seconds: float | None) -> str:
    """A duration as ``"42 s"``, ``"3 min 05 s"`` or ``"1 h 02 min"``; "" when unknown."""
    if seconds is None or not math.isfinite(float(seconds)):
        return ""
    s = int(round(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def colour_icon(colour: str, size: int = 14) -> QIcon:
    """A square icon filled with ``colour``."""
    pix = QPixmap(size, size)
    pix.fill(QColor(colour))
    return QIcon(pix)


def unique_path(path: Path) -> Path:
    """``path`` or ``stem_2.suffix``, ``stem_3.suffix``, ... whichever does not exist."""
    if not path.exists():
        return path
    for i in range(2, 10000):
        candidate = path.with_name(f"{path.stem}_{i}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(str(path))


def exec_qt(obj: Any) -> Any:
    """``exec()`` of a dialog or event loop (``exec_`` on Qt5 bindings)."""
    return obj.exec_() if hasattr(obj, "exec_") else obj.exec()


def save_file_name(parent: QWidget, title: str, default: str, file_filter: str) -> str:
    """A file name to write, from a save dialog that does not ask about replacing it.

    The panel asks once itself, for every file an action writes (an export's CSV and its
    zone files), and then passes ``overwrite`` to the job; the dialog asking as well made
    the analyst answer twice. Returns "" when cancelled.
    """
    chosen, _ = QFileDialog.getSaveFileName(parent, title, default, file_filter,
                                            options=QFileDialog.Option.DontConfirmOverwrite)
    return chosen


def layer_id(layer: Any) -> str | None:
    """The id of ``layer``, or None for no layer."""
    return layer.id() if layer is not None else None


def layer_filter(name: str) -> Any:
    """A layer-combo filter: ``Qgis.LayerFilter`` (QGIS >= 3.34) or the older enum."""
    scoped = getattr(Qgis, "LayerFilter", None)
    if scoped is not None and hasattr(scoped, name):
        return getattr(scoped, name)
    return getattr(QgsMapLayerProxyModel.Filter, name)


def group_box(title: str, name: str, collapsed: bool = False) -> QgsCollapsibleGroupBox:
    """A collapsible panel section named ``name`` (collapsed state not saved)."""
    box = QgsCollapsibleGroupBox(title)
    box.setObjectName(name)
    box.setSaveCollapsedState(False)
    box.setCollapsed(collapsed)
    return box


def narrow_combo(characters: int) -> QComboBox:
    """A combo box as wide as ``characters`` characters, whatever its items' texts.

    Long item texts would otherwise set the dock's minimum width (the tooltip and the popup
    still show them whole).
    """
    combo = QComboBox()
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(characters)
    return combo


def odd_spin(minimum: int, maximum: int, value: int) -> QSpinBox:
    """A spin box stepping by 2 (odd patch and block sizes)."""
    spin = QSpinBox()
    spin.setRange(minimum, maximum)
    spin.setSingleStep(2)
    spin.setValue(value)
    return spin


def name_widgets(panel: Any) -> list[str]:
    """Give each widget attribute of ``panel`` its attribute name as Qt object name.

    Widgets that already have an object name keep it. Tests and screenshot scripts find
    controls by these names (``panel.findChild(QSpinBox, "min_region_spin")``).

    Returns:
        The attribute names that were given.
    """
    named = []
    for attr, value in vars(panel).items():
        if isinstance(value, QWidget) and not value.objectName():
            value.setObjectName(attr)
            named.append(attr)
    return named
