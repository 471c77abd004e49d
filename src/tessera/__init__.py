"""tessera: restore photographs of any size, tile by tile, within a memory budget.

The public surface is what ``__all__`` lists; everything else is private. Names are imported on first use so
that ``import tessera`` stays cheap for the CLI's ``--help``.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # pictures
    "Picture": "tessera.image",
    "load_image": "tessera.image",
    "save_image": "tessera.image",
    "read_image_size": "tessera.image",
    # engine
    "tiled_apply": "tessera.engine",
    "Runtime": "tessera.engine",
    "ProgressEvent": "tessera.progress",
    # models
    "Model": "tessera.models.descriptor",
    "load_model": "tessera.models.loader",
    "as_model": "tessera.models.loader",
    "register_architecture": "tessera.models.loader",
    "pull_model": "tessera.models.download",
    # tasks
    "upscale": "tessera.tasks.upscale",
    "inpaint": "tessera.tasks.inpaint",
    "stitch": "tessera.tasks.inpaint",
    "enhance_faces": "tessera.tasks.faces",
    "FaceReport": "tessera.tasks.faces",
    "stitch_faces": "tessera.tasks.faces_manifest",
    "detect_faces": "tessera.faces.detect",
    "Face": "tessera.faces.detect",
    "deblur": "tessera.filters",
    "suppress_hf": "tessera.filters",
    # folders and gigapixel images
    "run_batch": "tessera.batch",
    "resize_files": "tessera.batch_resize",
    "stream_upscale": "tessera.bigimage",
    "stream_inpaint": "tessera.bigimage",
    "needs_streaming": "tessera.bigimage",
    # errors
    "TesseraError": "tessera.errors",
    "InputError": "tessera.errors",
    "ImageReadError": "tessera.errors",
    "ImageTooLargeError": "tessera.errors",
    "OutputError": "tessera.errors",
    "OptionError": "tessera.errors",
    "ModelError": "tessera.errors",
    "ChecksumError": "tessera.errors",
    "ResourceError": "tessera.errors",
    "CancelledError": "tessera.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tessera' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
