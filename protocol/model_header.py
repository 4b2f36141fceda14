"""The header of a model file, read with the standard library only (never the weights).

A ``.tsm`` file is a safetensors file: an 8-byte little-endian header length, a JSON
header, then raw tensor bytes. The header's ``__metadata__.terraseg`` entry is the
TerraSeg metadata as a JSON string (docs/model-file.md). The engine and the plugin both
read model files through :func:`read_model_document`, so a truncated, foreign or future
file gets the same message on both sides.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from terraseg.protocol.errors import ModelFileError
from terraseg.protocol.model_meta import FORMAT, FORMAT_VERSION, ModelMeta

META_KEY = "terraseg"
MAX_HEADER_BYTES = 100 * 1024 * 1024
_RECOPY = "Use a .tsm file written by 'terraseg train'; re-copy it if it was cut short."


def _unreadable(path: Path, why: str) -> ModelFileError:
    return ModelFileError(f"{path} is not a readable TerraSeg model file ({why}).", _RECOPY)


def _truncated(path: Path, why: str) -> ModelFileError:
    return ModelFileError(f"{path} is not a readable TerraSeg model file (truncated: {why}).",
                          "The file was cut short: re-copy it, or retrain it with "
                          "'terraseg train'.")


def read_safetensors_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON header of a safetensors file, checked against the file's size.

    Raises:
        ModelFileError: Missing, unreadable, foreign or truncated file.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"Model file not found: {p}.",
                             "Check the model file's path (--model on the command line).")
    try:
        size = p.stat().st_size
        with p.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise _truncated(p, f"{len(head)} byte(s), shorter than a header")
            (length,) = struct.unpack("<Q", head)
            if length < 2 or length > MAX_HEADER_BYTES:
                raise _unreadable(p, "another format: no safetensors header")
            if 8 + length > size:
                raise _truncated(p, "the header is incomplete")
            raw = fh.read(length)
    except OSError as exc:
        raise ModelFileError(f"Cannot read model file {p}: {exc.strerror or exc}.",
                             "Check that the file exists and is readable.") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _unreadable(p, f"another format: {exc}") from exc
    if not isinstance(header, dict):
        raise _unreadable(p, "another format: the header is not an object")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise _unreadable(p, f"tensor {name!r} has no data offsets") from exc
    if 8 + length + end > size:
        raise _truncated(p, f"{size} bytes, the header describes {8 + length + end}")
    return header


def read_model_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The TerraSeg metadata document of a model file as plain JSON (not validated).

    Raises:
        ModelFileError: Not a TerraSeg model, corrupt metadata, or a newer format.
    """
    p = Path(path)
    header = read_safetensors_header(p)
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or META_KEY not in meta:
        raise ModelFileError(f"{p} is a safetensors file but not a TerraSeg model.",
                             "Use a .tsm file written by 'terraseg train'.")
    try:
        doc = json.loads(meta[META_KEY])
    except (TypeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{p} has corrupt TerraSeg metadata ({exc}).",
                             "Retrain or re-copy the model file.") from exc
    if not isinstance(doc, dict):
        raise ModelFileError(f"{p} has corrupt TerraSeg metadata (not a JSON object).",
                             "Retrain or re-copy the model file.")
    try:
        version = int(doc.get("format_version", 0))
    except (TypeError, ValueError):
        version = -1
    if doc.get("format") != FORMAT or version > FORMAT_VERSION or version < 1:
        raise ModelFileError(
            f"{p} has format {doc.get('format')} v{doc.get('format_version')}; this "
            f"TerraSeg reads {FORMAT} up to v{FORMAT_VERSION}.",
            "Update TerraSeg to open this model.")
    return doc


def read_model_meta(path: str | os.PathLike[str]) -> ModelMeta:
    """The validated, typed metadata of a model file.

    Raises:
        ModelFileError: Unreadable file or invalid metadata (the message names the field).
    """
    doc = read_model_document(path)
    try:
        return ModelMeta.from_dict(doc)
    except ModelFileError as exc:
        raise ModelFileError(f"{Path(path).name}: {exc.message}", exc.hint) from None
