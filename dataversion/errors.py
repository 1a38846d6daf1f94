"""One exception hierarchy for everything dataversion raises on purpose.

The CLI turns each into one clear line and an exit code; a traceback only with --debug.
"""

from __future__ import annotations

import re


class DataversionError(Exception):
    """Base class. `hint` tells the user what to do next."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} ({self.hint})" if self.hint else base


class NotFoundError(DataversionError):
    """A ref, commit, object or repository does not exist."""

    exit_code = 3


class AmbiguousRefError(DataversionError):
    """A commit-id prefix matches more than one commit."""

    exit_code = 2


class ConflictError(DataversionError):
    """A compare-and-swap lost: someone else updated the same ref or lease first."""

    exit_code = 4


class CorruptObjectError(DataversionError):
    """An object's bytes do not hash to its name, or it cannot be parsed."""

    exit_code = 5


class BadInputError(DataversionError):
    """The caller asked for something invalid (bad URL, unsafe path, bad ref syntax...)."""

    exit_code = 2


class StoreError(DataversionError):
    """The object store failed permanently (credentials, permissions, missing bucket)."""

    exit_code = 6


class FormatError(DataversionError):
    """The repository was written in another format version (`dataversion upgrade` converts)."""

    exit_code = 7


_OBJECT_REPR = re.compile(r"<(?:[\w.]+\.)?(\w+) object at 0x[0-9a-fA-F]+>")
_ADDRESS = re.compile(r"\s*at 0x[0-9a-fA-F]{6,}")


def human_message(exc: BaseException) -> str:
    """An exception's message for a person: no object reprs (`<_io.BytesIO object at
    0x7f..>` becomes "the data"), no memory addresses, never empty (the exception's type
    name then), at most 300 characters."""
    text = str(exc).strip() or type(exc).__name__
    text = _OBJECT_REPR.sub(
        lambda m: (
            "the data"
            if m.group(1) in ("BytesIO", "BufferedReader", "SpooledTemporaryFile")
            else m.group(1)
        ),
        text,
    )
    text = _ADDRESS.sub("", text)
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."
