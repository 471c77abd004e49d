"""Library messages reworded for the web page: the controls' labels instead of CLI flags, and in Chinese whole.

The task functions are shared with the CLI, so their messages say ``--grow`` or ``--max-memory`` (and option
errors say ``option grow``). On the page those words mean nothing: a flag whose option has a control becomes
that control's label, quoted ("Mask grow"), in the page's language; a clause that names a flag the page does not
have (``--resize-mask``, ``--max-pixels``, ``--model-dir``...) becomes a hint that says what to do here.

For Simplified Chinese (``zh-CN``) the whole message is translated (:func:`for_page`): after the labels and hints
are put in, the message is matched against :data:`.wording_zh.MESSAGES`, one entry per kind of message the web UI shows
(errors of the page and of the library a web user meets, warnings, progress lines, status lines, Cancel's
answers). An entry is a regular expression whose named groups hold what stays as it is (file and model names,
numbers, sizes) and a Chinese template that puts them back; a group written ``{name!t}`` in the template is
translated in turn, so that a reason inside a message is worded by its own entry. Messages made of parts are
translated part by part: ``a · b · c`` (progress and status lines), ``a; b`` (clauses), ``name: reason`` (a file
or a control label, then what is wrong with it). A part without a space (a file name, a model name, a number)
stays as it is; anything else that matches no entry is shown with a Chinese lead-in ("原文：") before the original
words, so that nothing is lost even where the table has no entry yet.
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


def unit_for_page(unit: str, language: str = "en") -> str:
    """The unit Gradio's progress bar shows after its count (``tile``, ``pass``...), in ``language``."""
    from .wording_zh import UNITS

    return UNITS.get(unit, unit) if language.startswith("zh") else unit


def for_page(message: str, language: str = "en") -> str:
    """``message`` for the page in ``language``: CLI flags replaced by control labels, clauses about CLI-only
    flags by hints; in Chinese (``zh-CN``) the whole message translated (see the module's docstring)."""
    from .wording_zh import already_chinese, translate

    if language.startswith("zh") and already_chinese(message):
        return message  # worded in Chinese already (a module's own table, a message translated before)
    message = _with_labels(message, language)
    if not language.startswith("zh"):
        return message
    return translate(message)


def _with_labels(message: str, language: str) -> str:
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
