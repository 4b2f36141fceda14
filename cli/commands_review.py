"""Command ``review``: rank training polygons by how likely their label is wrong.

Takes every training option (``--preset``, ``--model``, ``--epochs``, ...) as ``cv`` does;
k fold models predict the regions they did not train on, and each region is scored by the
mean loss of its given class and by confident learning (training/review.py). The numbers
are checked before the training stack is imported.
"""

from __future__ import annotations

import argparse
from typing import Any

from terraseg.cli.commands_train import UNUSED_OUT
from terraseg.cli.options import add_train_options, train_options
from terraseg.cli.registry import Command, register
from terraseg.core.reporting import Reporter

#: Rankings (core/label_review.py's RANKINGS; listed here so the parser is built without
#: importing the engine's core).
RANKING_CHOICES = ("loss", "cleanlab")
SCORER_CHOICES = ("network", "forest")


def _review_args(p: argparse.ArgumentParser) -> None:
    add_train_options(p, out=False)
    p.add_argument("--k", type=int, default=5,
                   help="folds by region: each region is scored by the model that did not "
                        "train on it (at most the regions of the smallest class)")
    p.add_argument("--out-dir", required=True,
                   help="folder for review.gpkg, review.csv, review.json and fold_<i>.tsm")
    p.add_argument("--ranking", choices=RANKING_CHOICES, default="loss",
                   help="sort by the mean loss of the given class (the study's way) or by "
                        "cleanlab's label quality (confident learning); both are written")
    p.add_argument("--top", type=int, default=50,
                   help="how many of the most suspicious regions the result lists")
    p.add_argument("--scorer", choices=SCORER_CHOICES, default="network",
                   help="what predicts the held-out regions: k networks with the training "
                        "options, or k random forests of pixels (seconds, no training)")
    p.add_argument("--trees", type=int, default=100, help="trees of each forest (--scorer "
                                                         "forest)")


def _run_review(a: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    from terraseg.core.label_review import check_review_numbers

    check_review_numbers(a.k, a.top)
    opts = train_options(a, out=UNUSED_OUT)  # checked before the training stack is imported
    from terraseg.training.review import run_review

    return run_review(opts, a.out_dir, a.k, a.ranking, a.top, reporter,
                      overwrite=a.overwrite, scorer=a.scorer, trees=a.trees)


def _print_review(result: dict[str, Any]) -> str:
    lines = [f"{result['regions']} region(s) scored by {result.get('scorer', 'network')} "
             f"models, ranked by {result['ranking']} "
             f"({result['flagged']} flagged by cleanlab) -> {result['review_gpkg']}"]
    for s in result["suspects"][:10]:
        lines.append(f"{s['rank']:>4}  feature {s['feature_id'] or s['region_key']}: "
                     f"{s['given_class']} -> {s['predicted_class']} "
                     f"(p {s['predicted_probability']:.2f}, score {s['score']:.3f})")
    return "\n".join(lines)


register(Command("review", "rank training polygons by how likely their label is wrong "
                           "(out-of-fold loss and confident learning)", _review_args,
                 _run_review, printer=_print_review))
