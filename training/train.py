"""Train a model from a raster and labels: the job behind ``terraseg train``.

The steps read top to bottom in :func:`run_train`: check the outputs, assemble the input
(training/inputs.py), load and split the labels, cache the image chunks, build the
network of the chosen architecture (its model kind decides the training sample, the
default loss and whether a threshold is tuned), fit with Lightning, evaluate the held-out
pixels (training/heldout.py) and write the model file with its metadata
(training/model_record.py). Options and their defaults: protocol/options.py.

Retraining from a previous model (``--init-model``, or ``--split-from``) keeps that model's
train/validation/test split for the regions it knows (new regions are split among
themselves, training/sampling.py) and evaluates the previous model on the same held-out
pixels, so the result holds both models' metrics side by side (``previous``).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L  # noqa: N812
import numpy as np
from lightning.pytorch.callbacks import EarlyStopping
from torch.utils.data import DataLoader

from terraseg.core.classes import ClassInfo, ClassMapping, classes_from_dicts
from terraseg.core.decision import tune_threshold
from terraseg.core.label_set import describe_outside
from terraseg.core.labels import load_labels
from terraseg.core.modelfile import load_model, read_meta, save_model
from terraseg.core.models.registry import build_model, get_entry
from terraseg.core.normalise import BandStats, compute_band_stats
from terraseg.core.output_targets import check_output_targets
from terraseg.core.reporting import ConsoleReporter, Reporter
from terraseg.protocol.errors import ConfigError, ModelFileError
from terraseg.protocol.model_meta import ModelMeta, SplitRecord
from terraseg.protocol.options import TrainOptions
from terraseg.training.cache import ImageCache
from terraseg.training.callbacks import BestWeights, ReporterCallback
from terraseg.training.data import ImageWindowStore, PatchGeometry
from terraseg.training.device import describe_device
from terraseg.training.heldout import (
    better_model,
    comparison_line,
    evaluate_previous,
    evaluate_split,
    previous_mismatch,
    split_probabilities,
)
from terraseg.training.inputs import (
    build_source,
    class_weights,
    drop_nodata_labels,
    make_datasets,
    parse_devices,
)
from terraseg.training.model_record import build_model_meta
from terraseg.training.module import SegmentationTask
from terraseg.training.pseudo import (
    analyst_overrides,
    override_with,
    pseudo_output_paths,
    pseudo_summary,
    pseudo_weights,
    run_forest_step,
    with_blocks_split,
)
from terraseg.training.sampling import SPLITS, SplitConfig, build_index, count_split_units
from terraseg.training.transfer import FreezeEncoder, apply_encoder, check_encoder_option


def last_model_path(out: Path) -> Path:
    """Where the last epoch's weights go next to the best ones (``NAME.last.tsm``)."""
    return out.with_name(out.stem + ".last" + out.suffix)


def model_file_paths(out: Path) -> list[Path]:
    """Every file ``train --out NAME.tsm`` writes or replaces: ``NAME.tsm``, ``NAME.last.tsm``."""
    return [out, last_model_path(out)]


def run_train(opts: TrainOptions, reporter: Reporter | None = None) -> dict[str, Any]:
    """Train and save a model file; returns the result summary (paths, metrics, device).

    Raises:
        TerraSegError: Any input problem, before training starts where it can be known.
    """
    rep = reporter or ConsoleReporter()
    opts = opts.validate()
    out = Path(opts.out)
    # every file the run writes or replaces: the best weights and NAME.last.tsm
    targets = model_file_paths(out)
    if opts.pseudo.pseudo_labels:
        targets += pseudo_output_paths(out)
    check_output_targets(targets, opts.overwrite, "--out")
    L.seed_everything(opts.split.seed, workers=True, verbose=False)
    init_meta = read_meta(opts.network.init_model) if opts.network.init_model else None
    split_meta = read_split_from(opts.split.split_from) if opts.split.split_from else None
    if init_meta is not None:  # fine-tuning keeps the initial model's architecture
        kind = get_entry(init_meta.architecture.name).kind
        opts = dataclasses.replace(opts, network=kind.keep_shape(init_meta, opts.network))
    entry = get_entry(opts.network.model)
    kind = entry.kind
    if opts.network.encoder:
        check_encoder_option(opts.network.model, opts.network.encoder, opts.network.base_width)
    loss_spec = opts.optim.loss or kind.default_loss

    rep.progress(0.0, "prepare", "reading raster and labels")
    mapping, source = build_source(opts, init_meta)
    rep.log(f"raster {opts.data.raster}: {source.grid.width_px}x{source.grid.height_px} px, "
            f"bands {list(mapping.names)}, pixel size {source.grid.pixel_size}")
    classes = classes_from_dicts(init_meta.class_dicts) if init_meta else None
    pseudo = opts.pseudo.pseudo_labels
    analyst = None
    if not pseudo or analyst_overrides(opts):  # corrections may be of one class
        analyst = load_labels(opts.data.labels, source.grid,
                              class_field=opts.data.class_field,
                              class_map=ClassMapping.parse(opts.data.class_map),
                              classes=classes, require_two_classes=not pseudo)
    labels = analyst
    pseudo_run = None
    if pseudo:
        opts = with_blocks_split(opts, rep, (source.grid.height_px, source.grid.width_px))
        opts, pseudo_run = run_forest_step(opts, source, rep, classes, analyst)
        if opts.pseudo.pseudo_probability == "channel":
            mapping, source = build_source(opts, init_meta)
        labels = override_with(pseudo_run, (source.grid.height_px, source.grid.width_px),
                               analyst, rep, opts.split.split_block_px)
    for info in labels.classes:
        rep.log(f"labelled pixels {info.name}: {labels.pixel_counts.get(info.name, 0)}")
    if labels.repaired_features:
        rep.log(f"repaired invalid geometries of feature(s) {list(labels.repaired_features)}",
                "warning")
    if labels.outside_features:
        rep.log(describe_outside(labels.outside_features) + " Move or redraw them inside the "
                "raster, or train on the raster they were drawn on.", "warning")

    data = opts.data
    cache = ImageCache(source, data.cache_dir, rep.log)
    cache.store_labels(labels)
    labels = drop_nodata_labels(labels, cache, rep)
    stats = (BandStats(init_meta.normalisation.mean, init_meta.normalisation.std)
             if init_meta else compute_band_stats(source))
    sp = opts.split
    split_cfg = SplitConfig(sp.split, sp.val_fraction, sp.test_fraction, sp.split_block_px,
                            sp.seed, sp.k_folds, sp.fold)
    if sp.k_folds:
        units = count_split_units(labels, split_cfg)
        what = "blocks with labels" if sp.split == "blocks" else "labelled regions (polygons)"
        if sp.k_folds > units:
            raise ConfigError(
                f"k = {sp.k_folds} folds is larger than the number of {what} ({units}).",
                f"Use --k {units} or fewer, or draw more polygons.")
    sample_px, block_px = kind.sample_px(opts.network)
    prev_path = sp.split_from or opts.network.init_model  # the model retrained from
    prev_meta = split_meta or init_meta
    kept_split = previous_split(prev_meta, prev_path, split_cfg, rep)
    index = build_index(labels, split_cfg, block_px, kept_split)
    if kept_split is not None:
        n_regions = len(index.region_split)
        rep.log(f"kept the split of {Path(str(prev_path)).name} for {index.kept_regions} of "
                f"{n_regions} labelled region(s); {n_regions - index.kept_regions} new "
                "region(s) split among themselves")
    for name in SPLITS:
        rep.log(f"{name}: {len(index.origins[name])} blocks, pixels per class "
                f"{ {labels.classes[k - 1].name: v for k, v in index.pixel_counts[name].items()} }")

    arch_params = kind.network_params(opts.network, source.count, len(labels.classes),
                                      entry.make_config)
    if init_meta is not None:
        arch_params = check_init_compatible(init_meta, opts, arch_params, labels.classes)
    network = build_model(opts.network.model, arch_params)
    if init_meta is not None:
        network.load_state_dict(load_model(opts.network.init_model).network.state_dict())
        rep.log(f"fine-tuning from {opts.network.init_model}")
    encoder_record = None
    if opts.network.encoder:
        encoder_record = apply_encoder(network, opts.network.model, opts.network.encoder,
                                       tuple(source.bands.names), rep)
        encoder_record.update(freeze_epochs=opts.network.freeze_epochs,
                              encoder_lr=opts.network.encoder_lr)
    all_origins = np.concatenate([o for o in index.origins.values() if len(o)])
    store = ImageWindowStore(cache, all_origins, PatchGeometry(sample_px, block_px), stats)
    rep.log(f"cache {cache.path} ({cache.chunks_read} chunk(s) read from the raster now)")
    weights = pseudo_weights(opts, pseudo_run, analyst, rep)
    datasets = make_datasets(store, labels, index, opts, weights)

    cw = class_weights(index, len(labels.classes), opts.optim.class_weights)
    rep.log("class weights " + ", ".join(f"{c.name} {w:.2f}" for c, w in
                                          zip(labels.classes, cw.tolist(), strict=True)))
    optim = opts.optim
    task = SegmentationTask(network, cw, lr=optim.lr, weight_decay=optim.weight_decay,
                            loss=loss_spec, optimizer=optim.optimizer,
                            lr_schedule=optim.lr_schedule, max_epochs=optim.epochs,
                            cutmix=optim.cutmix if kind.uses_cutmix else 0.0,
                            pixel_weights=weights is not None,
                            encoder_lr_factor=opts.network.encoder_lr if encoder_record else 1.0)
    rep.log(f"model {opts.network.model} ({sum(p.numel() for p in network.parameters()):,} "
            f"parameters), loss {loss_spec}")
    has_val = "val" in datasets
    monitor = "val_loss" if has_val else "train_loss"
    if not has_val:
        rep.log("no validation region (too few polygons per class): early stopping watches "
                "the training loss", "warning")
    best = BestWeights(monitor)
    stopper = EarlyStopping(monitor, patience=optim.patience, mode="min")
    callbacks: list[Any] = [stopper, best, ReporterCallback(rep, optim.epochs)]
    if encoder_record and opts.network.freeze_epochs:
        callbacks.append(FreezeEncoder(opts.network.freeze_epochs, stopper, rep))
    rt = opts.runtime
    trainer = L.Trainer(
        max_epochs=optim.epochs, accelerator=rt.accelerator, devices=parse_devices(rt.devices),
        num_nodes=rt.num_nodes, strategy=rt.strategy, precision=rt.precision,  # type: ignore[arg-type]
        callbacks=callbacks,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, deterministic=False, default_root_dir=str(out.parent),
        num_sanity_val_steps=0,
    )
    device = describe_device(trainer)
    rep.log(f"training on {device['description']}")
    loaders = {k: DataLoader(v, batch_size=optim.batch_size if k == "train" else 256,
                             shuffle=(k == "train"), num_workers=rt.num_workers)
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

    network.load_state_dict(best.best_state or best.last_state)
    network.eval()
    threshold = None
    if kind.tunes_threshold and len(labels.classes) == 2 and has_val:
        p1, truth = split_probabilities(network, datasets["val"])
        threshold = tune_threshold(p1[:, 0], truth)
        first = labels.classes[0].name
        if threshold["no_skill"]:
            rep.log(f"the model has not learnt to find '{first}': no threshold on "
                    f"P({first}) beats marking every validation pixel as '{first}' (F1 "
                    f"{threshold['trivial_f1']:.4f}); threshold left at 0.5 (F1 "
                    f"{threshold['f1']:.4f}). Train longer, add labels, or check the bands "
                    "and nodata.", level="warning")
        else:
            rep.log(f"threshold on P({first}) tuned on validation pixels: "
                    f"{threshold['value']:.2f} (F1 {threshold['f1']:.4f}; marking every "
                    f"pixel '{first}': {threshold['trivial_f1']:.4f})")
    evaluation = {name: evaluate_split(network, ds, labels.classes,
                                       threshold["value"] if threshold else None)
                  for name, ds in datasets.items() if name != "train"}
    for name, m in evaluation.items():
        rep.log(f"{name} (held-out pixels): accuracy {m['accuracy']:.4f}, "
                f"F1 weighted {m['f1_weighted']:.4f}, n={m['n_samples']}")
    previous = None
    if prev_meta is not None and evaluation:
        previous = compare_previous(str(prev_path), prev_meta, evaluation, datasets,
                                    labels.classes, opts.network.model, arch_params,
                                    tuple(source.bands.names), stats, rep)
    split_record = (SplitRecord(sp.split, sp.seed, sp.split_block_px,
                                index.keys_by_split(labels),
                                str(prev_path) if kept_split is not None else None)
                    if labels.region_keys else None)
    record = {"epochs_run": trainer.current_epoch, "best_epoch": best.best_epoch,
              "monitor": best.monitor,
              "best_score": best.best_score if best.best_epoch > 0 else None,
              "device": device, "encoder": encoder_record}
    meta = build_model_meta(opts, source, list(mapping.indices), stats, labels, arch_params,
                            kind.geometry(opts.network, network), loss_spec, evaluation,
                            index, cache, record, threshold, split_record)
    save_model(out, network, meta)
    last_path = last_model_path(out)
    if best.last_state is not None and best.best_state is not best.last_state:
        last_net = build_model(opts.network.model, arch_params)
        last_net.load_state_dict(best.last_state)
        save_model(last_path, last_net, meta.replace(checkpoint="last"))
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
    result["split"] = {"kept_regions": index.kept_regions,
                       "regions": len(index.region_split),
                       "kept_from": str(prev_path) if kept_split is not None else None}
    if previous is not None:
        result["previous"] = previous
    if pseudo_run is not None:
        result["pseudo_labels"] = pseudo_summary(pseudo_run)
    if encoder_record is not None:
        result["encoder"] = encoder_record
    return result


def read_split_from(path: str) -> ModelMeta:
    """The metadata of the ``--split-from`` model.

    Raises:
        ModelFileError: Not a file, or not a readable model file.
    """
    if not Path(path).is_file():
        raise ModelFileError(f"--split-from {path} is not a file.",
                             "Give the model file whose split to keep (e.g. the last model "
                             "of the models folder), or leave out --split-from.")
    return read_meta(path)


def previous_split(meta: ModelMeta | None, path: str | None, cfg: SplitConfig,
                   rep: Reporter) -> dict[str, int] | None:
    """Region key -> split index recorded in the previous model, when this run can keep it.

    Not kept (None, said in the log) for k-fold runs, models without a split record, or
    another split mode or block size.
    """
    if meta is None or cfg.k_folds:
        return None
    name = Path(str(path)).name
    rec = meta.split
    if rec is None:
        rep.log(f"{name} records no split (written before TerraSeg kept splits): the "
                "regions are split afresh", "warning")
        return None
    if rec.mode != cfg.mode or (cfg.mode == "blocks" and rec.split_block_px != cfg.split_block_px):
        rep.log(f"{name} was split by {rec.mode} (block {rec.split_block_px} px), this run by "
                f"{cfg.mode} (block {cfg.split_block_px} px): the regions are split afresh",
                "warning")
        return None
    return rec.split_of_key()


def compare_previous(path: str, meta: ModelMeta, evaluation: dict[str, Any],
                     datasets: dict[str, Any], classes: tuple[ClassInfo, ...], model: str,
                     arch_params: dict[str, Any], channel_names: tuple[str, ...],
                     stats: BandStats, rep: Reporter) -> dict[str, Any] | None:
    """The previous model's metrics on this run's held-out pixels, next to the new ones.

    Returns:
        ``model``, ``metrics`` (split -> metrics, the shape of the new ones), ``pixels``
        (split -> pixels evaluated) and ``better`` (split -> ``new``/``previous``/``equal``);
        None when the previous model cannot run on these samples (logged).
    """
    name = Path(path).name
    why = previous_mismatch(meta, model, arch_params, channel_names, stats, classes)
    if why is not None:
        rep.log(f"previous model {name} not compared on the same pixels: {why}", "warning")
        return None
    old = evaluate_previous(load_model(path).network, meta, datasets, classes)
    for split, m in old.items():
        rep.log(comparison_line(split, evaluation[split], m, name))
    return {"model": path, "metrics": old,
            "pixels": {s: m["n_samples"] for s, m in old.items()},
            "better": {s: better_model(evaluation[s], m) for s, m in old.items()}}


def check_init_compatible(meta: ModelMeta, opts: TrainOptions, params: dict[str, Any],
                          classes: tuple[ClassInfo, ...]) -> dict[str, Any]:
    """Fine-tuning keeps the initial model's architecture; refuse different bands/classes.

    Returns:
        The initial model's network parameters.

    Raises:
        ModelFileError: Another architecture, band count or classes.
    """
    arch = meta.architecture
    if arch.name != opts.network.model:
        raise ModelFileError(
            f"--init-model is a '{arch.name}' model, not '{opts.network.model}'.",
            f"Pass --model {arch.name} or train from scratch.")
    if arch.in_channels != params["in_channels"]:
        raise ModelFileError(
            f"--init-model was trained on {arch.in_channels} bands; this raster "
            f"mapping has {params['in_channels']}.", "Map the same bands or train from scratch.")
    if arch.num_classes != len(classes):
        raise ModelFileError("--init-model has other classes than these labels.",
                             "Use the same classes or train from scratch.")
    return dict(arch.params)
