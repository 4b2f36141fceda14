"""Held-out evaluation at training: metrics on the validation and test pixels.

The pixels of each split are predicted from their samples and turned into classes with
the one threshold rule (:mod:`terraseg.core.decision`); two-class tile networks first
tune that threshold on the validation pixels. When a run retrains from a previous model,
that model is evaluated on the same pixels (with its own recorded threshold) so the two
can be compared.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from terraseg.core.classes import ClassInfo
from terraseg.core.decision import class_ids
from terraseg.core.metrics import compute_metrics
from terraseg.core.normalise import BandStats
from terraseg.protocol.model_meta import ModelMeta
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


def previous_mismatch(meta: ModelMeta, model: str, arch_params: dict[str, Any],
                      channel_names: tuple[str, ...], stats: BandStats,
                      classes: tuple[ClassInfo, ...]) -> str | None:
    """Why the previous model cannot be run on this run's samples, or None when it can.

    Its network must take the same samples: architecture and parameters, input channels,
    normalisation and classes (always so when fine-tuning from it).
    """
    same_params = (json.loads(json.dumps(dict(meta.architecture.params), sort_keys=True))
                   == json.loads(json.dumps(arch_params, sort_keys=True)))
    if meta.architecture.name != model or not same_params:
        return f"it is a '{meta.architecture.name}' network of another shape"
    if tuple(meta.bands.names) != tuple(channel_names):
        return f"it takes other input channels ({', '.join(meta.bands.names)})"
    if not (np.allclose(meta.normalisation.mean, stats.mean, rtol=1e-5)
            and np.allclose(meta.normalisation.std, stats.std, rtol=1e-5)):
        return "its normalisation statistics differ"
    if meta.class_names != [c.name for c in classes]:
        return f"it has other classes ({', '.join(meta.class_names)})"
    return None


def evaluate_previous(network: torch.nn.Module, meta: ModelMeta,
                      datasets: dict[str, PatchDataset],
                      classes: tuple[ClassInfo, ...]) -> dict[str, dict[str, Any]]:
    """The previous model's metrics on this run's held-out pixels (each split but train).

    Its own recorded threshold decides two-class pixels, as it does when it predicts.
    """
    threshold = meta.threshold.value if meta.threshold is not None else None
    network.eval()
    return {name: evaluate_split(network, ds, classes, threshold)
            for name, ds in datasets.items() if name != "train"}


def better_model(new: dict[str, Any], old: dict[str, Any]) -> str:
    """``new``, ``previous`` or ``equal``: higher weighted F1 wins, then accuracy."""
    a = (round(new["f1_weighted"], 6), round(new["accuracy"], 6))
    b = (round(old["f1_weighted"], 6), round(old["accuracy"], 6))
    return "new" if a > b else "previous" if b > a else "equal"


def comparison_line(split: str, new: dict[str, Any], old: dict[str, Any],
                    previous_name: str) -> str:
    """One log line: both models' accuracy and weighted F1 on the same pixels, and the verdict."""
    verdict = {"new": "the new model is better", "previous": "the previous model is better",
               "equal": "both are equal"}[better_model(new, old)]
    return (f"{split} (the same {new['n_samples']} pixels): new model accuracy "
            f"{new['accuracy']:.4f}, F1 weighted {new['f1_weighted']:.4f}; previous model "
            f"{previous_name} accuracy {old['accuracy']:.4f}, F1 weighted "
            f"{old['f1_weighted']:.4f}: {verdict}")
