"""Worker mode: one JSON job on stdin, JSON-lines events on stdout (docs/worker-protocol.md).

The job is ``{"command": "train"|"predict"|"evaluate"|"grid"|"info", "args": {...}}``
where ``args`` uses the command line's option names (``class_field`` or ``class-field``;
``true`` for flags). The worker writes ``progress``/``log``/``metrics`` events while it
runs and ends with exactly one ``result`` or ``error`` event. Anything else that would
print to stdout is redirected to stderr so the protocol stays clean.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

from terraseg.core.errors import TerraSegError
from terraseg.core.protocol import JsonLinesReporter

COMMANDS = ("train", "predict", "evaluate", "grid", "cv", "compare", "info", "rasterise",
            "vectorise", "areas", "mosaic", "env")


def job_to_argv(job: dict[str, Any]) -> list[str]:
    """Turn a JSON job into command-line arguments (one code path with the CLI)."""
    command = job.get("command")
    if command not in COMMANDS:
        raise TerraSegError(f"Unknown worker command {command!r}.",
                            f"Use one of: {', '.join(COMMANDS)}.")
    argv = [command]
    args = job.get("args") or {}
    if not isinstance(args, dict):
        raise TerraSegError("Job 'args' must be an object.", 'Send {"args": {...}}.')
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if command == "info" and key == "model":
            argv.append(str(value))
        elif value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list | tuple):
            argv += [flag, ",".join(str(v) for v in value)]
        else:
            argv += [flag, str(value)]
    return argv


def run_worker() -> int:
    """Read the job, run it, stream events; exit code 0 on result, else non-zero."""
    from terraseg.cli.main import (
        build_parser,
        install_signal_handlers,
        report_failure,
        run_command,
    )

    out = sys.stdout
    sys.stdout = sys.stderr  # keep stray prints off the protocol stream
    reporter = JsonLinesReporter(out)
    install_signal_handlers(reporter)
    try:
        try:
            job = json.loads(sys.stdin.read() or "{}")
        except json.JSONDecodeError as exc:
            raise TerraSegError(f"The job on stdin is not valid JSON ({exc}).",
                                "Send one JSON object.") from exc
        if not isinstance(job, dict):
            raise TerraSegError("The job on stdin must be a JSON object.",
                                'Send {"command": ..., "args": {...}}.')
        argv = job_to_argv(job)
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:
            raise TerraSegError(f"Invalid arguments for {argv[0]}: {argv[1:]}.",
                                "See 'terraseg <command> --help' for the options.") from None
        reporter.log(f"worker started: {argv[0]}")
        result = run_command(args, reporter)
        reporter.result({"command": argv[0], **result})
        return 0
    except (TerraSegError, KeyboardInterrupt, SystemExit) as exc:
        return report_failure(exc, reporter)
    except Exception as exc:  # noqa: BLE001 - report every crash to the panel
        traceback.print_exc(file=sys.stderr)
        reporter.error(type(exc).__name__, str(exc),
                       "This is a TerraSeg bug: copy the log into a bug report.")
        return 3
    finally:
        sys.stdout = out
