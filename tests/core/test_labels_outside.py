"""Label features outside the raster: named in the error that stops training, else warned.

Polygons drawn outside the raster are rasterised to nothing; when that leaves a single
class the "only one class" error says which features lie outside, per class, and the fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.synthetic import make_scene, pixel_box, write_polygons

from terraseg.core.raster import RasterSource
from terraseg.core.reporting import Reporter
from terraseg.core.vector_labels import load_vector_labels
from terraseg.protocol.errors import LabelError
from terraseg.protocol.events import Log
from terraseg.protocol.options import TrainOptions
from terraseg.training.train import run_train

SIZE = 96
EAST_M = 5000.0  # the scene is 960 m wide


def shifted(geom: dict, dx: float) -> dict:
    """The polygon moved ``dx`` metres east."""
    ring = [(x + dx, y) for x, y in geom["coordinates"][0]]
    return {"type": "Polygon", "coordinates": [ring]}


def scene_features() -> list[tuple[dict, str, str]]:
    """The scene's polygons in layer order (fid 1 sealed, 2 unsealed, 3 sealed, ...)."""
    feats = []
    for r in range(4, SIZE - 12, 32):
        for c in range(4, SIZE - 12, 32):
            feats.append((pixel_box(r + 3, c + 3, r + 11, c + 11), "sealed", "roof"))
            feats.append((pixel_box(r + 18, c + 18, r + 26, c + 26), "unsealed", "meadow"))
    return feats


def test_a_class_drawn_outside_the_raster_is_named_with_the_fix(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, size=SIZE)
    grid = RasterSource(scene.raster).grid
    feats = [(shifted(g, EAST_M), k, c) if k == "unsealed" else (g, k, c)
             for g, k, c in scene_features()]
    labels = write_polygons(tmp_path / "outside.gpkg", feats)
    with pytest.raises(LabelError) as exc:
        load_vector_labels(labels, grid, "klass")
    err = exc.value
    assert err.message == (
        "Only one class (sealed) has labelled pixels in outside.gpkg; training needs at least "
        "two. 9 feature(s) lie entirely outside the raster's extent and label nothing: "
        "unsealed 9 (ids 2, 4, 6, 8, 10, 12, 14, 16, 18).")
    assert err.hint == ("Move or redraw those features inside the raster's extent, or choose "
                        "the raster they were drawn on.")


def test_some_features_outside_are_listed_and_training_warns(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, size=SIZE)
    grid = RasterSource(scene.raster).grid
    feats = scene_features()
    g2, k2, c2 = feats[1]
    feats[1] = (shifted(g2, EAST_M), k2, c2)  # far east
    # fid 4 only touches the raster's east edge (cols 96..104): it covers no pixel either
    feats[3] = (pixel_box(22, SIZE, 30, SIZE + 8), "unsealed", "meadow")
    feats[4] = (shifted(feats[4][0], -EAST_M), "sealed", "roof")  # fid 5, far west
    labels = write_polygons(tmp_path / "some.gpkg", feats)
    ls = load_vector_labels(labels, grid, "klass")
    assert dict(ls.outside_features) == {"unsealed": ("2", "4"), "sealed": ("5",)}
    note = ("3 feature(s) lie entirely outside the raster's extent and label nothing: "
            "unsealed 2 (ids 2, 4), sealed 1 (id 5).")
    assert note in ls.notes
    assert ls.pixel_counts == {"sealed": 8 * 64, "unsealed": 7 * 64}

    class Recorder(Reporter):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[tuple[str, str]] = []

        def emit(self, event: object) -> None:
            if isinstance(event, Log):
                self.lines.append((event.message, event.level))

    rep = Recorder()
    run_train(TrainOptions.build(raster=str(scene.raster), labels=str(labels),
                                 class_field="klass", out=str(tmp_path / "m.tsm"),
                                 patch_px=23, blocks=(1, 1, 1), epochs=1,
                                 samples_per_epoch=64, batch_size=64,
                                 cache_dir=str(tmp_path / "cache")), rep)
    assert (note + " Move or redraw them inside the raster, or train on the raster they were "
            "drawn on.", "warning") in rep.lines
