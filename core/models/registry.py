"""Registry of model architectures: names -> (config class, network class)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from torch import nn

from terraseg.core.models.patch_cnn import PatchCNN, PatchCNNConfig
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
    kind: str = "patch"  # "patch": dense-exact patch model; "tile": padded tile segmenter


MODELS: dict[str, ModelEntry] = {
    "patch_cnn": ModelEntry(
        PatchCNNConfig,
        PatchCNN,
        "Residual patch CNN of the sealed-surface study (51x51 in, 5x5 out), dense-exact.",
    ),
    "unet": ModelEntry(
        UNetConfig, UNet,
        "Classic U-Net (base width 64, depth 4: ~31M parameters); tiles are multiples of 16.",
        kind="tile"),
    "unet_small": ModelEntry(
        UNetSmallConfig, UNet, "Small classic U-Net (base width 18: ~2.5M parameters).",
        kind="tile"),
    "unet_residual": ModelEntry(
        ResidualUNetConfig, UNet, "U-Net with residual conv blocks.", kind="tile"),
    "unet_se": ModelEntry(
        SEUNetConfig, UNet, "U-Net with squeeze-excitation attention.", kind="tile"),
    "unet_cbam": ModelEntry(
        CBAMUNetConfig, UNet, "U-Net with CBAM (channel + spatial) attention.", kind="tile"),
    "unet_multires": ModelEntry(
        MultiResUNetConfig, UNet,
        "U-Net whose head averages three scales (the landslide study's best).", kind="tile"),
}


def config_from_params(name: str, params: dict[str, Any]) -> Any:
    """Typed config for architecture ``name`` from a parameter dict (lists become tuples)."""
    entry = get_entry(name)
    known = {f.name for f in fields(entry.config_cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"Unknown parameter(s) {unknown} for model '{name}'.",
                          f"Valid parameters: {', '.join(sorted(known))}.")
    clean = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    return entry.config_cls(**clean)


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
