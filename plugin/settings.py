"""TerraSeg's persistent settings (QgsSettings under ``terraseg/``).

Keys in use:

* ``engine_dir``: folder of the engine environment (a virtual environment with
  ``bin/terraseg``), searched first by :func:`terraseg.plugin.engine.find_engine`, which
  runs it only when it carries TerraSeg's marker file (``.terraseg-engine``).
* ``last_model``: the model file used last (``.tsm``).
* ``models_dir``: where the panel saves new models.
* ``torch_index_url``: a package index for torch stored by earlier releases. No longer used:
  the Settings page lists it as ignored; an index is used only when typed there.

Safe to call from any thread (QSettings is reentrant).
"""

from __future__ import annotations

from typing import Any

from qgis.core import QgsSettings

PREFIX = "terraseg/"

ENGINE_DIR = "engine_dir"
LAST_MODEL = "last_model"
MODELS_DIR = "models_dir"
TORCH_INDEX_URL = "torch_index_url"

__all__ = ["ENGINE_DIR", "LAST_MODEL", "MODELS_DIR", "PREFIX", "TORCH_INDEX_URL", "get",
           "remove", "set"]


def _key(key: str) -> str:
    return key if key.startswith(PREFIX) else PREFIX + key


def get(key: str, default: Any = None, value_type: type | None = None) -> Any:
    """Value of a TerraSeg setting.

    Args:
        key: Setting name without the ``terraseg/`` prefix (a prefixed name also works).
        default: Returned when the setting is not stored.
        value_type: Optional type (``str``, ``int``, ``bool``, ...) the stored value is
            converted to; without it strings stay strings.

    Returns:
        The stored value or ``default``.
    """
    settings = QgsSettings()
    if value_type is None:
        return settings.value(_key(key), default)
    return settings.value(_key(key), default, type=value_type)


def set(key: str, value: Any) -> None:  # noqa: A001 - the contract's name
    """Store a TerraSeg setting; ``None`` removes it.

    Args:
        key: Setting name without the ``terraseg/`` prefix.
        value: Value to store (str, int, float, bool, list of str).
    """
    if value is None:
        remove(key)
        return
    QgsSettings().setValue(_key(key), value)


def remove(key: str) -> None:
    """Forget a TerraSeg setting.

    Args:
        key: Setting name without the ``terraseg/`` prefix.
    """
    QgsSettings().remove(_key(key))
