"""User-facing errors.

Anything the user can fix (a wrong path, a bad flag value, a model of the wrong architecture) raises a
`LlamakError`. The CLI prints its message as one line and exits with code 2; no traceback unless
`LLAMAK_DEBUG=1`. Write messages that name the file/field and say what was expected.
"""


class LlamakError(Exception):
    """An error caused by the user's input; the message is shown as is."""

    exit_code = 2


class CheckpointError(LlamakError):
    """A model directory is missing, malformed, or not something llamak can work on."""


class ArchitectureMismatch(LlamakError):
    """Two checkpoints that must share an architecture do not."""
