"""ResNet-18/34/50 encoders for the encoder-decoder segmentation networks.

The layout is torchvision's ResNet (He et al. 2016), as segmentation_models_pytorch (smp)
uses it for its ``resnet18``/``resnet34``/``resnet50`` encoders, with the classifier
(average pooling and ``fc``) removed:

- stem: 7x7 conv, stride 2, + BatchNorm + ReLU (``conv1``/``bn1``), ``base_width``
  channels, 1/2 resolution;
- ``maxpool`` (3x3, stride 2) + ``layer1`` (1/4), ``layer2`` (1/8), ``layer3`` (1/16),
  ``layer4`` (1/32); widths ``base_width * (1, 2, 4, 8)`` times the block's expansion;
- BasicBlock (two 3x3 convs) for ResNet-18 ([2, 2, 2, 2]) and ResNet-34 ([3, 4, 6, 3]);
  Bottleneck (1x1, 3x3, 1x1, expansion 4) for ResNet-50 ([3, 4, 6, 3]).

Module and parameter names are torchvision's (``layer3.1.conv2.weight``), so the same
state dict keys as smp's encoder. Weights are random (kaiming normal, fan-out, as
torchvision initialises them): nothing is downloaded, any number of input bands works.

``output_stride=16`` turns layer4's strides into dilation 2 on every conv in it, exactly as
smp does for DeepLabV3+ (``replace_strides_with_dilation``).

BatchNorm is :class:`SafeBatchNorm2d`: in training, a batch holding a single value per
channel (one tile whose deepest features are 1x1, or the ASPP's pooled branch with batch
size 1) is normalised with the running statistics instead of failing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from terraseg.protocol.errors import ConfigError

#: Encoder name -> (block, blocks per layer).
ENCODERS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}
#: torchvision's (and smp's) stem width; ``base_width`` scales every layer relative to it.
DEFAULT_WIDTH = 64


class SafeBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that accepts one value per channel in training (small tile batches).

    With ``N * H * W == 1`` batch statistics do not exist (torch raises); such a batch is
    normalised with the running statistics, which it leaves unchanged. Otherwise it is
    exactly :class:`torch.nn.BatchNorm2d` (same parameters and state dict).

    Shape:
        (N, C, H, W) -> (N, C, H, W)
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x``."""
        if self.training and x.numel() == x.shape[1]:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight,
                                self.bias, False, 0.0, self.eps)
        return super().forward(x)


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Conv (no bias, 'same' padding) + BatchNorm: torchvision's downsample shortcut."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         SafeBatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN, identity or 1x1-projection shortcut, ReLU (ResNet-18/34).

    Shape:
        (N, c_in, H, W) -> (N, planes, H / stride, W / stride)
    """

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn1 = SafeBatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = SafeBatchNorm2d(planes)
        self.downsample = (conv_bn(c_in, planes, 1, stride)
                           if stride != 1 or c_in != planes else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand x4, shortcut, ReLU (ResNet-50).

    Shape:
        (N, c_in, H, W) -> (N, 4 * planes, H / stride, W / stride)
    """

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = SafeBatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = SafeBatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=False)
        self.bn3 = SafeBatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (conv_bn(c_in, c_out, 1, stride)
                           if stride != 1 or c_in != c_out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock,
                                                          "bottleneck": Bottleneck}


def dilate(module: nn.Module, rate: int) -> None:
    """Replace the strides of every conv in ``module`` by dilation ``rate`` (smp's way)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            m.stride = (1, 1)
            m.dilation = (rate, rate)
            m.padding = ((kh // 2) * rate, (kw // 2) * rate)


class ResNetEncoder(nn.Module):
    """ResNet feature extractor returning six feature maps (see module docstring).

    Args:
        name: 'resnet18', 'resnet34' or 'resnet50'.
        in_channels: Input bands (any number >= 1).
        base_width: Stem width (64 = torchvision); layer widths scale with it.
        output_stride: 32, or 16 (layer4 dilated instead of strided).

    Shape:
        x: (N, in_channels, H, W), H and W multiples of ``output_stride``.
        returns: [x, stem (1/2), layer1 (1/4), layer2 (1/8), layer3 (1/16),
        layer4 (1/32 or 1/16)] with channels :attr:`out_channels`.
    """

    def __init__(self, name: str, in_channels: int, base_width: int = DEFAULT_WIDTH,
                 output_stride: int = 32) -> None:
        super().__init__()
        if name not in ENCODERS:
            raise ConfigError(f"Unknown encoder '{name}'.",
                              f"Choose one of: {', '.join(ENCODERS)}.")
        if output_stride not in (16, 32):
            raise ConfigError(f"Encoder output stride {output_stride} is not 16 or 32.",
                              "Use 32 (plain ResNet) or 16 (DeepLabV3+).")
        kind, layers = ENCODERS[name]
        block = BLOCKS[kind]
        self.conv1 = nn.Conv2d(in_channels, base_width, 7, 2, 3, bias=False)
        self.bn1 = SafeBatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in, widths = base_width, []
        for i, n in enumerate(layers):
            planes = base_width * 2**i
            blocks = [block(c_in, planes, 1 if i == 0 else 2)]
            c_in = planes * block.expansion
            blocks += [block(c_in, planes) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            widths.append(c_in)
        self.out_channels: tuple[int, ...] = (in_channels, base_width, *widths)
        self.output_stride = output_stride
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if output_stride == 16:
            dilate(self.layer4, 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The input and the five stage outputs, finest first."""
        features = [x]
        x = self.relu(self.bn1(self.conv1(x)))
        features.append(x)
        x = self.maxpool(x)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            features.append(x)
        return features
