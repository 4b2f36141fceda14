"""A randomised dense patch CNN with its model-file metadata, and smooth random rasters.

Shared by tests/core/test_inference.py and tests/core/test_postprocess.py: the network's
weights are deterministic for a seed and its logits moderate, so whole-raster and windowed
predictions can be compared to float32 rounding. Engine side only (numpy, torch).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from helpers.synthetic import PIXEL_M

CLASSES = [{"id": 1, "name": "sealed", "colour": "#e31a1c"},
           {"id": 2, "name": "unsealed", "colour": "#33a02c"},
           {"id": 3, "name": "water", "colour": "#1f78b4"}]
PARAMS = {"in_channels": 4, "num_classes": 3, "patch_px": 51, "block_px": 5,
          "planes": [4, 8, 16], "blocks": [2, 2, 2], "stride_px": 0}
MEAN, STD = [500.0, 400.0, 600.0, 300.0], [250.0, 200.0, 300.0, 150.0]


def randomise(net: nn.Module, seed: int) -> nn.Module:
    """Deterministic random weights and batch-norm statistics; returns ``net`` in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g)
                               * (1.0 / m.weight[0].numel()) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
        net.head.weight.mul_(0.5)  # moderate logits: float32 rounding stays ~1e-7
    return net.eval()


def metadata(net: nn.Module, pixel: float = PIXEL_M) -> dict:
    """Model-file metadata of a ``PARAMS`` patch CNN (4 bands, 3 classes, ``pixel`` m)."""
    return {
        "architecture": {"name": "patch_cnn", "params": PARAMS},
        "geometry": {"patch_px": 51, "block_px": 5, "stride_px": int(net.stride_px),
                     "receptive_field_px": int(net.receptive_field_px), "margin_px": 23},
        "bands": {"indices": [1, 2, 3, 4], "names": ["red", "green", "blue", "nir"]},
        "normalisation": {"method": "standardise", "mean": MEAN, "std": STD},
        "classes": CLASSES,
        "training_raster": {"pixel_size": [pixel, pixel]},
    }


def smooth_random(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Spatially correlated positive uint16 bands (so predictions vary smoothly and strongly)."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    coarse = rng.normal(size=(c, h // 8 + 2, w // 8 + 2))
    up = np.kron(coarse, np.ones((8, 8)))[:, :h, :w]
    fine = rng.normal(size=shape) * 0.5
    vals = np.asarray(MEAN)[:, None, None] + np.asarray(STD)[:, None, None] * (up + fine)
    return np.clip(vals, 1, 60000).astype(np.uint16)
