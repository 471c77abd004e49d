"""The mask editor: Gradio's ImageEditor, with the images it receives decoded by tessera, not by Gradio.

Gradio's ImageEditor opens what the browser sends (background, brush layers, composite) with ``PIL.Image.open``,
which picks a decoder by content among all of Pillow's plugins (EPS included, which runs Ghostscript) and knows
no pixel limit but Pillow's global one. :func:`guard_editor` keeps the component as the page knows it, but each
image goes through :func:`tessera.image.read.load_image` under a pixel limit that fits the editor's canvas, and
only files in Gradio's upload folder are read. The images the browser sends as bytes (Gradio keeps them in memory until
the job runs) are bounded in size and in number. The page sees the ordinary ImageEditor.

What the editor hands back, brush strokes painted on a preview, becomes a full-resolution mask through
:func:`editor_strokes` and :func:`scale_mask`.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import numpy as np
from gradio.components.base import server
from gradio.data_classes import FileData

from ..errors import InputError, TesseraError
from ..image.pixels import Picture
from ..image.read import load_image
from .results import preview
from .uploads import gradio_upload_folder, inside

CANVAS_PIXEL_FACTOR = 4  # the editor's images may have up to this many times the canvas's pixels
PENDING_EDITS = 64       # edits whose images the server holds, sent but not yet used by a job (oldest dropped)


def rgba8(picture: Picture) -> np.ndarray:
    """The picture as an HxWx4 uint8 array (opaque where it has no alpha), as the editor's value holds it."""
    height, width = picture.pixels.shape[:2]
    rgb = preview(picture.pixels, size=(width, height))
    if picture.alpha is None:
        alpha = np.full((height, width), 255, np.uint8)
    else:
        alpha = preview(picture.alpha, size=(width, height))
    return np.ascontiguousarray(np.dstack([rgb, alpha]))


def guard_editor(editor: gr.ImageEditor) -> gr.ImageEditor:
    """Make ``editor`` decode what it receives with tessera, within :func:`editor_pixel_limit`, as RGBA arrays
    (whatever its ``type`` and ``image_mode``), and bound the canvas images it holds; return it.

    The two methods are replaced on this one instance rather than in a subclass: Gradio's component metaclass
    writes a ``.pyi`` stub next to the module of every Component subclass it sees, and the page needs nothing
    but Gradio's own ImageEditor.
    """
    editor.convert_and_format_image = types.MethodType(_convert_and_format_image, editor)
    editor.accept_blobs = types.MethodType(_accept_blobs, editor)
    return editor


def editor_pixel_limit(editor: gr.ImageEditor) -> int:
    """The most pixels an image of the editor may have: a few times its canvas."""
    width, height = editor.canvas_size or (2048, 2048)
    return CANVAS_PIXEL_FACTOR * int(width) * int(height)


def editor_blob_limit(editor: gr.ImageEditor) -> int:
    """The largest canvas image accepted: an uncompressed RGBA image at the pixel limit, plus headers."""
    return 4 * editor_pixel_limit(editor) + (1 << 16)


def _convert_and_format_image(editor: gr.ImageEditor, file: FileData | None | bytes,
                              flatten_on_white: bool = False) -> np.ndarray | None:
    """One image of the editor's value, decoded by :func:`load_image` (bounded, allow-listed formats)."""
    if file is None:
        return None
    try:
        with _image_file(file) as path:
            return rgba8(load_image(path, max_pixels=editor_pixel_limit(editor)))
    except TesseraError as error:  # one line for the page; Gradio would wrap it with the whole payload
        raise gr.Error(f"the mask editor's image: {_without_paths(str(error))}", print_exception=False) from None


@server
def _accept_blobs(editor: gr.ImageEditor, data: Any) -> None:
    """Gradio's route for the browser's canvas images, bounded: each image at most :func:`editor_blob_limit`,
    and at most :data:`PENDING_EDITS` edits held (Gradio keeps them in memory, keyed by the client's id)."""
    size = sum(len(content) for _name, content in getattr(data, "files", []) or [])
    limit = editor_blob_limit(editor)
    if size > limit:
        raise gr.Error(f"the mask editor's image is {size:,} bytes, over the limit of {limit:,}",
                       print_exception=False)
    gr.ImageEditor.accept_blobs(editor, data)
    while len(editor.blob_storage) > PENDING_EDITS:
        editor.blob_storage.pop(next(iter(editor.blob_storage)))


def editor_strokes(editor: dict[str, Any] | None) -> np.ndarray | None:
    """The union of the editor's painted layers as a boolean mask at the editor's size, or None if unpainted."""
    if not editor:
        return None
    strokes = None
    for layer in editor.get("layers") or []:
        if layer is None:
            continue
        layer = np.asarray(layer)
        painted = layer[:, :, 3] > 0 if layer.ndim == 3 and layer.shape[2] == 4 else layer.reshape(
            layer.shape[0], layer.shape[1], -1).max(axis=2) > 0
        strokes = painted if strokes is None else strokes | painted
    if strokes is None or not strokes.any():
        return None
    return strokes


def scale_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """A boolean mask resized to ``width`` x ``height``: bilinear on 0/255 then halved, so edges stay smooth."""
    if mask.shape == (height, width):
        return mask.copy()
    values = cv2.resize(mask.astype(np.uint8) * np.uint8(255), (width, height), interpolation=cv2.INTER_LINEAR)
    return values >= 128


def _without_paths(message: str) -> str:
    """The message without the server path it starts with (``/tmp/gradio/...: reason`` -> ``reason``)."""
    head, sep, rest = message.partition(": ")
    return rest if sep and ("/" in head or os.sep in head) else message


@contextlib.contextmanager
def _image_file(file: FileData | bytes) -> Iterator[Path]:
    """A path to read ``file`` from: a FileData's own path (only inside Gradio's upload folder), or blob bytes
    written to a temporary file in that folder for the time of the read."""
    folder = gradio_upload_folder()
    if isinstance(file, FileData):
        path = Path(file.path).resolve()
        if not inside(path, folder):
            raise InputError(f"{Path(file.path).name}: not uploaded to this server")
        yield path
        return
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix="tessera-editor-", suffix=".img", dir=folder)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(bytes(file))
        yield Path(name)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)
