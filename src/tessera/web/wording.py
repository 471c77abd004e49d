"""Library messages reworded for the web page: the controls' labels instead of CLI flags.

The task functions are shared with the CLI, so their messages say ``--grow`` or ``--max-memory`` (and option
errors say ``option grow``). On the page those words mean nothing: a flag whose option has a control becomes
that control's label, quoted ("Mask grow"), in the language of the browser; a clause that names a flag the page
does not have (``--resize-mask``, ``--max-pixels``, ``--model-dir``...) becomes a hint that says what to do here.
"""
from __future__ import annotations

import re

from .i18n import has_key, text

# Flags of the CLI that are controls of the page but not fields of the option schema: flag -> i18n key.
_PAGE_CONTROLS = {"format": "format", "quality": "quality"}
# Option fields without a control on the page (the app leaves them out of its controls).
NOT_ON_PAGE = frozenset({"save_regions", "save_faces", "resize_mask"})
# Flags (and the one bare parameter name library messages use) the page has no control for: -> i18n key of a hint.
_HINTS = {
    "resize_mask": "msg.mask_size",
    "max_pixels": "msg.server_limit",
    "max_megapixels": "msg.server_limit",
    "max_upload": "msg.server_limit",
}
_DEFAULT_HINT = "msg.server_setting"

_FLAG = re.compile(r"--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")
_BARE_NAMES = re.compile(r"\b(max_pixels)\b")
_OPTION = re.compile(r"\boption (\w+)\b")


def _field_names() -> set[str]:
    from ..options import FaceOptions, InpaintOptions, UpscaleOptions

    return {name for schema in (UpscaleOptions, InpaintOptions, FaceOptions) for name in schema.model_fields}


def control_label(name: str, language: str) -> str | None:
    """The quoted label of the page's control for option ``name`` (``max_memory``), or None if there is none."""
    key = _PAGE_CONTROLS.get(name) or (f"opt.{name}" if name in _field_names() and name not in NOT_ON_PAGE
                                       else None)
    if key is None:
        return None
    label = text(key, language) if has_key(key) else name.replace("_", " ").capitalize()
    return f"“{label}”" if language.startswith("zh") else f'"{label}"'


def for_page(message: str, language: str = "en") -> str:
    """``message`` with CLI flags replaced by control labels, and clauses about CLI-only flags by hints."""
    message = _OPTION.sub(lambda match: _option_words(match, language), message)
    while True:
        match = _FLAG.search(message) or _BARE_NAMES.search(message)
        if match is None:
            return message
        name = match.group(1).replace("-", "_")
        label = control_label(name, language)
        if label is not None:
            message = message[:match.start()] + label + message[match.end():]
        else:
            message = _replace_clause(message, match.start(), match.end(),
                                      text(_HINTS.get(name, _DEFAULT_HINT), language))


def _option_words(match: re.Match[str], language: str) -> str:
    label = control_label(match.group(1), language)
    return label if label is not None else match.group(0)


def _replace_clause(message: str, start: int, end: int, hint: str) -> str:
    """Replace the clause around ``message[start:end]`` with ``hint``: the parenthesis holding it, else the part
    after the last ``;`` before it up to the next ``;``, else the flag itself."""
    opening, closing = message.rfind("(", 0, start), message.find(")", end)
    if opening != -1 and closing != -1 and ")" not in message[opening:start] and "(" not in message[end:closing]:
        return f"{message[:opening]}({hint}){message[closing + 1:]}"
    separator = message.rfind(";", 0, start)
    if separator != -1:
        following = message.find(";", end)
        rest = message[following:] if following != -1 else ""
        return f"{message[:separator + 1]} {hint}{rest}"
    return message[:start] + hint + message[end:]
