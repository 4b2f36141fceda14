"""Pretrain a ResNet encoder: the job behind ``terraseg pretrain``.

``--task ssl`` (here) pretrains self-supervised on the rasters' own pixels with SimCLR
(training/ssl.py) from random tiles streamed by windowed reads (training/tile_stream.py);
``--task classify`` trains a patch classifier on labels (training/pretrain_classify.py).
Both write an encoder file (core/encoder_file.py) that ``terraseg train --encoder FILE``
starts an encoder-decoder network from. Options and defaults: protocol/pretrain_options.py.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L  # noqa: N812
import torch
from torch.utils.data import DataLoader

from terraseg.core.encoder_file import EncoderMeta, Pretraining, save_encoder
from terraseg.core.models.resnet_encoder import ResNetEncoder
from terraseg.core.output_targets import check_output_targets
from terraseg.core.reporting import ConsoleReporter, Reporter
from terraseg.protocol.errors import ConfigError, RasterError
from terraseg.protocol.pretrain_options import PretrainOptions
from terraseg.training.callbacks import ReporterCallback
from terraseg.training.device import describe_device
from terraseg.training.inputs import parse_devices
from terraseg.training.ssl import SimCLRTask
from terraseg.training.tile_stream import TileSpec, TileStream, combined_stats, open_sources


class LossHistory(L.Callback):
    """Keeps each epoch's mean loss and pair accuracy (rank zero)."""

    def __init__(self) -> None:
        self.loss: list[float] = []
        self.pair_accuracy: list[float] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Record the epoch's figures."""
        m = trainer.callback_metrics
        if "loss" in m:
            self.loss.append(round(float(m["loss"]), 5))
        if "pair_accuracy" in m:
            self.pair_accuracy.append(round(float(m["pair_accuracy"]), 4))


def run_pretrain(opts: PretrainOptions, reporter: Reporter | None = None) -> dict[str, Any]:
    """Pretrain an encoder and write its encoder file; returns the result summary.

    Returns:
        ``encoder_file``, ``task``, ``method``, ``epochs``, ``loss`` (final epoch's),
        ``device``, ``seconds`` (fitting), and for ``ssl`` ``loss_curve`` (per epoch) and
        ``pair_accuracy``.

    Raises:
        TerraSegError: Bad options, unreadable rasters, an existing output without
            ``overwrite``; before any training.
    """
    rep = reporter or ConsoleReporter()
    opts = opts.validate()
    check_output_targets([opts.out], opts.overwrite, "--out")
    if opts.task == "classify":
        try:
            from terraseg.training.pretrain_classify import run_classify_pretrain
        except ModuleNotFoundError as exc:
            if exc.name != "terraseg.training.pretrain_classify":
                raise
            raise ConfigError("--task classify is not available in this TerraSeg.",
                              "Use --task ssl, or update TerraSeg.") from None
        return run_classify_pretrain(opts, rep)
    return run_ssl_pretrain(opts, rep)


def check_rasters(opts: PretrainOptions) -> tuple[tuple[str, ...], tuple[float, float]]:
    """The rasters exist and map the same bands; returns the band names and pixel size.

    Raises:
        RasterError: A missing or unreadable raster, or rasters with other bands.
    """
    for path in opts.rasters:
        if not Path(path).exists():
            raise RasterError(f"--raster {path} does not exist.",
                              "Give the path of a raster GDAL reads (e.g. a GeoTIFF).")
    sources = open_sources(opts.rasters, opts.bands, opts.nodata)
    try:
        names = tuple(sources[0].bands.names)
        for path, s in zip(opts.rasters[1:], sources[1:], strict=True):
            if tuple(s.bands.names) != names:
                raise RasterError(
                    f"--raster {path} maps bands {list(s.bands.names)}, the first raster "
                    f"{list(names)}.", "Pretrain on rasters with the same bands (map them "
                    "with --bands), or pretrain one encoder per sensor.")
        return names, sources[0].grid.pixel_size
    finally:
        for s in sources:
            s.close()


def run_ssl_pretrain(opts: PretrainOptions, rep: Reporter) -> dict[str, Any]:
    """Self-supervised pretraining (SimCLR) on random tiles of the rasters."""
    names, pixel_size = check_rasters(opts)
    L.seed_everything(opts.seed, workers=True, verbose=False)
    rep.progress(0.0, "prepare", "band statistics")
    sources = open_sources(opts.rasters, opts.bands, opts.nodata)
    try:
        stats = combined_stats(sources)
        for path, s in zip(opts.rasters, sources, strict=True):
            rep.log(f"raster {path}: {s.grid.width_px}x{s.grid.height_px} px, bands "
                    f"{list(names)}, pixel size {s.grid.pixel_size}")
    finally:
        for s in sources:
            s.close()
    batches = max(1, opts.samples_per_epoch // opts.batch_size)
    spec = TileSpec(tuple(opts.rasters), opts.bands, opts.nodata, opts.tile_px,
                    opts.batch_size, batches, opts.max_nodata, opts.seed)
    encoder = ResNetEncoder(opts.encoder, len(names), opts.width)
    task = SimCLRTask(encoder, encoder.out_channels[-1], opts.projection_dim,
                      opts.temperature, opts.lr, opts.weight_decay, opts.epochs)
    rep.log(f"SimCLR: {opts.encoder} (base width {opts.width}, "
            f"{sum(p.numel() for p in encoder.parameters()):,} parameters), "
            f"{batches} batch(es) of {opts.batch_size} tiles of {opts.tile_px} px per epoch, "
            f"temperature {opts.temperature:g}")
    history = LossHistory()
    trainer = L.Trainer(
        max_epochs=opts.epochs, accelerator=opts.accelerator,
        devices=parse_devices(opts.devices), num_nodes=opts.num_nodes,
        strategy=opts.strategy, precision=opts.precision,  # type: ignore[arg-type]
        sync_batchnorm=True, callbacks=[ReporterCallback(rep, opts.epochs), history],
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(Path(opts.out).parent),
    )
    device = describe_device(trainer)
    rep.log(f"pretraining on {device['description']}")
    loader = DataLoader(TileStream(spec, stats), batch_size=None,
                        num_workers=opts.num_workers,
                        persistent_workers=False, pin_memory=device["type"] == "cuda")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*number of training batches.*")
        warnings.filterwarnings("ignore", ".*IterableDataset. has .__len__. defined.*")
        start = time.perf_counter()
        trainer.fit(task, loader)
        seconds = time.perf_counter() - start
    rep.check_cancelled()
    if not trainer.is_global_zero:
        return {}
    epochs = trainer.current_epoch
    final = history.loss[-1] if history.loss else float("nan")
    metrics = {"loss": final, "loss_curve": history.loss,
               "pair_accuracy": history.pair_accuracy[-1] if history.pair_accuracy else None,
               "seconds": round(seconds, 1)}
    meta = EncoderMeta(
        encoder=opts.encoder, in_channels=len(names), base_width=opts.width,
        band_names=names, mean=stats.mean, std=stats.std, pixel_size=pixel_size,
        pretraining=Pretraining(
            method=opts.method, rasters=tuple(str(Path(r).resolve()) for r in opts.rasters),
            epochs=epochs, samples=batches * opts.batch_size, metrics=metrics,
            options=opts.to_dict()))
    save_encoder(opts.out, task.encoder.to(torch.device("cpu")), meta)
    rep.log(f"SimCLR loss {history.loss[0] if history.loss else final:.4f} (epoch 1) -> "
            f"{final:.4f} (epoch {epochs}); encoder written to {opts.out}")
    rep.progress(1.0, "train", "done")
    return {"encoder_file": str(opts.out), "task": opts.task, "method": opts.method,
            "epochs": epochs, "loss": final, "loss_curve": history.loss,
            "pair_accuracy": metrics["pair_accuracy"], "device": device,
            "seconds": round(seconds, 1)}
