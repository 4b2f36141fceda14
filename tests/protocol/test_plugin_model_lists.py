"""The panel's and Processing's architecture lists (plugin/presets.py) are the registry's."""

from __future__ import annotations

from terraseg.core.models.registry import MODELS
from terraseg.plugin import presets


def test_every_registered_network_is_offered_with_its_kind() -> None:
    assert set(presets.PATCH_MODELS) | set(presets.TILE_MODELS) == set(MODELS)
    assert {n for n, e in MODELS.items() if e.kind.name == "patch"} == set(presets.PATCH_MODELS)
    assert {n for n, e in MODELS.items() if e.kind.name == "tile"} == set(presets.TILE_MODELS)
