"""The ``terraseg`` argument parser, built from the command registry.

Used by the command line (cli/main.py) and the worker (cli/worker.py), which turns a job
into the same argument list (protocol/jobs.py).
"""

from __future__ import annotations

import argparse

from terraseg.cli.registry import all_commands

DESCRIPTION = "TerraSeg engine: one subcommand per job (below); worker runs one JSON job."


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for all subcommands."""
    p = argparse.ArgumentParser(prog="terraseg", description=DESCRIPTION)
    p.add_argument("--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = p.add_subparsers(dest="command", required=True)
    for command in all_commands().values():
        sp = sub.add_parser(command.name, help=command.help)
        command.add_arguments(sp)
        sp.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only warnings and errors on stderr")
    sub.add_parser("worker", help="run one JSON job from stdin, JSON lines on stdout")
    return p
