"""The task registry: what each image task is, declared once for the CLI, the web UI and batch.

A :class:`Task` names its option schema, which options name weight files, how to load those once per worker,
its output geometry (the factor between output and input sides), how to run it on a picture in memory and, where
it can, how to stream an image larger than memory from disk to a tiled BigTIFF. Front ends loop over
:data:`TASKS` or look a task up with :func:`get_task`; none of them asks ``if task == ...``.

This module imports no torch: the CLI reads the registry for ``--help`` and for checks before any work. Each
task's code is imported when it runs.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..errors import look_up_option
from ..options import (AUTO_DEFAULT_SCALE, WEIGHT_FREE_DEFAULT_SCALE, WEIGHT_FREE_NAMES, FaceOptions, InpaintOptions,
                       Options, UpscaleOptions)
from ..progress import ProgressCallback
from .result import Result

_NOT_WEIGHT_FILES = ("auto",)  # the option value that lets the task choose its model
UNKNOWN_MODEL_SCALE = 4.0  # of a weight file the catalog does not know, not loaded yet: estimates err high


class Task:
    """One image task. Subclasses set the class attributes and implement :meth:`run` (and :meth:`stream`)."""

    name: str = ""
    schema: type[Options] = Options
    takes_mask: bool = False
    streams: bool = False                # whether :meth:`stream` exists (inputs larger than memory)
    weight_fields: tuple[str, ...] = ()  # the options that may name weight files
    weight_free: tuple[str, ...] = ()    # values of those options that choose a method, not a file
    done_word: str = ""                  # the past participle in result names: "upscaled", "inpainted"
    summary: str = ""                    # what the task does, in a few words (command help)
    stream_refusal: str = ""             # why an image over the RAM budget cannot be processed (no stream)

    def weight_options(self, options: dict[str, Any]) -> dict[str, str]:
        """The options that name weight files to load: ``{option: name or path}``."""
        ignore = {*_NOT_WEIGHT_FILES, *self.weight_free}
        return {key: value for key in self.weight_fields
                if isinstance(value := options.get(key), str) and value.strip().lower() not in ignore}

    def load_models(self, options: dict[str, Any], model_dir: str | None) -> tuple[dict[str, Any], str | None]:
        """The task's models, loaded once per worker, as keyword arguments replacing their names in ``options``;
        with a sentence saying what ``auto`` chose, if it was asked for."""
        from ..models.loader import load_model

        return {key: load_model(name, model_dir=model_dir)
                for key, name in self.weight_options(options).items()}, None

    def automatic_choices(self, options: dict[str, Any], model_dir: str | None, device_type: str) -> dict[str, str]:
        """What each ``auto`` option that depends on this machine (installed packages, cached models) would
        choose now, without loading anything: ``{option: choice}``. Batch records it with its outputs, so that a
        rerun after ``tessera models pull`` knows the old results came from another method."""
        return {}

    def output_scale(self, options: dict[str, Any], models: dict[str, Any]) -> float:
        """The factor between output and input sides, known before the input is read (memory estimates)."""
        return 1.0

    def run(self, image: Any, *, mask: Any = None, progress: ProgressCallback | None = None,
            cancel: threading.Event | None = None, model_dir: str | None = None, **options: Any) -> Result:
        """Process ``image`` (a path, Picture or array) in memory."""
        raise NotImplementedError

    def stream(self, source: Path, output: Path, *, mask: Path | None = None, max_ram: int | None = None,
               progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
               model_dir: str | None = None, **options: Any) -> Result:
        """Process the TIFF ``source`` region by region into the tiled BigTIFF ``output``."""
        raise NotImplementedError(f"{self.name} cannot be streamed")


class UpscaleTask(Task):
    name = "upscale"
    schema = UpscaleOptions
    streams = True
    weight_fields = ("model",)
    weight_free = WEIGHT_FREE_NAMES
    done_word = "upscaled"
    summary = "tiled super-resolution"

    def load_models(self, options: dict[str, Any], model_dir: str | None) -> tuple[dict[str, Any], str | None]:
        if str(options.get("model", "auto")).strip().lower() != "auto":
            return super().load_models(options, model_dir)
        from ..engine.runtime import resolve_device
        from ..models.loader import load_model
        from .upscale import choose_auto_model

        name, notice = choose_auto_model(resolve_device(options.get("device")).type, model_dir)
        # none available: "auto" stays, and each upscale falls back to Lanczos at auto's scale
        return ({} if name is None else {"model": load_model(name, model_dir=model_dir)}), notice

    def automatic_choices(self, options: dict[str, Any], model_dir: str | None, device_type: str) -> dict[str, str]:
        if str(options.get("model", "auto")).strip().lower() != "auto":
            return {}
        from .upscale import choose_auto_model

        return {"model": choose_auto_model(device_type, model_dir)[0] or "lanczos"}

    def output_scale(self, options: dict[str, Any], models: dict[str, Any]) -> float:
        if options.get("scale"):
            return float(options["scale"])
        model = models.get("model", options.get("model", "auto"))
        if isinstance(model, str):  # not loaded yet: auto, a weight-free name, a catalog name or a weight file
            name = model.strip().lower()
            if name == "auto":
                return AUTO_DEFAULT_SCALE
            if name in WEIGHT_FREE_NAMES:
                return WEIGHT_FREE_DEFAULT_SCALE
            from ..models.catalog import find_entry

            entry = find_entry(Path(model).name)  # a catalog name, or a weight file that carries one
            return float(entry.scale) if entry is not None else UNKNOWN_MODEL_SCALE
        return float(getattr(model, "scale", 0) or WEIGHT_FREE_DEFAULT_SCALE)

    def run(self, image: Any, *, mask: Any = None, progress: ProgressCallback | None = None,
            cancel: threading.Event | None = None, model_dir: str | None = None, **options: Any) -> Result:
        from .upscale import upscale

        return upscale(image, progress=progress, cancel=cancel, model_dir=model_dir, **options)

    def stream(self, source: Path, output: Path, *, mask: Path | None = None, max_ram: int | None = None,
               progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
               model_dir: str | None = None, **options: Any) -> Result:
        from .upscale_stream import stream_upscale

        return stream_upscale(source, output, progress=progress, cancel=cancel, model_dir=model_dir, **options)


class InpaintTask(Task):
    name = "inpaint"
    schema = InpaintOptions
    takes_mask = True
    streams = True
    weight_fields = ("model",)
    done_word = "inpainted"
    summary = "fill the masked parts"

    @property
    def weight_free(self) -> tuple[str, ...]:  # type: ignore[override]
        from ..models.classical.inpaint import WEIGHT_FREE_INPAINT

        return tuple(WEIGHT_FREE_INPAINT)

    def automatic_choices(self, options: dict[str, Any], model_dir: str | None, device_type: str) -> dict[str, str]:
        if str(options.get("model") or "auto").strip().lower() != "auto":
            return {}
        from .inpaint import auto_inpaint_choice

        return {"model": auto_inpaint_choice(model_dir)}

    def load_models(self, options: dict[str, Any], model_dir: str | None) -> tuple[dict[str, Any], str | None]:
        from .inpaint import resolve_inpaint_model

        network, notice = resolve_inpaint_model(options.get("model") or "auto", model_dir)
        return {"model": network}, notice

    def run(self, image: Any, *, mask: Any = None, progress: ProgressCallback | None = None,
            cancel: threading.Event | None = None, model_dir: str | None = None, **options: Any) -> Result:
        from .inpaint import inpaint

        return inpaint(image, mask, progress=progress, cancel=cancel, model_dir=model_dir, **options)

    def stream(self, source: Path, output: Path, *, mask: Path | None = None, max_ram: int | None = None,
               progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
               model_dir: str | None = None, **options: Any) -> Result:
        from ..errors import OptionError
        from .inpaint_stream import stream_inpaint

        if options.get("save_regions"):
            raise OptionError("save_regions is not available for an image streamed region by region (over the "
                              "RAM budget)")
        options = {k: v for k, v in options.items() if k not in ("save_regions", "resize_mask")}
        return stream_inpaint(source, mask, output, progress=progress, cancel=cancel, model_dir=model_dir,
                              max_ram=max_ram, **options)


class EnhanceTask(Task):
    name = "enhance"
    schema = FaceOptions
    weight_fields = ("model", "background")
    weight_free = ("none", "lanczos")
    done_word = "enhanced"
    summary = "restore faces"
    stream_refusal = "face enhancement cannot be streamed"

    def output_scale(self, options: dict[str, Any], models: dict[str, Any]) -> float:
        return float(options.get("upscale") or 1.0)

    def automatic_choices(self, options: dict[str, Any], model_dir: str | None, device_type: str) -> dict[str, str]:
        from ..faces.backends import available_detector
        from ..faces.paste import parse_mask_choice

        return {"detector": available_detector(options.get("detector") or "auto"),
                "parse_mask": parse_mask_choice(options.get("parse_mask") or "auto", model_dir)}

    def run(self, image: Any, *, mask: Any = None, progress: ProgressCallback | None = None,
            cancel: threading.Event | None = None, model_dir: str | None = None, **options: Any) -> Result:
        from .faces import enhance_faces

        return enhance_faces(image, progress=progress, cancel=cancel, model_dir=model_dir, **options)


TASKS: dict[str, Task] = {task.name: task for task in (InpaintTask(), EnhanceTask(), UpscaleTask())}


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name raises :class:`~tessera.errors.OptionError` naming the nearest."""
    return TASKS[look_up_option(name, TASKS, "task")]
