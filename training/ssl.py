"""SimCLR for multispectral tiles: two augmented views, a projection head, NT-Xent.

The method is SimCLR (Chen, Kornblith, Norouzi & Hinton 2020, "A Simple Framework for
Contrastive Learning of Visual Representations", ICML; arXiv:2002.05709), written here in
plain torch + Lightning because TorchGeo and lightly, which ship it, require torchvision,
which cannot be installed next to the engine's torch. It follows the paper:

- every tile of a batch gives two views by random augmentations (:class:`ViewAugment`);
- the encoder (a ResNet, :class:`~terraseg.core.models.resnet_encoder.ResNetEncoder`)
  turns each view into a vector by global average pooling of its last feature map;
- a projection head (:class:`ProjectionHead`: Linear, BatchNorm, ReLU, Linear, as in the
  paper's appendix and lightly's ``SimCLRProjectionHead``) maps it to ``projection_dim``;
- the loss is NT-Xent (:func:`nt_xent`): for each view, cross-entropy of picking its
  partner among the other ``2N - 1`` views by cosine similarity / temperature. With
  several processes (DDP) the views of every process are gathered, so the negatives are
  the whole global batch, as in the paper.

Why SimCLR: it needs no momentum encoder, queue or predictor (BYOL, MoCo), so it has the
fewest parts that can go wrong, and it trains stably with the small batches of a CPU
(dozens of tiles) given a moderate temperature (0.5, the paper's CIFAR-10 setting and
lightly's default). Masked-image objectives need a ViT and many more epochs.

The augmentations are the paper's, made band-agnostic (no RGB-only colour operations):
random resized crop (area 25-100 % of the tile, aspect 3/4-4/3) with flips and 90 degree
rotations, brightness and contrast jitter (p = 0.8, the paper's colour jitter) shared by
all bands with a small change per band on top (so band relations survive),
Gaussian blur (p = 0.5), Gaussian noise and band dropout (one band set to its mean, in
place of the paper's random greyscale). They run on whole batches on the training device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import lightning as L  # noqa: N812
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent, SimCLR's normalised temperature-scaled cross-entropy.

    For view ``i`` with partner ``j`` among the ``2N`` views:
    ``l_i = -log(exp(s_ij / t) / sum_{k != i} exp(s_ik / t))``, ``s`` the cosine
    similarity; the loss is the mean of ``l_i`` over all ``2N`` views.

    Shape:
        z1, z2: (N, D) the projections of the two views of N tiles; returns a scalar.
    """
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def pair_accuracy(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Share of views whose most similar other view is their partner (a training gauge).

    Shape:
        z1, z2: (N, D); returns a scalar in [0, 1].
    """
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    sim = (z @ z.T).fill_diagonal_(-2.0)
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return (sim.argmax(1) == partner).float().mean()


class ProjectionHead(nn.Module):
    """SimCLR's projection MLP: Linear, BatchNorm, ReLU, Linear.

    Shape:
        (N, in_dim) -> (N, out_dim)
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_dim, hidden_dim, bias=False),
                                    nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                                    nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project ``x``."""
        return self.layers(x)


@dataclass(frozen=True)
class ViewConfig:
    """Strength of the view augmentations (values in normalised band units).

    Attributes:
        crop_scale: Share of the tile's area a crop covers (min, max).
        crop_ratio: Aspect ratio of a crop (min, max).
        jitter_p: Probability of brightness/contrast jitter.
        brightness: Largest shift of all bands together (standard deviations).
        contrast: Largest relative change of contrast of all bands together.
        band_jitter: Largest further change of each band's contrast (relative) and
            brightness (standard deviations) on its own; small, so the spectral shape
            (the bands' relations, what land cover is told by) survives.
        blur_p: Probability of Gaussian blur.
        blur_sigma: Blur sigma range in pixels.
        noise_p: Probability of Gaussian noise.
        noise_sd: Largest noise standard deviation.
        band_drop_p: Probability of setting one band to its mean (0).
    """

    crop_scale: tuple[float, float] = (0.25, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    band_jitter: float = 0.1
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    noise_p: float = 0.5
    noise_sd: float = 0.1
    band_drop_p: float = 0.2


def _uniform(n: int, lo: float, hi: float, like: torch.Tensor, *shape: int) -> torch.Tensor:
    return torch.empty(n, *shape, device=like.device, dtype=like.dtype).uniform_(lo, hi)


def _chance(n: int, p: float, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(n, device=like.device) < p


class ViewAugment(nn.Module):
    """A random view of each tile of a batch (see the module docstring); no parameters.

    Shape:
        (N, C, H, W) -> (N, C, H, W), same dtype and device.
    """

    def __init__(self, config: ViewConfig | None = None) -> None:
        super().__init__()
        self.config = config or ViewConfig()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One view of every tile."""
        x = self.crop_flip_rotate(x)
        x = self.jitter(x)
        x = self.blur(x)
        x = self.noise(x)
        return self.drop_band(x)

    def crop_flip_rotate(self, x: torch.Tensor) -> torch.Tensor:
        """Random resized crop, flips and 90 degree rotations in one resampling."""
        cfg, n = self.config, x.shape[0]
        area = _uniform(n, *cfg.crop_scale, x)
        log_r = _uniform(n, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), x)
        ratio = torch.exp(log_r)
        w = torch.sqrt(area * ratio).clamp(max=1.0)
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (torch.rand_like(w) * 2 - 1) * (1 - w)
        cy = (torch.rand_like(h) * 2 - 1) * (1 - h)
        k = torch.randint(0, 4, (n,), device=x.device)
        cos = torch.cos(k * math.pi / 2).round().to(x.dtype)
        sin = torch.sin(k * math.pi / 2).round().to(x.dtype)
        flip = torch.where(_chance(n, 0.5, x), -1.0, 1.0).to(x.dtype)
        # input coordinate = diag(w, h) @ rotation @ diag(flip, 1) @ output coordinate + c
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 0, 1] = w * cos * flip, -w * sin
        theta[:, 1, 0], theta[:, 1, 1] = h * sin * flip, h * cos
        theta[:, 0, 2], theta[:, 1, 2] = cx, cy
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                             align_corners=False)

    def jitter(self, x: torch.Tensor) -> torch.Tensor:
        """Contrast (around the tile's band means) and brightness, p = jitter_p.

        One change for all bands (as a change of illumination or haze), times a small one
        per band (``band_jitter``).
        """
        cfg, (n, c) = self.config, x.shape[:2]
        mean = x.mean(dim=(2, 3), keepdim=True)
        bj = cfg.band_jitter
        gain = (_uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, x, 1)
                * _uniform(n, 1 - bj, 1 + bj, x, c))[..., None, None]
        shift = (_uniform(n, -cfg.brightness, cfg.brightness, x, 1)
                 + _uniform(n, -bj, bj, x, c))[..., None, None]
        out = (x - mean) * gain + mean + shift
        return torch.where(_chance(n, cfg.jitter_p, x)[:, None, None, None], out, x)

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        """Gaussian blur with a random sigma per tile, p = blur_p (separable, reflect)."""
        cfg, (n, c, h, w) = self.config, x.shape
        radius = min(math.ceil(3 * cfg.blur_sigma[1]), (min(h, w) - 1) // 2)
        if radius < 1:
            return x
        sigma = _uniform(n, *cfg.blur_sigma, x)
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None] ** 2))
        kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)
        flat = F.pad(x.reshape(1, n * c, h, w), (radius,) * 4, mode="reflect")
        flat = F.conv2d(flat, kernel[:, None, :, None], groups=n * c)
        flat = F.conv2d(flat, kernel[:, None, None, :], groups=n * c)
        out = flat.reshape(n, c, h, w)
        return torch.where(_chance(n, cfg.blur_p, x)[:, None, None, None], out, x)

    def noise(self, x: torch.Tensor) -> torch.Tensor:
        """Gaussian noise with a random standard deviation per tile, p = noise_p."""
        cfg, n = self.config, x.shape[0]
        sd = _uniform(n, 0.0, cfg.noise_sd, x)
        sd = torch.where(_chance(n, cfg.noise_p, x), sd, torch.zeros_like(sd))
        return x + torch.randn_like(x) * sd[:, None, None, None]

    def drop_band(self, x: torch.Tensor) -> torch.Tensor:
        """One random band set to 0 (its mean), p = band_drop_p; never the only band."""
        n, c = x.shape[:2]
        if c < 2:
            return x
        band = torch.randint(0, c, (n,), device=x.device)
        drop = (F.one_hot(band, c).bool() & _chance(n, self.config.band_drop_p, x)[:, None])
        return x.masked_fill(drop[:, :, None, None], 0.0)


class SimCLRTask(L.LightningModule):
    """SimCLR pretraining of a ResNet encoder (AdamW, cosine learning-rate schedule).

    Args:
        encoder: The encoder to pretrain (returns its feature maps, the last one is pooled).
        feature_dim: Channels of the encoder's last feature map.
        projection_dim: Output width of the projection head.
        temperature: NT-Xent temperature.
        lr: Learning rate.
        weight_decay: AdamW weight decay.
        max_epochs: Epochs of the cosine schedule.
        views: Augmentation strengths.
    """

    def __init__(self, encoder: nn.Module, feature_dim: int, projection_dim: int = 128,
                 temperature: float = 0.5, lr: float = 1e-3, weight_decay: float = 1e-4,
                 max_epochs: int = 50, views: ViewConfig | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder", "views"])
        self.encoder = encoder
        self.head = ProjectionHead(feature_dim, feature_dim, projection_dim)
        self.augment = ViewAugment(views)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled representation the encoder learns.

        Shape:
            (N, C, H, W) -> (N, feature_dim)
        """
        return self.encoder(x)[-1].mean(dim=(2, 3))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """NT-Xent of two views of each tile of the batch."""
        n = batch.shape[0]
        with torch.no_grad():
            views = torch.cat([self.augment(batch), self.augment(batch)])
        z1, z2 = self.head(self.embed(views)).chunk(2)
        if self.trainer.world_size > 1:  # negatives from every process (global batch)
            z1 = self.all_gather(z1, sync_grads=True).flatten(0, 1)
            z2 = self.all_gather(z2, sync_grads=True).flatten(0, 1)
        loss = nt_xent(z1, z2, self.hparams.temperature)
        self.log("loss", loss, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        self.log("pair_accuracy", pair_accuracy(z1.detach(), z2.detach()), on_step=False,
                 on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    def configure_optimizers(self) -> Any:
        """AdamW with a cosine decay of the learning rate over the epochs."""
        hp = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, hp.max_epochs))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
