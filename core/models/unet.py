"""The U-Net family of the landslide study (seed 001).

Classic (31M-parameter original and a small ~2.5M variant), residual, SE / CBAM attention,
and the multi-resolution head that averages predictions from several scales.

One network class, :class:`UNet`, covers every variant; a frozen :class:`UNetConfig`
picks the width, depth, block, attention and head. The registry names (``unet``,
``unet_small``, ``unet_residual``, ``unet_se``, ``unet_cbam``, ``unet_multires``) are
config subclasses that only change defaults, so a model file stores the name plus the
full parameter dict and every preset stays overridable.

Architecture (Ronneberger et al. 2015 with padded convolutions):
- Encoder: ``depth`` levels of a conv block then 2x2 max pooling; widths
  ``base_width * 2**i``; a bottleneck block at width ``base_width * 2**depth``.
- Conv block: two padded 3x3 conv + BatchNorm + ReLU (``plain``), or the same with a
  1x1-projection shortcut added before the last ReLU (``residual``). ``se`` /
  ``cbam`` attention is applied to the block's output (plain) or to its residual
  branch before the addition (residual, as in SE-ResNet).
- Decoder: 2x2 stride-2 *transposed* convolution halving the channels (the paper's
  "up-convolution"; it keeps the classic 31M-parameter count, which bilinear
  upsampling with halved bottleneck would not), concatenation with the encoder skip,
  conv block.
- Head: ``single`` = 1x1 conv on the last decoder level. ``multires`` = 1x1 conv on each
  of the last ``min(3, depth)`` decoder levels (1/4, 1/2 and full resolution), each
  upsampled bilinearly to full size; the logits are averaged (the study's "voting
  masks" built into the network).
- ``dropout``: Dropout2d on the bottleneck output (the paper's dropout at the end of
  the contracting path); 0 disables it.

Geometry: the output has the input's height and width whenever both are multiples of
the stride ``2**depth``; other sizes are refused with the nearest valid sizes. Away from
the tile borders the network is equivariant to shifts by multiples of the stride; SE and
CBAM pool over the whole tile, so their outputs also depend on the tile's extent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from terraseg.protocol.errors import ConfigError

BLOCKS = ("plain", "residual")
ATTENTIONS = ("none", "se", "cbam")
HEADS = ("single", "multires")
MULTIRES_SCALES = 3
MAX_DEPTH = 6


def valid_tile_sizes(stride: int, max_px: int = 1024) -> tuple[int, ...]:
    """Tile sizes (px) a network of total stride ``stride`` accepts, up to ``max_px``."""
    return tuple(range(stride, max_px + 1, stride))


def nearest_valid_sizes(size: int, stride: int) -> tuple[int, ...]:
    """The valid tile sizes just below and above ``size`` (one if ``size`` < stride)."""
    below, above = (size // stride) * stride, (size // stride + 1) * stride
    return (below, above) if below > 0 else (above,)


def check_tile_size(size: int, stride: int, option: str = "") -> None:
    """Refuse a tile size that is not a multiple of the network stride.

    Raises:
        ConfigError: Naming the size and the nearest valid sizes below and above; the hint
            names ``option`` (e.g. "--tile-size") when given.
    """
    if size % stride == 0:
        return
    near = " or ".join(str(v) for v in nearest_valid_sizes(size, stride))
    hint = (f"Use {option} {near}." if option else
            f"Choose a tile size that is a multiple of {stride} (crop or pad the input), "
            "or a model with a smaller depth.")
    raise ConfigError(
        f"Tile size {size} is not divisible by the network stride {stride}; use {near}.", hint)


@dataclass(frozen=True)
class UNetConfig:
    """Hyperparameters of :class:`UNet`; validated on creation.

    Attributes:
        in_channels: Number of input bands.
        num_classes: Number of model classes (>= 2).
        base_width: Channels of the first level (64 = the original U-Net).
        depth: Number of 2x downsamplings; the stride is ``2**depth``.
        block: 'plain' (two conv-BN-ReLU) or 'residual' (with a projection shortcut).
        attention: 'none', 'se' (squeeze-excitation) or 'cbam' (channel + spatial).
        head: 'single' (one 1x1 conv) or 'multires' (mean of the last three scales).
        dropout: Dropout2d probability on the bottleneck (0 = off).
    """

    in_channels: int
    num_classes: int
    base_width: int = 64
    depth: int = 4
    block: str = "plain"
    attention: str = "none"
    head: str = "single"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)

    @property
    def stride_px(self) -> int:
        """Total stride: tile sizes must be multiples of it."""
        return 2**self.depth

    def valid_tile_sizes(self, max_px: int = 1024) -> tuple[int, ...]:
        """Tile sizes (px) this network accepts, up to ``max_px`` (for the model file)."""
        return valid_tile_sizes(self.stride_px, max_px)


@dataclass(frozen=True)
class UNetSmallConfig(UNetConfig):
    """Small plain U-Net (~2.6M parameters, the study's low-complexity size)."""

    base_width: int = 18


@dataclass(frozen=True)
class ResidualUNetConfig(UNetConfig):
    """U-Net with residual conv blocks."""

    block: str = "residual"


@dataclass(frozen=True)
class SEUNetConfig(UNetConfig):
    """U-Net with squeeze-excitation after every conv block."""

    attention: str = "se"


@dataclass(frozen=True)
class CBAMUNetConfig(UNetConfig):
    """U-Net with CBAM (channel then spatial attention) after every conv block."""

    attention: str = "cbam"


@dataclass(frozen=True)
class MultiResUNetConfig(UNetConfig):
    """U-Net whose head averages predictions from three decoder scales."""

    head: str = "multires"


class SqueezeExcitation(nn.Module):
    """Channel gate ``x * sigmoid(W2 relu(W1 mean_hw(x)))`` (Hu et al. 2018).

    Shape:
        (N, C, H, W) -> (N, C, H, W)
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reweight the channels of ``x``."""
        gate = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class CBAM(nn.Module):
    """Convolutional block attention (Woo et al. 2018): channel gate, then spatial gate.

    Channel: ``sigmoid(mlp(avgpool x) + mlp(maxpool x))``; spatial: ``sigmoid(conv7x7(
    [mean_c x, max_c x]))``.

    Shape:
        (N, C, H, W) -> (N, C, H, W)
    """

    def __init__(self, channels: int, reduction: int = 16, kernel: int = 7) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(),
                                 nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reweight the channels, then the positions, of ``x``."""
        avg = x.mean(dim=(2, 3), keepdim=True)
        mx = x.amax(dim=(2, 3), keepdim=True)
        x = x * torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


ATTENTION: dict[str, type[nn.Module]] = {"se": SqueezeExcitation, "cbam": CBAM}


def _attention(name: str, channels: int) -> nn.Module:
    """The attention module of a conv block ("se", "cbam"; anything else: none)."""
    return ATTENTION[name](channels) if name in ATTENTION else nn.Identity()


class ConvBlock(nn.Module):
    """Two padded 3x3 conv + BN (+ ReLU), optional residual shortcut and attention.

    Shape:
        (N, c_in, H, W) -> (N, c_out, H, W)
    """

    def __init__(self, c_in: int, c_out: int, residual: bool, attention: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.attn = _attention(attention, c_out)
        self.shortcut: nn.Module | None = None
        if residual:
            self.shortcut = (nn.Identity() if c_in == c_out else nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is None:
            return self.attn(F.relu(out))
        return F.relu(self.attn(out) + self.shortcut(x))


class Up(nn.Module):
    """Transposed-conv upsampling (channels halved), skip concatenation, conv block.

    Shape:
        x: (N, C, H, W), skip: (N, C/2, 2H, 2W) -> (N, C/2, 2H, 2W)
    """

    def __init__(self, c_in: int, residual: bool, attention: str) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_in // 2, 2, stride=2)
        self.block = ConvBlock(c_in, c_in // 2, residual, attention)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsample ``x`` and fuse it with ``skip``."""
        return self.block(torch.cat([skip, self.up(x)], dim=1))


class TileNetwork(nn.Module):
    """Base of the tile networks (U-Nets, encoder-decoders): geometry from ``self.config``.

    ``stride_px`` and ``valid_tile_sizes`` come from the config; ``check_tile`` refuses a
    tile the stride does not divide.
    """

    config: UNetConfig  # or any config with stride_px and valid_tile_sizes

    @property
    def stride_px(self) -> int:
        """Total stride: tile sizes must be multiples of it."""
        return self.config.stride_px

    def valid_tile_sizes(self, max_px: int = 1024) -> tuple[int, ...]:
        """Tile sizes (px) this network accepts, up to ``max_px``."""
        return self.config.valid_tile_sizes(max_px)

    def check_tile(self, h: int, w: int) -> None:
        """Refuse a tile whose height or width is not a multiple of the stride.

        Raises:
            ConfigError: Naming the size and the nearest valid sizes below and above.
        """
        for n in (h, w):
            check_tile_size(n, self.stride_px)


class UNet(TileNetwork):
    """U-Net for dense segmentation (see module docstring).

    Shape:
        x: (N, in_channels, H, W), H and W multiples of ``stride_px``.
        returns: (N, num_classes, H, W) class logits.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        cfg = config
        self.config = cfg
        res = cfg.block == "residual"
        widths = [cfg.base_width * 2**i for i in range(cfg.depth + 1)]
        self.encoder = nn.ModuleList()
        c_prev = cfg.in_channels
        for w in widths[:-1]:
            self.encoder.append(ConvBlock(c_prev, w, res, cfg.attention))
            c_prev = w
        self.bottleneck = ConvBlock(c_prev, widths[-1], res, cfg.attention)
        self.dropout = nn.Dropout2d(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        # decoder[j] outputs widths[depth - 1 - j], at 1 / 2**(depth - 1 - j) resolution
        self.decoder = nn.ModuleList(Up(w, res, cfg.attention) for w in widths[:0:-1])
        n_heads = min(MULTIRES_SCALES, cfg.depth) if cfg.head == "multires" else 1
        # heads[k] reads decoder level k from the finest (0 = full resolution)
        self.heads = nn.ModuleList(nn.Conv2d(widths[k], cfg.num_classes, 1)
                                   for k in range(n_heads))


    def decode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Decoder outputs, finest first.

        Shape:
            x: (N, in_channels, H, W) -> list of (N, base_width * 2**k, H / 2**k, W / 2**k)
        """
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.dropout(self.bottleneck(x))
        levels = []
        for up, skip in zip(self.decoder, reversed(skips), strict=True):
            x = up(x, skip)
            levels.append(x)
        return levels[::-1]

    def scale_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-scale logits, each upsampled to full size; ``forward`` is their mean.

        Shape:
            x: (N, in_channels, H, W) -> list of (N, num_classes, H, W), finest first
        """
        self.check_tile(*x.shape[-2:])
        levels = self.decode(x)
        size = x.shape[-2:]
        out = []
        for k, head in enumerate(self.heads):
            y = head(levels[k])
            if k:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            out.append(y)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for every pixel of ``x``."""
        logits = self.scale_logits(x)
        return logits[0] if len(logits) == 1 else torch.stack(logits).mean(dim=0)


def _validate(cfg: UNetConfig) -> None:
    """Check a config with errors that say how to fix it."""
    for name, value, choices in (("block", cfg.block, BLOCKS),
                                 ("attention", cfg.attention, ATTENTIONS),
                                 ("head", cfg.head, HEADS)):
        if value not in choices:
            raise ConfigError(f"Unknown U-Net {name} '{value}'.",
                              f"Choose one of: {', '.join(choices)}.")
    if cfg.in_channels < 1 or cfg.num_classes < 2:
        raise ConfigError(f"Need >= 1 band and >= 2 classes (got {cfg.in_channels} band(s), "
                          f"{cfg.num_classes} class(es)).", "Check --bands and the labels.")
    if cfg.base_width < 1:
        raise ConfigError(f"U-Net base_width {cfg.base_width} must be >= 1.",
                          "Use e.g. 64 (original U-Net) or 18 (small).")
    if not 1 <= cfg.depth <= MAX_DEPTH:
        raise ConfigError(f"U-Net depth {cfg.depth} must be between 1 and {MAX_DEPTH}.",
                          "Use 4 (the original U-Net, stride 16).")
    if cfg.head == "multires" and cfg.depth < 2:
        raise ConfigError("The multires head needs depth >= 2 (at least two scales).",
                          "Raise the depth or use head 'single'.")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"Dropout {cfg.dropout} must be in [0, 1).",
                          "Use 0 to disable dropout, e.g. 0.2 to enable it.")
