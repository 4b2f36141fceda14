"""Command ``pseudo-label``: dense labels on the image grid from coarse or noisy labels.

The labels (vector polygons, or a label raster on any grid, resampled onto the image grid
by nearest neighbour) are sampled, a random forest of single pixels is fitted on the
samples, and its classes over the whole raster are the pseudo-labels (core/pseudo_label.py).
"""

from __future__ import annotations

import argparse
from typing import Any

from terraseg.cli.options import add_pixel_input_args, load_pixel_inputs
from terraseg.cli.registry import Command, register
from terraseg.core.reporting import Reporter

#: Sampling strategies (core/pixel_sampling.py's STRATEGIES; listed here so the parser is
#: built without importing the engine's core).
STRATEGY_CHOICES = ("all", "random", "uniform", "kmeans")


def _pseudo_args(p: argparse.ArgumentParser) -> None:
    add_pixel_input_args(p, "vector labels or a label raster (any grid: resampled onto the "
                            "raster's by nearest neighbour)")
    p.add_argument("--out-dir", required=True,
                   help="folder for classes.tif (the pseudo-labels) and probability.tif")
    p.add_argument("--strategy", choices=STRATEGY_CHOICES, default="random",
                   help="how labelled pixels are sampled for the forest")
    p.add_argument("--quota", type=int, help="pixels sampled per class (default: the "
                                             "sampler's)")
    p.add_argument("--k", type=int, default=50, help="clusters per class (kmeans)")
    p.add_argument("--trees", type=int, default=50, help="trees of the forest")
    p.add_argument("--max-depth", type=int, default=10,
                   help="deepest a tree grows (default 10: fully grown trees learn the "
                        "label noise; 0 = unlimited)")
    p.add_argument("--class-weight", choices=("balanced", "balanced_subsample", "none"),
                   default="balanced", help="class weighting of the forest")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and the forest")
    p.add_argument("--zero-disagreeing", action="store_true",
                   help="write probability 0 where the pseudo-label differs from the "
                        "source label")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _run_pseudo(a: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    from terraseg.core.forest import OUTPUT_NAMES
    from terraseg.core.output_targets import check_output_dir
    from terraseg.core.pseudo_label import PseudoLabelSettings, pseudo_label

    settings = PseudoLabelSettings(
        strategy=a.strategy, quota=a.quota, k=a.k, trees=a.trees,
        max_depth=None if a.max_depth == 0 else a.max_depth,
        class_weight=a.class_weight, seed=a.seed, zero_disagreeing=a.zero_disagreeing)
    check_output_dir(a.out_dir, OUTPUT_NAMES, a.overwrite)  # before the raster is read
    reporter.progress(0.0, "prepare", "reading raster and labels")
    source, labels = load_pixel_inputs(a)
    return pseudo_label(source, labels, a.out_dir, reporter, settings, a.overwrite)


def _print_pseudo(result: dict[str, Any]) -> str:
    agree = result.get("agreement")
    text = (f"agreement with the source labels {agree['accuracy']:.4f} "
            f"(n={agree['n_samples']})" if agree else "no labelled pixel to compare")
    return f"{text} -> {result['classes']}, {result['probability']}"


register(Command("pseudo-label", "dense pseudo-labels from coarse or noisy labels: sampled "
                                 "random forest of pixels", _pseudo_args, _run_pseudo,
                 printer=_print_pseudo))
