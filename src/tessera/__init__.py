"""tessera: restore photographs of any size, tile by tile, within a memory budget.

The public surface is what ``__all__`` lists, kept as small as spandrel's: pictures in and out, the tiled engine
for any network, models, the tasks and the results they return (``Result(image, report)``), folders, and the
errors a caller catches. Everything else (streaming, stitching, filters, runtimes, the error subclasses) stays
importable from its own module and may change. Names are imported on first use, so that ``import tessera`` stays
cheap for the CLI's ``--help``.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # pictures
    "Picture": "tessera.image.pixels",
    "load_image": "tessera.image.read",
    "save_image": "tessera.image.write",
    # the engine, for any network
    "tiled_apply": "tessera.engine",
    "ProgressEvent": "tessera.progress",
    # models
    "Model": "tessera.models.descriptor",
    "load_model": "tessera.models.loader",
    "register_architecture": "tessera.models.architectures",
    "pull_model": "tessera.models.download",
    # tasks, and what they return
    "upscale": "tessera.tasks.upscale",
    "inpaint": "tessera.tasks.inpaint",
    "enhance_faces": "tessera.tasks.faces",
    "detect_faces": "tessera.faces.detect",
    "deblur": "tessera.filters",
    "Result": "tessera.tasks.result",
    "UpscaleReport": "tessera.tasks.upscale",
    "InpaintReport": "tessera.tasks.inpaint",
    "FaceReport": "tessera.tasks.faces",
    # folders
    "run_batch": "tessera.batch",
    "BatchSummary": "tessera.batch.report",
    # errors (their subclasses, e.g. ImageReadError or ChecksumError, stay in tessera.errors)
    "TesseraError": "tessera.errors",
    "InputError": "tessera.errors",
    "OptionError": "tessera.errors",
    "OutputError": "tessera.errors",
    "ModelError": "tessera.errors",
    "ResourceError": "tessera.errors",
    "CancelledError": "tessera.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562) and keep it, so later uses cost nothing."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tessera' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names only: what ``__all__`` lists."""
    return __all__
