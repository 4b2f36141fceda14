"""A reporter that keeps the log lines a run writes (engine tests)."""

from __future__ import annotations

from terraseg.core.reporting import Reporter


class LogRecorder(Reporter):
    """Keeps every log line in :attr:`lines`; other events are dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def log(self, message: str, level: str = "info") -> None:
        """Keep the line."""
        self.lines.append(message)
