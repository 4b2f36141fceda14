"""Hyperparameter grid (learning rate x weight decay x augmentation), as the study's Table 2."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from terraseg.core.atomic import write_csv_atomic
from terraseg.core.output_targets import check_output_dir
from terraseg.core.reporting import Reporter
from terraseg.protocol.options import TrainOptions
from terraseg.training.train import model_file_paths, run_train


def parse_floats(spec: str) -> list[float]:
    """'1e-3,1e-4' -> [0.001, 0.0001]."""
    return [float(s) for s in spec.split(",") if s.strip()]


def run_grid(base: TrainOptions, out_dir: str | Path, lrs: list[float],
             weight_decays: list[float], augments: list[str], reporter: Reporter,
             overwrite: bool = False) -> dict[str, Any]:
    """Train one model per combination; write ``grid.csv`` ranked by validation accuracy.

    Each model goes to ``out_dir/model_lr<lr>_wd<wd>_<aug>.tsm``. The ranking metric is
    the accuracy on held-out validation pixels (then test, if present); ties keep grid order.
    """
    out = Path(out_dir)
    csv_path = out / "grid.csv"
    combos = list(itertools.product(lrs, weight_decays, augments))
    tags = [f"lr{lr:g}_wd{wd:g}_{aug.replace(',', '+') or 'none'}" for lr, wd, aug in combos]
    models = [p.name for tag in tags for p in model_file_paths(out / f"model_{tag}.tsm")]
    check_output_dir(out, [csv_path.name, *models], overwrite)
    rows: list[dict[str, Any]] = []
    for i, ((lr, wd, aug), tag) in enumerate(zip(combos, tags, strict=True)):
        reporter.log(f"grid {i + 1}/{len(combos)}: {tag}")
        cfg = base.replace(lr=lr, weight_decay=wd, augment=aug,
                      out=str(out / f"model_{tag}.tsm"), overwrite=True)
        res = run_train(cfg, reporter)
        m = res["metrics"].get("val") or res["metrics"].get("test") or {}
        rows.append({"rank": 0, "learning_rate": lr, "weight_decay": wd,
                     "augmentation": aug or "none", "accuracy": m.get("accuracy"),
                     "f1_weighted": m.get("f1_weighted"), "mean_iou": m.get("mean_iou"),
                     "epochs": res["epochs"], "best_epoch": res["best_epoch"],
                     "model": res["model"]})
        reporter.progress((i + 1) / len(combos), "grid")
    order = sorted(range(len(rows)), key=lambda j: (-(rows[j]["accuracy"] or -1.0), j))
    ranked = []
    for rank, j in enumerate(order, start=1):
        rows[j]["rank"] = rank
        ranked.append(rows[j])
    write_csv_atomic(csv_path, ranked, list(ranked[0]))
    return {"grid_csv": str(csv_path), "runs": ranked}
