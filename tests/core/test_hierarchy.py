"""Class hierarchies (core/hierarchy.py): CORINE's legend and metrics at every level."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.paths import SHARED_DATA

from terraseg.core.classes import make_classes
from terraseg.core.hierarchy import level_lookup, load_hierarchy, metrics_by_level
from terraseg.protocol.errors import ConfigError

CORINE_CSV = SHARED_DATA / "corine_lausanne_2006_2012" / "clc_legend_gridcode.csv"


def test_the_shipped_corine_legend() -> None:
    h = load_hierarchy("corine")
    assert h.levels == ("level1", "level2", "level3") and len(h.rows) == 44
    assert h.groups_of("111") == ("1 Artificial surfaces", "11 Urban fabric",
                                  "Continuous urban fabric")
    assert h.groups_of("discontinuous urban fabric")[1] == "11 Urban fabric"
    assert h.groups_of("523")[0] == "5 Water bodies"
    assert h.groups_of("999") is None


def test_the_published_legend_file_reads_as_it_is() -> None:
    """grid_code,clc_code,level1,level2,level3_label: codes, grid codes and names match."""
    if not CORINE_CSV.is_file():
        pytest.skip(f"{CORINE_CSV} absent (../shared/data)")
    h = load_hierarchy(CORINE_CSV)
    shipped = load_hierarchy("corine")
    assert h.levels == shipped.levels
    assert h.groups_of("1") == h.groups_of("111") == shipped.groups_of("111")
    assert all(h.groups_of(code) == shipped.groups_of(code)
               for code in ("211", "312", "512", "335"))


def test_metrics_at_every_level_are_those_of_the_coarser_map() -> None:
    h = load_hierarchy("corine")
    classes = make_classes(["111", "112", "211", "311"])
    truth = np.array([1, 1, 2, 2, 3, 3, 4, 4, 0])
    pred = np.array([1, 2, 1, 2, 3, 4, 4, 4, 3])  # 112<->111 within urban fabric
    levels = metrics_by_level(h, classes, truth, pred)
    assert list(levels) == ["level1", "level2", "level3"]
    assert levels["level3"]["accuracy"] == pytest.approx(5 / 8)
    # level 2: 111/112 are one group (11 Urban fabric): only the 211 -> 311 pixel is wrong
    assert levels["level2"]["accuracy"] == pytest.approx(7 / 8)
    assert levels["level2"]["class_names"] == ["11 Urban fabric", "21 Arable land",
                                               "31 Forests"]
    assert levels["level1"]["accuracy"] == pytest.approx(7 / 8)
    assert levels["level1"]["confusion_matrix"] == [[4, 0, 0], [0, 1, 1], [0, 0, 2]]


def test_a_class_outside_the_hierarchy_and_bad_files_are_refused(tmp_path: Path) -> None:
    h = load_hierarchy("corine")
    with pytest.raises(ConfigError, match=r"\['sealed'\]"):
        level_lookup(h, make_classes(["111", "sealed"]), 0)
    bad = tmp_path / "h.csv"
    bad.write_text("name,parent\na,b\n")
    with pytest.raises(ConfigError, match="needs a 'code' column"):
        load_hierarchy(bad)
    bad.write_text("code,level1,level2\n1,a,\n")
    with pytest.raises(ConfigError, match="Row 2"):
        load_hierarchy(bad)
    with pytest.raises(ConfigError, match="shipped ones: corine"):
        load_hierarchy(tmp_path / "missing.csv")
