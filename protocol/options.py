"""Training options: the one place their defaults live (standard library only).

:class:`TrainOptions` nests one frozen dataclass per concern (data, network, optimisation,
augmentation, split, runtime). Each field carries its command-line flag, help text and,
where it applies, its bounds; ``Literal`` annotations give the valid choices. The engine's
argparse options (cli/options.py) and the plugin's Processing parameters are both built
from these fields, and jobs name options by the flag (``patch_size`` for ``--patch-size``),
so a default is written once. :meth:`TrainOptions.validate` checks every value against
them before any work (errors name the flag and the fix).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from terraseg.protocol.errors import ConfigError
from terraseg.protocol.model_meta import MAX_WINDOW_PX

Split = Literal["polygons", "blocks"]
ClassWeighting = Literal["inverse", "sqrt", "none"]
Optimizer = Literal["adamw", "adam"]
LrSchedule = Literal["none", "cosine", "plateau"]
PseudoStrategy = Literal["random", "uniform", "kmeans", "all"]
ProbabilityUse = Literal["none", "channel", "weight"]


def opt(default: Any, help: str, flag: str = "", minimum: float | None = None,  # noqa: A002
        cli: bool = True, required: bool = False, repeat: bool = False,
        maximum: float | None = None, above: float | None = None,
        below: float | None = None) -> Any:
    """A dataclass field with command-line metadata.

    Args:
        default: The default (the only place it is written).
        help: Help text of the flag and the Processing parameter.
        flag: Command-line flag without dashes (default: the field name with dashes).
        minimum: Smallest valid value (Processing's minValue; checked by the engine). For
            integer tuples (``--planes``), the smallest valid element.
        cli: False for options set by other commands only (fold numbers).
        required: The flag is required on the command line.
        repeat: The flag may be given several times (a tuple of values).
        maximum: Largest valid value.
        above: The value must be greater than this (learning rate > 0).
        below: The value must be less than this (fractions < 1).
    """
    meta = {"help": help, "flag": flag, "minimum": minimum, "cli": cli, "required": required,
            "repeat": repeat, "maximum": maximum, "above": above, "below": below}
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
    nodata: float | None = opt(None, "nodata value replacing the raster's own (None: the "
                                     "raster's), e.g. 0 for a mosaic of chips filled with 0")


@dataclass(frozen=True)
class NetworkOptions:
    """Which network: registry name and its shape; fine-tuning."""

    model: str = opt("patch_cnn", "architecture (registry name)")
    patch_px: int = opt(51, "input cutout (odd)", flag="patch-size", minimum=3,
                        maximum=MAX_WINDOW_PX)
    block_px: int = opt(5, "predicted centre block (odd)", flag="block-size", minimum=1,
                        maximum=MAX_WINDOW_PX)
    stride_px: int = opt(0, "network stride (0 = block size)", flag="stride", minimum=0,
                         maximum=MAX_WINDOW_PX)
    planes: tuple[int, ...] = opt((4, 8, 16), "channels per stage", minimum=1)
    blocks: tuple[int, ...] = opt((2, 2, 2), "residual blocks per stage", minimum=1)
    tile_px: int = opt(128, "tile networks (unet*): training tile in pixels (multiple of the "
                            "stride)", flag="tile-size", minimum=16, maximum=MAX_WINDOW_PX)
    base_width: int = opt(0, "tile networks: channels of the first level (0 = the model's "
                             "default)", minimum=0)
    init_model: str | None = opt(None, "fine-tune from this model file")
    encoder: str | None = opt(None, "tile networks with a ResNet encoder: initialise the encoder "
                                    "from this encoder file (terraseg pretrain) or model file "
                                    "(its head is rebuilt for these classes)")
    freeze_epochs: int = opt(0, "with --encoder: epochs with the encoder frozen (decoder and head "
                                "train) before all layers train", minimum=0)
    encoder_lr: float = opt(0.1, "with --encoder: the encoder's learning rate relative to --lr "
                                 "once unfrozen (discriminative rates; 1 = same)", minimum=0.0,
                            above=0.0)


@dataclass(frozen=True)
class OptimOptions:
    """How the network is fitted: epochs, learning rate, loss, class weights, batches."""

    epochs: int = opt(300, "maximum epochs", minimum=1)
    patience: int = opt(10, "early-stopping patience", minimum=1)
    lr: float = opt(1e-3, "learning rate", minimum=0.0, above=0.0)
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
                        minimum=0.0, maximum=1.0)


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
    val_fraction: float = opt(0.2, "share of regions for validation", minimum=0.0, below=1.0)
    test_fraction: float = opt(0.0, "share of regions for the test split", minimum=0.0,
                               below=1.0)
    split_block_px: int = opt(256, "block size of --split blocks (pixels)",
                              flag="split-block-size", minimum=1)
    seed: int = opt(0, "random seed (split, sampling, initial weights)", minimum=0,
                    maximum=2**32 - 1)
    k_folds: int = opt(0, "number of folds (set by cv and compare)", cli=False, minimum=0)
    fold: int = opt(0, "fold held out as the test split (set by cv and compare)", cli=False,
                    minimum=0)
    split_from: str | None = opt(None, "keep the train/val/test split recorded in this model "
                                       "file (new polygons are split among themselves; "
                                       "--init-model does this too)")


@dataclass(frozen=True)
class RuntimeOptions:
    """Where it runs: Lightning's accelerator, devices, nodes, strategy, precision."""

    accelerator: str = opt("auto", "Lightning: auto, cpu, gpu, ...")
    devices: str = opt("auto", "Lightning: number or list of devices")
    num_nodes: int = opt(1, "Lightning: nodes (Slurm)", minimum=1)
    strategy: str = opt("auto", "Lightning: auto, ddp, fsdp, ...")
    precision: str = opt("32-true", "Lightning: 32-true, bf16-mixed")
    num_workers: int = opt(0, "data loader processes", minimum=0)


@dataclass(frozen=True)
class PseudoOptions:
    """Labels densified by a random forest before training (seed 003's pseudo-labels).

    A forest of single pixels is fitted on a sample of ``pseudo_source``'s labels (default:
    the training labels themselves) and labels every pixel of the raster; the training
    labels then override it wherever they lie (an analyst's corrections win).
    """

    pseudo_labels: bool = opt(False, "densify the labels with a random forest first: it "
                              "labels every pixel, the --labels override it where they lie")
    pseudo_source: str | None = opt(None, "coarse labels the forest learns from: a label "
                                    "raster on any grid or polygons (default: --labels)")
    pseudo_class_field: str | None = opt(None, "class field of --pseudo-source polygons "
                                         "(default: --class-field)")
    pseudo_class_map: str | None = opt(None, "class map of --pseudo-source (default: "
                                       "--class-map), e.g. 21=sealed,22=sealed,*=unsealed")
    pseudo_strategy: PseudoStrategy = opt("random", "pixel sampling per class for the forest")
    pseudo_quota: int = opt(0, "pixels sampled per class (0 = the smallest class's count)",
                            minimum=0)
    pseudo_k: int = opt(50, "clusters per class of --pseudo-strategy kmeans", minimum=1)
    pseudo_trees: int = opt(50, "trees of the forest", minimum=1)
    pseudo_max_depth: int = opt(10, "depth limit of the trees (0 = unlimited)", minimum=0)
    pseudo_zero_disagreeing: bool = opt(False, "confidence 0 where the pseudo-label disagrees "
                                        "with the source label (the study's option)")
    pseudo_probability: ProbabilityUse = opt(
        "none", "use of the forest's confidence (its probability of the class it gives): "
        "none, channel (an extra input channel 'rf_confidence', required at prediction) or "
        "weight (each pseudo-labelled pixel's loss weight)")


SECTIONS = {"data": DataOptions, "network": NetworkOptions, "optim": OptimOptions,
            "augment": AugmentOptions, "split": SplitOptions, "runtime": RuntimeOptions,
            "pseudo": PseudoOptions}


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
    pseudo: PseudoOptions = field(default_factory=PseudoOptions)
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

    def validate(self) -> TrainOptions:
        """Refuse values no run can use, before any work; returns the options unchanged.

        Every option is checked against its type, its choices and its bounds (numbers must
        be finite), then the rules between options: the validation and test fractions leave
        regions for training, the fold is one of the folds, ``--devices`` and
        ``--precision`` are values Lightning takes, ``--out`` names a file. Rules of the
        network itself (odd patch sizes, a tile size the stride divides) belong to the model
        and its kind (core/models/), which cli/options.py asks before any work as well.

        Raises:
            ConfigError: Naming the option's flag and how to fix the value.
        """
        for spec in option_specs():
            check_value(spec, getattr(getattr(self, spec.section), spec.name))
        sp = self.split
        if sp.val_fraction + sp.test_fraction >= 1:
            raise ConfigError(
                f"--val-fraction {sp.val_fraction:g} and --test-fraction {sp.test_fraction:g} "
                "leave no regions for training (their sum must be below 1).",
                "Use smaller fractions, e.g. --val-fraction 0.2 --test-fraction 0.1.")
        if sp.k_folds == 1:
            raise ConfigError("k = 1 fold is not a cross-validation.", "Use --k 2 or more.")
        if sp.k_folds and sp.fold >= sp.k_folds:
            raise ConfigError(f"Fold {sp.fold} is outside 0..{sp.k_folds - 1}.",
                              "Folds are numbered from 0.")
        net = self.network
        if net.encoder and net.init_model:
            raise ConfigError("--encoder and --init-model both set the starting weights.",
                              "Use --init-model to fine-tune a model with the same classes, "
                              "or --encoder to start a new network from a pretrained encoder.")
        if net.freeze_epochs and not net.encoder:
            raise ConfigError(f"--freeze-epochs {net.freeze_epochs} needs a pretrained encoder.",
                              "Add --encoder FILE (from terraseg pretrain, or a model file), "
                              "or leave out --freeze-epochs.")
        if net.freeze_epochs > self.optim.epochs:
            raise ConfigError(
                f"--freeze-epochs {net.freeze_epochs} is more than --epochs "
                f"{self.optim.epochs}: training would end before the encoder is unfrozen.",
                f"Use --freeze-epochs {min(5, max(1, self.optim.epochs // 2))} (the study "
                "freezes 5-10 epochs) or more --epochs; --freeze-epochs equal to --epochs "
                "keeps the encoder frozen throughout.")
        check_devices(self.runtime.devices)
        if self.runtime.precision not in PRECISIONS:
            raise ConfigError(f"--precision '{self.runtime.precision}' is not a precision "
                              "Lightning knows.", f"Use one of: {', '.join(PRECISIONS)}.")
        if not self.out.strip() or self.out.endswith(("/", os.sep)):
            what = "is empty" if not self.out.strip() else "names a folder"
            raise ConfigError(f"--out '{self.out}' {what}; it must name the model file to "
                              "write.", "Give a file name, e.g. --out models/sealed.tsm.")
        return self


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
    maximum: float | None = None
    above: float | None = None
    below: float | None = None

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

    @property
    def label(self) -> str:
        """How errors name the option: ``--lr``; ``'k_folds'`` for options set by commands."""
        return "--" + self.flag if self.cli else f"'{self.name}'"

    @property
    def valid_range(self) -> str:
        """The valid values in words (``> 0``, ``0 or more and below 1``)."""
        parts = []
        if self.above is not None:
            parts.append(f"above {_example(self.above)}")
        elif self.minimum is not None:
            parts.append(f"{_example(self.minimum)} or more")
        if self.below is not None:
            parts.append(f"below {_example(self.below)}")
        elif self.maximum is not None:
            parts.append(f"at most {_example(self.maximum)}")
        return " and ".join(parts) or "any value"


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
                                    m["cli"], m["required"], m["repeat"], m["maximum"],
                                    m["above"], m["below"]))
    return specs


#: Lightning's precision values (``--precision``).
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "32",
              "bf16", "16", "64", "transformer-engine", "transformer-engine-float16")


def check_value(spec: OptionSpec, value: Any) -> None:
    """Refuse a value of the wrong type, not one of the choices, or outside the bounds.

    Raises:
        ConfigError: Naming the option (its flag) and a valid value.
    """
    base = spec.annotation
    if isinstance(base, types.UnionType) or typing.get_origin(base) is typing.Union:
        if value is None:
            return
        base = next(a for a in typing.get_args(base) if a is not type(None))
    if spec.choices is not None:
        if value not in spec.choices:
            raise ConfigError(f"{spec.label} '{value}' is not one of the choices.",
                              f"Use one of: {', '.join(map(str, spec.choices))}.")
    elif base in (int, float):
        _check_number(spec, value, base, spec.label, spec.default)
    elif typing.get_origin(base) is tuple:
        elem = typing.get_args(base)[0]
        if not isinstance(value, tuple) or (not value and elem in (int, float)):
            raise ConfigError(f"{spec.label} is {value!r}, not a list of values.",
                              f"Give e.g. {spec.label} {_example(spec.default)}.")
        for v in value:
            if elem in (int, float):
                _check_number(spec, v, elem, f"Each value of {spec.label}", spec.default)
            elif not isinstance(v, elem):
                raise ConfigError(f"{spec.label} holds {v!r}, not {_noun(elem)}.",
                                  f"Give {_noun(elem)} for each {spec.label}.")
    elif not isinstance(value, base):
        raise ConfigError(f"{spec.label} is {value!r}, not {_noun(base)}.",
                          f"Give {_noun(base)} for {spec.label}.")


def _check_number(spec: OptionSpec, value: Any, kind: type, label: str, example: Any) -> None:
    """A finite ``kind`` (int or float) within the spec's bounds."""
    wrong_type = isinstance(value, bool) or not isinstance(
        value, int if kind is int else int | float)
    if wrong_type:
        noun = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{label} is {value!r}, not {noun}.",
                          f"Give {noun} {spec.valid_range}, e.g. {spec.label} "
                          f"{_example(example)}.")
    if not math.isfinite(value):
        raise ConfigError(f"{label} is {value}, not a finite number.",
                          f"Give a number {spec.valid_range}, e.g. {spec.label} "
                          f"{_example(example)}.")
    if ((spec.minimum is not None and value < spec.minimum)
            or (spec.maximum is not None and value > spec.maximum)
            or (spec.above is not None and value <= spec.above)
            or (spec.below is not None and value >= spec.below)):
        shown = value if kind is int else f"{value:g}"
        raise ConfigError(f"{label} is {shown}, but it must be {spec.valid_range}.",
                          f"Use a value {spec.valid_range}, e.g. {spec.label} "
                          f"{_example(example)}.")


def _example(value: Any) -> str:
    """A value as it is typed on the command line (``4,8,16``, ``0.001``, ``1``)."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e16 else f"{value:g}"
    return str(value)


def _noun(kind: type) -> str:
    """``text`` for str, ``true or false`` for bool, else the type's name with an article."""
    return {str: "text", bool: "true or false"}.get(kind, f"a {kind.__name__}")


def check_devices(spec: str) -> None:
    """``--devices``: ``auto``, a number of devices (1 or more, -1 = all) or indices.

    Raises:
        ConfigError: Anything else (Lightning would fail only when training starts).
    """
    text = str(spec).strip()
    if text == "auto":
        return
    try:
        if "," in text:
            ids = [int(s) for s in text.split(",") if s.strip()]
            ok = bool(ids) and min(ids) >= 0 and len(set(ids)) == len(ids)
        else:
            ok = int(text) >= 1 or int(text) == -1
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"--devices '{spec}' is not 'auto', a number of devices (1 or more, "
                          "-1 = all) or a list of device indices.",
                          "Use e.g. --devices auto, --devices 2 or --devices 0,1.")


FIELD_SECTION = {s.name: s.section for s in option_specs()}
SPEC_BY_NAME = {s.name: s for s in option_specs()}
SPEC_BY_JOB_KEY = {s.job_key: s for s in option_specs()}
DEFAULTS = TrainOptions()


def default(job_key: str) -> Any:
    """The default of an option by its job key (``tile_size``, ``epochs``)."""
    return SPEC_BY_JOB_KEY[job_key].default


# Interactive training in QGIS (the panel and Processing's 'Train model') starts from these
# instead of DEFAULTS, deliberately: an analyst waits for the map, so runs stop sooner
# (early stopping still applies), tile networks start from the presets' 64 px tiles. Written
# once here so the panel and Processing cannot drift apart (job key -> value).
INTERACTIVE: dict[str, Any] = {"epochs": 50, "tile_size": 64}
# ... and tile networks (unet*) train there on small batches of whole tiles.
INTERACTIVE_TILE_NETWORK: dict[str, Any] = {"batch_size": 16, "samples_per_epoch": 512}


def interactive_default(job_key: str, tile_network: bool = False) -> Any:
    """The default of an option in QGIS (:data:`INTERACTIVE`, else the engine's)."""
    if tile_network and job_key in INTERACTIVE_TILE_NETWORK:
        return INTERACTIVE_TILE_NETWORK[job_key]
    return INTERACTIVE.get(job_key, default(job_key))
