"""Training commands: ``train``, ``grid``, ``cv`` and ``compare``."""

from __future__ import annotations

import argparse
from typing import Any

from terraseg.cli.options import add_train_options, train_options
from terraseg.cli.registry import Command, register
from terraseg.core.reporting import Reporter

UNUSED_OUT = "unused.tsm"


def _run_train(a: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    from terraseg.training.train import run_train

    return run_train(train_options(a), reporter)


def _grid_args(p: argparse.ArgumentParser) -> None:
    add_train_options(p, out=False)
    p.add_argument("--out-dir", required=True, help="folder for the models and grid.csv")
    p.add_argument("--lrs", default="1e-3,1e-4", help="learning rates (comma-separated)")
    p.add_argument("--weight-decays", default="0,0.1,0.01", help="weight decays")
    p.add_argument("--augment-options", default="none;flip,rotate",
                   help="augmentation settings separated by ';' (e.g. 'none;flip,rotate')")


def _run_grid(a: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    from terraseg.training.hparam_grid import parse_floats, run_grid

    augments = [s.strip() for s in a.augment_options.split(";")]
    return run_grid(train_options(a, out=UNUSED_OUT), a.out_dir, parse_floats(a.lrs),
                    parse_floats(a.weight_decays), augments, reporter, overwrite=a.overwrite)


def _cv_args(p: argparse.ArgumentParser) -> None:
    add_train_options(p, out=False)
    p.add_argument("--k", type=int, default=5, help="number of folds")
    p.add_argument("--out-dir", required=True, help="folder for fold models, cv.csv, cv.json")


def _run_cv(a: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    from terraseg.training.cv import run_cv

    return run_cv(train_options(a, out=UNUSED_OUT), a.out_dir, a.k, reporter,
                  overwrite=a.overwrite)


def _compare_args(p: argparse.ArgumentParser) -> None:
    add_train_options(p, out=False)
    p.add_argument("--runs", help="model:loss pairs separated by ';', e.g. "
                                  "'unet_small:ce;unet_se:focal+iou'")
    p.add_argument("--models", help="comma-separated models (crossed with --losses)")
    p.add_argument("--losses", help="loss specs separated by ';' (crossed with --models)")
    p.add_argument("--positive-class", help="class whose F1 the table shows (default: the "
                                            "first class)")
    p.add_argument("--rf-trees", type=int, default=200,
                   help="trees of the random-forest baseline (0 = no baseline)")
    p.add_argument("--k", type=int, default=0,
                   help="k spatial folds, mean and std per row (0 = one split with "
                        "--test-fraction)")
    p.add_argument("--out-dir", required=True,
                   help="folder for compare.csv/.md/.json and the models")


def _run_compare(a: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    from terraseg.training.compare import parse_runs, run_compare

    return run_compare(train_options(a, out=UNUSED_OUT), parse_runs(a.runs, a.models, a.losses),
                       a.out_dir, reporter, positive_class=a.positive_class,
                       rf_trees=a.rf_trees, k=a.k, overwrite=a.overwrite)


register(Command("train", "train a model from a raster and labels", add_train_options,
                 _run_train))
register(Command("grid", "hyperparameter grid: lr x weight decay x augmentation", _grid_args,
                 _run_grid))
register(Command("cv", "k-fold cross-validation by region: per-fold, mean, std", _cv_args,
                 _run_cv))
register(Command("compare", "loss/architecture table with a random-forest pixel baseline "
                            "on one spatial split", _compare_args, _run_compare))
