"""Model kinds: what differs between families of networks, in one object per kind.

A kind answers every question training and inference would otherwise answer with an
``if kind == ...`` branch: the network parameters from the training options, the input
geometry recorded in the model file, the size of a training sample, the default loss,
whether a two-class threshold is tuned, how fine-tuning keeps an earlier model's shape,
and how inference tiles the raster and turns tiles into probabilities.

- :class:`PatchKind`: dense-exact patch models (``patch_cnn``). Training samples are
  cutouts predicting a centre block; inference runs stride-aligned tiles (core/dense.py).
- :class:`TileKind`: padded tile networks (the U-Net family). Training samples are whole
  label tiles; inference blends overlapping tiles with sin^2 weights (core/blend.py).

Each registry entry (core/models/registry.py) carries its kind. Adding a family of the
same kind is one module plus one registry entry; a new kind is one class here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from rasterio.windows import Window
from torch import nn

from terraseg.core.blend import TileGeometry, predict_blended, tile_starts
from terraseg.core.dense import DEFAULT_TILE_PX, DenseGeometry, predict_tiles, tiles
from terraseg.core.models.unet import check_tile_size
from terraseg.core.normalise import BandStats
from terraseg.core.raster import RasterSource
from terraseg.protocol.model_meta import Geometry, ModelMeta
from terraseg.protocol.options import NetworkOptions

#: (window in raster pixels, probs (K, h, w), valid (h, w), fraction done)
ProbabilityPiece = tuple[Window, np.ndarray, np.ndarray, float]


class ModelKind:
    """Base of the model kinds; subclasses fill in every method."""

    name: ClassVar[str] = ""
    #: Loss when ``--loss`` is not given (registry name of training/losses.py).
    default_loss: ClassVar[str] = "ce"
    #: Whether a two-class model tunes a threshold on validation pixels.
    tunes_threshold: ClassVar[bool] = False
    #: Whether cutmix applies to its training batches.
    uses_cutmix: ClassVar[bool] = False

    def network_params(self, net: NetworkOptions, in_channels: int, num_classes: int,
                       make_config: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        """Constructor parameters of the network from the training options."""
        raise NotImplementedError

    def sample_px(self, net: NetworkOptions) -> tuple[int, int]:
        """(input px, labelled output px) of one training sample."""
        raise NotImplementedError

    def geometry(self, net: NetworkOptions, network: nn.Module) -> Geometry:
        """The geometry recorded in the model file for inference."""
        raise NotImplementedError

    def keep_shape(self, meta: ModelMeta, net: NetworkOptions) -> NetworkOptions:
        """Fine-tuning: the options that rebuild ``meta``'s network exactly."""
        raise NotImplementedError

    def geometry_problem(self, geometry: Geometry, network: nn.Module) -> str | None:
        """Why a recorded geometry does not fit the network (None when it fits)."""
        if geometry.stride_px != int(network.stride_px):
            return (f"'geometry.stride_px' is {geometry.stride_px} but the network's stride "
                    f"is {int(network.stride_px)}")
        return None

    def example_input_px(self, params: dict[str, Any], make_config: Callable[[dict], Any]
                         ) -> int:
        """A valid square input size for a network with ``params`` (contract tests)."""
        raise NotImplementedError

    def count_tiles(self, geometry: Geometry, region: Window, tile_px: int = 0) -> int:
        """How many network runs :meth:`probabilities` makes over ``region``."""
        raise NotImplementedError

    def check_tile_px(self, geometry: Geometry, tile_px: int, option: str = "--tile-size"
                      ) -> None:
        """Refuse a processing tile (0 = the default) the network cannot run, before any work.

        Raises:
            ConfigError: Naming ``option``. The base takes any size (patch models' tiles are
                aligned to the stride by core/dense.py).
        """

    def probabilities(self, meta: ModelMeta, network: nn.Module, source: RasterSource,
                      stats: BandStats, region: Window, device: torch.device,
                      tile_px: int = 0, autocast_dtype: torch.dtype | None = None,
                      ) -> Iterator[ProbabilityPiece]:
        """Class probabilities over ``region`` in pieces."""
        raise NotImplementedError


class PatchKind(ModelKind):
    """Dense-exact patch models: cutout in, centre block out (seed 000)."""

    name = "patch"
    default_loss = "ce"

    def network_params(self, net: NetworkOptions, in_channels: int, num_classes: int,
                       make_config: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        """Bands, classes, patch/block/stride, planes and blocks."""
        return {"in_channels": in_channels, "num_classes": num_classes,
                "patch_px": net.patch_px, "block_px": net.block_px,
                "planes": list(net.planes), "blocks": list(net.blocks),
                "stride_px": net.stride_px}

    def sample_px(self, net: NetworkOptions) -> tuple[int, int]:
        """A cutout of ``patch_px`` predicting its ``block_px`` centre."""
        return net.patch_px, net.block_px

    def geometry(self, net: NetworkOptions, network: nn.Module) -> Geometry:
        """Patch, block, stride, receptive field and margin."""
        return Geometry("patch", int(network.stride_px), patch_px=net.patch_px,
                        block_px=net.block_px,
                        receptive_field_px=int(network.receptive_field_px),
                        margin_px=(net.patch_px - net.block_px) // 2)

    def keep_shape(self, meta: ModelMeta, net: NetworkOptions) -> NetworkOptions:
        """The initial model's patch, block, planes, blocks and stride."""
        p = meta.architecture.params
        return dataclasses.replace(net, model=meta.architecture.name,
                                   patch_px=int(p["patch_px"]), block_px=int(p["block_px"]),
                                   planes=tuple(p["planes"]), blocks=tuple(p["blocks"]),
                                   stride_px=int(p.get("stride_px", 0)))

    def geometry_problem(self, geometry: Geometry, network: nn.Module) -> str | None:
        """Stride and receptive field must be the network's own."""
        problem = super().geometry_problem(geometry, network)
        rf = int(network.receptive_field_px)
        if problem is None and geometry.receptive_field_px != rf:
            problem = (f"'geometry.receptive_field_px' is {geometry.receptive_field_px} but "
                       f"the network's receptive field is {rf}")
        return problem

    def example_input_px(self, params: dict[str, Any], make_config: Callable[[dict], Any]
                         ) -> int:
        """The training cutout."""
        return int(params["patch_px"])

    def count_tiles(self, geometry: Geometry, region: Window, tile_px: int = 0) -> int:
        """Stride-aligned tiles of ``tile_px`` (default 960) over the region."""
        return len(list(tiles(region, tile_px or DEFAULT_TILE_PX, geometry.stride_px)))

    def probabilities(self, meta: ModelMeta, network: nn.Module, source: RasterSource,
                      stats: BandStats, region: Window, device: torch.device,
                      tile_px: int = 0, autocast_dtype: torch.dtype | None = None,
                      ) -> Iterator[ProbabilityPiece]:
        """Dense stride-aligned tiles, each cropped to the region (exact)."""
        geom = DenseGeometry.of(meta.geometry)
        all_tiles = list(tiles(region, tile_px or DEFAULT_TILE_PX, geom.stride_px))
        for i, (tile, crop, probs, valid) in enumerate(
                predict_tiles(network, source, stats, geom, all_tiles, device,
                              autocast_dtype)):
            r = int(crop.row_off - tile.row_off)
            c = int(crop.col_off - tile.col_off)
            h, w = int(crop.height), int(crop.width)
            yield (crop, probs[:, r : r + h, c : c + w], valid[r : r + h, c : c + w],
                   (i + 1) / len(all_tiles))


class TileKind(ModelKind):
    """Padded tile networks (the U-Net family of seed 001): tile in, tile out."""

    name = "tile"
    default_loss = "focal+iou"
    tunes_threshold = True
    uses_cutmix = True

    def network_params(self, net: NetworkOptions, in_channels: int, num_classes: int,
                       make_config: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        """Bands, classes and (when given) the base width; the tile size is checked."""
        params: dict[str, Any] = {"in_channels": in_channels, "num_classes": num_classes}
        if net.base_width:
            params["base_width"] = net.base_width
        check_tile_size(net.tile_px, make_config(params).stride_px, "--tile-size")
        return params

    def sample_px(self, net: NetworkOptions) -> tuple[int, int]:
        """A whole tile with its label tile."""
        return net.tile_px, net.tile_px

    def geometry(self, net: NetworkOptions, network: nn.Module) -> Geometry:
        """Tile, half-tile step, stride and the valid tile sizes up to 1024 px."""
        return Geometry("tile", int(network.stride_px), tile_px=net.tile_px,
                        step_px=net.tile_px // 2,
                        valid_tile_sizes_px=tuple(network.valid_tile_sizes(1024)))

    def keep_shape(self, meta: ModelMeta, net: NetworkOptions) -> NetworkOptions:
        """The initial model's architecture and training tile."""
        return dataclasses.replace(net, model=meta.architecture.name,
                                   tile_px=int(meta.geometry.tile_px or net.tile_px))

    def example_input_px(self, params: dict[str, Any], make_config: Callable[[dict], Any]
                         ) -> int:
        """Twice the network stride."""
        return 2 * int(make_config(params).stride_px)

    def count_tiles(self, geometry: Geometry, region: Window, tile_px: int = 0) -> int:
        """Overlapping tiles (half-tile step) anchored to the raster origin."""
        t = tile_px or int(geometry.tile_px or 0)
        tgeom = TileGeometry(t, t // 2)
        r0, c0 = int(region.row_off), int(region.col_off)
        rows = tile_starts(r0, r0 + int(region.height), tgeom)
        cols = tile_starts(c0, c0 + int(region.width), tgeom)
        return len(rows) * len(cols)

    def check_tile_px(self, geometry: Geometry, tile_px: int, option: str = "--tile-size"
                      ) -> None:
        """A tile size the network stride divides (0 = the training tile)."""
        if tile_px:
            check_tile_size(tile_px, geometry.stride_px, option)

    def probabilities(self, meta: ModelMeta, network: nn.Module, source: RasterSource,
                      stats: BandStats, region: Window, device: torch.device,
                      tile_px: int = 0, autocast_dtype: torch.dtype | None = None,
                      ) -> Iterator[ProbabilityPiece]:
        """Overlapping tiles blended with sin^2 weights, yielded in strips of rows."""
        t = tile_px or int(meta.geometry.tile_px or 0)
        check_tile_size(t, meta.geometry.stride_px, "--tile-size")
        tgeom = TileGeometry(t, t // 2)
        for win, probs, valid in predict_blended(network, source, stats, region, tgeom,
                                                 len(meta.classes), device,
                                                 autocast_dtype=autocast_dtype):
            done = (win.row_off + win.height - region.row_off) / region.height
            yield win, probs, valid, float(done)


KINDS: dict[str, ModelKind] = {k.name: k for k in (PatchKind(), TileKind())}
