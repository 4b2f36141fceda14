"""Command-line options built from protocol/options.py, and the small option parsers.

The training options of ``train``, ``grid``, ``cv`` and ``compare`` are generated from
the typed option dataclasses (their defaults, help, choices and minimums live there
only); :func:`train_options` turns parsed arguments back into a
:class:`~terraseg.protocol.options.TrainOptions` and checks it before any work: every value
(``TrainOptions.validate``), the network the options describe (the model's own rules, built
on the meta device) and Lightning's accelerator and strategy names. Worker jobs pass through
the same parser, so they are checked the same way.

``--preset NAME`` (protocol/presets.py) replaces the defaults of the options it sets; a flag
given on the command line wins over the preset even when its value equals the default: each
training flag's action notes its option as given (:data:`GIVEN`), so nothing is inferred
from values.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any

from terraseg.protocol.errors import ConfigError
from terraseg.protocol.options import RuntimeOptions, TrainOptions, option_specs
from terraseg.protocol.presets import TRAIN_PRESETS, apply_preset

#: Namespace attribute: the set of training options (field names) whose flags were given.
GIVEN = "given_options"


def parse_ints(spec: str) -> tuple[int, ...]:
    """``"4,8,16"`` -> (4, 8, 16)."""
    try:
        return tuple(int(s) for s in spec.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{spec}' is not a comma-separated list of "
                                         "integers") from None


def parse_window(spec: str) -> Any:
    """``col,row,width,height`` -> a rasterio Window."""
    from rasterio.windows import Window

    try:
        col, row, w, h = (int(s) for s in spec.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("window must be col,row,width,height") from None
    return Window(col, row, w, h)


def _base_type(annotation: Any) -> Any:
    """``int`` for ``int``, ``str`` for ``str | None``, the tuple type for tuples."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


class GivenAction(argparse.Action):
    """Store a flag's value and add its option to the namespace's :data:`GIVEN` set.

    ``nargs=0`` stores True (a switch); ``append=True`` appends (a repeated flag).
    """

    def __init__(self, option_strings: list[str], dest: str, append: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.append = append

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        """Record the value and that the flag was given."""
        if self.nargs == 0:
            values = True
        elif self.append:
            values = [*(getattr(namespace, self.dest, None) or []), values]
        setattr(namespace, self.dest, values)
        setattr(namespace, GIVEN, {*getattr(namespace, GIVEN, set()), self.dest})


def add_train_options(p: argparse.ArgumentParser, out: bool = True) -> None:
    """Every training option as a flag, ``--preset``, ``--out`` (when ``out``), ``--overwrite``."""
    for spec in option_specs():
        if not spec.cli:
            continue
        flag = "--" + spec.flag
        kw: dict[str, Any] = {"help": spec.help, "dest": spec.name, "action": GivenAction}
        base = _base_type(spec.annotation)
        if spec.required:
            kw["required"] = True
        if spec.choices:
            kw.update(choices=list(spec.choices), default=spec.default)
        elif base is bool:
            kw.update(nargs=0, default=False)
        elif spec.repeat:
            kw.update(append=True, default=[], metavar="[NAME=]PATH")
        elif typing.get_origin(base) is tuple:
            kw.update(type=parse_ints, default=spec.default)
        else:
            kw.update(type=base, default=spec.default)
        p.add_argument(flag, **kw)
    p.add_argument("--preset", metavar="NAME",
                   help="start from a study's settings (flags given still win): "
                        + ", ".join(sorted(TRAIN_PRESETS)))
    if out:
        p.add_argument("--out", required=True, help="model file to write (.tsm)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def train_options(a: argparse.Namespace, out: str = "") -> TrainOptions:
    """Checked TrainOptions from parsed arguments (``out`` overrides ``--out``).

    Raises:
        ConfigError: A value no run can use (naming its flag), a network the options cannot
            build, an accelerator or strategy Lightning does not have, or an unknown preset.
    """
    values = {s.name: getattr(a, s.name) for s in option_specs() if s.cli}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    if getattr(a, "preset", None):
        values = apply_preset(values, a.preset, set(getattr(a, GIVEN, ())))
    opts = TrainOptions.build(**values, out=out or getattr(a, "out", ""),
                              overwrite=bool(a.overwrite)).validate()
    check_network(opts)
    check_runtime(opts.runtime)
    return opts


def check_network(opts: TrainOptions) -> None:
    """The network the options describe can be built (patch/block/stride, tile size).

    The rules are the model's and its kind's own (core/models/); here they run on a network
    of two bands (the change networks need an even count) and two classes on the meta
    device (nothing allocated), before any raster
    is read. Fine-tuning keeps the initial model's shape, which is checked when it is read.

    Raises:
        ConfigError: Unknown model, or sizes the network cannot take (naming the flag).
    """
    if opts.network.init_model:
        return
    from terraseg.core.models.registry import build_on_meta_device, get_entry

    entry = get_entry(opts.network.model)
    params = entry.kind.network_params(opts.network, 2, 2, entry.make_config)
    build_on_meta_device(opts.network.model, params)


def check_runtime(rt: RuntimeOptions) -> None:
    """``--accelerator`` and ``--strategy`` are Lightning's names, the accelerator is here.

    Raises:
        ConfigError: An unknown name, or an accelerator this machine does not have.
    """
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    names = sorted(AcceleratorRegistry.available_accelerators())
    if rt.accelerator != "auto":
        if rt.accelerator not in {*names, "gpu"}:
            raise ConfigError(f"--accelerator '{rt.accelerator}' is not an accelerator "
                              "Lightning knows.", f"Use one of: auto, gpu, {', '.join(names)}.")
        wanted = ([n for n in ("cuda", "mps") if n in names] if rt.accelerator == "gpu"
                  else [rt.accelerator])
        if not any(AcceleratorRegistry[n]["accelerator"].is_available() for n in wanted):
            raise ConfigError(f"--accelerator {rt.accelerator}: this machine has no such "
                              "device (or the engine's torch cannot use it).",
                              "Use --accelerator auto (a GPU when there is one, else the CPU) "
                              "or --accelerator cpu.")
    strategies = StrategyRegistry.available_strategies()
    if rt.strategy != "auto" and rt.strategy not in strategies:
        raise ConfigError(f"--strategy '{rt.strategy}' is not a strategy Lightning knows.",
                          "Use auto (one device), ddp (several GPUs or nodes), or one of: "
                          f"{', '.join(strategies)}.")


def add_extra_args(p: argparse.ArgumentParser) -> None:
    """Extra rasters for commands that apply a model (same flags as training's)."""
    p.add_argument("--extra-raster", action="append", default=[], metavar="[NAME=]PATH",
                   dest="extra_rasters",
                   help="extra input on another grid (bilinear onto the image grid); repeat")
    p.add_argument("--dem", help="elevation model added as channel 'dem'")
    p.add_argument("--slope-from-dem", action="store_true",
                   help="add slope in degrees derived from --dem as channel 'slope'")


#: Help of ``--nodata`` (a property of the raster, given per job, not kept in the model).
NODATA_HELP = ("nodata value replacing the raster's own (default: the raster's), e.g. 0 for "
               "a mosaic of chips filled with 0")


def add_pixel_input_args(p: argparse.ArgumentParser, labels_help: str) -> None:
    """Raster, labels and input channels of the pixel-forest commands (quickmap, pseudo-label).

    ``--raster``, ``--labels``, ``--class-field``, ``--class-map``, ``--bands``,
    ``--features`` and ``--nodata``, with the same meaning as train's.
    """
    p.add_argument("--raster", required=True)
    p.add_argument("--labels", required=True, help=labels_help)
    p.add_argument("--class-field", help="class attribute of vector labels")
    p.add_argument("--class-map", help="e.g. developed=sealed,*=unsealed")
    p.add_argument("--bands", help="band mapping, 1,2,3 or red=1,... (default: every band)")
    p.add_argument("--features", help="engineered channels as for train, e.g. ndvi,sobel")
    p.add_argument("--nodata", type=float, help=NODATA_HELP)


def load_pixel_inputs(a: argparse.Namespace) -> tuple[Any, Any]:
    """The input source and labels named by :func:`add_pixel_input_args`'s arguments.

    Engineered features are fitted on this raster (as training does); labels on another
    grid are resampled onto the source's.

    Returns:
        ``(source, labels)``: a RasterSource and a LabelSet.
    """
    from terraseg.core.classes import ClassMapping
    from terraseg.core.features import FeatureSpec
    from terraseg.core.labels import load_labels
    from terraseg.core.model_input import assemble_source

    features = FeatureSpec.parse(a.features) if a.features else None
    _, source = assemble_source(a.raster, a.bands, (), features, fit_features=True,
                                nodata=a.nodata)
    labels = load_labels(a.labels, source.grid, class_field=a.class_field,
                         class_map=ClassMapping.parse(a.class_map))
    return source, labels
