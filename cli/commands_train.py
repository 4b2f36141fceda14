"""Training commands: ``train``, ``grid``, ``cv`` and ``compare``.

The options are checked (cli/options.py) before the training stack is imported, and so are
the commands' own numbers: grid's learning rates and weight decays, the number of folds.
"""

from __future__ import annotations

import argparse
from typing import Any

from terraseg.cli.options import add_train_options, train_options
from terraseg.cli.registry import Command, register
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import ConfigError
from terraseg.protocol.options import SPEC_BY_NAME, check_value

UNUSED_OUT = "unused.tsm"


def grid_values(spec: str, flag: str, option: str) -> list[float]:
    """Numbers of a grid axis (``--lrs 1e-3,1e-4``), each valid for its training option.

    Raises:
        ConfigError: Not a list of numbers, or a value the option refuses (naming ``flag``).
    """
    try:
        values = [float(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        values = []
    if not values:
        raise ConfigError(f"{flag} '{spec}' is not a comma-separated list of numbers.",
                          f"Give e.g. {flag} 1e-3,1e-4.")
    for v in values:
        try:
            check_value(SPEC_BY_NAME[option], v)
        except ConfigError as exc:
            raise ConfigError(f"{flag} holds {v:g}: {exc.message}", exc.hint) from None
    return values


def check_folds(k: int, zero_ok: bool) -> None:
    """``--k``: 2 or more folds (0 = one split, where ``zero_ok``).

    Raises:
        ConfigError: Any other number.
    """
    if k >= 2 or (zero_ok and k == 0):
        return
    raise ConfigError(f"--k is {k}; k-fold cross-validation needs 2 or more folds.",
                      "Use --k 5 (or 0 for one split)." if zero_ok else "Use e.g. --k 5.")


def _run_train(a: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    opts = train_options(a)  # checked before the training stack is imported
    from terraseg.training.train import run_train

    return run_train(opts, reporter)


def _grid_args(p: argparse.ArgumentParser) -> None:
    add_train_options(p, out=False)
    p.add_argument("--out-dir", required=True, help="folder for the models and grid.csv")
    p.add_argument("--lrs", default="1e-3,1e-4", help="learning rates (comma-separated)")
    p.add_argument("--weight-decays", default="0,0.1,0.01", help="weight decays")
    p.add_argument("--augment-options", default="none;flip,rotate",
                   help="augmentation settings separated by ';' (e.g. 'none;flip,rotate')")


def _run_grid(a: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    opts = train_options(a, out=UNUSED_OUT)
    lrs = grid_values(a.lrs, "--lrs", "lr")
    wds = grid_values(a.weight_decays, "--weight-decays", "weight_decay")
    from terraseg.training.hparam_grid import run_grid

    augments = [s.strip() for s in a.augment_options.split(";")]
    return run_grid(opts, a.out_dir, lrs, wds, augments, reporter, overwrite=a.overwrite)


def _cv_args(p: argparse.ArgumentParser) -> None:
    add_train_options(p, out=False)
    p.add_argument("--k", type=int, default=5, help="number of folds")
    p.add_argument("--out-dir", required=True, help="folder for fold models, cv.csv, cv.json")


def _run_cv(a: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    opts = train_options(a, out=UNUSED_OUT)
    check_folds(a.k, zero_ok=False)
    from terraseg.training.cv import run_cv

    return run_cv(opts, a.out_dir, a.k, reporter,
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
    opts = train_options(a, out=UNUSED_OUT)
    check_folds(a.k, zero_ok=True)
    if a.rf_trees < 0:
        raise ConfigError(f"--rf-trees is {a.rf_trees}; it must be 0 (no baseline) or more.",
                          "Use e.g. --rf-trees 200, or 0 to leave out the baseline.")
    from terraseg.training.compare import parse_runs, run_compare

    return run_compare(opts, parse_runs(a.runs, a.models, a.losses),
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
