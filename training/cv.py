"""k-fold cross-validation by region: per-fold and mean/std test metrics (``terraseg cv``)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from terraseg.core.atomic import atomic_path, write_csv_atomic
from terraseg.core.output_targets import check_output_dir
from terraseg.core.reporting import Reporter
from terraseg.protocol.options import TrainOptions
from terraseg.training.train import model_file_paths, run_train

METRICS = ("accuracy", "f1_weighted", "f1_macro", "mean_iou")


def run_cv(base: TrainOptions, out_dir: str | Path, k: int, reporter: Reporter,
           overwrite: bool = False) -> dict[str, Any]:
    """Train k models, fold i holding out every k-th region of each class as its test set.

    Writes ``fold_<i>.tsm``, ``cv.csv`` (one row per fold, then mean and std) and
    ``cv.json``. Validation (early stopping) is dealt from the non-test regions.
    """
    out = Path(out_dir)
    csv_path, json_path = out / "cv.csv", out / "cv.json"
    models = [p.name for fold in range(k) for p in model_file_paths(out / f"fold_{fold}.tsm")]
    check_output_dir(out, [csv_path.name, json_path.name, *models], overwrite)
    rows: list[dict[str, Any]] = []
    for fold in range(k):
        reporter.log(f"fold {fold + 1}/{k}")
        cfg = base.replace(k_folds=k, fold=fold, test_fraction=0.0,
                      out=str(out / f"fold_{fold}.tsm"), overwrite=True)
        res = run_train(cfg, reporter)
        test = res["metrics"].get("test") or {}
        rows.append({"fold": fold, **{m: test.get(m) for m in METRICS},
                     "n_samples": test.get("n_samples", 0), "model": res["model"]})
        reporter.progress((fold + 1) / k, "cv")
    summary: dict[str, Any] = {}
    for m in METRICS:
        vals = [r[m] for r in rows if r[m] is not None]
        summary[m] = {"mean": statistics.fmean(vals) if vals else None,
                      "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0 if vals else None}
    table = rows + [{"fold": stat, **{m: summary[m][stat] for m in METRICS},
                     "n_samples": sum(r["n_samples"] for r in rows), "model": ""}
                    for stat in ("mean", "std")]
    write_csv_atomic(csv_path, table, list(table[0]))
    doc = {"k": k, "folds": rows, "summary": summary,
           "split": "by region (polygon), every k-th region of each class per fold"}
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return {"cv_csv": str(csv_path), "cv_json": str(json_path), "summary": summary}

