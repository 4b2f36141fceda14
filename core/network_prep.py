"""The network as inference runs it: device, folded batch norm, channels-last, TTA.

:func:`prepare_network` makes an inference copy of a trained network (batch norm folded
into the convolutions, on the device, channels-last), optionally wrapped in rotation
test-time augmentation; :func:`run_network` turns one normalised input into class
probabilities, with autocast when a lower precision is asked for.
"""

from __future__ import annotations

import numpy as np
import torch

from terraseg.core.models.patch_cnn import fuse_batchnorm
from terraseg.protocol.errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; or the named torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"Unknown device '{name}'.", "Use auto, cpu or cuda.") from exc


@torch.inference_mode()
def run_network(network: torch.nn.Module, x: np.ndarray, device: torch.device,
                autocast_dtype: torch.dtype | None = None) -> np.ndarray:
    """Softmax probabilities of the network on one normalised input. Shape: (K, h, w)."""
    t = torch.from_numpy(x)[None].to(device).contiguous(memory_format=torch.channels_last)
    if autocast_dtype is not None:
        with torch.autocast(device.type, dtype=autocast_dtype):
            logits = network(t)
    else:
        logits = network(t)
    return torch.softmax(logits.float(), dim=1)[0].cpu().numpy()


class RotationTTA(torch.nn.Module):
    """Test-time augmentation: mean class probabilities over the 0/90/180/270 rotations.

    Returns log-probabilities, so a softmax of the output is the averaged probability.
    """

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Averaged prediction. Shape: as the wrapped network."""
        total = None
        for k in range(4):
            xr = torch.rot90(x, k, dims=(-2, -1)).contiguous(memory_format=torch.channels_last)
            p = torch.softmax(self.network(xr).float(), dim=1)
            p = torch.rot90(p, -k, dims=(-2, -1))
            total = p if total is None else total + p
        return torch.log((total / 4).clamp_min(1e-12))


def prepare_network(network: torch.nn.Module, device: torch.device,
                    tta: bool = False) -> torch.nn.Module:
    """An inference copy: batch norm folded into convolutions, on ``device``, channels-last.

    With ``tta`` it is wrapped in :class:`RotationTTA`. The caller's network is unchanged.
    """
    fused = fuse_batchnorm(network.eval())
    fused = fused.to(device).eval().to(memory_format=torch.channels_last)
    return RotationTTA(fused).eval() if tta else fused
