"""The patch CNN of the sealed-surface study (seed 000), built for exact dense inference.

The study's network is a small ResNet-18 (three stages of 4/8/16 planes, batch norm) that
reads a 51x51 cutout and predicts the 5x5 block at its centre. Evaluating it cutout by
cutout repeats almost all of the work for neighbouring blocks. TerraSeg builds the same
kind of network from *unpadded* ("valid") convolutions so that it is translation
equivariant: run over a large tile it computes, at every output position, exactly what
it would compute on the cutout centred there.

Geometry (all in pixels):
- ``patch_px`` P: input cutout size used in training (odd, default 51).
- ``block_px`` K: predicted centre block (odd, default 5, a multiple of the stride).
- ``stride_px`` S: total stride of the network (default S = K). The last layer predicts
  an SxS block per coarse position (1x1 conv to C*S*S channels + pixel shuffle), so the
  output grid is full resolution.
- Receptive field R = P - K + S: every SxS output block sees exactly the R x R input
  window around it. The stem and head kernel sizes are chosen so R is exact.

With the default S = K = 5 one cutout yields one coarse position; a tile of T x T output
pixels (T a multiple of S) needs (T + R - S) x (T + R - S) input pixels. Dense and
cutout-wise evaluation give the same numbers up to float rounding (tested <= 1e-4).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from terraseg.protocol.errors import ConfigError


@dataclass(frozen=True)
class PatchCNNConfig:
    """Hyperparameters of :class:`PatchCNN`.

    Attributes:
        in_channels: Number of input bands.
        num_classes: Number of model classes.
        patch_px: Training cutout size (odd).
        block_px: Predicted centre block size (odd, multiple of the stride).
        planes: Channels per stage (study: 4, 8, 16).
        blocks: Residual blocks per stage (ResNet-18: 2 each).
        stride_px: Total stride; 0 means "equal to block_px". Put on the last stage.
    """

    in_channels: int
    num_classes: int
    patch_px: int = 51
    block_px: int = 5
    planes: tuple[int, ...] = (4, 8, 16)
    blocks: tuple[int, ...] = (2, 2, 2)
    stride_px: int = 0

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


def _down_kernel(stride: int) -> int:
    """Kernel of a strided conv: 3 for stride 1-2, else equal to the stride (no gaps)."""
    return 3 if stride <= 2 else stride


class BasicBlock(nn.Module):
    """Residual block of two valid convolutions; the shortcut is cropped to match.

    Shape:
        (N, C_in, H, W) -> (N, C_out, (H - k) // s + 1 - 2, ...)
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.k1 = _down_kernel(stride)
        self.stride = stride
        self.conv1 = nn.Conv2d(c_in, c_out, self.k1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
            )
        # input offset of the pixel aligned with output (0, 0): centre of its window
        self.offset = (2 * stride + self.k1 - 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        h, w = out.shape[-2:]
        o, s = self.offset, self.stride
        idt = x[..., o : o + (h - 1) * s + 1 : s, o : o + (w - 1) * s + 1 : s]
        if self.shortcut is not None:
            idt = self.shortcut(idt)
        out += idt
        return F.relu(out, inplace=True)

    def rf_growth(self, jump: int) -> int:
        """Receptive-field growth of this block given the input's pixel jump."""
        return (self.k1 - 1) * jump + 2 * jump * self.stride


class PatchCNN(nn.Module):
    """Fully convolutional residual patch classifier (see module docstring).

    Shape:
        x: (N, C, H, W) normalised bands, H - (R - S) and W - (R - S) multiples of S.
        returns: (N, num_classes, H - (R - S), W - (R - S)) class logits.
    """

    def __init__(self, config: PatchCNNConfig) -> None:
        super().__init__()
        cfg = config
        stride = cfg.stride_px or cfg.block_px
        _check_geometry(cfg, stride)
        self.config = cfg
        self.stride_px = stride
        strides = [1] * (len(cfg.planes) - 1) + [stride]
        # receptive field without stem/head context: stem 1x1, head 1x1
        rf, jump = 1, 1
        stages: list[nn.Module] = []
        c_prev = cfg.planes[0]
        for planes, n_blocks, s in zip(cfg.planes, cfg.blocks, strides, strict=True):
            layers = []
            for b in range(n_blocks):
                blk = BasicBlock(c_prev, planes, s if b == 0 else 1)
                rf += blk.rf_growth(jump)
                jump *= blk.stride
                layers.append(blk)
                c_prev = planes
            stages.append(nn.Sequential(*layers))
        self.receptive_field_px = cfg.patch_px - cfg.block_px + stride
        extra = self.receptive_field_px - rf
        if extra < 0:
            raise ConfigError(
                f"patch_px={cfg.patch_px} is too small for this network: its receptive field "
                f"is at least {rf + cfg.block_px - stride} px with blocks={list(cfg.blocks)}.",
                f"Use --patch-size >= {rf + cfg.block_px - stride} (odd) or fewer blocks "
                "per stage (e.g. --blocks 1,1,1).",
            )
        if stride == 1:
            stem_k, head_k = 1 + extra - extra // 2, 1 + extra // 2
        else:
            stem_k, head_k = 1 + extra % stride, 1 + extra // stride
        self.stem = nn.Sequential(
            nn.Conv2d(cfg.in_channels, cfg.planes[0], stem_k, bias=False),
            nn.BatchNorm2d(cfg.planes[0]),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.Sequential(*stages)
        self.head = nn.Conv2d(c_prev, cfg.num_classes * stride * stride, head_k)
        self.stem_kernel, self.head_kernel = stem_k, head_k

    @property
    def context_px(self) -> int:
        """Input pixels needed beyond the output block on both sides together (R - S)."""
        return self.receptive_field_px - self.stride_px

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for the centre of every receptive-field window in ``x``."""
        y = self.head(self.stages(self.stem(x)))
        return F.pixel_shuffle(y, self.stride_px) if self.stride_px > 1 else y


def fuse_batchnorm(network: nn.Module) -> nn.Module:
    """Copy of an eval-mode network with every BatchNorm folded into the conv before it.

    Inference only: the result computes the same function (up to float rounding) with
    fewer memory passes. Works on :class:`PatchCNN` and any module whose BatchNorm layers
    directly follow their convolution in a Sequential or as ``convN``/``bnN`` attributes.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = copy.deepcopy(network).eval()
    for module in net.modules():
        if isinstance(module, nn.Sequential):
            items = list(module)
            for i in range(len(items) - 1):
                if isinstance(items[i], nn.Conv2d) and isinstance(items[i + 1], nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(items[i], items[i + 1])
                    module[i + 1] = nn.Identity()
        for n in (1, 2):
            conv, bn = getattr(module, f"conv{n}", None), getattr(module, f"bn{n}", None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, f"conv{n}", fuse_conv_bn_eval(conv, bn))
                setattr(module, f"bn{n}", nn.Identity())
    return net


def _check_geometry(cfg: PatchCNNConfig, stride: int) -> None:
    """Validate sizes with errors that say how to fix them."""
    if cfg.patch_px % 2 == 0 or cfg.block_px % 2 == 0:
        raise ConfigError(
            f"Patch size {cfg.patch_px} and block size {cfg.block_px} must both be odd "
            "so the block has a centre.",
            "Use odd sizes such as --patch-size 51 --block-size 5.",
        )
    if cfg.block_px > cfg.patch_px:
        raise ConfigError(f"Block size {cfg.block_px} exceeds patch size {cfg.patch_px}.",
                          "Use a block size smaller than the patch size.")
    if stride < 1 or cfg.block_px % stride:
        raise ConfigError(
            f"Block size {cfg.block_px} is not a multiple of the network stride {stride}.",
            "Leave --stride at 0 (= block size) or choose a divisor of the block size.",
        )
    if not (len(cfg.planes) == len(cfg.blocks) >= 1) or min(cfg.blocks) < 1:
        raise ConfigError(f"planes {cfg.planes} and blocks {cfg.blocks} must have the same "
                          "length and at least one block per stage.",
                          "Give e.g. --planes 4,8,16 --blocks 2,2,2.")
    if cfg.in_channels < 1 or cfg.num_classes < 2:
        raise ConfigError(f"Need >= 1 band and >= 2 classes (got {cfg.in_channels} band(s), "
                          f"{cfg.num_classes} class(es)).", "Check --bands and the labels.")
