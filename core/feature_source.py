"""A raster source that appends engineered channels (core/features.py) to every window.

Spatial features (blurs, Sobel, Canny) need neighbours: each window is read with the
spec's context margin, the features are computed, and the margin is cropped, so a channel
does not depend on where a window starts. Data-dependent parameters (min-max RGB, Canny
thresholds) are pinned on the training raster with :func:`fit_on_source` and stored in
the model file with the rest of the spec, so prediction recomputes the same channels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from rasterio.windows import Window

from terraseg.core.features import (
    FeatureSpec,
    check_features,
    compute_features,
    context_px,
    fit_features,
)
from terraseg.core.raster import BandMapping


class FeatureSource:
    """Wraps a RasterSource (or StackedSource) and appends feature channels.

    Shape:
        read(window) -> data (C + F, H, W), valid (H, W).
    """

    def __init__(self, base: Any, spec: FeatureSpec) -> None:
        check_features(spec, base.bands.names)
        self.base, self.spec = base, spec
        self.path, self.grid = base.path, base.grid
        self.extras = getattr(base, "extras", ())
        names = tuple(spec.channel_names)
        self.bands = BandMapping(base.bands.indices + tuple(0 for _ in names),
                                 base.bands.names + names)
        self.context = context_px(spec)

    @property
    def count(self) -> int:
        """Base channels plus feature channels."""
        return len(self.bands.indices)

    @property
    def nodata(self) -> float | None:
        """The base raster's nodata value."""
        return self.base.nodata

    def close(self) -> None:
        """Close the base source."""
        self.base.close()

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Base channels and features of a (possibly out-of-bounds) window."""
        m = self.context
        grown = Window(window.col_off - m, window.row_off - m, window.width + 2 * m,
                       window.height + 2 * m)
        data, valid = self.base.read(grown)
        feats = compute_features(data, valid, self.base.bands.names, self.spec)
        h, w = int(window.height), int(window.width)
        out = np.concatenate([data, feats])[:, m : m + h, m : m + w]
        return np.ascontiguousarray(out), valid[m : m + h, m : m + w].copy()


def fit_on_source(spec: FeatureSpec, base: Any, n: int = 4, size_px: int = 128) -> FeatureSpec:
    """Pin data-dependent feature parameters on a mosaic of n x n windows of ``base``."""
    g = base.grid
    tiles_data, tiles_valid = [], []
    for r in np.linspace(0, max(0, g.height_px - size_px), n).astype(int):
        for c in np.linspace(0, max(0, g.width_px - size_px), n).astype(int):
            d, v = base.read(Window(int(c), int(r), size_px, size_px))
            tiles_data.append(d)
            tiles_valid.append(v)
    return fit_features(spec, np.concatenate(tiles_data, axis=2),
                        np.concatenate(tiles_valid, axis=1), base.bands.names)
