"""Training options: the one place their defaults live (standard library only).

:class:`TrainOptions` nests one frozen dataclass per concern (data, network, optimisation,
augmentation, split, runtime). Each field carries its command-line flag, help text and,
where it applies, a minimum; ``Literal`` annotations give the valid choices. The engine's
argparse options (cli/options.py) and the plugin's Processing parameters are both built
from these fields, and jobs name options by the flag (``patch_size`` for ``--patch-size``),
so a default is written once.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

Split = Literal["polygons", "blocks"]
ClassWeighting = Literal["inverse", "sqrt", "none"]
Optimizer = Literal["adamw", "adam"]
LrSchedule = Literal["none", "cosine", "plateau"]


def opt(default: Any, help: str, flag: str = "", minimum: float | None = None,  # noqa: A002
        cli: bool = True, required: bool = False, repeat: bool = False) -> Any:
    """A dataclass field with command-line metadata.

    Args:
        default: The default (the only place it is written).
        help: Help text of the flag and the Processing parameter.
        flag: Command-line flag without dashes (default: the field name with dashes).
        minimum: Smallest valid value (Processing's minValue; checked by the engine).
        cli: False for options set by other commands only (fold numbers).
        required: The flag is required on the command line.
        repeat: The flag may be given several times (a tuple of values).
    """
    meta = {"help": help, "flag": flag, "minimum": minimum, "cli": cli, "required": required,
            "repeat": repeat}
    if isinstance(default, list | dict):
        raise TypeError("use tuples for sequence defaults")
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataOptions:
    """What is read: raster, labels, bands, extra rasters, engineered channels, cache."""

    raster: str = opt("", "any GDAL-readable raster", required=True)
    labels: str = opt("", "vector labels or a label raster", required=True)
    class_field: str | None = opt(None, "class attribute (integer or name) of vector labels")
    class_map: str | None = opt(None, "merge source classes, e.g. developed=sealed,*=unsealed")
    bands: str | None = opt(None, "bands feeding the model: 1,2,3,4 or red=1,green=2,...")
    extra_rasters: tuple[str, ...] = opt(
        (), "extra input on another grid (bilinear onto the image grid); repeat",
        flag="extra-raster", repeat=True)
    dem: str | None = opt(None, "elevation model added as channel 'dem'")
    slope_from_dem: bool = opt(False, "add slope in degrees derived from --dem as channel "
                                      "'slope'")
    features: str = opt("", "engineered channels, e.g. ndvi,ndwi,nbr,ndmi,gray,rgb_minmax,"
                            "gaussian,median,sobel,canny (bands named by role via --bands)")
    all_touched: bool = opt(False, "rasterise all touched pixels")
    cache_dir: str | None = opt(None, "Zarr cache folder (default ~/.cache/terraseg)")


@dataclass(frozen=True)
class NetworkOptions:
    """Which network: registry name and its shape; fine-tuning."""

    model: str = opt("patch_cnn", "architecture (registry name)")
    patch_px: int = opt(51, "input cutout (odd)", flag="patch-size", minimum=3)
    block_px: int = opt(5, "predicted centre block (odd)", flag="block-size", minimum=1)
    stride_px: int = opt(0, "network stride (0 = block size)", flag="stride", minimum=0)
    planes: tuple[int, ...] = opt((4, 8, 16), "channels per stage")
    blocks: tuple[int, ...] = opt((2, 2, 2), "residual blocks per stage")
    tile_px: int = opt(128, "tile networks (unet*): training tile in pixels (multiple of the "
                            "stride)", flag="tile-size", minimum=16)
    base_width: int = opt(0, "tile networks: channels of the first level (0 = the model's "
                             "default)", minimum=0)
    init_model: str | None = opt(None, "fine-tune from this model file")


@dataclass(frozen=True)
class OptimOptions:
    """How the network is fitted: epochs, learning rate, loss, class weights, batches."""

    epochs: int = opt(300, "maximum epochs", minimum=1)
    patience: int = opt(10, "early-stopping patience", minimum=1)
    lr: float = opt(1e-3, "learning rate", minimum=0.0)
    weight_decay: float = opt(1e-2, "weight decay", minimum=0.0)
    batch_size: int = opt(128, "training batch size", minimum=1)
    samples_per_epoch: int = opt(2048, "minimum training cutouts per epoch (blocks are "
                                       "resampled, jittered)", minimum=1)
    optimizer: Optimizer = opt("adamw", "optimiser")
    lr_schedule: LrSchedule = opt("none", "learning-rate schedule")
    loss: str = opt("", "loss spec, e.g. ce, focal+iou, focal:0.7,dice:0.3 (default: the "
                        "model kind's loss: ce for patch models, focal+iou for tile networks)")
    class_weights: ClassWeighting = opt("inverse", "cross-entropy class weighting from "
                                                   "training pixel counts")
    cutmix: float = opt(0.0, "tile networks: probability of cutmix per batch (0 = off)",
                        minimum=0.0)


@dataclass(frozen=True)
class AugmentOptions:
    """On-the-fly augmentation of training samples."""

    augment: str = opt("flip,rotate", "flip,rotate,pixel_noise,channel_noise or none")
    pixel_noise: float = opt(0.05, "pixel noise scale (sd)", minimum=0.0)
    channel_noise: float = opt(0.05, "channel noise scale", minimum=0.0)


@dataclass(frozen=True)
class SplitOptions:
    """The spatial split of labelled pixels into train/val/test (and k folds)."""

    split: Split = opt("polygons", "split unit: labelled regions (polygons) or square blocks")
    val_fraction: float = opt(0.2, "share of regions for validation", minimum=0.0)
    test_fraction: float = opt(0.0, "share of regions for the test split", minimum=0.0)
    split_block_px: int = opt(256, "block size of --split blocks (pixels)",
                              flag="split-block-size", minimum=1)
    seed: int = opt(0, "random seed (split, sampling, initial weights)")
    k_folds: int = opt(0, "number of folds (set by cv and compare)", cli=False)
    fold: int = opt(0, "fold held out as the test split (set by cv and compare)", cli=False)


@dataclass(frozen=True)
class RuntimeOptions:
    """Where it runs: Lightning's accelerator, devices, nodes, strategy, precision."""

    accelerator: str = opt("auto", "Lightning: auto, cpu, gpu, ...")
    devices: str = opt("auto", "Lightning: number or list of devices")
    num_nodes: int = opt(1, "Lightning: nodes (Slurm)", minimum=1)
    strategy: str = opt("auto", "Lightning: auto, ddp, fsdp, ...")
    precision: str = opt("32-true", "Lightning: 32-true, bf16-mixed")
    num_workers: int = opt(0, "data loader processes", minimum=0)


SECTIONS = {"data": DataOptions, "network": NetworkOptions, "optim": OptimOptions,
            "augment": AugmentOptions, "split": SplitOptions, "runtime": RuntimeOptions}


@dataclass(frozen=True)
class TrainOptions:
    """Everything a training run needs, by concern.

    Attributes:
        out: Model file to write (``.tsm``).
        overwrite: Replace existing outputs.
    """

    data: DataOptions = field(default_factory=DataOptions)
    network: NetworkOptions = field(default_factory=NetworkOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    augment: AugmentOptions = field(default_factory=AugmentOptions)
    split: SplitOptions = field(default_factory=SplitOptions)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    out: str = ""
    overwrite: bool = False

    def replace(self, **changes: Any) -> TrainOptions:
        """A copy with options changed by field name (``lr=1e-4``, ``tile_px=64``).

        Raises:
            KeyError: No section has such a field.
        """
        top = {k: v for k, v in changes.items() if k in ("out", "overwrite")}
        sections: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            if key in top:
                continue
            section = FIELD_SECTION.get(key)
            if section is None:
                raise KeyError(f"Unknown training option '{key}'.")
            sections.setdefault(section, {})[key] = value
        new = {s: dataclasses.replace(getattr(self, s), **v) for s, v in sections.items()}
        return dataclasses.replace(self, **new, **top)

    @staticmethod
    def build(**values: Any) -> TrainOptions:
        """Options from field names (``raster=..., lr=...``), defaults elsewhere."""
        return TrainOptions().replace(**values)

    def flat(self) -> dict[str, Any]:
        """Every option by field name (for the model file's training record)."""
        out: dict[str, Any] = {}
        for section in SECTIONS:
            out.update(dataclasses.asdict(getattr(self, section)))
        return out


@dataclass(frozen=True)
class OptionSpec:
    """One option as the command line and Processing see it."""

    section: str
    name: str
    flag: str
    default: Any
    annotation: Any
    help: str
    minimum: float | None
    cli: bool
    required: bool
    repeat: bool

    @property
    def choices(self) -> tuple[str, ...] | None:
        """Valid values of a ``Literal`` option."""
        if typing.get_origin(self.annotation) is Literal:
            return tuple(typing.get_args(self.annotation))
        return None

    @property
    def job_key(self) -> str:
        """The key of this option in a job's ``args`` (the flag with underscores)."""
        return self.flag.replace("-", "_")


def option_specs() -> list[OptionSpec]:
    """Every training option in declaration order."""
    specs = []
    module = sys.modules[__name__]
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls, vars(module))
        for f in dataclasses.fields(cls):
            m = f.metadata
            specs.append(OptionSpec(section, f.name, m["flag"] or f.name.replace("_", "-"),
                                    f.default, hints[f.name], m["help"], m["minimum"],
                                    m["cli"], m["required"], m["repeat"]))
    return specs


FIELD_SECTION = {s.name: s.section for s in option_specs()}
SPEC_BY_NAME = {s.name: s for s in option_specs()}
SPEC_BY_JOB_KEY = {s.job_key: s for s in option_specs()}
DEFAULTS = TrainOptions()


def default(job_key: str) -> Any:
    """The default of an option by its job key (``tile_size``, ``epochs``)."""
    return SPEC_BY_JOB_KEY[job_key].default
