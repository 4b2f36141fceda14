"""Held-out evaluation at training: metrics on the validation and test pixels.

The pixels of each split are predicted from their samples and turned into classes with
the one threshold rule (:mod:`terraseg.core.decision`); two-class tile networks first
tune that threshold on the validation pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from terraseg.core.classes import ClassInfo
from terraseg.core.decision import class_ids
from terraseg.core.metrics import compute_metrics
from terraseg.training.data import PatchDataset


@torch.inference_mode()
def split_probabilities(network: torch.nn.Module,
                        ds: PatchDataset) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and reference class ids of a split's labelled pixels.

    Returns:
        probs float32 and truth int class ids 1..K. Shape: (N, K) and (N,).
    """
    probs, trues = [], []
    batch = 512 if ds.store.geom.patch_px <= 64 else 16
    for i in range(0, len(ds), batch):
        idx = range(i, min(i + batch, len(ds)))
        x = torch.stack([ds[j][0] for j in idx])
        y = torch.from_numpy(ds.targets[i : i + len(idx)])
        p = torch.softmax(network(x).float(), dim=1).permute(0, 2, 3, 1)
        keep = y >= 0
        probs.append(p[keep].numpy())
        trues.append(y[keep].numpy() + 1)
    return np.concatenate(probs), np.concatenate(trues)


def evaluate_split(network: torch.nn.Module, ds: PatchDataset,
                   classes: tuple[ClassInfo, ...],
                   threshold: float | None = None) -> dict[str, Any]:
    """Metrics on the held-out pixels of one split (class ids 1..K).

    With ``threshold`` (two classes), class 1 is predicted where P(class 1) >= threshold.
    """
    probs, truth = split_probabilities(network, ds)
    return compute_metrics(truth, class_ids(probs, threshold, axis=1), classes).to_dict()
