"""Pretraining options (``terraseg pretrain``): the one place their defaults live.

:class:`PretrainOptions` is one frozen dataclass whose fields carry their command-line flag,
help and bounds like the training options (protocol/options.py's :func:`opt`); the command
line (cli/commands_pretrain.py) is built from :func:`pretrain_specs`, and worker jobs name
options by the flag with underscores (``tile_size`` for ``--tile-size``). Two tasks share
them: ``ssl`` (self-supervised, training/ssl.py) reads only the rasters; ``classify``
(a patch classifier, training/pretrain_classify.py) also reads labels. Standard library only.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from dataclasses import dataclass
from typing import Any, Literal

from terraseg.protocol.errors import ConfigError
from terraseg.protocol.model_meta import MAX_WINDOW_PX
from terraseg.protocol.options import PRECISIONS, OptionSpec, check_devices, check_value, opt

PretrainTask = Literal["ssl", "classify"]
EncoderName = Literal["resnet18", "resnet34", "resnet50"]
SslMethod = Literal["simclr"]
LabelMode = Literal["multi", "single"]

#: Options that only ``--task classify`` reads (refused with ``--task ssl``).
CLASSIFY_ONLY = ("labels", "class_field", "class_map", "hierarchy")


@dataclass(frozen=True)
class PretrainOptions:
    """Everything a pretraining run needs.

    Attributes:
        rasters: Rasters to pretrain on (``--raster``, repeat); same bands in each.
        out: Encoder file to write (``.tse``).
        overwrite: Replace an existing ``out``.
        task: ``ssl`` (self-supervised on the rasters' pixels) or ``classify`` (a patch
            classifier trained on ``labels``).
        encoder: ResNet encoder to pretrain.
        base_width: Stem width of the encoder (0 = 64, the standard ResNet).
        bands: Band mapping as train's ``--bands`` (None = every band).
        nodata: Nodata value replacing the rasters' own.
        method: Self-supervised method (``simclr``).
        tile_px: Side of the tiles read for ``ssl`` (both views are cropped from it).
        temperature: NT-Xent temperature (``ssl``).
        projection_dim: Output width of the projection head (``ssl``).
        max_nodata: Largest share of nodata pixels a tile may hold (else it is skipped).
        epochs, batch_size, samples_per_epoch, lr, weight_decay, seed: Optimisation.
        accelerator, devices, num_nodes, strategy, precision, num_workers: Lightning, as
            train's RuntimeOptions.
        cache_dir: Zarr cache folder (``classify``; ``ssl`` reads windows from the raster).
        labels, class_field, class_map: Labels of ``classify`` (as train's).
        hierarchy: Hierarchy file or ``corine`` (``classify``: classes at ``level``).
        level: Hierarchy level of the classes (0 = the finest, the labels' own).
        label_mode: ``multi`` (every class present in a patch) or ``single`` (the majority).
        patch_px: Side of the classification patches.
    """

    rasters: tuple[str, ...] = opt((), "raster to pretrain on (unlabelled pixels; repeat for "
                                       "several rasters with the same bands)",
                                   flag="raster", required=True, repeat=True)
    out: str = opt("", "encoder file to write (.tse)", required=True)
    overwrite: bool = opt(False, "replace an existing --out")
    task: PretrainTask = opt("ssl", "ssl: self-supervised on the rasters' pixels; classify: a "
                                    "patch classifier trained on --labels")
    encoder: EncoderName = opt("resnet18", "ResNet encoder to pretrain (use the same in train's "
                                           "--model, e.g. unet_resnet18)")
    base_width: int = opt(0, "encoder stem width (0 = 64, the standard ResNet; train with the "
                             "same --base-width)", minimum=0)
    bands: str | None = opt(None, "bands feeding the encoder: 1,2,3,4 or red=1,green=2,... "
                                  "(default: every band)")
    nodata: float | None = opt(None, "nodata value replacing the rasters' own")
    method: SslMethod = opt("simclr", "self-supervised method (--task ssl)")
    tile_px: int = opt(64, "--task ssl: side of the tiles read at random (views are cropped "
                           "from them and resized back)", flag="tile-size", minimum=32,
                       maximum=MAX_WINDOW_PX)
    temperature: float = opt(0.5, "--task ssl: NT-Xent temperature", above=0.0, maximum=10.0)
    projection_dim: int = opt(128, "--task ssl: output width of the projection head",
                              minimum=8)
    max_nodata: float = opt(0.5, "largest share of nodata pixels a tile or patch may hold",
                            minimum=0.0, below=1.0)
    epochs: int = opt(50, "epochs", minimum=1)
    batch_size: int = opt(64, "batch size (--task ssl: pairs of views; each pair's negatives "
                              "are the others, so larger is better)", minimum=2)
    samples_per_epoch: int = opt(2048, "tiles (ssl) or patches (classify) per epoch",
                                 minimum=1)
    lr: float = opt(1e-3, "learning rate (AdamW, cosine schedule)", above=0.0)
    weight_decay: float = opt(1e-4, "weight decay", minimum=0.0)
    seed: int = opt(0, "random seed (tiles, augmentations, initial weights)", minimum=0,
                    maximum=2**32 - 1)
    accelerator: str = opt("auto", "Lightning: auto, cpu, gpu, ...")
    devices: str = opt("auto", "Lightning: number or list of devices")
    num_nodes: int = opt(1, "Lightning: nodes (Slurm)", minimum=1)
    strategy: str = opt("auto", "Lightning: auto, ddp, fsdp, ...")
    precision: str = opt("32-true", "Lightning: 32-true, bf16-mixed (GPUs)")
    num_workers: int = opt(0, "data loader processes", minimum=0)
    cache_dir: str | None = opt(None, "Zarr cache folder (default ~/.cache/terraseg)")
    labels: str | None = opt(None, "--task classify: vector labels or a label raster")
    class_field: str | None = opt(None, "--task classify: class attribute of vector labels")
    class_map: str | None = opt(None, "--task classify: merge source classes, e.g. "
                                      "111=urban,112=urban,*=other")
    hierarchy: str | None = opt(None, "--task classify: hierarchy CSV or 'corine'; classes "
                                      "are taken at --level")
    level: int = opt(0, "--task classify: hierarchy level of the classes (0 = the finest, "
                        "the labels' own)", minimum=0)
    label_mode: LabelMode = opt("multi", "--task classify: multi (every class in a patch) or "
                                         "single (its majority class)")
    patch_px: int = opt(64, "--task classify: side of the classification patches",
                        flag="patch-size", minimum=32, maximum=MAX_WINDOW_PX)

    @property
    def width(self) -> int:
        """The encoder's stem width (``base_width``, 0 meaning 64)."""
        return self.base_width or 64

    def replace(self, **changes: Any) -> PretrainOptions:
        """A copy with options changed by field name."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every option by field name (JSON-ready; recorded in the encoder file)."""
        d = dataclasses.asdict(self)
        d["rasters"] = list(self.rasters)
        return d

    def validate(self) -> PretrainOptions:
        """Refuse values no run can use, before any work; returns the options unchanged.

        Raises:
            ConfigError: Naming the option's flag and how to fix the value.
        """
        for spec in pretrain_specs():
            check_value(spec, getattr(self, spec.name))
        if not self.rasters or any(not r.strip() for r in self.rasters):
            raise ConfigError("No raster to pretrain on.",
                              "Give one or more --raster FILE (unlabelled pixels will do).")
        if not self.out.strip() or self.out.endswith(("/", os.sep)):
            what = "is empty" if not self.out.strip() else "names a folder"
            raise ConfigError(f"--out '{self.out}' {what}; it must name the encoder file to "
                              "write.", "Give a file name, e.g. --out encoders/scene.tse.")
        if self.task == "classify" and not self.labels:
            raise ConfigError("--task classify needs labels to train the classifier on.",
                              "Add --labels FILE (polygons or a label raster, e.g. CORINE), "
                              "or use --task ssl to pretrain on the pixels alone.")
        if self.task == "ssl":
            given = [f"--{n.replace('_', '-')}" for n in CLASSIFY_ONLY if getattr(self, n)]
            if given or self.level:
                given += ["--level"] if self.level else []
                verb = "is" if len(given) == 1 else "are"
                raise ConfigError(f"{', '.join(given)} {verb} for --task classify only.",
                                  "Add --task classify to pretrain a classifier on the labels, "
                                  "or leave them out for self-supervised pretraining.")
        if self.level and not self.hierarchy:
            raise ConfigError(f"--level {self.level} needs a class hierarchy.",
                              "Add --hierarchy FILE (or corine), or leave out --level.")
        check_devices(self.devices)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision '{self.precision}' is not a precision Lightning "
                              "knows.", f"Use one of: {', '.join(PRECISIONS)}.")
        return self


def pretrain_specs() -> list[OptionSpec]:
    """Every pretraining option in declaration order (section ``pretrain``)."""
    hints = typing.get_type_hints(PretrainOptions, vars(sys.modules[__name__]))
    specs = []
    for f in dataclasses.fields(PretrainOptions):
        m = f.metadata
        specs.append(OptionSpec("pretrain", f.name, m["flag"] or f.name.replace("_", "-"),
                                f.default, hints[f.name], m["help"], m["minimum"], m["cli"],
                                m["required"], m["repeat"], m["maximum"], m["above"],
                                m["below"]))
    return specs


PRETRAIN_SPEC_BY_JOB_KEY = {s.job_key: s for s in pretrain_specs()}
