"""Direct change networks on a pair raster: early fusion and Siamese difference U-Nets.

Both take a pair raster (``terraseg pair``): date A's C bands followed by date B's C bands,
so ``in_channels = 2C`` must be even. After Daudt, Le Saux and Boulch, "Fully
convolutional Siamese networks for change detection" (ICIP 2018):

- ``fc_ef`` (:class:`EarlyFusionUNet`): the two dates stacked as 2C channels into one
  U-Net (:class:`~terraseg.core.models.unet.UNet`, unchanged).
- ``fc_siam_diff`` (:class:`SiamDiffUNet`): one encoder (shared weights) runs on
  ``x[:, :C]`` and on ``x[:, C:]``; every decoder skip connection, and the bottleneck,
  takes ``|f_a - f_b|`` of the two dates' features at that level. Swapping the dates
  gives the same features, so the network cannot tell "A -> B" from "B -> A" (change,
  not direction). The decoder and heads are the U-Net's.

Daudt's networks have four levels of 16, 32, 64 and 128 channels; here the base width
defaults to 16 and the depth to 4 (stride 16 like the other U-Nets), so the bottleneck
has 256 channels. Both dates go through the encoder as one batch of 2N, so BatchNorm
statistics are shared by the two dates as the weights are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F  # noqa: N812

from terraseg.core.models.unet import UNet, UNetConfig
from terraseg.protocol.errors import ConfigError

#: Daudt et al.'s first-level width.
CHANGE_BASE_WIDTH = 16


def check_pair_channels(in_channels: int, model: str) -> None:
    """Refuse an odd number of input bands for a change network.

    Raises:
        ConfigError: Naming the count and how to make a pair raster.
    """
    if in_channels % 2:
        raise ConfigError(
            f"Model '{model}' reads a pair raster (date A's bands, then date B's), so it needs "
            f"an even number of input bands; got {in_channels}.",
            "Stack the two dates with 'terraseg pair --raster-a A --raster-b B --out "
            "pair.tif' and train on pair.tif (with --bands, map the same number of bands "
            "of each date).")


@dataclass(frozen=True)
class EarlyFusionConfig(UNetConfig):
    """FC-EF: a U-Net on both dates' bands stacked (in_channels even)."""

    base_width: int = CHANGE_BASE_WIDTH

    def __post_init__(self) -> None:
        super().__post_init__()
        check_pair_channels(self.in_channels, "fc_ef")


@dataclass(frozen=True)
class SiamDiffConfig(UNetConfig):
    """FC-Siam-diff: a shared encoder per date, |difference| skips (in_channels even)."""

    base_width: int = CHANGE_BASE_WIDTH

    def __post_init__(self) -> None:
        super().__post_init__()
        check_pair_channels(self.in_channels, "fc_siam_diff")


class EarlyFusionUNet(UNet):
    """FC-EF: the U-Net itself on the 2C stacked channels (its own name in the registry).

    Shape:
        x: (N, 2C, H, W) -> (N, num_classes, H, W) class logits.
    """


class SiamDiffUNet(UNet):
    """FC-Siam-diff: U-Net whose skips are |encoder(A) - encoder(B)| (module docstring).

    The encoder is built for C = in_channels / 2 bands; ``config`` keeps the pair's 2C.

    Shape:
        x: (N, 2C, H, W), H and W multiples of ``stride_px``.
        returns: (N, num_classes, H, W) class logits.
    """

    def __init__(self, config: SiamDiffConfig) -> None:
        one_date = UNetConfig(**{**asdict(config), "in_channels": config.in_channels // 2})
        super().__init__(one_date)
        self.config = config

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Skip features per level and the bottleneck of one batch of single-date images.

        Shape:
            x: (M, C, H, W) -> skips (M, base_width * 2**i, H / 2**i, W / 2**i) for
            i < depth, bottleneck (M, base_width * 2**depth, H / 2**depth, W / 2**depth)
        """
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        return skips, self.bottleneck(x)

    def difference_features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """|f_a - f_b| per skip level and at the bottleneck (the decoder's inputs).

        Shape:
            x: (N, 2C, H, W) -> as :meth:`encode` with M = N.
        """
        n, c2 = x.shape[:2]
        if c2 != self.config.in_channels:
            raise ConfigError(
                f"The input has {c2} bands but the network was built for "
                f"{self.config.in_channels} (two dates of {self.config.in_channels // 2}).",
                "Give the pair raster the model was trained on (terraseg pair).")
        c = c2 // 2
        skips, bottom = self.encode(torch.cat([x[:, :c], x[:, c:]], dim=0))
        diffs = [(s[:n] - s[n:]).abs() for s in skips]
        return diffs, (bottom[:n] - bottom[n:]).abs()

    def decode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Decoder outputs, finest first, from the two dates' feature differences.

        Shape:
            x: (N, 2C, H, W) -> list of (N, base_width * 2**k, H / 2**k, W / 2**k)
        """
        diffs, y = self.difference_features(x)
        y = self.dropout(y)
        levels = []
        for up, skip in zip(self.decoder, reversed(diffs), strict=True):
            y = up(y, skip)
            levels.append(y)
        return levels[::-1]
