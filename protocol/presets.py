"""Named training presets: the settings of a study, as defaults a command line can override.

``terraseg train --preset seed003 ...`` (and ``grid``, ``cv``, ``compare``) starts from the
preset's values instead of the engine's defaults; flags given explicitly still win
(cli/options.py). A preset names options by their job key (the flag with underscores:
``tile_size`` for ``--tile-size``), as worker jobs do, so every key is a training option of
protocol/options.py and every value passes its checks (tests/protocol/test_presets.py).

Standard library only (protocol/).
"""

from __future__ import annotations

from typing import Any

from terraseg.protocol.errors import ConfigError
from terraseg.protocol.options import SPEC_BY_JOB_KEY

#: Preset name -> {job key: value}.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # Seed 003 (pseudo-labels on Sentinel-2; U-Net, FPN and DeepLab with a ResNet-50
    # backbone): 128 x 128 inputs, Adam at lr 1e-3 (torch's Adam: no weight decay), Dice
    # loss, 40 epochs (no early stopping mentioned: patience = the epochs), horizontal and
    # vertical flips with p = 0.5 each (training/augment.py's 'flip').
    "seed003": {"model": "unet_resnet50", "tile_size": 128, "optimizer": "adam",
                "lr": 1e-3, "weight_decay": 0.0, "loss": "dice", "epochs": 40,
                "patience": 40, "augment": "flip"},
    # A few polygons on medium-resolution imagery (10-30 m): the patch CNN with a 5 px
    # receptive field (one stage of 16 channels, a 7 px cutout predicting its 3 px centre,
    # stride 1). Drawn polygons are pure, the pixels to map are mixed; a wide context
    # learns the polygons' surroundings instead of their spectra. On the NC demo (28.5 m,
    # 34 polygons, 1,000 independent points, seeds 0-2) it beat a random forest fitted on
    # the same polygons on every seed, where the 25 px context did not (README, make demo).
    "few_polygons": {"model": "patch_cnn", "patch_size": 7, "block_size": 3, "stride": 1,
                     "planes": (16,), "blocks": (1,)},
}


def preset_values(name: str) -> dict[str, Any]:
    """The options of preset ``name`` by field name (``tile_px``, ``lr``).

    Ready for :meth:`~terraseg.protocol.options.TrainOptions.replace`.

    Raises:
        ConfigError: Unknown preset (the hint lists the presets).
    """
    if name not in TRAIN_PRESETS:
        raise ConfigError(f"Unknown preset '{name}'.",
                          f"Use --preset with one of: {', '.join(sorted(TRAIN_PRESETS))}.")
    return {SPEC_BY_JOB_KEY[k].name: v for k, v in TRAIN_PRESETS[name].items()}


def apply_preset(values: dict[str, Any], name: str, explicit: set[str]) -> dict[str, Any]:
    """``values`` (by field name) with preset ``name`` filled in where not ``explicit``.

    Args:
        values: Every option by field name, as parsed (defaults included).
        name: The preset.
        explicit: Field names whose flags were given: these keep their values.

    Raises:
        ConfigError: Unknown preset.
    """
    preset = preset_values(name)
    return {**values, **{k: v for k, v in preset.items() if k not in explicit}}
