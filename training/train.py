"""Train a model from a raster and labels: the job behind ``terraseg train``."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L  # noqa: N812
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping
from rasterio.windows import Window
from torch.utils.data import DataLoader

from terraseg.core.classes import ClassInfo, ClassMapping, classes_from_dicts
from terraseg.core.extras import StackedSource, check_extras_match, parse_extras
from terraseg.core.feature_source import FeatureSource, fit_on_source
from terraseg.core.features import FeatureSpec, check_features
from terraseg.core.label_set import LabelSet
from terraseg.core.labels import load_labels
from terraseg.core.metrics import compute_metrics
from terraseg.core.modelfile import load_model, read_metadata, save_model
from terraseg.core.models.registry import build_model, config_from_params, get_entry
from terraseg.core.models.unet import check_tile_size
from terraseg.core.normalise import BandStats, compute_band_stats
from terraseg.core.output_targets import check_output_targets
from terraseg.core.raster import BandMapping, RasterSource, parse_band_mapping
from terraseg.core.reporting import ConsoleReporter, Reporter
from terraseg.core.version import software_version
from terraseg.protocol.errors import ConfigError, LabelError, ModelFileError
from terraseg.training.augment import AugmentChain, AugmentConfig
from terraseg.training.cache import ImageCache, default_cache_dir
from terraseg.training.callbacks import BestWeights, ReporterCallback
from terraseg.training.data import ImageWindowStore, PatchDataset, PatchGeometry
from terraseg.training.device import describe_device
from terraseg.training.module import SegmentationTask
from terraseg.training.sampling import (
    SPLITS,
    SampleIndex,
    SplitConfig,
    build_index,
    count_split_units,
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs (the command line's options)."""

    raster: str
    labels: str
    out: str
    class_field: str | None = None
    class_map: str | None = None
    bands: str | None = None
    model: str = "patch_cnn"
    patch_px: int = 51
    block_px: int = 5
    planes: tuple[int, ...] = (4, 8, 16)
    blocks: tuple[int, ...] = (2, 2, 2)
    stride_px: int = 0
    epochs: int = 300
    patience: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 128
    augment: str = "flip,rotate"
    pixel_noise: float = 0.05
    channel_noise: float = 0.05
    split: str = "polygons"
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    split_block_px: int = 256
    seed: int = 0
    all_touched: bool = False
    cache_dir: str | None = None
    init_model: str | None = None
    overwrite: bool = False
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    num_workers: int = 0
    samples_per_epoch: int = 2048
    tile_px: int = 128
    loss: str = ""
    base_width: int = 0
    optimizer: str = "adamw"
    lr_schedule: str = "none"
    cutmix: float = 0.0
    k_folds: int = 0
    fold: int = 0
    features: str = ""
    extra_rasters: tuple[str, ...] = ()
    dem: str | None = None
    slope_from_dem: bool = False
    class_weights: str = "inverse"
    extra_meta: dict[str, Any] = field(default_factory=dict)


def run_train(cfg: TrainConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Train and save a model file; returns the result summary (paths, metrics, device).

    Raises:
        TerraSegError: Any input problem, before training starts where it can be known.
    """
    rep = reporter or ConsoleReporter()
    out = Path(cfg.out)
    check_output_targets([out], cfg.overwrite, "--out")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    init_meta = read_metadata(cfg.init_model) if cfg.init_model else None
    if init_meta is not None:
        # fine-tuning keeps the initial model's architecture and geometry
        name, p = init_meta["architecture"]["name"], init_meta["architecture"]["params"]
        if get_entry(name).kind == "patch":
            cfg = dataclasses.replace(cfg, model=name, patch_px=int(p["patch_px"]),
                                      block_px=int(p["block_px"]), planes=tuple(p["planes"]),
                                      blocks=tuple(p["blocks"]),
                                      stride_px=int(p.get("stride_px", 0)))
        else:
            cfg = dataclasses.replace(cfg, model=name,
                                      tile_px=int(init_meta["geometry"]["tile_px"]))
    kind = get_entry(cfg.model).kind
    if kind == "tile":  # a training sample is a whole tile with its label tile
        cfg = dataclasses.replace(cfg, patch_px=cfg.tile_px, block_px=cfg.tile_px)
    loss_spec = cfg.loss or DEFAULT_LOSS[kind]

    rep.progress(0.0, "prepare", "reading raster and labels")
    mapping, source = build_source(cfg, init_meta)
    rep.log(f"raster {cfg.raster}: {source.grid.width_px}x{source.grid.height_px} px, "
            f"bands {list(mapping.names)}, pixel size {source.grid.pixel_size}")
    classes = classes_from_dicts(init_meta["classes"]) if init_meta else None
    class_map = ClassMapping.parse(cfg.class_map)
    labels = load_labels(cfg.labels, source.grid, class_field=cfg.class_field,
                         class_map=class_map, classes=classes)
    for info in labels.classes:
        rep.log(f"labelled pixels {info.name}: {labels.pixel_counts.get(info.name, 0)}")
    if labels.repaired_features:
        rep.log(f"repaired invalid geometries of feature(s) {list(labels.repaired_features)}",
                "warning")

    cache = ImageCache(source, Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir())
    cache.store_labels(labels)
    labels = _drop_nodata_labels(labels, cache, rep)
    stats = (BandStats.from_dict(init_meta["normalisation"]) if init_meta
             else compute_band_stats(source))
    split_cfg = SplitConfig(cfg.split, cfg.val_fraction, cfg.test_fraction,  # type: ignore[arg-type]
                            cfg.split_block_px, cfg.seed, cfg.k_folds, cfg.fold)
    if cfg.k_folds:
        units = count_split_units(labels, split_cfg)
        what = "blocks with labels" if cfg.split == "blocks" else "labelled regions (polygons)"
        if cfg.k_folds > units:
            raise ConfigError(
                f"k = {cfg.k_folds} folds is larger than the number of {what} ({units}).",
                f"Use --k {units} or fewer, or draw more polygons.")
    index = build_index(labels, split_cfg, cfg.block_px)
    for name in SPLITS:
        rep.log(f"{name}: {len(index.origins[name])} blocks, pixels per class "
                f"{ {labels.classes[k - 1].name: v for k, v in index.pixel_counts[name].items()} }")

    arch_params = _arch_params(cfg, source.count, len(labels.classes))
    if init_meta is not None:
        arch_params = _check_init_compatible(init_meta, cfg, arch_params, labels.classes)
    network = build_model(cfg.model, arch_params)
    if cfg.init_model:
        network.load_state_dict(load_model(cfg.init_model).network.state_dict())
        rep.log(f"fine-tuning from {cfg.init_model}")
    geom = PatchGeometry(cfg.patch_px, cfg.block_px)
    all_origins = np.concatenate([o for o in index.origins.values() if len(o)])
    store = ImageWindowStore(cache, all_origins, geom, stats)
    rep.log(f"cache {cache.path} ({cache.chunks_read} chunk(s) read from the raster now)")
    datasets = _datasets(store, labels, index, cfg)

    weights = _class_weights(index, len(labels.classes), cfg.class_weights)
    rep.log("class weights " + ", ".join(f"{c.name} {w:.2f}" for c, w in
                                          zip(labels.classes, weights.tolist(), strict=True)))
    task = SegmentationTask(network, weights, lr=cfg.lr, weight_decay=cfg.weight_decay,
                            loss=loss_spec, optimizer=cfg.optimizer,
                            lr_schedule=cfg.lr_schedule, max_epochs=cfg.epochs,
                            cutmix=cfg.cutmix if kind == "tile" else 0.0)
    rep.log(f"model {cfg.model} ({sum(p.numel() for p in network.parameters()):,} "
            f"parameters), loss {loss_spec}")
    has_val = "val" in datasets
    monitor = "val_loss" if has_val else "train_loss"
    if not has_val:
        rep.log("no validation region (too few polygons per class): early stopping watches "
                "the training loss", "warning")
    best = BestWeights(monitor)
    trainer = L.Trainer(
        max_epochs=cfg.epochs, accelerator=cfg.accelerator, devices=_devices(cfg.devices),
        num_nodes=cfg.num_nodes, strategy=cfg.strategy, precision=cfg.precision,  # type: ignore[arg-type]
        callbacks=[EarlyStopping(monitor, patience=cfg.patience, mode="min"), best,
                   ReporterCallback(rep, cfg.epochs)],
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, deterministic=False, default_root_dir=str(out.parent),
        num_sanity_val_steps=0,
    )
    device = describe_device(trainer)
    rep.log(f"training on {device['description']}")
    loaders = {k: DataLoader(v, batch_size=cfg.batch_size if k == "train" else 256,
                             shuffle=(k == "train"), num_workers=cfg.num_workers)
               for k, v in datasets.items()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*number of training batches.*")
        fit_start = time.perf_counter()
        trainer.fit(task, loaders["train"], loaders.get("val"))
        fit_seconds = time.perf_counter() - fit_start
    rep.check_cancelled()
    if not trainer.is_global_zero:
        return {}

    state = best.best_state or best.last_state
    network.load_state_dict(state)
    network.eval()
    threshold = None
    if kind == "tile" and len(labels.classes) == 2 and "val" in datasets:
        p1, truth = _split_probabilities(network, datasets["val"])
        threshold = tune_threshold(p1[:, 0], truth)
        rep.log(f"threshold on P({labels.classes[0].name}) tuned on validation pixels: "
                f"{threshold['value']:.2f} (F1 {threshold['f1']:.4f})")
    evaluation = {name: _evaluate_split(network, ds, labels.classes,
                                        threshold["value"] if threshold else None)
                  for name, ds in datasets.items() if name != "train"}
    for name, m in evaluation.items():
        rep.log(f"{name} (held-out pixels): accuracy {m['accuracy']:.4f}, "
                f"F1 weighted {m['f1_weighted']:.4f}, n={m['n_samples']}")
    cfg = dataclasses.replace(cfg, extra_meta={**cfg.extra_meta, "threshold": threshold})
    meta = _metadata(cfg, source, mapping_indices=list(mapping.indices), stats=stats,
                     labels=labels, arch_params=arch_params, network=network, best=best,
                     trainer=trainer, evaluation=evaluation, index=index, device=device,
                     cache=cache)
    save_model(out, network, meta)
    last_path = out.with_name(out.stem + ".last" + out.suffix)
    if best.last_state is not None and best.best_state is not best.last_state:
        last_net = build_model(cfg.model, arch_params)
        last_net.load_state_dict(best.last_state)
        save_model(last_path, last_net, {**meta, "checkpoint": "last"})
    else:
        last_path.unlink(missing_ok=True)
    rep.progress(1.0, "train", "done")
    result = {"model": str(out), "device": device, "epochs": trainer.current_epoch,
              "best_epoch": best.best_epoch, "metrics": evaluation,
              "pixel_counts": labels.pixel_counts, "fit_seconds": round(fit_seconds, 3),
              "parameters": sum(p.numel() for p in network.parameters()),
              "threshold": threshold}
    if last_path.exists():
        result["last_model"] = str(last_path)
    return result


def build_source(cfg: TrainConfig, init_meta: dict[str, Any] | None = None
                 ) -> tuple[BandMapping, RasterSource]:
    """The model's input as training sees it: bands, extra rasters, engineered channels.

    Fine-tuning (``init_meta``) keeps the initial model's bands, extras and features.

    Raises:
        TerraSegError: Unreadable raster, bad band mapping, extras or features.
    """
    band_spec = cfg.bands
    if band_spec is None and init_meta is not None:
        band_spec = ",".join(str(i) for i in init_meta["bands"]["indices"])
    mapping = parse_band_mapping(band_spec, cfg.raster)
    extras = parse_extras(list(cfg.extra_rasters), cfg.dem, cfg.slope_from_dem)
    if init_meta is not None:
        check_extras_match(init_meta, extras)
    source: RasterSource = (StackedSource(cfg.raster, mapping, extras) if extras
                            else RasterSource(cfg.raster, mapping))
    if init_meta is not None and init_meta.get("features"):
        source = FeatureSource(source, FeatureSpec.from_dict(init_meta["features"]))
    elif cfg.features:
        spec = FeatureSpec.parse(cfg.features)
        check_features(spec, source.bands.names)
        source = FeatureSource(source, fit_on_source(spec, source))
    return mapping, source


def _drop_nodata_labels(labels: LabelSet, cache: ImageCache, rep: Reporter) -> LabelSet:
    """Unlabel pixels where the image is nodata; refuse labels that lie only on nodata.

    Raises:
        LabelError: No labelled pixel has image data.
    """
    rows, cols = np.nonzero(labels.labels)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    window = Window(int(c0), int(r0), int(c1 - c0), int(r1 - r0))
    cache.ensure(window)
    _, valid = cache.read(window)
    sub = labels.labels[r0:r1, c0:c1]
    bad = (sub > 0) & ~valid
    n_bad = int(bad.sum())
    if n_bad == 0:
        return labels
    if n_bad == int((sub > 0).sum()):
        raise LabelError(
            "Every labelled pixel lies on nodata in the raster's mapped bands.",
            "Draw labels where the raster has data, or check its nodata value and --bands.")
    masked = labels.labels.copy()
    masked[r0:r1, c0:c1][bad] = 0
    counts = {c.name: int((masked == c.id).sum()) for c in labels.classes}
    rep.log(f"ignored {n_bad} labelled pixel(s) on nodata; labelled pixels now {counts}",
            "warning")
    return dataclasses.replace(labels, labels=masked, pixel_counts=counts)


DEFAULT_LOSS = {"patch": "ce", "tile": "focal+iou"}  # study 000 / study 001


def _arch_params(cfg: TrainConfig, n_bands: int, n_classes: int) -> dict[str, Any]:
    if get_entry(cfg.model).kind == "tile":
        params: dict[str, Any] = {"in_channels": n_bands, "num_classes": n_classes}
        if cfg.base_width:
            params["base_width"] = cfg.base_width
        check_tile_size(cfg.tile_px, config_from_params(cfg.model, params).stride_px,
                        "--tile-size")
        return params
    return {"in_channels": n_bands, "num_classes": n_classes, "patch_px": cfg.patch_px,
            "block_px": cfg.block_px, "planes": list(cfg.planes), "blocks": list(cfg.blocks),
            "stride_px": cfg.stride_px}


def _check_init_compatible(meta: dict[str, Any], cfg: TrainConfig, params: dict[str, Any],
                           classes: tuple[ClassInfo, ...]) -> dict[str, Any]:
    """Fine-tuning keeps the initial model's architecture; refuse different bands/classes."""
    arch = meta["architecture"]
    if arch["name"] != cfg.model:
        raise ModelFileError(f"--init-model is a '{arch['name']}' model, not '{cfg.model}'.",
                             f"Pass --model {arch['name']} or train from scratch.")
    init_params = dict(arch["params"])
    if init_params["in_channels"] != params["in_channels"]:
        raise ModelFileError(
            f"--init-model was trained on {init_params['in_channels']} bands; this raster "
            f"mapping has {params['in_channels']}.", "Map the same bands or train from scratch.")
    if init_params["num_classes"] != len(classes):
        raise ModelFileError("--init-model has other classes than these labels.",
                             "Use the same classes or train from scratch.")
    return init_params


def _datasets(store: ImageWindowStore, labels: LabelSet, index: SampleIndex,
              cfg: TrainConfig) -> dict[str, PatchDataset]:
    chain = AugmentChain(AugmentConfig.parse(cfg.augment, cfg.pixel_noise, cfg.channel_noise))
    out = {}
    for si, name in enumerate(SPLITS):
        if len(index.origins[name]) == 0:
            continue
        out[name] = PatchDataset(store, labels.labels, index.split_map, si, index.origins[name],
                                 augment=chain if name == "train" and chain.steps else None,
                                 seed=cfg.seed,
                                 length=cfg.samples_per_epoch if name == "train" else None,
                                 jitter=name == "train")
    return out


CLASS_WEIGHTING = ("inverse", "sqrt", "none")


def _class_weights(index: SampleIndex, n_classes: int, mode: str = "inverse") -> torch.Tensor:
    """Cross-entropy class weights from training pixel counts, mean 1 over present classes.

    ``inverse``: 1 / frequency (the study's weighted loss); ``sqrt``: 1 / sqrt(frequency),
    gentler for very rare classes; ``none``: equal weights.
    """
    if mode not in CLASS_WEIGHTING:
        raise ConfigError(f"Unknown class weighting '{mode}'.",
                          f"Use one of: {', '.join(CLASS_WEIGHTING)}.")
    counts = np.array([index.pixel_counts["train"].get(k + 1, 0) for k in range(n_classes)],
                      dtype=np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    power = {"inverse": 1.0, "sqrt": 0.5, "none": 0.0}[mode]
    w[present] = 1.0 / counts[present] ** power
    w[present] *= present.sum() / w[present].sum()
    return torch.tensor(w, dtype=torch.float32)


def _devices(spec: str) -> int | str | list[int]:
    if spec == "auto":
        return "auto"
    if "," in spec:
        return [int(s) for s in spec.split(",") if s.strip()]
    try:
        return int(spec)
    except ValueError:
        raise ConfigError(f"--devices '{spec}' is not a number, list or 'auto'.",
                          "Use e.g. --devices 2 or --devices 0,1.") from None


@torch.inference_mode()
@torch.inference_mode()
def _split_probabilities(network: torch.nn.Module,
                         ds: PatchDataset) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (N, K) and reference class ids (N,) of a split's labelled pixels."""
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


def tune_threshold(p_first: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Threshold on P(class 1) that maximises class 1's F1 (grid 0.05..0.95, step 0.05)."""
    best = {"value": 0.5, "f1": -1.0}
    positive = truth == 1
    for t in np.round(np.arange(0.05, 0.96, 0.05), 2):
        pred = p_first >= t
        tp = float((pred & positive).sum())
        denom = float(pred.sum() + positive.sum())
        f1 = 2 * tp / denom if denom else 0.0
        if f1 > best["f1"]:
            best = {"value": float(t), "f1": f1}
    return best


def _evaluate_split(network: torch.nn.Module, ds: PatchDataset,
                    classes: tuple[ClassInfo, ...],
                    threshold: float | None = None) -> dict[str, Any]:
    """Metrics on the held-out pixels of one split (class ids 1..K).

    With ``threshold`` (two classes), class 1 is predicted where P(class 1) >= threshold.
    """
    probs, truth = _split_probabilities(network, ds)
    if threshold is not None:
        pred = np.where(probs[:, 0] >= threshold, 1, 2)
    else:
        pred = probs.argmax(1) + 1
    return compute_metrics(truth, pred, classes).to_dict()


def _geometry(cfg: TrainConfig, network: torch.nn.Module) -> dict[str, Any]:
    """How inference must run the network (see core/inference.py and core/blend.py)."""
    if get_entry(cfg.model).kind == "tile":
        return {"kind": "tile", "tile_px": cfg.tile_px, "step_px": cfg.tile_px // 2,
                "stride_px": int(network.stride_px),
                "valid_tile_sizes_px": list(network.valid_tile_sizes(1024))}
    return {"kind": "patch", "patch_px": cfg.patch_px, "block_px": cfg.block_px,
            "stride_px": int(network.stride_px),
            "receptive_field_px": int(network.receptive_field_px),
            "margin_px": (cfg.patch_px - cfg.block_px) // 2}


def _metadata(cfg: TrainConfig, source: RasterSource, mapping_indices: list[int],
              stats: BandStats, labels: LabelSet, arch_params: dict[str, Any],
              network: torch.nn.Module, best: BestWeights, trainer: L.Trainer,
              evaluation: dict[str, Any], index: SampleIndex, device: dict[str, Any],
              cache: ImageCache) -> dict[str, Any]:
    grid = source.grid
    crs = grid.crs
    train_opts = {k: v for k, v in asdict(cfg).items()
                  if k not in ("extra_meta", "overwrite", "out")}
    return {
        "software": {"name": "TerraSeg", "version": software_version(),
                     "torch": torch.__version__},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "architecture": {"name": cfg.model, "params": arch_params},
        "geometry": _geometry(cfg, network),
        "loss": cfg.loss or DEFAULT_LOSS[get_entry(cfg.model).kind],
        "bands": {"indices": mapping_indices, "names": list(source.bands.names)},
        "extra_rasters": [e.to_dict() for e in getattr(source, "extras", ())],
        "features": source.spec.to_dict() if isinstance(source, FeatureSource) else None,
        "normalisation": {"method": "standardise", **stats.to_dict(),
                          "nodata_fill": "band mean (0 after standardisation)"},
        "classes": [c.to_dict() for c in labels.classes],
        "class_map": cfg.class_map,
        "class_field": cfg.class_field,
        "training_raster": {"path": str(Path(cfg.raster).resolve()),
                            "pixel_size": list(grid.pixel_size),
                            "crs_wkt": grid.crs_wkt,
                            "crs_epsg": crs.to_epsg() if crs else None,
                            "fingerprint": cache.fingerprint},
        "labels": {"path": str(Path(cfg.labels).resolve()), "fingerprint": labels.fingerprint,
                   "pixel_counts": labels.pixel_counts,
                   "split_pixel_counts": {s: {labels.classes[k - 1].name: v
                                              for k, v in c.items()}
                                          for s, c in index.pixel_counts.items()}},
        "training": {"options": train_opts, "epochs_run": trainer.current_epoch,
                     "best_epoch": best.best_epoch, "monitor": best.monitor,
                     "best_score": best.best_score if best.best_epoch > 0 else None,
                     "device": device, "init_model": cfg.init_model},
        "metrics": evaluation,
        **cfg.extra_meta,
    }
