"""On-the-fly augmentation of (image, target) patches: a registry of switchable augmentors.

Each augmentor takes the normalised image patch (C, P, P), the target block (K, K) and a
numpy Generator, and returns both transformed. Geometric augmentors act on both alike;
noise acts on the image only. Scales are in normalised (standard-deviation) units.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from terraseg.protocol.errors import ConfigError

Augmentor = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def _flip(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, _s: float) -> tuple:
    if rng.random() < 0.5:
        x, y = x[:, ::-1, :], y[::-1, :]
    if rng.random() < 0.5:
        x, y = x[:, :, ::-1], y[:, ::-1]
    return x, y


def _rotate(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, _s: float) -> tuple:
    k = int(rng.integers(4))
    return np.rot90(x, k, axes=(1, 2)), np.rot90(y, k)


def _pixel_noise(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, s: float) -> tuple:
    return x + rng.normal(0.0, s, size=x.shape).astype(np.float32), y


def _channel_noise(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, s: float) -> tuple:
    return x + rng.normal(0.0, s, size=(x.shape[0], 1, 1)).astype(np.float32), y


AUGMENTORS: dict[str, tuple[Callable, float]] = {
    "flip": (_flip, 0.0),
    "rotate": (_rotate, 0.0),
    "pixel_noise": (_pixel_noise, 0.05),
    "channel_noise": (_channel_noise, 0.05),
}


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentors run, with their scales.

    Attributes:
        names: Augmentor names in application order (see AUGMENTORS).
        scales: Scale per name for the noise augmentors (normalised units).
    """

    names: tuple[str, ...] = ("flip", "rotate")
    scales: tuple[float, ...] = ()

    @staticmethod
    def parse(spec: str | None, pixel_noise: float = 0.05,
              channel_noise: float = 0.05) -> AugmentConfig:
        """Parse "flip,rotate,pixel_noise" ("none" or "" = no augmentation)."""
        if spec is None or spec.strip().lower() in ("", "none"):
            return AugmentConfig(names=())
        names = tuple(n.strip() for n in spec.replace("+", ",").split(",") if n.strip())
        for n in names:
            if n not in AUGMENTORS:
                raise ConfigError(f"Unknown augmentation '{n}'.",
                                  f"Choose from: {', '.join(AUGMENTORS)} (or none).")
        scale_of = {"pixel_noise": pixel_noise, "channel_noise": channel_noise}
        return AugmentConfig(names, tuple(scale_of.get(n, 0.0) for n in names))

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"names": list(self.names), "scales": list(self.scales)}


class AugmentChain:
    """Apply the configured augmentors in order."""

    def __init__(self, cfg: AugmentConfig) -> None:
        scales: Sequence[float] = cfg.scales or [AUGMENTORS[n][1] for n in cfg.names]
        self.steps = [(AUGMENTORS[n][0], s) for n, s in zip(cfg.names, scales, strict=True)]

    def __call__(self, x: np.ndarray, y: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Augment one (image, target) pair.

        Shape:
            x: (C, P, P) float32; y: (K, K) int64.
        """
        for fn, s in self.steps:
            x, y = fn(x, y, rng, s)
        # copies: flips leave negative strides, which torch.from_numpy refuses (even 1x1)
        return np.array(x, order="C", copy=True), np.array(y, order="C", copy=True)
