"""Which device a run uses, in words a user understands."""

from __future__ import annotations

from typing import Any

import lightning as L  # noqa: N812
import torch


def describe_device(trainer: L.Trainer | None = None) -> dict[str, Any]:
    """Device of a trainer (or of this machine when None): type, name, memory, count."""
    if trainer is not None:
        dev = trainer.strategy.root_device
        n = trainer.num_devices * trainer.num_nodes
    else:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        n = 1
    info: dict[str, Any] = {"type": dev.type, "count": n}
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info.update(name=props.name, memory_gb=round(props.total_memory / 2**30, 1))
        info["description"] = f"GPU {props.name} ({info['memory_gb']} GB) x{n}"
    else:
        info.update(name="CPU", threads=torch.get_num_threads())
        info["description"] = f"CPU ({torch.get_num_threads()} threads) x{n}"
    return info
