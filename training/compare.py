"""Loss / architecture comparison with a random-forest pixel baseline (``terraseg compare``).

One command trains every (architecture, loss) pair on the same spatial split and adds a
random-forest classifier of single pixels, trained on the same training pixels, as the
baseline the networks must beat. The table has the study's columns (study 001): parameters,
mean IoU, F1 of the positive class and the time of one training epoch, measured on the
held-out test pixels. With ``k`` folds every row is the mean (and standard deviation) over
k spatial folds.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window
from sklearn.ensemble import RandomForestClassifier

from terraseg.core.atomic import atomic_path, write_csv_atomic
from terraseg.core.classes import ClassInfo, ClassMapping
from terraseg.core.decision import class_ids, tune_threshold
from terraseg.core.labels import load_labels
from terraseg.core.metrics import compute_metrics
from terraseg.core.models.registry import get_entry
from terraseg.core.output_targets import check_output_dir
from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import ConfigError
from terraseg.protocol.options import TrainOptions
from terraseg.training.inputs import build_source
from terraseg.training.sampling import SplitConfig, build_index
from terraseg.training.train import model_file_paths, run_train

RF_NAME = "random_forest"
READ_BLOCK_PX = 512


@dataclass(frozen=True)
class CompareRun:
    """One row of the comparison: an architecture trained with a loss."""

    model: str
    loss: str

    @property
    def tag(self) -> str:
        """File-name-safe identifier, e.g. ``unet_small__focal+iou``."""
        safe = "".join(ch if ch.isalnum() or ch in "+-_." else "_" for ch in self.loss)
        return f"{self.model}__{safe}"


def parse_runs(runs: str | None, models: str | None, losses: str | None) -> list[CompareRun]:
    """Rows from ``--runs 'unet_small:ce;unet_se:focal+iou'`` or ``--models`` x ``--losses``.

    Runs and losses are separated by ';' because a loss spec may hold commas
    (``focal:0.7,dice:0.3``); a run's model is the text before its first ':'.

    Raises:
        ConfigError: Nothing to compare, an unknown model, or a run without a loss.
    """
    out: list[CompareRun] = []
    if runs:
        for token in (t.strip() for t in runs.split(";")):
            if not token:
                continue
            if ":" not in token:
                raise ConfigError(f"Comparison run '{token}' has no loss.",
                                  "Write model:loss pairs, e.g. --runs 'unet_small:ce'.")
            model, loss = (s.strip() for s in token.split(":", 1))
            out.append(CompareRun(model, loss))
    else:
        model_list = [m.strip() for m in (models or "").split(",") if m.strip()]
        loss_list = [s.strip() for s in (losses or "").split(";") if s.strip()]
        out = [CompareRun(m, s) for m in model_list for s in loss_list or [""]]
    if not out:
        raise ConfigError("Nothing to compare.",
                          "Pass --runs 'model:loss;...' or --models and --losses.")
    for run in out:
        get_entry(run.model)  # unknown names raise with the registry's list
    if len(set(out)) != len(out):
        raise ConfigError("A comparison run is listed twice.", "List each model:loss once.")
    return out


def run_compare(base: TrainOptions, runs: list[CompareRun], out_dir: str | Path,
                reporter: Reporter, positive_class: str | None = None, rf_trees: int = 200,
                k: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Train every run (and the RF baseline) on the same split; write the comparison.

    Args:
        base: Training settings shared by all runs (raster, labels, split, epochs, ...).
        runs: The (model, loss) rows.
        out_dir: Folder for ``compare.csv``, ``compare.md``, ``compare.json`` and the models.
        reporter: Progress and log events.
        positive_class: Class whose F1 is the table's F1 column (default: the first class).
        rf_trees: Trees of the random-forest baseline; 0 leaves the baseline out.
        k: Number of spatial folds (0: one split with ``base.split.test_fraction`` as test).
        overwrite: Replace an earlier comparison in ``out_dir``.

    Raises:
        ConfigError: No test split, or an unknown positive class.
        OutputError: A comparison already exists in ``out_dir``.
    """
    out = Path(out_dir)
    names = ("compare.csv", "compare.md", "compare.json")
    suffixes = [f"_fold{fold}" for fold in range(k)] if k else [""]
    models = [p.name for suffix in suffixes for run in runs
              for p in model_file_paths(out / f"{run.tag}{suffix}.tsm")]
    check_output_dir(out, [*names, *models], overwrite)
    if not k and base.split.test_fraction <= 0:
        raise ConfigError("The comparison needs held-out test pixels.",
                          "Pass --test-fraction (e.g. 0.2) or --k for k spatial folds.")
    out.mkdir(parents=True, exist_ok=True)
    folds = list(range(k)) if k else [None]
    n_jobs = len(folds) * (len(runs) + (1 if rf_trees > 0 else 0))
    done = 0
    per_fold: dict[str, list[dict[str, Any]]] = {}
    positive: str | None = positive_class
    for fold in folds:
        cfg = base if fold is None else base.replace(k_folds=k, fold=fold, test_fraction=0.0)
        suffix = "" if fold is None else f"_fold{fold}"
        for run in runs:
            reporter.log(f"compare: {run.model} with loss {run.loss or 'default'}"
                         + ("" if fold is None else f", fold {fold + 1}/{k}"))
            res = run_train(cfg.replace(model=run.model, loss=run.loss,
                                    out=str(out / f"{run.tag}{suffix}.tsm"), overwrite=True),
                            reporter)
            test = res["metrics"]["test"]
            positive = _positive(positive, test["class_names"])
            epochs = max(int(res["epochs"]), 1)
            per_fold.setdefault(run.tag, []).append(
                _row(run.model, run.loss or "default", res["parameters"], test, positive,
                     res["fit_seconds"] / epochs, res["model"]))
            done += 1
            reporter.progress(done / n_jobs, "compare")
        if rf_trees > 0:
            reporter.log("compare: random-forest pixel baseline"
                         + ("" if fold is None else f", fold {fold + 1}/{k}"))
            test, seconds = rf_baseline(cfg, rf_trees)
            positive = _positive(positive, test["class_names"])
            per_fold.setdefault(RF_NAME, []).append(
                _row(RF_NAME, "gini (pixels)", rf_trees, test, positive, seconds, ""))
            done += 1
            reporter.progress(done / n_jobs, "compare")
    assert positive is not None
    table = [_summarise(rows) for rows in per_fold.values()]
    out_csv, out_md, out_json = (out / n for n in names)
    write_csv_atomic(out_csv, table, list(table[0]))
    with atomic_path(out_md) as tmp:
        tmp.write_text(markdown_table(table, positive, base, k), encoding="utf-8")
    doc = {"positive_class": positive, "k": k, "settings": _settings(base),
           "rows": table, "folds": per_fold}
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return {"compare_csv": str(out_csv), "compare_md": str(out_md),
            "compare_json": str(out_json), "rows": table}


def rf_baseline(cfg: TrainOptions, trees: int) -> tuple[dict[str, Any], float]:
    """Random forest on single pixels (the model's input channels), same split as training.

    Trained on the training pixels; with two classes the decision threshold on P(class 1) is
    tuned on the validation pixels exactly as for the networks.

    Returns:
        Test metrics (as ``Metrics.to_dict``) and the fitting time in seconds.
    """
    _, source = build_source(cfg)
    labels = load_labels(cfg.data.labels, source.grid, class_field=cfg.data.class_field,
                         class_map=ClassMapping.parse(cfg.data.class_map))
    sp = cfg.split
    split = SplitConfig(sp.split, sp.val_fraction, sp.test_fraction, sp.split_block_px,
                        sp.seed, sp.k_folds, sp.fold)
    index = build_index(labels, split, 1)
    x, y, s = _labelled_pixels(source, labels.labels, index.split_map)
    train = s == 0
    if not train.any() or not (s == 2).any():
        raise ConfigError("The random-forest baseline found no training or no test pixel "
                          "with image data.", "Check the labels, --bands and the split.")
    weight = None if cfg.optim.class_weights == "none" else "balanced"
    rf = RandomForestClassifier(n_estimators=trees, n_jobs=-1, random_state=cfg.split.seed,
                                class_weight=weight, min_samples_leaf=1)
    start = time.perf_counter()
    rf.fit(x[train], y[train])
    seconds = time.perf_counter() - start
    threshold = None
    if len(labels.classes) == 2 and (s == 1).any():
        val_probs = _class_probabilities(rf, x[s == 1], labels.classes)
        threshold = tune_threshold(val_probs[:, 0], y[s == 1])["value"]
    test = s == 2
    pred = class_ids(_class_probabilities(rf, x[test], labels.classes), threshold, axis=1)
    return compute_metrics(y[test], pred, labels.classes).to_dict(), seconds


def _class_probabilities(rf: RandomForestClassifier, x: np.ndarray,
                         classes: tuple[ClassInfo, ...]) -> np.ndarray:
    """Class probabilities in class-id order (0 for a class the forest never saw).

    Returns:
        float. Shape: (N, K).
    """
    proba = rf.predict_proba(x)
    seen = list(rf.classes_)
    out = np.zeros((len(x), len(classes)))
    for k, c in enumerate(classes):
        if c.id in seen:
            out[:, k] = proba[:, seen.index(c.id)]
    return out


def _labelled_pixels(source: Any, labels: np.ndarray, split_map: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Channel values, class ids and split index of every labelled pixel with image data.

    Reads only the blocks that hold labels, so a large raster with few labels stays cheap.
    """
    rows, cols = np.nonzero(split_map >= 0)
    b = READ_BLOCK_PX
    blocks = np.unique(np.stack([rows // b, cols // b], 1), axis=0)
    xs, ys, ss = [], [], []
    for br, bc in blocks.tolist():
        r0, c0 = br * b, bc * b
        data, valid = source.read(Window(c0, r0, b, b))
        sub = split_map[r0:r0 + b, c0:c0 + b]
        h, w = sub.shape
        m = (sub >= 0) & valid[:h, :w]
        xs.append(data[:, :h, :w][:, m].T)
        ys.append(labels[r0:r0 + b, c0:c0 + b][m])
        ss.append(sub[m])
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ss)


def _positive(current: str | None, class_names: list[str]) -> str:
    if current is None:
        return class_names[0]
    if current not in class_names:
        raise ConfigError(f"Positive class '{current}' is not one of {class_names}.",
                          "Pass --positive-class with one of the model's class names.")
    return current


def _row(method: str, loss: str, params: int, test: dict[str, Any], positive: str,
         epoch_seconds: float, model_path: str) -> dict[str, Any]:
    return {"model": method, "loss": loss, "parameters": int(params),
            "mean_iou": test["mean_iou"], "f1": test["f1_per_class"][positive],
            "accuracy": test["accuracy"], "epoch_seconds": round(float(epoch_seconds), 2),
            "n_test_pixels": test["n_samples"], "model_file": model_path}


def _summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row: the fold mean, and the standard deviation when there are folds."""
    first = rows[0]
    out: dict[str, Any] = {"model": first["model"], "loss": first["loss"],
                           "parameters": first["parameters"]}
    for key in ("mean_iou", "f1", "accuracy", "epoch_seconds"):
        vals = [float(r[key]) for r in rows]
        out[key] = round(statistics.fmean(vals), 4)
        out[f"{key}_std"] = round(statistics.pstdev(vals), 4) if len(vals) > 1 else 0.0
    out["n_test_pixels"] = sum(int(r["n_test_pixels"]) for r in rows)
    out["folds"] = len(rows)
    return out


def markdown_table(table: list[dict[str, Any]], positive: str, base: TrainOptions,
                   k: int) -> str:
    """The comparison as a Markdown table (best mIoU and F1 in bold)."""
    best_iou = max(r["mean_iou"] for r in table)
    best_f1 = max(r["f1"] for r in table)

    def cell(row: dict[str, Any], key: str, best: float) -> str:
        text = f"{row[key]:.3f}"
        if k:
            text += f" ± {row[key + '_std']:.3f}"
        return f"**{text}**" if row[key] == best else text

    lines = [f"| Model | Loss | Param | mIoU | F1 ({positive}) | Accuracy | "
             "Time for 1 epoch (s) |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in table:
        secs = (f"{r['epoch_seconds']:.1f}" if r["model"] != RF_NAME
                else f"{r['epoch_seconds']:.1f} (fit)")
        params = (f"{r['parameters'] / 1e6:.2f}M" if r["model"] != RF_NAME
                  else f"{r['parameters']} trees")
        lines.append(f"| {r['model']} | {r['loss']} | {params} | "
                     f"{cell(r, 'mean_iou', best_iou)} | {cell(r, 'f1', best_f1)} | "
                     f"{r['accuracy']:.3f} | {secs} |")
    split = (f"{k} spatial folds ({base.split.split}, {base.split.split_block_px} px blocks); "
             "mean ± std over folds" if k else
             f"one spatial split ({base.split.split}, {base.split.split_block_px} px blocks, "
             f"test fraction {base.split.test_fraction}, validation {base.split.val_fraction})")
    lines += ["", f"Test pixels: {table[0]['n_test_pixels']}; {split}; tile "
              f"{base.network.tile_px} px, up to {base.optim.epochs} epochs (patience "
              f"{base.optim.patience}), {base.optim.samples_per_epoch} tiles per epoch, seed "
              f"{base.split.seed}.", ""]
    return "\n".join(lines)


def _settings(base: TrainOptions) -> dict[str, Any]:
    keys = ("raster", "labels", "class_map", "bands", "features", "tile_px", "epochs",
            "patience", "lr", "batch_size", "samples_per_epoch", "split", "split_block_px",
            "val_fraction", "test_fraction", "seed", "base_width", "precision")
    flat = base.flat()
    return {key: flat[key] for key in keys}
