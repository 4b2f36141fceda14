"""The worker's output as both worker clients read it (docs/worker-protocol.md).

Each stdout line of ``terraseg worker`` is parsed by :func:`terraseg.protocol.events.
parse_line`, the one parser the engine's events are defined with. A line that is not an
event (library chatter) and an event the protocol cannot decode (a field of the wrong type,
an unknown kind) become debug text for the log, and the stream goes on; an event of an
unknown protocol version ends the job (:class:`ProtocolVersionError` propagates). Stderr
lines are debug text too, of which the last :data:`STDERR_LINES` are kept for crash reports.
"""

from __future__ import annotations

from ..protocol.errors import ProtocolError, ProtocolVersionError
from ..protocol.events import Event, parse_line

#: Seconds between SIGTERM (the worker rolls back its outputs) and SIGKILL.
TERMINATE_GRACE_S = 10.0
#: Stderr lines kept for the ``WorkerCrashed`` report.
STDERR_LINES = 200


def read_stdout_line(line: str) -> Event | str | None:
    """What one stdout line of the worker means to a client.

    Args:
        line: The line (with or without its newline).

    Returns:
        The event; or debug text for a line that is not an event (``"(not a protocol
        line) ..."``) or a malformed event (``"(malformed event) ..."``); None for a blank
        line.

    Raises:
        ProtocolVersionError: The event is of a protocol version the plugin does not read.
    """
    line = line.strip()
    if not line:
        return None
    try:
        event = parse_line(line)
    except ProtocolVersionError:
        raise
    except ProtocolError:
        return f"(malformed event) {line}"
    if event is None:
        return f"(not a protocol line) {line}"
    return event
