"""The project keeps Evaluate's Class hierarchy and Predict's "Also map level" (issue 12).

The choice is made in the real panel, the project is written to a .qgs, cleared and read
back: into the open panel (its controls reset first) and into a panel created afterwards.
A CSV is stored relative to the project; a CSV deleted since is a problem the panel shows,
and the picker falls back to no hierarchy.
"""

from __future__ import annotations

import json
from pathlib import Path

from qgis.core import Qgis, QgsProject

from terraseg.plugin import project_state


def make_panel(iface):
    from terraseg.plugin.dock import TerraSegDock

    dock = TerraSegDock(iface)
    dock.auto_answer = True
    return dock


def close_panel(dock) -> None:
    dock.shutdown()
    dock.deleteLater()


def stored_doc(project: QgsProject) -> dict:
    text, found = project.readEntry(project_state.SCOPE, project_state.KEY, "")
    assert found
    return json.loads(text)


def write_and_clear(dock, tmp_path: Path) -> Path:
    """Write the project (the panel saves its state), clear it and reset the controls."""
    project = QgsProject.instance()
    qgs = tmp_path / "work.qgs"
    assert project.write(str(qgs))
    project.clear()
    dock.set_hierarchy(None)
    dock.set_level_map(None)
    assert dock.hierarchy() is None and not dock.level_check.isChecked()
    return qgs


def test_csv_hierarchy_and_level_come_back(qgis_iface, qgis_new_project,
                                           tmp_path: Path) -> None:
    csv_file = tmp_path / "groups.csv"
    csv_file.write_text("code,level1,level2,level3\n1,a,b,c\n2,a,d,e\n", encoding="utf-8")
    project = QgsProject.instance()
    dock = make_panel(qgis_iface)
    try:
        dock.set_hierarchy(csv_file)
        dock.set_level_map(2)
        assert dock.level_options() == {"hierarchy": str(csv_file), "level": 2}
        qgs = write_and_clear(dock, tmp_path)
        assert project.read(str(qgs))
        doc = stored_doc(project)
        # the CSV is stored as the project stores its own paths: relative to the .qgs
        assert doc["hierarchy"] == {"kind": "file", "file": "./groups.csv", "level": 2}
        assert dock.hierarchy_combo.currentText() == "File…"
        assert dock.hierarchy_file_edit.text() == str(csv_file)
        assert dock.hierarchy_file_row.isVisibleTo(dock)
        assert dock.level_check.isChecked() and dock.level_spin.value() == 2
        assert dock.level_spin.maximum() == 3  # the file's three levels
        assert dock.level_options() == {"hierarchy": str(csv_file), "level": 2}
        assert "Restored" in dock.status_label.text()
    finally:
        close_panel(dock)
    # a panel created with the project already open
    dock = make_panel(qgis_iface)
    try:
        assert dock.level_options() == {"hierarchy": str(csv_file), "level": 2}
    finally:
        close_panel(dock)
        project.clear()


def test_corine_without_level_comes_back(qgis_iface, qgis_new_project,
                                         tmp_path: Path) -> None:
    project = QgsProject.instance()
    dock = make_panel(qgis_iface)
    try:
        dock.set_hierarchy("corine")
        dock.level_spin.setValue(3)  # not ticked: only the model's classes are mapped
        assert dock.level_options() == {}
        qgs = write_and_clear(dock, tmp_path)
        dock.set_level_map(1)  # ticked before reading: the project unticks it
        assert project.read(str(qgs))
        assert stored_doc(project)["hierarchy"] == {"kind": "corine", "file": None,
                                                    "level": None}
        assert dock.hierarchy_combo.currentText() == "CORINE Land Cover"
        assert dock.hierarchy() == "corine"
        assert not dock.hierarchy_file_row.isVisibleTo(dock)
        assert dock.level_check.isEnabled() and not dock.level_check.isChecked()
        assert dock.level_options() == {}
        # 'None' is stored too, and replaces a hierarchy chosen before reading
        dock.set_hierarchy(None)
        qgs = write_and_clear(dock, tmp_path)
        dock.set_hierarchy("corine")
        assert project.read(str(qgs))
        assert stored_doc(project)["hierarchy"]["kind"] is None
        assert dock.hierarchy() is None and not dock.level_check.isEnabled()
    finally:
        close_panel(dock)
        project.clear()


def test_missing_csv_is_reported_and_the_picker_falls_back_to_none(
        qgis_iface, qgis_new_project, tmp_path: Path) -> None:
    csv_file = tmp_path / "groups.csv"
    csv_file.write_text("code,level1,level2\n1,a,b\n", encoding="utf-8")
    project = QgsProject.instance()
    dock = make_panel(qgis_iface)
    try:
        dock.set_hierarchy(csv_file)
        dock.set_level_map(1)
        qgs = write_and_clear(dock, tmp_path)
        csv_file.unlink()
        dock.set_hierarchy("corine")  # replaced by 'None', not kept
        assert project.read(str(qgs))
        status = dock.status_label.text()
        assert f"class hierarchy file {csv_file} is missing" in status
        assert "Evaluate > Class hierarchy" in status
        warnings = qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Warning)
        assert any("hierarchy file" in w and "is missing" in w for w in warnings)
        assert dock.hierarchy_combo.currentText() == "None" and dock.hierarchy() is None
        assert dock.hierarchy_file_edit.text() == str(csv_file)  # shown again for File…
        assert not dock.level_check.isEnabled() and dock.level_options() == {}
        # an unknown kind is left out with a log line
        project.writeEntry(project_state.SCOPE, project_state.KEY, json.dumps(
            {"version": project_state.STATE_VERSION,
             "hierarchy": {"kind": "koppen", "file": None, "level": 2}}))
        dock.set_hierarchy("corine")
        assert dock.restore_from_project() == []
        assert "Unknown class hierarchy 'koppen'" in dock.log_text()
        assert dock.hierarchy() is None
    finally:
        close_panel(dock)
        project.clear()
