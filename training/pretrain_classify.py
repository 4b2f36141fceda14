"""Pretraining by classification: a patch classifier on coarse labels, kept as an encoder.

Seed 004's path: a ResNet trained as a multi-label classifier of image patches (CORINE
labels) becomes the encoder of a segmentation network. ``terraseg pretrain --task
classify`` does it on the analyst's rasters and labels:

- **labels**: polygons or a label raster on any grid (a CORINE-coded map, ...), loaded onto
  each raster's grid by core/labels.load_labels; with ``--hierarchy``/``--level`` the
  classes are that level's groups (core/hierarchy.level_lookup). Labels on nodata pixels
  are dropped.
- **samples**: square patches (``--patch-size``) with at least :data:`MIN_LABELLED_SHARE`
  of their pixels labelled and at most ``--max-nodata`` nodata. The **multi-label** target
  is every class holding at least :data:`MIN_CLASS_SHARE` of the patch's labelled pixels,
  plus its majority class (so no patch has an empty set); the **single-label** target is
  the majority class.
- **hold-out**: the rasters are cut into blocks of ``BLOCK_PATCHES x BLOCK_PATCHES`` patches
  (a strip narrower than a block at the right and bottom edges is not used);
  :data:`VAL_FRACTION` of the blocks with labels are held out. Training patches lie wholly
  inside training blocks (random positions on a quarter-patch lattice, random flips and
  quarter turns), held-out patches inside held-out blocks (half-patch steps), so no
  held-out metric is scored on pixels the classifier trained on.
- **network**: core/models/resnet_encoder.ResNetEncoder + global average pooling + a linear
  head; BCE-with-logits (multi) or cross-entropy (single); AdamW with a cosine schedule;
  Lightning with the runtime options; the last epoch's weights are kept (the held-out
  patches choose nothing, so their scores are not biased by a choice).
- **output**: the encoder saved with core/encoder_file.save_encoder; its provenance records
  the classes and the held-out metrics (core/multilabel_metrics.py: exact match, partial,
  incorrect, F1, cardinality, ... as in seed 004's Table 3; predicted set = probability
  >= 0.5).

Image windows are read through the Zarr cache (training/cache.ImageCache), one block at a
time; only the label arrays are held for whole rasters (as training does).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L  # noqa: N812
import numpy as np
import torch
from rasterio.windows import Window
from torch import nn
from torch.utils.data import DataLoader, Dataset

from terraseg.core.classes import ClassInfo, ClassMapping, make_classes
from terraseg.core.encoder_file import EncoderMeta, Pretraining, save_encoder
from terraseg.core.hierarchy import check_level, level_lookup, load_hierarchy
from terraseg.core.labels import load_labels
from terraseg.core.layer_spec import split_layer_spec
from terraseg.core.model_input import assemble_source
from terraseg.core.models.resnet_encoder import ResNetEncoder
from terraseg.core.multilabel_metrics import multilabel_metrics, one_hot
from terraseg.core.normalise import BandStats, compute_band_stats, normalise
from terraseg.core.output_targets import check_output_targets
from terraseg.core.raster import RasterSource
from terraseg.core.reporting import ConsoleReporter, Reporter
from terraseg.protocol.errors import ConfigError, LabelError
from terraseg.protocol.pretrain_options import PretrainOptions
from terraseg.training.cache import ImageCache
from terraseg.training.callbacks import ReporterCallback
from terraseg.training.device import describe_device
from terraseg.training.inputs import parse_devices

#: A class is in a patch's label set from this share of its labelled pixels on.
MIN_CLASS_SHARE = 0.05
#: Patches with fewer labelled pixels than this share are not sampled.
MIN_LABELLED_SHARE = 0.1
#: Hold-out blocks are this many patches a side.
BLOCK_PATCHES = 2
#: Share of the blocks with labels held out for the metrics.
VAL_FRACTION = 0.2
#: Predicted label set: classes with probability >= this.
THRESHOLD = 0.5
#: Image blocks kept in memory up to this many bytes (beyond: read from the cache).
MEMORY_BYTES = 1 << 30


class PatchClassifier(nn.Module):
    """ResNet encoder, global average pooling and a linear head.

    Shape:
        x: (N, C, P, P) -> logits (N, K).
    """

    def __init__(self, encoder: ResNetEncoder, n_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_channels[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.head(self.encoder(x)[-1].mean(dim=(2, 3)))


@dataclass(frozen=True)
class Patch:
    """One sample: raster index, window origin (row, col) and its label-set target."""

    raster: int
    row: int
    col: int
    target: np.ndarray  # float32 (K,) 0/1 (multi) or the class index as a 0-d int64


def patch_target(labels: np.ndarray, n_classes: int, mode: str) -> np.ndarray | None:
    """The label-set target of a patch's labels (None when too few are labelled).

    Multi: classes with >= MIN_CLASS_SHARE of the labelled pixels, plus the majority.
    Single: the majority class index.

    Shape:
        labels: (P, P) class ids (0 = none) -> (K,) float32 or () int64.
    """
    counts = np.bincount(labels.ravel(), minlength=n_classes + 1)[1:n_classes + 1]
    total = int(counts.sum())
    if total < MIN_LABELLED_SHARE * labels.size:
        return None
    major = int(counts.argmax())
    if mode == "single":
        return np.array(major, dtype=np.int64)
    target = (counts >= MIN_CLASS_SHARE * total).astype(np.float32)
    target[major] = 1.0
    return target


class ClassifyDataset(Dataset):
    """Normalised image patches and targets, read block by block from the caches.

    Args:
        patches: The samples.
        blocks: (raster, block row, block col) -> normalised block (C, S, S), filled lazily
            while under :data:`MEMORY_BYTES`.
        caches, stats: Per raster: the image cache; the shared normalisation.
        patch_px, block_px: Patch and block sides.
        length: Samples per epoch (drawn at random with augmentation), or None for every
            patch once, as it is (held-out patches).
        seed: Seed of the draws.
    """

    def __init__(self, patches: list[Patch], caches: list[ImageCache], stats: BandStats,
                 patch_px: int, block_px: int, length: int | None = None, seed: int = 0) -> None:
        self.patches, self.caches, self.stats = patches, caches, stats
        self.patch_px, self.block_px = patch_px, block_px
        self.length, self.seed, self.epoch = length, seed, 0
        self._blocks: dict[tuple[int, int, int], np.ndarray] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return self.length if self.length is not None else len(self.patches)

    def image(self, p: Patch) -> np.ndarray:
        """The normalised patch. Shape: (C, P, P)."""
        s = self.block_px
        key = (p.raster, p.row // s, p.col // s)
        block = self._blocks.get(key)
        if block is None:
            data, valid = self.caches[p.raster].read(Window(key[2] * s, key[1] * s, s, s))
            block = normalise(data, valid, self.stats)
            if self._bytes + block.nbytes <= MEMORY_BYTES:
                self._blocks[key] = block
                self._bytes += block.nbytes
        r, c = p.row - key[1] * s, p.col - key[2] * s
        return block[:, r:r + self.patch_px, c:c + self.patch_px]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.length is None:
            p = self.patches[i]
            return torch.from_numpy(np.ascontiguousarray(self.image(p))), torch.from_numpy(
                p.target)
        rng = np.random.default_rng((self.seed, self.epoch, i))
        p = self.patches[int(rng.integers(len(self.patches)))]
        x = np.rot90(self.image(p), int(rng.integers(4)), axes=(1, 2))
        if rng.integers(2):
            x = x[:, :, ::-1]
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(p.target)


class ClassifyTask(L.LightningModule):
    """Lightning wrapper: BCE-with-logits (multi) or cross-entropy (single), AdamW, cosine."""

    def __init__(self, network: PatchClassifier, mode: str, lr: float, weight_decay: float,
                 max_epochs: int) -> None:
        super().__init__()
        self.network, self.mode = network, mode
        self.lr, self.weight_decay, self.max_epochs = lr, weight_decay, max_epochs
        self.loss_fn: nn.Module = (nn.BCEWithLogitsLoss() if mode == "multi"
                                   else nn.CrossEntropyLoss())

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        loss = self.loss_fn(self.network(x), y)
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=len(x),
                 sync_dist=True)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _i: int) -> torch.Tensor:
        """Training step."""
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _i: int) -> None:
        """Held-out loss."""
        self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        """AdamW with a cosine schedule over the epochs."""
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.max_epochs))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


def load_class_labels(opts: PretrainOptions, sources: list[RasterSource], rep: Reporter
                      ) -> tuple[list[np.ndarray], tuple[ClassInfo, ...]]:
    """Labels on every raster's grid with one class numbering (at ``--level``).

    Raises:
        LabelError: No labels on any raster, or fewer than two classes.
        ConfigError: A class the hierarchy lacks, or a level it does not have.
    """
    arrays, names = [], []
    for src in sources:
        try:
            ls = load_labels(str(opts.labels), src.grid, class_field=opts.class_field,
                             class_map=ClassMapping.parse(opts.class_map),
                             require_two_classes=False)
        except LabelError as exc:
            if len(sources) == 1:
                raise
            rep.log(f"no labels on {Path(src.path).name}: {exc.message}", "warning")
            continue
        for c in ls.classes:
            if c.name not in names:
                names.append(c.name)
        lut = np.array([0] + [names.index(c.name) + 1 for c in ls.classes], dtype=np.uint8)
        arrays.append((src, lut[ls.labels]))
    if not arrays:
        raise LabelError(f"--labels {opts.labels} labels none of the rasters.",
                         "Give labels that overlap the --raster files.")
    classes = make_classes(names)
    if opts.hierarchy:
        hierarchy = load_hierarchy(opts.hierarchy)
        level = opts.level or len(hierarchy.levels)
        check_level(hierarchy, classes, level)
        lut, classes = level_lookup(hierarchy, classes, level - 1)
        arrays = [(s, lut[a].astype(np.uint8)) for s, a in arrays]
        rep.log(f"classes at {hierarchy.levels[level - 1]} of {Path(hierarchy.path).name}: "
                f"{[c.name for c in classes]}")
    if len(classes) < 2:
        raise LabelError(f"--labels {opts.labels} hold a single class ({classes[0].name}).",
                         "A classifier needs two classes or more: use labels with more "
                         "classes, or a finer --level.")
    by_path = {s.path: a for s, a in arrays}
    return [by_path.get(s.path, np.zeros((s.grid.height_px, s.grid.width_px), np.uint8))
            for s in sources], classes


def index_patches(caches: list[ImageCache], labels: list[np.ndarray], n_classes: int,
                  opts: PretrainOptions, rep: Reporter) -> tuple[list[Patch], list[Patch]]:
    """Training and held-out patches, split by blocks (see the module docstring).

    Reads each block with labels once (its valid mask drops labels on nodata).

    Raises:
        LabelError: Fewer than two blocks with usable patches.
    """
    p = opts.patch_px
    s = p * BLOCK_PATCHES
    found: list[tuple[int, list[Patch], list[Patch]]] = []
    blocks = [(i, r, c) for i, lab in enumerate(labels)
              for r in range(0, lab.shape[0] - s + 1, s)
              for c in range(0, lab.shape[1] - s + 1, s) if lab[r:r + s, c:c + s].any()]
    for n, (i, r0, c0) in enumerate(blocks):
        if n % 64 == 0:
            rep.progress(n / max(1, len(blocks)), "prepare", "indexing patches")
        cache = caches[i]
        cache.ensure(Window(c0, r0, s, s))
        _, valid = cache.read(Window(c0, r0, s, s))
        lab = np.where(valid, labels[i][r0:r0 + s, c0:c0 + s], 0)
        sets: list[list[Patch]] = [[], []]
        for k, step in enumerate((max(1, p // 4), max(1, p // 2))):  # train, held-out lattices
            for r in range(0, s - p + 1, step):
                for c in range(0, s - p + 1, step):
                    if 1.0 - valid[r:r + p, c:c + p].mean() > opts.max_nodata:
                        continue
                    t = patch_target(lab[r:r + p, c:c + p], n_classes, opts.label_mode)
                    if t is not None:
                        sets[k].append(Patch(i, r0 + r, c0 + c, t))
        if sets[0] and sets[1]:
            found.append((n, sets[0], sets[1]))
    if len(found) < 2:
        raise LabelError(
            f"The labels give usable {p}-px patches in {len(found)} block(s) of {s} px; "
            "two or more are needed to hold some out.",
            "Use a smaller --patch-size, label more of the raster, or check --max-nodata.")
    order = np.random.default_rng(opts.seed).permutation(len(found))
    n_val = max(1, round(VAL_FRACTION * len(found)))
    val_ids = set(order[:n_val].tolist())
    train = [q for j, (_, t, _) in enumerate(found) if j not in val_ids for q in t]
    val = [q for j, (_, _, v) in enumerate(found) if j in val_ids for q in v]
    rep.log(f"{len(found)} block(s) of {s} px with labels: {len(found) - n_val} for training "
            f"({len(train)} patch positions), {n_val} held out ({len(val)} patches)")
    return train, val


def pooled_stats(sources: list[RasterSource]) -> BandStats:
    """Normalisation over every raster (equal weight per raster)."""
    stats = [compute_band_stats(s) for s in sources]
    mean = np.mean([st.mean for st in stats], axis=0)
    second = np.mean([np.square(st.std) + np.square(st.mean) for st in stats], axis=0)
    std = np.sqrt(np.maximum(second - mean**2, 1e-12))
    return BandStats(tuple(float(v) for v in mean), tuple(float(v) for v in std))


def predict_sets(network: nn.Module, loader: DataLoader, mode: str, n_classes: int,
                 device: torch.device) -> tuple[np.ndarray, np.ndarray, float]:
    """True and predicted label sets of the held-out patches, and their mean loss.

    Shape:
        returns (N, K) bool, (N, K) bool, scalar.
    """
    network.eval().to(device)
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum") if mode == "multi" else nn.CrossEntropyLoss(
        reduction="sum")
    truth, pred, total = [], [], 0.0
    with torch.no_grad():
        for x, y in loader:
            logits = network(x.to(device)).float().cpu()
            total += float(loss_fn(logits, y))
            if mode == "multi":
                truth.append(y.numpy() > 0.5)
                pred.append(torch.sigmoid(logits).numpy() >= THRESHOLD)
            else:
                truth.append(one_hot(y.numpy(), n_classes))
                pred.append(one_hot(logits.argmax(1).numpy(), n_classes))
    n = sum(len(t) for t in truth)
    return np.concatenate(truth), np.concatenate(pred), total / max(1, n) / (
        n_classes if mode == "multi" else 1)


def prior_baseline(train: list[Patch], truth: np.ndarray, mode: str) -> dict[str, float]:
    """Scores of one constant prediction for every held-out patch, learnt from the priors.

    Multi-label: the classes in at least half the training patches (else the most frequent
    one); single-label: the most frequent class. A classifier worth keeping beats it.

    Shape:
        truth: (N, K) bool.
    """
    k = truth.shape[1]
    if mode == "multi":
        share = np.mean([q.target for q in train], axis=0)
        const = share >= 0.5
        if not const.any():
            const[share.argmax()] = True
    else:
        const = one_hot(np.array([np.bincount([int(q.target) for q in train],
                                              minlength=k).argmax()]), k)[0]
    m = multilabel_metrics(truth, np.broadcast_to(const, truth.shape))
    return {key: getattr(m, key) for key in ("exact_match", "hamming_loss", "f1_examples",
                                              "f1_micro", "f1_macro")}


def _labels_path(labels: str) -> str:
    file_path, _ = split_layer_spec(labels)
    return labels.replace(file_path, str(Path(file_path).resolve()), 1)


def run_classify_pretrain(opts: PretrainOptions, reporter: Reporter | None = None
                          ) -> dict[str, Any]:
    """Train a patch classifier on ``opts.labels`` and save its encoder (``opts.out``).

    Returns:
        ``encoder_file``, ``task``, ``method``, ``epochs``, ``loss`` (held-out, of the
        last epoch), ``train_loss``, ``metrics`` (held-out multi-label metrics),
        ``baseline`` (the same for a constant prediction, :func:`prior_baseline`),
        ``classes``, ``label_mode``, ``device``, ``seconds``; empty on non-zero ranks of a
        multi-GPU run.

    Raises:
        TerraSegError: Bad options, rasters or labels, before training starts.
    """
    start = time.perf_counter()
    rep = reporter or ConsoleReporter()
    opts = opts.validate()
    if opts.task != "classify":
        raise ConfigError(f"--task {opts.task} is not a classification pretraining.",
                          "Use --task classify with --labels.")
    out = Path(opts.out)
    check_output_targets([out], opts.overwrite, "--out")
    L.seed_everything(opts.seed, workers=True, verbose=False)
    rep.progress(0.0, "prepare", "reading rasters and labels")
    sources = [assemble_source(r, opts.bands, (), None, nodata=opts.nodata)[1]
               for r in opts.rasters]
    try:
        names = tuple(sources[0].bands.names)
        for path, src in zip(opts.rasters[1:], sources[1:], strict=True):
            if tuple(src.bands.names) != names:
                raise ConfigError(f"--raster {path} maps bands {list(src.bands.names)}, the "
                                  f"first raster {list(names)}.",
                                  "Pretrain on rasters with the same bands (map them with "
                                  "--bands), or pretrain one encoder per sensor.")
        return _classify(opts, sources, rep, start)
    finally:
        for src in sources:
            src.close()


def _classify(opts: PretrainOptions, sources: list[RasterSource], rep: Reporter,
              start: float) -> dict[str, Any]:
    """The run of :func:`run_classify_pretrain` once its rasters are open."""
    out = Path(opts.out)
    labels, classes = load_class_labels(opts, sources, rep)
    caches = [ImageCache(s, opts.cache_dir, rep.log) for s in sources]
    k, mode = len(classes), opts.label_mode
    train, val = index_patches(caches, labels, k, opts, rep)
    if mode == "multi":
        card = float(np.mean([q.target.sum() for q in val]))
        rep.log(f"held-out label cardinality {card:.2f}, density {card / k:.3f} ({k} classes)")
    stats = pooled_stats(sources)
    s = opts.patch_px * BLOCK_PATCHES
    train_ds = ClassifyDataset(train, caches, stats, opts.patch_px, s,
                               length=opts.samples_per_epoch, seed=opts.seed)
    val_ds = ClassifyDataset(val, caches, stats, opts.patch_px, s)
    network = PatchClassifier(ResNetEncoder(opts.encoder, sources[0].count, opts.width), k)
    task = ClassifyTask(network, mode, opts.lr, opts.weight_decay, opts.epochs)
    trainer = L.Trainer(
        max_epochs=opts.epochs, accelerator=opts.accelerator,
        devices=parse_devices(opts.devices), num_nodes=opts.num_nodes,
        strategy=opts.strategy, precision=opts.precision,  # type: ignore[arg-type]
        callbacks=[ReporterCallback(rep, opts.epochs)], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(out.parent), num_sanity_val_steps=0)
    device = describe_device(trainer)
    rep.log(f"classifier {opts.encoder} ({sum(p.numel() for p in network.parameters()):,} "
            f"parameters), {mode}-label, {k} classes, on {device['description']}")
    loaders = [DataLoader(train_ds, batch_size=opts.batch_size, shuffle=True,
                          num_workers=opts.num_workers, drop_last=len(train_ds) > opts.batch_size),
               DataLoader(val_ds, batch_size=256, num_workers=opts.num_workers)]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*number of training batches.*")
        trainer.fit(task, *loaders)
    rep.check_cancelled()
    if not trainer.is_global_zero:
        return {}
    epochs_run = trainer.current_epoch
    train_loss = float(trainer.callback_metrics.get("train_loss", math.nan))
    names = [c.name for c in classes]
    truth, pred, val_loss = predict_sets(network, loaders[1], mode, k,
                                         trainer.strategy.root_device)
    metrics = multilabel_metrics(truth, pred, names).to_dict()
    rep.log(f"held-out ({metrics['n_samples']} patches): exact match "
            f"{metrics['exact_match']:.3f}, partial {metrics['partial']:.3f}, incorrect "
            f"{metrics['incorrect']:.3f}, F1 examples {metrics['f1_examples']:.3f}, micro "
            f"{metrics['f1_micro']:.3f}, macro {metrics['f1_macro']:.3f}")
    baseline = prior_baseline(train, truth, mode)
    rep.log("a constant prediction from the training priors scores exact match "
            f"{baseline['exact_match']:.3f}, F1 examples {baseline['f1_examples']:.3f}, "
            f"micro {baseline['f1_micro']:.3f}")
    pre = Pretraining(method="classify", rasters=tuple(str(Path(r).resolve())
                                                       for r in opts.rasters),
                      epochs=epochs_run, samples=opts.samples_per_epoch,
                      labels=_labels_path(str(opts.labels)), classes=tuple(names),
                      metrics={"val_loss": val_loss, "train_loss": train_loss, **metrics,
                               "baseline": baseline},
                      options=opts.to_dict())
    meta = EncoderMeta(encoder=opts.encoder, in_channels=sources[0].count,
                       base_width=opts.width, band_names=tuple(sources[0].bands.names),
                       mean=stats.mean, std=stats.std, pixel_size=sources[0].grid.pixel_size,
                       pretraining=pre)
    save_encoder(out, network.encoder, meta)
    rep.log(f"encoder written to {out}")
    return {"encoder_file": str(out.resolve()), "task": "classify", "method": "classify",
            "epochs": epochs_run, "loss": val_loss, "train_loss": train_loss,
            "metrics": metrics, "baseline": baseline, "classes": names, "label_mode": mode,
            "device": device,
            "seconds": round(time.perf_counter() - start, 1)}
