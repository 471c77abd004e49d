"""What made a batch's outputs: the settings that change pixels, recorded with each output, and their comparison.

A :class:`Recipe` is the task, the quality, every option that changes pixels (defaults included, so giving a
default explicitly changes nothing), what each ``auto`` choice resolves to on this machine now (a model pulled
since the last run changes it) and the sha256 of each weight file. Its :attr:`~Recipe.digest` goes on each
report line; a resumed run keeps an output only when the report says it was made with the same digest, and
redoes the others, saying which settings changed (:func:`changes`).

Options that change where or how fast the work runs, not its pixels (device, memory budget, batch sizes, the
per-image output folders), are left out.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..options import Options
from ..tasks.registry import Task

NOT_PIXELS = ("device", "max_memory", "tile_batch", "face_batch", "save_regions", "save_faces")
DIGEST_CHARS = 16  # of the sha256 of the recipe: enough to tell settings apart, short enough for each line


@dataclass(frozen=True)
class Recipe:
    """The settings an output is made with (``values``: one flat, JSON-ready mapping) and their digest."""

    values: dict[str, Any]

    @property
    def digest(self) -> str:
        text = json.dumps(self.values, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_CHARS]


def batch_recipe(task: Task, checked: Options, given: dict[str, Any], *, quality: int, model_dir: str | None,
                 device_type: str) -> Recipe:
    """The recipe of ``task`` run with ``checked`` (the validated options; ``given``: as passed, which may hold
    loaded models in the weight fields) at ``quality``, with ``auto`` choices resolved for ``device_type``.

    Resolving a named model checks its file (:func:`~tessera.models.loader.resolve_model_file`: a model that is
    not downloaded raises :class:`~tessera.errors.ModelError` here, before any image)."""
    values: dict[str, Any] = {"task": task.name, "quality": int(quality)}
    options = {k: v for k, v in checked.model_dump(mode="json").items() if k not in NOT_PIXELS}
    for key in task.weight_fields:  # a loaded model (API) is not in ``checked``: name it
        if given.get(key) is not None and not isinstance(given[key], str):
            options[key] = f"loaded model {getattr(given[key], 'name', type(given[key]).__name__)}"
    options.update(task.automatic_choices(options, model_dir, device_type))
    values.update(options)
    for key, name in task.weight_options(options).items():
        if not name.startswith("loaded model "):
            values[f"{key} sha256"] = weight_sha256(name, model_dir)
    return Recipe(values)


def weight_sha256(name: str, model_dir: str | None) -> str:
    """The sha256 of the weight file ``name`` designates (a catalog model's is remembered per file version)."""
    from ..models.catalog import model_path
    from ..models.checksums import cached_digests, file_digests
    from ..models.loader import resolve_model_file

    path, entry = resolve_model_file(name, model_dir)
    if entry is not None and path == model_path(entry, model_dir):
        return cached_digests(entry, model_dir).sha256
    return file_digests(path).sha256


def changes(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """The settings that differ, for people: ``"model realesr-general-x4v3 -> realesrgan-x4plus, scale 2.0 -> 4.0"``
    (hashes named only when nothing else changed: the same name with other weights)."""
    if old is None:
        return "settings not recorded"
    keys = [k for k in dict.fromkeys([*new, *old]) if old.get(k) != new.get(k)]
    named = [k for k in keys if not k.endswith(" sha256")] or keys
    return ", ".join(f"{k} {_shown(old.get(k))} -> {_shown(new.get(k))}" for k in named)


def _shown(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    return "none" if value is None else str(value)


def recorded_recipes(report: Path) -> tuple[dict[str, str | None], dict[str, dict[str, Any]]]:
    """From a previous report: the digest each file's output was last made (or kept) with (None: not recorded,
    a report of an older tessera), and the recipe of each digest."""
    from .report import read_lines

    made_with: dict[str, str | None] = {}
    recipes: dict[str, dict[str, Any]] = {}
    if not report.is_file():
        return made_with, recipes
    for line in read_lines(report):
        if "recipe" in line and isinstance(line.get("settings"), str) and isinstance(line["recipe"], dict):
            recipes[line["settings"]] = line["recipe"]
        elif isinstance(line.get("file"), str) and line.get("status") in ("done", "skipped"):
            made_with[line["file"]] = line.get("settings") if isinstance(line.get("settings"), str) else None
    return made_with, recipes
