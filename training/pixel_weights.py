"""Per-pixel loss weights carried inside the training targets.

``train --pseudo-probability weight`` weighs each pseudo-labelled pixel's loss by the
random forest's confidence in it (the analyst's own labels weigh 1). Rather than a third
tensor through the datasets, augmentations and cutmix, the weight travels in the integer
target: ``class index + WEIGHT_BASE * q`` with ``q = round(weight * WEIGHT_STEPS)`` in
0..255, so every geometric transform that moves a target pixel moves its weight with it.
Unlabelled pixels stay ``IGNORE_INDEX`` (-1). Only training targets are encoded; the
training step decodes them (:func:`decode_targets`) before the loss.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch

#: Weights are quantised to 1/255 (one byte per pixel in memory).
WEIGHT_STEPS = 255
#: Class indices stay below this (uint8 labels: at most 255 classes).
WEIGHT_BASE = 256


def quantise(weights: np.ndarray) -> np.ndarray:
    """Weights in [0, 1] (others clipped; NaN -> 0) as uint8 steps of 1/255."""
    w = np.nan_to_num(np.asarray(weights, dtype=np.float32), nan=0.0)
    return np.round(np.clip(w, 0.0, 1.0) * WEIGHT_STEPS).astype(np.uint8)


def encode(class_index: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Targets holding class index and weight; -1 (unlabelled) is kept as it is.

    Shape: class_index (..., ) int64 with -1 holes; steps the same shape, uint8.
    """
    return np.where(class_index >= 0,
                    class_index + WEIGHT_BASE * steps.astype(np.int64), class_index)


def decode_targets(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(class index with -1 holes, float weight in [0, 1]) from encoded targets."""
    labelled = target >= 0
    steps = torch.div(target, WEIGHT_BASE, rounding_mode="floor")
    index = torch.where(labelled, target - steps * WEIGHT_BASE, target)
    weight = torch.where(labelled, steps.float() / WEIGHT_STEPS, torch.zeros_like(
        steps, dtype=torch.float32))
    return index, weight


def confidence_weights(confidence: Path, overridden: np.ndarray | None) -> np.ndarray:
    """Quantised weights: the forest's confidence, 1 where the analyst's labels override.

    Args:
        confidence: The confidence raster (on the training grid; -1 = nodata -> weight 0).
        overridden: Bool (H, W), True where the analyst's labels replace the forest's, or
            None.

    Returns:
        uint8 steps, shape (H, W).
    """
    with rasterio.open(confidence) as ds:
        conf = ds.read(1)
    steps = quantise(np.where(conf < 0, 0.0, conf))
    if overridden is not None:
        steps[overridden] = WEIGHT_STEPS
    return steps
