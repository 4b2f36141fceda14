"""What the engine runs on: Python, package versions, compute device (``terraseg env``)."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any

import torch

from terraseg.core.version import software_version
from terraseg.training.device import describe_device

PACKAGES = ("torch", "lightning", "numpy", "rasterio", "fiona", "shapely", "zarr",
            "scikit-learn", "safetensors")


def engine_environment() -> dict[str, Any]:
    """Python path and version, package versions, device (GPU name and memory or CPU)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"terraseg": software_version(), "python": sys.executable,
            "python_version": platform.python_version(), "platform": platform.platform(),
            "packages": versions, "cuda_available": torch.cuda.is_available(),
            "cuda_version": torch.version.cuda, "device": describe_device()}
