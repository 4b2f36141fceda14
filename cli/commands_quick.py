"""Command ``quickmap``: a first map in seconds from a random forest of single pixels.

The labels are read and split exactly as ``train`` reads and splits them (the same label
loader, the same spatial split by polygon and seed), so the accuracy it reports is on
held-out validation polygons. The forest itself is core/forest.py. No model file is
written (model files are never pickles): ``train`` makes the model for a better map.
"""

from __future__ import annotations

import argparse
from typing import Any

from terraseg.cli.options import add_pixel_input_args, load_pixel_inputs, parse_window
from terraseg.cli.registry import Command, register
from terraseg.core.reporting import Reporter
from terraseg.protocol.options import DEFAULTS


def _quickmap_args(p: argparse.ArgumentParser) -> None:
    add_pixel_input_args(p, "vector labels or a label raster")
    p.add_argument("--out-dir", required=True,
                   help="folder for probability.tif and classes.tif")
    area = p.add_mutually_exclusive_group()
    area.add_argument("--window", type=parse_window, help="col,row,width,height in pixels")
    area.add_argument("--extent-layer", help="map this vector layer's extent")
    p.add_argument("--trees", type=int, default=50, help="trees of the forest")
    p.add_argument("--max-samples", type=int, default=30_000,
                   help="most training pixels fitted (stratified by class); validation "
                        "pixels are capped the same")
    split = DEFAULTS.split
    p.add_argument("--split", choices=["polygons", "blocks"], default=split.split,
                   help="split unit, as for train")
    p.add_argument("--val-fraction", type=float, default=split.val_fraction,
                   help="share of polygons held out for validation, as for train")
    p.add_argument("--seed", type=int, default=split.seed,
                   help="seed of the split (as train's), the pixel sample and the forest")
    p.add_argument("--split-from", metavar="MODEL",
                   help="keep the train/validation split recorded in this model file (its "
                        "validation polygons stay held out; new polygons are split among "
                        "themselves), as train --split-from")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _run_quickmap(a: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    from terraseg.core.forest import OUTPUT_NAMES, READ_BLOCK_PX, ForestSettings, quick_map
    from terraseg.core.output_targets import check_output_dir
    from terraseg.training.sampling import SplitConfig, build_index

    settings = ForestSettings(trees=a.trees, max_samples=a.max_samples, seed=a.seed)
    split_cfg = SplitConfig(a.split, a.val_fraction, 0.0, DEFAULTS.split.split_block_px,
                            a.seed)
    check_output_dir(a.out_dir, OUTPUT_NAMES, a.overwrite)  # before the raster is read
    reporter.progress(0.0, "prepare", "reading raster and labels")
    source, labels = load_pixel_inputs(a)
    index = build_index(labels, split_cfg, READ_BLOCK_PX, _kept_split(a, split_cfg, reporter))
    if a.split_from:
        reporter.log(f"split of {a.split_from} kept for {index.kept_regions} region(s); new "
                     "regions are split among themselves")
    result = quick_map(source, labels, index.split_map, a.out_dir, reporter, settings,
                       window=a.window, extent_layer=a.extent_layer, overwrite=a.overwrite)
    sides = list(index.region_split.values())
    result["split"] = {"mode": a.split, "seed": a.seed, "split_from": a.split_from,
                       "kept_regions": index.kept_regions,
                       "regions": {"train": sides.count(0), "val": sides.count(1)},
                       "validation_regions": list(index.keys_by_split(labels)["val"])}
    return result


def _kept_split(a: argparse.Namespace, cfg: Any, reporter: Reporter) -> dict[str, int] | None:
    """Region key -> side recorded in ``--split-from``'s model (None: a fresh split)."""
    if not a.split_from:
        return None
    from terraseg.core.modelfile import read_meta
    from terraseg.training.train import previous_split

    return previous_split(read_meta(a.split_from), a.split_from, cfg, reporter)


def _print_quickmap(result: dict[str, Any]) -> str:
    val = result.get("validation")
    text = (f"validation accuracy {val['accuracy']:.4f} (n={val['n_samples']})" if val
            else "no validation polygons")
    return f"{text} -> {result['probability']}, {result['classes']} (no model file)"


register(Command("quickmap", "a first map in seconds: random forest of pixels (no model "
                             "file)", _quickmap_args, _run_quickmap, printer=_print_quickmap))
