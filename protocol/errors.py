"""TerraSeg's error hierarchy, shared by the engine and the plugin (standard library only).

Every error the engine raises on purpose derives from :class:`TerraSegError` and carries a
``hint`` that tells the user how to fix the problem. Subclasses also inherit the matching
built-in exception so callers that catch ``ValueError`` or ``OSError`` keep working.
The worker protocol and the command line turn these into ``error`` events / exit codes;
only plugin/ turns them into message-bar text.
"""

from __future__ import annotations


class TerraSegError(Exception):
    """Root of all TerraSeg errors.

    Args:
        message: What is wrong, naming the offending input.
        hint: How to fix it (one sentence).
    """

    exit_code: int = 2

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} Fix: {self.hint}" if self.hint else self.message

    @property
    def kind(self) -> str:
        """Short machine-readable name of the error type."""
        return type(self).__name__


class InputError(TerraSegError, ValueError):
    """A user-supplied input (raster, labels, option) is invalid."""


class RasterError(InputError):
    """A raster cannot be read or does not fit the job."""


class LabelError(InputError):
    """Training or reference labels are unusable."""


class ModelFileError(TerraSegError, ValueError):
    """A model file is missing, truncated, not a TerraSeg model, or does not fit the input."""


class OutputError(TerraSegError, OSError):
    """An output cannot be written (exists, not writable)."""


class ConfigError(InputError):
    """An option value is invalid (unknown model name, even patch size, ...)."""


class CancelledError(TerraSegError):
    """The job was cancelled by the user; nothing was written."""

    exit_code = 130


class ProtocolError(TerraSegError, ValueError):
    """A worker message or job is not valid protocol (malformed, unknown kind)."""


class ProtocolVersionError(ProtocolError):
    """The other side speaks a protocol version this side does not know."""


EXIT_OK = 0
EXIT_ERROR = TerraSegError.exit_code
EXIT_BUG = 3
EXIT_CANCELLED = CancelledError.exit_code
