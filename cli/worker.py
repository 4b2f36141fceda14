"""Worker mode: one JSON job on stdin, JSON-lines events on stdout (docs/worker-protocol.md).

The job (protocol/jobs.py) is ``{"command": NAME, "args": {...}}`` for any command of the
registry (cli/registry.py), where ``args`` uses the command line's option names
(``class_field`` or ``class-field``; ``true`` for flags). The worker writes
``progress``/``log``/``metrics`` events while it runs and ends with exactly one ``result``
or ``error`` event. Anything else that would print to stdout is redirected to stderr so
the protocol stays clean.
"""

from __future__ import annotations

import sys
import traceback

from terraseg.cli.parser import build_parser
from terraseg.cli.running import install_signal_handlers, report_failure, run_command
from terraseg.core.reporting import JsonLinesReporter
from terraseg.protocol.errors import EXIT_BUG, TerraSegError
from terraseg.protocol.jobs import Job


def run_worker() -> int:
    """Read the job, run it, stream events; exit code 0 on result, else non-zero."""
    out = sys.stdout
    sys.stdout = sys.stderr  # keep stray prints off the protocol stream
    reporter = JsonLinesReporter(out)
    install_signal_handlers(reporter)
    try:
        argv = Job.from_json(sys.stdin.read()).to_argv()
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
        return EXIT_BUG
    finally:
        sys.stdout = out
