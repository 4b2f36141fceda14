"""Worker protocol events: one JSON object per line (docs/worker-protocol.md).

The engine writes these events on the worker's stdout; the plugin reads them. Both sides
use this module, so each field is spelled once. On the wire every event carries ``v``
(the protocol version), ``time`` (Unix seconds) and ``event`` (its kind); a ``result``
carries the command's payload fields at the top level.

Kinds: ``progress`` (stage, fraction, eta_s, message), ``log`` (level, message),
``metrics`` (epoch, values), ``result`` (payload), ``error`` (type, message, hint).
A job ends with exactly one ``result`` or ``error``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from terraseg.protocol.errors import ProtocolError, ProtocolVersionError

PROTOCOL_VERSION = 1
#: Versions this side can read; a client refuses anything else with a message.
SUPPORTED_VERSIONS = frozenset({1})
#: Envelope fields that are not part of an event's own content.
ENVELOPE = ("v", "time", "event")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Progress:
    """Progress of a stage (``prepare``, ``train``, ``predict``, ...) in [0, 1]."""

    stage: str
    fraction: float
    eta_s: float | None = None
    message: str = ""
    kind: ClassVar[str] = "progress"

    def fields(self) -> dict[str, Any]:
        """Wire fields (without the envelope)."""
        return {"stage": self.stage, "fraction": self.fraction, "eta_s": self.eta_s,
                "message": self.message}


@dataclass(frozen=True)
class Log:
    """A log line; ``debug`` lines are for the log panel only."""

    message: str
    level: str = "info"
    kind: ClassVar[str] = "log"

    def fields(self) -> dict[str, Any]:
        """Wire fields (without the envelope)."""
        return {"level": self.level, "message": self.message}


@dataclass(frozen=True)
class Metrics:
    """Per-epoch training metrics (name -> number)."""

    epoch: int
    values: dict[str, Any] = field(default_factory=dict)
    kind: ClassVar[str] = "metrics"

    def fields(self) -> dict[str, Any]:
        """Wire fields (without the envelope)."""
        return {"epoch": self.epoch, "values": dict(self.values)}


@dataclass(frozen=True)
class Result:
    """The job's result: the command's payload (paths, summary), spread on the wire."""

    payload: dict[str, Any] = field(default_factory=dict)
    kind: ClassVar[str] = "result"

    def fields(self) -> dict[str, Any]:
        """Wire fields (without the envelope)."""
        return dict(self.payload)


@dataclass(frozen=True)
class Error:
    """The job failed: error type (``RasterError``, ``CancelledError``, ...), message, hint."""

    type: str
    message: str
    hint: str = ""
    kind: ClassVar[str] = "error"

    def fields(self) -> dict[str, Any]:
        """Wire fields (without the envelope)."""
        return {"type": self.type, "message": self.message, "hint": self.hint}


Event = Union[Progress, Log, Metrics, Result, Error]  # noqa: UP007 - runtime alias on 3.10
EVENT_KINDS: dict[str, type] = {c.kind: c for c in (Progress, Log, Metrics, Result, Error)}
FINAL_KINDS = ("result", "error")


def clean(value: Any) -> Any:
    """Make a value JSON-safe: NaN/inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_wire(event: Event, now: float | None = None) -> dict[str, Any]:
    """The JSON object of an event, envelope included (values cleaned)."""
    stamp = round(time.time() if now is None else now, 3)
    return clean({"v": PROTOCOL_VERSION, "time": stamp, "event": event.kind,
                  **event.fields()})


def encode(event: Event, now: float | None = None) -> str:
    """One protocol line (no newline) for ``event``."""
    return json.dumps(to_wire(event, now))


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"Event field '{name}' is {value!r}, not a number.",
                            "The engine and plugin disagree on the protocol: set up the "
                            "engine again (TerraSeg settings).")
    return float(value)


def decode(obj: dict[str, Any]) -> Event:
    """The event of a wire object; the version is checked first.

    Raises:
        ProtocolVersionError: An unknown protocol version (the message names both).
        ProtocolError: An unknown kind or a field of the wrong type.
    """
    version = obj.get("v")
    if version not in SUPPORTED_VERSIONS:
        raise ProtocolVersionError(
            f"The engine speaks worker protocol version {version!r}; this TerraSeg plugin "
            f"reads version(s) {', '.join(str(v) for v in sorted(SUPPORTED_VERSIONS))}.",
            "Update the TerraSeg plugin, or set up the engine again from the plugin's "
            "settings so both are the same release.")
    kind = obj.get("event")
    if kind not in EVENT_KINDS:
        raise ProtocolError(f"Unknown event kind {kind!r}.",
                            f"Known kinds: {', '.join(EVENT_KINDS)}.")
    if kind == "result":
        return Result({k: v for k, v in obj.items() if k not in ENVELOPE})
    try:
        if kind == "progress":
            eta = obj.get("eta_s")
            # the engine writes a NaN fraction as null: it reads as "no progress yet"
            fraction = obj.get("fraction")
            return Progress(str(obj.get("stage", "")),
                            0.0 if fraction is None else _number(fraction, "fraction"),
                            None if eta is None else _number(eta, "eta_s"),
                            str(obj.get("message") or ""))
        if kind == "log":
            return Log(str(obj.get("message", "")), str(obj.get("level") or "info"))
        if kind == "metrics":
            values = obj.get("values") or {}
            if not isinstance(values, dict):
                raise ProtocolError("Event field 'values' is not an object.", "")
            return Metrics(int(_number(obj.get("epoch", 0), "epoch")), dict(values))
        return Error(str(obj.get("type") or "Error"), str(obj.get("message") or ""),
                     str(obj.get("hint") or ""))
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ProtocolError):
            raise
        raise ProtocolError(f"Malformed {kind} event ({exc}).", "") from exc


def parse_line(line: str) -> Event | None:
    """The event on one stdout line of the worker, or None when the line is not an event.

    Raises:
        ProtocolError: The line is an event object of an unknown version or malformed.
    """
    line = line.strip()
    if not line:
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or "event" not in obj:
        return None
    return decode(obj)
