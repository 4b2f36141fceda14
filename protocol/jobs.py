"""The worker's job specification: what the plugin sends on the worker's stdin.

A job is ``{"command": NAME, "args": {...}}`` where ``args`` uses the command line's option
names with underscores (``class_field`` for ``--class-field``); ``true`` turns a flag on,
lists become comma-separated values, ``null``/``false`` leave the option at its default.
The engine turns a job into the same argument list the command line parses
(:meth:`Job.to_argv`), so a job and a command line cannot drift apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from terraseg.protocol.errors import ProtocolError

#: Commands the worker runs (each also a ``terraseg`` subcommand).
COMMANDS = ("train", "predict", "evaluate", "grid", "cv", "compare", "info", "rasterise",
            "vectorise", "areas", "mosaic", "env", "quickmap",
            "inspect", "pseudo-label", "review", "pretrain", "change", "pair")
#: Commands whose first argument is positional rather than an option.
POSITIONAL = {"info": "model", "inspect": "raster"}
#: Options given once per value (a list becomes ``--raster A --raster B``).
REPEATED = {"pretrain": ("raster",)}


def _json_value(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


@dataclass(frozen=True)
class Job:
    """One worker job.

    Attributes:
        command: One of :data:`COMMANDS`.
        args: Options by their command-line names with underscores.
    """

    command: str
    args: Mapping[str, Any] = field(default_factory=dict)

    @staticmethod
    def make(command: str, **args: Any) -> Job:
        """A job with ``None`` values and ``False`` flags left out, dashes as underscores."""
        clean = {k.replace("-", "_"): _json_value(v) for k, v in args.items()
                 if v is not None and v is not False}
        return Job(command, clean)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object sent to the worker."""
        return {"command": self.command, "args": dict(self.args)}

    def to_json(self) -> str:
        """The job as one JSON document."""
        return json.dumps(self.to_dict())

    @staticmethod
    def from_dict(obj: Any) -> Job:
        """Validate a decoded job object.

        Raises:
            ProtocolError: Not an object, unknown command, or ``args`` not an object.
        """
        if not isinstance(obj, dict):
            raise ProtocolError("The job on stdin must be a JSON object.",
                                'Send {"command": ..., "args": {...}}.')
        command = obj.get("command")
        if command not in COMMANDS:
            raise ProtocolError(f"Unknown worker command {command!r}.",
                                f"Use one of: {', '.join(COMMANDS)}.")
        args = obj.get("args") or {}
        if not isinstance(args, dict):
            raise ProtocolError("Job 'args' must be an object.", 'Send {"args": {...}}.')
        return Job(str(command), dict(args))

    @staticmethod
    def from_json(text: str) -> Job:
        """Parse and validate the job text read from stdin.

        Raises:
            ProtocolError: Invalid JSON or an invalid job.
        """
        try:
            obj = json.loads(text or "{}")
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"The job on stdin is not valid JSON ({exc}).",
                                "Send one JSON object.") from exc
        return Job.from_dict(obj)

    def to_argv(self) -> list[str]:
        """The command-line arguments of this job (one code path with the CLI)."""
        argv = [self.command]
        positional = POSITIONAL.get(self.command)
        for key, value in self.args.items():
            flag = "--" + key.replace("_", "-")
            if key == positional:
                argv.append(str(value))
            elif value is True:
                argv.append(flag)
            elif value is False or value is None:
                continue
            elif isinstance(value, list | tuple) and key in REPEATED.get(self.command, ()):
                argv += [a for v in value for a in (flag, str(v))]
            elif isinstance(value, list | tuple):
                argv += [flag, ",".join(str(v) for v in value)]
            else:
                argv += [flag, str(value)]
        return argv
