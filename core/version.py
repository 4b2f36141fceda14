"""TerraSeg's version, read from metadata.txt (the QGIS plugin's single source of truth)."""

from __future__ import annotations

from pathlib import Path


def software_version() -> str:
    """The plugin/engine version, e.g. '0.1.0'."""
    meta = Path(__file__).resolve().parent.parent / "metadata.txt"
    try:
        for line in meta.read_text(encoding="utf-8").splitlines():
            if line.strip().startswith("version="):
                return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return "0.0.0+unknown"
