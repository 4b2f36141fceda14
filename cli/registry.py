"""The command registry: one entry per ``terraseg`` subcommand and worker job.

A :class:`Command` holds its help line, how it adds its arguments, how it runs, and how
the command line prints its result. The parser (cli/parser.py) is built from
:data:`COMMANDS`, and the command line (cli/main.py) and the worker (cli/worker.py) both
dispatch through it (cli/running.py), so a command is declared once and the worker imports
no module of the command line's entry point.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from terraseg.core.reporting import Reporter
from terraseg.protocol.errors import ConfigError

Runner = Callable[[argparse.Namespace, Reporter], dict[str, Any]]


@dataclass(frozen=True)
class Command:
    """A subcommand.

    Attributes:
        name: Subcommand name (also the worker job's ``command``).
        help: One line for ``terraseg --help``.
        add_arguments: Adds its options to its subparser.
        run: Runs it with parsed arguments and a reporter; returns the result payload.
        printer: How the command line prints the result on stdout (default: the paths).
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Runner
    printer: Callable[[dict[str, Any]], str] | None = None


COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    """Add a command to the registry (each name once)."""
    if command.name in COMMANDS:
        raise ValueError(f"command {command.name!r} registered twice")
    COMMANDS[command.name] = command
    return command


def get_command(name: str) -> Command:
    """The command called ``name``; the error lists the valid names."""
    _load()
    try:
        return COMMANDS[name]
    except KeyError:
        raise ConfigError(f"Unknown command {name!r}.",
                          f"Use one of: {', '.join(COMMANDS)}.") from None


def all_commands() -> dict[str, Command]:
    """Every registered command in declaration order."""
    _load()
    return COMMANDS


def _load() -> None:
    """Import the command modules (they register themselves)."""
    from terraseg.cli import (  # noqa: F401
        commands_apply,
        commands_change,
        commands_files,
        commands_inspect,
        commands_pair,
        commands_pretrain,
        commands_pseudo,
        commands_quick,
        commands_review,
        commands_train,
    )
