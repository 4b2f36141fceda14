"""The ``terraseg`` command line: every command of the registry, plus ``worker``.

Human-readable progress goes to stderr; stdout carries only results (JSON for ``info``
and ``env``) or, in ``worker`` mode, the JSON-lines protocol. Commands are declared in
cli/commands_*.py and registered in cli/registry.py. A reader that stops reading the
result (``terraseg info m.tsm | head -1``) is not an error.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from terraseg.cli.parser import build_parser
from terraseg.cli.registry import all_commands
from terraseg.cli.running import (
    install_signal_handlers,
    report_failure,
    run_command,
    silence_stdout,
)
from terraseg.protocol.errors import EXIT_OK, TerraSegError

#: Result keys the command line prints as ``key: path`` when a command has no printer.
PATH_KEYS = ("model", "probability", "classes", "preview", "grid_csv", "labels", "polygons",
             "csv", "zones", "cv_csv", "mosaic", "compare_md", "compare_csv")


def format_result(command: str, result: dict[str, Any]) -> str:
    """What the command line prints on stdout for a command's result."""
    printer = all_commands()[command].printer
    if printer is not None:
        return printer(result)
    return "\n".join(f"{k}: {result[k]}" for k in PATH_KEYS if isinstance(result.get(k), str))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``terraseg`` command."""
    args = build_parser().parse_args(argv)
    if args.command == "worker":
        from terraseg.cli.worker import run_worker

        return run_worker()
    from terraseg.core.reporting import ConsoleReporter

    reporter = ConsoleReporter(quiet=args.quiet)
    install_signal_handlers(reporter)
    try:
        result = run_command(args, reporter)
    except (TerraSegError, KeyboardInterrupt, SystemExit, MemoryError, OSError) as exc:
        return report_failure(exc, reporter)
    text = format_result(args.command, result) if result else ""
    if text:
        try:
            print(text)
            sys.stdout.flush()
        except BrokenPipeError:  # the reader has all it wanted (| head): not an error
            silence_stdout()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
