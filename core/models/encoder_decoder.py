"""Encoder-decoder segmentation networks: U-Net, FPN and DeepLabV3+ on ResNet-18/34/50.

Same architectures as segmentation_models_pytorch 0.6's ``Unet``, ``FPN`` and
``DeepLabV3Plus`` with a ``resnet18``/``resnet34``/``resnet50`` encoder and
``encoder_weights=None`` (smp itself cannot be installed beside the engine's CPU torch: it
imports torchvision). Written in plain torch here; at ``base_width`` 64 the parameter counts
are smp's (tests/core/test_encoder_decoder.py). Any number of input bands.

- Encoder (core/models/resnet_encoder.py): features at strides 1 (input), 2, 4, 8, 16, 32.
- ``unet``: five decoder blocks of (256, 128, 64, 32, 16) channels: nearest x2 upsampling
  to the skip's size, concatenation with the skip (none for the last), two 3x3
  conv-BN-ReLU; 3x3 conv head. Stride 32.
- ``fpn``: 1x1 lateral convs to a 256-channel pyramid P5..P2 (nearest x2 + add); each level
  through 3x3 conv-GroupNorm(32)-ReLU blocks (128 channels, bilinear x2 until 1/4); merged by
  addition, Dropout2d 0.2, 1x1 conv head, bilinear x4. Stride 32.
- ``deeplabv3plus``: encoder output stride 16 (layer4 dilated); ASPP of 256 channels (1x1,
  depthwise-separable 3x3 at rates 12/24/36, image pooling), 1x1 projection + Dropout 0.5,
  separable 3x3; bilinear x4 to 1/4, concatenated with the 48-channel 1x1 projection of the
  stride-4 features, separable 3x3; 1x1 conv head, bilinear x4. Stride 16.

``base_width`` scales every layer by ``base_width / 64`` (64 = smp; smaller widths give
fast test networks). Registry names are ``{unet,fpn,deeplabv3plus}_resnet{18,34,50}``:
config subclasses fixing the decoder and the encoder, so a model file stores the name plus
``in_channels``, ``num_classes`` and ``base_width``. BatchNorm tolerates one value per
channel in training (batch size 1), see :class:`~.resnet_encoder.SafeBatchNorm2d`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from terraseg.core.models.resnet_encoder import (
    DEFAULT_WIDTH,
    ENCODERS,
    ResNetEncoder,
    SafeBatchNorm2d,
)
from terraseg.core.models.unet import TileNetwork, valid_tile_sizes
from terraseg.protocol.errors import ConfigError

#: Decoder name -> (title, encoder output stride).
DECODERS: dict[str, tuple[str, int]] = {"unet": ("U-Net", 32), "fpn": ("FPN", 32),
                                        "deeplabv3plus": ("DeepLabV3+", 16)}
UNET_CHANNELS = (256, 128, 64, 32, 16)
FPN_PYRAMID, FPN_SEGMENTATION, FPN_DROPOUT = 256, 128, 0.2
ASPP_CHANNELS, ASPP_RATES, ASPP_DROPOUT, DEEPLAB_LOW_LEVEL = 256, (12, 24, 36), 0.5, 48


@dataclass(frozen=True)
class EncoderDecoderConfig:
    """Hyperparameters of :class:`EncoderDecoder`; subclasses fix decoder and encoder.

    Attributes:
        in_channels: Number of input bands.
        num_classes: Number of model classes (>= 2).
        base_width: Stem width of the ResNet (64 = smp); every layer scales with it.
    """

    in_channels: int
    num_classes: int
    base_width: int = DEFAULT_WIDTH
    decoder: ClassVar[str] = "unet"
    encoder: ClassVar[str] = "resnet34"

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.num_classes < 2:
            raise ConfigError(f"Need >= 1 band and >= 2 classes (got {self.in_channels} "
                              f"band(s), {self.num_classes} class(es)).",
                              "Check --bands and the labels.")
        if self.base_width < 1:
            raise ConfigError(f"{self.title} base_width {self.base_width} must be >= 1.",
                              "Use 64 (the standard ResNet), or leave --base-width at 0.")

    @property
    def title(self) -> str:
        """E.g. 'U-Net (resnet34)'."""
        return f"{DECODERS[self.decoder][0]} ({self.encoder})"

    @classmethod
    def describe(cls) -> str:
        """One line for the model registry."""
        return (f"{DECODERS[cls.decoder][0]} with a {cls.encoder} encoder (smp's architecture, "
                f"random init); tiles are multiples of {DECODERS[cls.decoder][1]}.")

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)

    @property
    def stride_px(self) -> int:
        """Total stride: tile sizes must be multiples of it (32; DeepLabV3+: 16)."""
        return DECODERS[self.decoder][1]

    def valid_tile_sizes(self, max_px: int = 1024) -> tuple[int, ...]:
        """Tile sizes (px) this network accepts, up to ``max_px`` (for the model file)."""
        return valid_tile_sizes(self.stride_px, max_px)

    def width(self, channels: int) -> int:
        """The channel count ``channels`` scaled by ``base_width / 64`` (at least 1)."""
        return max(1, channels * self.base_width // DEFAULT_WIDTH)


#: Registry name -> config class, e.g. 'fpn_resnet50' -> FpnResnet50Config.
CONFIGS: dict[str, type[EncoderDecoderConfig]] = {}
for _decoder in DECODERS:
    for _encoder in ENCODERS:
        _name = f"{_decoder}_{_encoder}"
        _cls = dataclass(frozen=True)(type(
            f"{_decoder.title()}{_encoder.title()}Config", (EncoderDecoderConfig,),
            {"decoder": _decoder, "encoder": _encoder, "__module__": __name__,
             "__doc__": f"{DECODERS[_decoder][0]} with a {_encoder} encoder."}))
        globals()[_cls.__name__] = CONFIGS[_name] = _cls


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3) -> nn.Sequential:
    """Conv (no bias, 'same' padding) + BatchNorm + ReLU (smp's Conv2dReLU)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
                         SafeBatchNorm2d(c_out), nn.ReLU(inplace=True))


class UnetBlock(nn.Module):
    """Nearest upsampling to the skip's size, concatenation, two conv-BN-ReLU.

    Shape:
        x: (N, c_in, h, w), skip: (N, c_skip, H, W) or None -> (N, c_out, H, W)
    """

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(c_in + c_skip, c_out)
        self.conv2 = conv_bn_relu(c_out, c_out)

    def forward(self, x: torch.Tensor, size: torch.Size, skip: torch.Tensor | None
                ) -> torch.Tensor:
        """Upsample ``x`` to ``size`` and fuse it with ``skip``."""
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class UnetDecoder(nn.Module):
    """smp's U-Net decoder: five blocks from the 1/32 features back to full resolution."""

    def __init__(self, enc: tuple[int, ...], cfg: EncoderDecoderConfig) -> None:
        super().__init__()
        chans = [cfg.width(c) for c in UNET_CHANNELS]
        deep = enc[1:][::-1]  # layer4 ... stem
        ins, skips = [deep[0], *chans[:-1]], [*deep[1:], 0]
        self.blocks = nn.ModuleList(UnetBlock(i, s, o)
                                    for i, s, o in zip(ins, skips, chans, strict=True))
        self.out_channels = chans[-1]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Full-resolution decoder features. Shape: (N, out_channels, H, W)."""
        sizes = [f.shape[-2:] for f in features[::-1]]  # layer4 ... input
        skips = features[1:][::-1]  # layer4 ... stem
        x = skips[0]
        for i, block in enumerate(self.blocks):
            x = block(x, sizes[i + 1], skips[i + 1] if i + 1 < len(skips) else None)
        return x


def norm_groups(channels: int) -> int:
    """GroupNorm groups: smp's 32 groups of 4 channels, fewer groups in narrower layers.

    Groups keep 4 channels (or all of them when fewer), so even a 1x1 map of batch size 1
    has several values per group.
    """
    return next(g for g in range(min(32, channels), 0, -1)
                if channels % g == 0 and channels // g >= min(4, channels))


def conv_gn_relu(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 conv (no bias) + GroupNorm (:func:`norm_groups`) + ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                         nn.GroupNorm(norm_groups(c_out), c_out), nn.ReLU(inplace=True))


class FPNSegmentationBlock(nn.Module):
    """``n_up`` times (conv-GN-ReLU, bilinear x2); one conv-GN-ReLU when ``n_up`` is 0."""

    def __init__(self, c_in: int, c_out: int, n_up: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(conv_gn_relu(c_in if i == 0 else c_out, c_out)
                                   for i in range(max(1, n_up)))
        self.upsample = n_up > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (N, c_in, h, w) -> (N, c_out, h * 2**n_up, w * 2**n_up)."""
        for conv in self.convs:
            x = conv(x)
            if self.upsample:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return x


class FPNDecoder(nn.Module):
    """smp's FPN decoder: pyramid P5..P2, per-level segmentation blocks, sum, dropout."""

    def __init__(self, enc: tuple[int, ...], cfg: EncoderDecoderConfig) -> None:
        super().__init__()
        pyr, seg = cfg.width(FPN_PYRAMID), cfg.width(FPN_SEGMENTATION)
        self.p5 = nn.Conv2d(enc[5], pyr, 1)
        self.laterals = nn.ModuleList(nn.Conv2d(enc[i], pyr, 1) for i in (4, 3, 2))
        self.seg_blocks = nn.ModuleList(FPNSegmentationBlock(pyr, seg, n) for n in (3, 2, 1, 0))
        self.dropout = nn.Dropout2d(FPN_DROPOUT)
        self.out_channels = seg

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Decoder features at 1/4 resolution. Shape: (N, out_channels, H/4, W/4)."""
        pyramid = [self.p5(features[5])]
        for lateral, skip in zip(self.laterals, features[4:1:-1], strict=True):
            up = F.interpolate(pyramid[-1], scale_factor=2.0, mode="nearest")
            pyramid.append(up + lateral(skip))
        merged = sum(block(p) for block, p in zip(self.seg_blocks, pyramid, strict=True))
        return self.dropout(merged)


class SeparableConv2d(nn.Sequential):
    """Depthwise 3x3 (no bias) then pointwise 1x1 (smp's SeparableConv2d, bias off)."""

    def __init__(self, c_in: int, c_out: int, dilation: int = 1) -> None:
        super().__init__(nn.Conv2d(c_in, c_in, 3, padding=dilation, dilation=dilation,
                                   groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False))


class ASPPPooling(nn.Sequential):
    """Image pooling branch: global mean, 1x1 conv-BN-ReLU, bilinear back to the input size."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c_in, c_out, 1, bias=False),
                         SafeBatchNorm2d(c_out), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (N, c_in, H, W) -> (N, c_out, H, W)."""
        size = x.shape[-2:]
        for module in self:
            x = module(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling with separable branches (smp, ``separable=True``)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        branches: list[nn.Module] = [conv_bn_relu(c_in, c_out, 1)]
        branches += [nn.Sequential(SeparableConv2d(c_in, c_out, r), SafeBatchNorm2d(c_out),
                                   nn.ReLU(inplace=True)) for r in ASPP_RATES]
        branches.append(ASPPPooling(c_in, c_out))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(conv_bn_relu(len(branches) * c_out, c_out, 1),
                                     nn.Dropout(ASPP_DROPOUT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (N, c_in, H, W) -> (N, c_out, H, W)."""
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class DeepLabV3PlusDecoder(nn.Module):
    """smp's DeepLabV3+ decoder: ASPP on the 1/16 features, fused with the 1/4 features."""

    def __init__(self, enc: tuple[int, ...], cfg: EncoderDecoderConfig) -> None:
        super().__init__()
        c, low = cfg.width(ASPP_CHANNELS), cfg.width(DEEPLAB_LOW_LEVEL)
        self.aspp = nn.Sequential(ASPP(enc[5], c), SeparableConv2d(c, c),
                                  SafeBatchNorm2d(c), nn.ReLU(inplace=True))
        self.block1 = conv_bn_relu(enc[2], low, 1)
        self.block2 = nn.Sequential(SeparableConv2d(c + low, c), SafeBatchNorm2d(c),
                                    nn.ReLU(inplace=True))
        self.out_channels = c

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Decoder features at 1/4 resolution. Shape: (N, out_channels, H/4, W/4)."""
        x = F.interpolate(self.aspp(features[5]), scale_factor=4, mode="bilinear",
                          align_corners=True)
        return self.block2(torch.cat([x, self.block1(features[2])], dim=1))


#: Decoder name -> (class, head kernel, head upsampling).
DECODER_PARTS: dict[str, tuple[type[nn.Module], int, int]] = {
    "unet": (UnetDecoder, 3, 1), "fpn": (FPNDecoder, 1, 4),
    "deeplabv3plus": (DeepLabV3PlusDecoder, 1, 4)}


class EncoderDecoder(TileNetwork):
    """ResNet encoder + U-Net / FPN / DeepLabV3+ decoder + conv head (module docstring).

    Shape:
        x: (N, in_channels, H, W), H and W multiples of ``stride_px``.
        returns: (N, num_classes, H, W) class logits.
    """

    def __init__(self, config: EncoderDecoderConfig) -> None:
        super().__init__()
        self.config = config
        decoder_cls, kernel, self.head_upsampling = DECODER_PARTS[config.decoder]
        self.encoder = ResNetEncoder(config.encoder, config.in_channels, config.base_width,
                                     output_stride=config.stride_px)
        self.decoder = decoder_cls(self.encoder.out_channels, config)
        self.head = nn.Conv2d(self.decoder.out_channels, config.num_classes, kernel,
                              padding=kernel // 2)
        for m in self.decoder.modules():  # smp's initialize_decoder
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.head.weight)  # smp's initialize_head
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for every pixel of ``x``."""
        self.check_tile(*x.shape[-2:])
        y = self.head(self.decoder(self.encoder(x)))
        if self.head_upsampling > 1:
            y = F.interpolate(y, scale_factor=self.head_upsampling, mode="bilinear",
                              align_corners=True)
        return y
