"""Which models a web client may choose: the catalog (weights in the server's cache or bundled in an installed
package) and folders named at start.

A client sends a *choice* (a catalog name, a file name of a ``--models-from`` folder, or one of the weight-free
entries), never a path: every value a job receives is looked up in the same menu the dropdowns show, and anything
else is refused with one message that does not depend on the value (so a reply never tells whether some path
exists on the server). The menu is made once, when the server starts.

Folder files are the weight files (``.pth .pt .ckpt .safetensors .bin``, and ncnn ``.param`` with their ``.bin``)
directly in the folder, regular files or symlinks whose target is a regular file inside the same folder. They are
checked again when a job uses them, so a file swapped for a symlink after the start is refused too.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError, OptionError
from ..models.formats import WEIGHT_SUFFIXES

WEIGHT_FREE = "weight-free"

# The weight-free entries of each dropdown: (label, value), shown first.
_FIXED: dict[str, tuple[tuple[str, str], ...]] = {
    "inpaint": (("auto", "auto"), ("patchmatch", "patchmatch"), ("telea", "telea")),
    "face": (("weight-free clean-up", WEIGHT_FREE),),
    "background": (("auto", "auto"), ("none", "none"), ("lanczos", "lanczos")),
    "upscale": (("Lanczos (weight-free)", "lanczos"),),
}
# The catalog tasks offered in each dropdown.
_CATALOG_TASKS: dict[str, tuple[str, ...]] = {
    "inpaint": ("inpaint",), "face": ("face",), "background": ("upscale",), "upscale": ("upscale", "restore"),
}
SLOTS = tuple(_FIXED)


def trusted_weight_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` resolved, if it is a regular file that stays inside ``folder`` (symlinks included); else None.

    ``folder`` must already be resolved. The check reads the file system now: call it again before using a file.
    """
    if name != Path(name).name or name in ("", ".", ".."):
        return None
    candidate = folder / name
    try:
        target = candidate.resolve(strict=True)
        mode = os.stat(target, follow_symlinks=False).st_mode
    except (OSError, RuntimeError):  # missing, dangling or looping link, unreadable folder
        return None
    if target.parent != folder or not stat.S_ISREG(mode):
        return None
    return target


def scan_model_folder(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """``{file name: resolved path}`` of the weight files directly in ``folder`` (see :func:`trusted_weight_file`).

    Raises OptionError when ``folder`` is not a readable folder: a mistyped ``--models-from`` must not go unnoticed.
    """
    given = Path(folder).expanduser()
    try:
        root = given.resolve(strict=True)
        names = sorted(entry.name for entry in os.scandir(root))
    except (OSError, RuntimeError) as error:
        reason = "not a folder" if isinstance(error, NotADirectoryError) else getattr(error, "strerror", None)
        raise OptionError(f"--models-from {given}: {reason or 'cannot read the folder'}") from None
    files = {}
    ncnn_weights = {str(Path(name).with_suffix(".bin")) for name in names if Path(name).suffix.lower() == ".param"}
    for name in names:
        if Path(name).suffix.lower() in WEIGHT_SUFFIXES and name not in ncnn_weights:  # a .param's .bin is part of it
            path = trusted_weight_file(root, name)
            if path is not None:
                files[name] = path
    return files


@dataclass(frozen=True)
class _Choice:
    label: str
    kind: str              # "fixed", "catalog" or "file"
    name: str              # what the task receives for "fixed" and "catalog"; the file name for "file"
    folder: Path | None = None


class ModelMenu:
    """The model choices of the web UI's dropdowns, and the check that turns a client's choice into a model."""

    def __init__(self, model_dir: str | os.PathLike[str] | None = None,
                 folders: Sequence[str | os.PathLike[str]] = ()):
        self.model_dir = model_dir
        self._files = self._folder_files(folders)
        self._slots = {slot: self._slot_choices(slot) for slot in SLOTS}

    @staticmethod
    def _folder_files(folders: Iterable[str | os.PathLike[str]]) -> dict[str, Path]:
        """The files of all folders by name; the first folder named wins when two hold the same name."""
        files: dict[str, Path] = {}
        for folder in folders:
            for name, path in scan_model_folder(folder).items():
                files.setdefault(name, path)
        return files

    def _slot_choices(self, slot: str) -> dict[str, _Choice]:
        from ..models.catalog import CATALOG, model_path
        from ..models.ncnn_cache import bundled_available

        choices = {value: _Choice(label, "fixed", value) for label, value in _FIXED[slot]}
        for entry in CATALOG:
            if entry.task in _CATALOG_TASKS[slot] and not entry.auxiliary:
                cached = model_path(entry, self.model_dir).is_file() or bundled_available(entry)
                label = entry.name if cached else f"{entry.name} (not downloaded)"
                choices.setdefault(entry.name, _Choice(label, "catalog", entry.name))
        for name, path in self._files.items():
            choices.setdefault(name, _Choice(name, "file", name, path.parent))
        return choices

    def choices(self, slot: str) -> list[tuple[str, str]]:
        """(label, value) pairs for the dropdown of ``slot`` ("inpaint", "face", "background", "upscale")."""
        return [(choice.label, value) for value, choice in self._slots[slot].items()]

    def resolve(self, slot: str, value: object) -> str:
        """What the task receives for the client's ``value``: a weight-free name, a catalog name or a file's path.

        An empty value means the slot's default. Any other value that is not one of the slot's choices raises
        ModelError with the same message whatever the value, so that a reply tells nothing about the server's files.
        """
        text = str(value if value is not None else "").strip()
        if not text:  # no value (an API client sent null): the slot's default, its first weight-free entry
            text = _FIXED[slot][0][1]
        choice = self._slots[slot].get(text)
        if choice is None:
            raise ModelError(f"unknown model {_shown(text)}: choose one from the list")
        if choice.kind == "catalog":
            return self._cached(choice.name)
        if choice.kind == "file":
            path = trusted_weight_file(choice.folder, choice.name) if choice.folder else None
            if path is None:
                raise ModelError(f"model {choice.name!r} is no longer available on this server")
            return str(path)
        return choice.name

    def _cached(self, name: str) -> str:
        from ..models.catalog import get_entry, model_path
        from ..models.ncnn_cache import bundled_available

        entry = get_entry(name)
        if not (model_path(entry, self.model_dir).is_file() or bundled_available(entry)):
            raise ModelError(f"model {name!r} is not downloaded on this server: whoever runs it can fetch it "
                             f"with `tessera models pull {name}`")
        return name

    def display_names(self) -> dict[str, str]:
        """``{server path: file name}`` of the folder files, so that messages show names, not server paths."""
        return {str(path): name for name, path in self._files.items()}


def _shown(text: str, limit: int = 60) -> str:
    """The value as a message shows it: quoted, on one line, shortened."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")
