"""Gradio controls built from the shared option schema (:mod:`tessera.options`), and their values read back.

A field's type picks the control: a ``Literal`` (or a list of choices given by the caller) a dropdown that takes
only its choices (Gradio refuses other values, even from API clients), a bool a checkbox, a bounded number a
slider (a number that may be left empty for the task's own default, such as ``strength``, a text box showing
``auto``), an ``auto``-or-integer field a text box holding ``auto``, a memory size a text box (empty: no limit).
Labels and help come from :mod:`.i18n` by field name (the schema's English description where no translation
exists yet); defaults come from the schema, so the web UI, the CLI and the API agree.
Values are read back by :func:`option_values` and validated by the task itself (``parse_options``).
"""
from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic.fields import FieldInfo

from ..options import Options
from .i18n import has_key, t


def _literal_choices(annotation: Any) -> list[str] | None:
    origin = get_origin(annotation)
    if origin is Literal:
        return [str(a) for a in get_args(annotation)]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _literal_choices(args[0])
    return None


def _optional_number(annotation: Any) -> type | None:
    """``int`` or ``float`` for an ``int | None`` / ``float | None`` field (None means "the default"), else None."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and args[0] in (int, float):
            return args[0]
    return None


def _bounds(field: FieldInfo) -> tuple[float | None, float | None]:
    low = high = None
    for item in field.metadata:
        low = getattr(item, "ge", None) if getattr(item, "ge", None) is not None else low
        low = getattr(item, "gt", None) if getattr(item, "gt", None) is not None else low
        high = getattr(item, "le", None) if getattr(item, "le", None) is not None else high
    return low, high


def _is_auto_int(field: FieldInfo) -> bool:
    return isinstance(field.default, str) and field.default == "auto" and field.annotation is not str


def _is_memory_size(field: FieldInfo) -> bool:
    from ..options import parse_size

    return any(getattr(item, "func", None) is parse_size for item in field.metadata)


def label_of(name: str) -> Any:
    """The translated label of option ``name``; its name in words where no translation exists yet."""
    return t(f"opt.{name}") if has_key(f"opt.{name}") else name.replace("_", " ").capitalize()


def info_of(name: str, field: FieldInfo) -> Any:
    """The translated help of option ``name``; the schema's English description where none exists yet."""
    return t(f"opt.{name}.info") if has_key(f"opt.{name}.info") else field.description


def option_control(schema: type[Options], name: str, **overrides: Any) -> Any:
    """The control for field ``name`` of ``schema``, with its translated label and help and its default."""
    import gradio as gr

    field = schema.model_fields[name]
    common: dict[str, Any] = {"label": label_of(name), "info": info_of(name, field), "elem_id": f"opt-{name}"}
    common.update(overrides)
    default = field.default
    if "choices" in common:  # a list made by the caller (devices, models): only its values, unless told otherwise
        value = common.pop("value", default)
        return gr.Dropdown(value=value, **{"allow_custom_value": False, **common})
    choices = _literal_choices(field.annotation)
    if choices is not None:
        return gr.Dropdown(choices=choices, value=common.pop("value", default), **common)
    if field.annotation is bool:
        return gr.Checkbox(value=common.pop("value", bool(default)), **common)
    if _is_memory_size(field):
        return gr.Textbox(value=common.pop("value", "" if default is None else str(default)),
                          placeholder="e.g. 4G", **common)
    if _is_auto_int(field):
        return gr.Textbox(value=common.pop("value", "auto"), **common)
    low, high = _bounds(field)
    if field.annotation in (int, float) and low is not None and high is not None:
        step = 1 if field.annotation is int else 0.05
        return gr.Slider(minimum=low, maximum=high, step=step, value=common.pop("value", default), **common)
    if field.annotation in (int, float):
        return gr.Number(value=common.pop("value", default), minimum=low, maximum=high,
                         precision=0 if field.annotation is int else None, **common)
    if _optional_number(field.annotation) is not None and default is None:
        # empty means the task's own default; a text box, since an empty number box is a required API input
        return gr.Textbox(value=common.pop("value", ""), placeholder="auto", **common)
    return gr.Textbox(value=common.pop("value", "" if default is None else str(default)), **common)


def option_value(schema: type[Options], name: str, value: Any) -> Any:
    """A control's value as the option expects it: empty text -> None (or the default), whole floats -> int."""
    field = schema.model_fields[name]
    if isinstance(value, str):
        value = value.strip()
        if value == "":
            return field.default
    if isinstance(value, float) and field.annotation is int and value.is_integer():
        return int(value)
    return value


def option_values(schema: type[Options], values: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for a task from the controls' values (only fields of ``schema``)."""
    return {name: option_value(schema, name, value) for name, value in values.items() if name in schema.model_fields}
