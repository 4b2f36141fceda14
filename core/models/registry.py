"""Registry of model architectures: name -> config class, network class and model kind.

Each entry carries its :class:`~terraseg.core.models.kinds.ModelKind`, which holds what
differs between families (training samples, geometry, default loss, inference tiling), so
training and inference ask the kind instead of branching on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from terraseg.core.models.encoder_decoder import CONFIGS as ENCODER_DECODER_CONFIGS
from terraseg.core.models.encoder_decoder import EncoderDecoder
from terraseg.core.models.kinds import KINDS, ModelKind
from terraseg.core.models.patch_cnn import PatchCNN, PatchCNNConfig
from terraseg.core.models.siam_diff import (
    EarlyFusionConfig,
    EarlyFusionUNet,
    SiamDiffConfig,
    SiamDiffUNet,
)
from terraseg.core.models.unet import (
    CBAMUNetConfig,
    MultiResUNetConfig,
    ResidualUNetConfig,
    SEUNetConfig,
    UNet,
    UNetConfig,
    UNetSmallConfig,
)
from terraseg.protocol.errors import ConfigError


@dataclass(frozen=True)
class ModelEntry:
    """How to build one architecture from a JSON-ready parameter dict."""

    config_cls: type
    build: Callable[[Any], nn.Module]
    description: str
    kind: ModelKind = KINDS["patch"]

    def make_config(self, params: dict[str, Any]) -> Any:
        """The typed config from a parameter dict (lists become tuples)."""
        known = {f.name for f in fields(self.config_cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"Unknown parameter(s) {unknown} for this model.",
                              f"Valid parameters: {', '.join(sorted(known))}.")
        clean = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        return self.config_cls(**clean)


MODELS: dict[str, ModelEntry] = {
    "patch_cnn": ModelEntry(
        PatchCNNConfig,
        PatchCNN,
        "Residual patch CNN of the sealed-surface study (51x51 in, 5x5 out), dense-exact.",
    ),
    "unet": ModelEntry(
        UNetConfig, UNet,
        "Classic U-Net (base width 64, depth 4: ~31M parameters); tiles are multiples of 16.",
        kind=KINDS["tile"]),
    "unet_small": ModelEntry(
        UNetSmallConfig, UNet, "Small classic U-Net (base width 18: ~2.5M parameters).",
        kind=KINDS["tile"]),
    "unet_residual": ModelEntry(
        ResidualUNetConfig, UNet, "U-Net with residual conv blocks.", kind=KINDS["tile"]),
    "unet_se": ModelEntry(
        SEUNetConfig, UNet, "U-Net with squeeze-excitation attention.", kind=KINDS["tile"]),
    "unet_cbam": ModelEntry(
        CBAMUNetConfig, UNet, "U-Net with CBAM (channel + spatial) attention.", kind=KINDS["tile"]),
    "unet_multires": ModelEntry(
        MultiResUNetConfig, UNet,
        "U-Net whose head averages three scales (the landslide study's best).", kind=KINDS["tile"]),
    # unet_resnet18 ... deeplabv3plus_resnet50: smp's Unet/FPN/DeepLabV3Plus (seed 003)
    **{name: ModelEntry(cfg, EncoderDecoder, cfg.describe(), kind=KINDS["tile"])
       for name, cfg in ENCODER_DECODER_CONFIGS.items()},
    # direct change networks on a pair raster (terraseg pair; Daudt et al. 2018)
    "fc_ef": ModelEntry(
        EarlyFusionConfig, EarlyFusionUNet,
        "Change: early-fusion U-Net (FC-EF) on a pair raster (both dates' bands stacked).",
        kind=KINDS["tile"]),
    "fc_siam_diff": ModelEntry(
        SiamDiffConfig, SiamDiffUNet,
        "Change: Siamese U-Net (FC-Siam-diff) on a pair raster: one encoder per date "
        "(shared weights), |difference| skips.", kind=KINDS["tile"]),
}


def config_from_params(name: str, params: dict[str, Any]) -> Any:
    """Typed config for architecture ``name`` from a parameter dict (lists become tuples)."""
    try:
        return get_entry(name).make_config(params)
    except ConfigError as exc:
        raise ConfigError(exc.message.replace("this model", f"model '{name}'"),
                          exc.hint) from None


def build_model(name: str, params: dict[str, Any]) -> nn.Module:
    """Build architecture ``name`` with ``params``."""
    return get_entry(name).build(config_from_params(name, params))


def get_entry(name: str) -> ModelEntry:
    """Look up an architecture; the error lists the valid names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"Unknown model '{name}'.",
                          f"Choose one of: {', '.join(sorted(MODELS))}.") from None


def kind_of(name: str) -> ModelKind:
    """The kind of architecture ``name``."""
    return get_entry(name).kind


#: Networks above this many parameters are refused when a model file is read.
MAX_PARAMETERS = 500_000_000


def build_on_meta_device(name: str, params: dict[str, Any]) -> nn.Module:
    """The network's structure without allocating its weights (torch's meta device)."""
    with torch.device("meta"):
        return build_model(name, params)


def count_parameters(name: str, params: dict[str, Any]) -> int:
    """Parameters of a network, counted without allocating it (meta device)."""
    return sum(p.numel() for p in build_on_meta_device(name, params).parameters())
