"""Errors shared by every layer, and how an error quotes the value it refuses."""

from __future__ import annotations

import reprlib
from typing import Any


class ConfigError(ValueError):
    """A params file or setting that cannot be used, with the file and key named."""


class OutOfSpace(RuntimeError):
    """A write failed for want of space (disk full, quota, file-size limit), with the output named; what a stage
    writes is in a temporary folder until it is whole (core/io.atomic_dir), so nothing partial was kept."""


#: The errno values of a write that found no room: ENOSPC (disk full), EDQUOT (quota), EFBIG (file-size limit).
NO_SPACE_ERRNOS = frozenset({28, 122, 27})


#: How ``mdpo`` prints a ConfigError (one line, then exit 2), so a launcher can relay the message alone.
CLI_ERROR = "mdpo: error: "

#: The most characters of a bad value an error quotes: a pasted megabyte must not become a megabyte of log line.
SHOWN_CHARS = 80

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = SHOWN_CHARS
_REPR.maxlevel = 3


def clip(text: str, limit: int = 300) -> str:
    """``text`` (a message, not a value) cut to its first ``limit`` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` cut to a prefix of at most ``limit`` characters (a cut string also says its length)."""
    if isinstance(value, str):
        # Only the prefix is repr'd: the whole of a huge string is never copied or escaped.
        text = repr(value[:limit])
        if len(value) <= limit and len(text) <= limit + 2:
            return text
        # Escapes count too ("\x00" is four characters): the quoted prefix is cut to the limit as well.
        return f"{text[: limit + 2]}... ({len(value)} characters)"
    try:
        text = _REPR.repr(value)  # reprlib bounds the work on containers too (a few items, a few levels)
    except ValueError:  # an int past Python's digit limit has no repr
        text = f"<{type(value).__name__} too large to print>"
    return text if len(text) <= limit else f"{text[:limit]}..."
