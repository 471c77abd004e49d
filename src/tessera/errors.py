"""Typed errors: every failure a user can cause or meet has its own class and a one-line message.

The CLI maps them to exit codes (``exit_code``): 2 for bad input, options or a missing or broken model, 4 for
resources (memory, disk), 130 for a cancelled job. Each error names the offending value so the message stands on
its own; an :class:`InputError` raised at a validation boundary also carries it as attributes (``option``,
``value``, ``expected``), so that a caller (the web UI, a test, a script) can react to the value without parsing
the message, as kornia's ``core/check.py`` does.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class TesseraError(Exception):
    """Base class of every error tessera raises on purpose."""

    exit_code = 1

    def __str__(self) -> str:  # one line, always
        return " ".join(super().__str__().split())


class InputError(TesseraError, ValueError):
    """A bad input: file, image, mask, or option value.

    ``option`` (the name of what was checked), ``value`` (what was given) and ``expected`` (what would have been
    accepted, in words) are optional keywords, None when not given; the message is the one line passed in, so
    ``raise OptionError("...")`` keeps working. They survive pickling (process pools, Ray), as ``__dict__`` does.
    """

    exit_code = 2

    def __init__(self, message: str = "", *, option: str | None = None, value: object = None,
                 expected: str | None = None) -> None:
        super().__init__(message)
        self.option = option
        self.value = value
        self.expected = expected


class ImageReadError(InputError):
    """An image file that is missing, not an image, truncated, or of a mode tessera cannot handle."""


class ImageTooLargeError(InputError):
    """An image over the configured pixel limit (decompression-bomb guard), refused before decoding."""


class OutputError(InputError):
    """An output path that cannot be written, or that would overwrite the input."""


class OptionError(InputError):
    """An option with an impossible value, or a combination of options that cannot work together."""


class ModelError(TesseraError):
    """A model that is unknown, not downloaded, corrupt, or of an unsupported architecture."""

    exit_code = 2


class ChecksumError(ModelError):
    """A downloaded or cached weight file whose checksum differs from the published one."""


class ResourceError(TesseraError):
    """The work does not fit: out of memory even at the smallest tile, disk full, budget too small."""

    exit_code = 4


class CancelledError(TesseraError):
    """The job was cancelled by its caller (web UI Cancel, Ctrl-C) between two batches."""

    exit_code = 130


def look_up_option(value: str, choices: Iterable[str], what: str) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise OptionError suggesting the nearest one.

    The error carries ``option=what``, ``value`` and ``expected`` (the choices, comma-separated)."""
    options = list(choices)
    if value in options:
        return value
    near = difflib.get_close_matches(str(value), options, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    expected = ", ".join(options)
    raise OptionError(f"unknown {what} {value!r}{hint} (choose from {expected})", option=what, value=value,
                      expected=expected)
