"""Face enhancement: detect, align, restore in batches, paste back, on photos of any size.

Faces are a small part of a photo, so the work follows them: detection on a scaled copy (plus full-resolution
tiles when the faces are small), one aligned crop per face at the network's size and template, the crops run in
batches through the engine, and each result warped back only into its own box with a soft mask. The background
is copied, resized with Lanczos, or upscaled by a network through the tiling engine; faces are pasted at the
output's scale. Without a face network the weight-free clean-up runs, on each face at its own resolution.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import ProgressCallback, Runtime, run_model
from ..errors import ModelError, OptionError, OutputError
from ..faces.align import (AlignedFace, align_face, alignment_matrix, compose, footprint, invert, native_crop_size,
                           translation)
from ..faces.detect import Face, available_detector, detect_faces
from ..faces.paste import paste_face
from ..filters import deblur, suppress_hf
from ..image import Picture, from_float, save_image, to_float
from ..models.classical.face import classical_face_model
from ..models.descriptor import Model
from ..options import FaceOptions, parse_options
from .common import deliver, open_picture

# Faces are aligned, restored and pasted this many at a time, so crops never pile up for a crowd.
_CHUNK = 16
# --deblur estimates the blur on at least this many pixels around a face (a small face alone shows too little).
_DEBLUR_MIN_SIDE = 256
WEIGHT_FREE_HINT = "gpen-bfr-512"


@dataclass(eq=False)
class RestoredFace:
    """One face as processed: the detection, its crop size, the alignment (photo -> crop) and the output box
    (x0, y0, x1, y1) whose pixels the paste may have changed (None when nothing was pasted)."""

    face: Face
    size: int
    matrix: np.ndarray = field(repr=False)
    box: tuple[int, int, int, int] | None = None


@dataclass
class FaceReport:
    """What an enhancement did: the face model, the detector, the background, each face, and timings (s)."""

    model: str
    weight_free: bool
    detector: str
    background: str
    scale: tuple[float, float]
    faces: list[RestoredFace] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def enhance_faces(image: Any, *, model: str | Model | None = None, background: str | Model | None = None,
                  progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
                  model_dir: str | None = None, report: list[FaceReport] | None = None, **options: Any) -> Any:
    """Restore the faces of ``image`` (path, :class:`Picture` or numpy array); the result has the same form.

    ``model``: a face model name (``gpen-bfr-512``, ``gfpgan-1.4``, ``codeformer``, ``restoreformer``...), a
    path, a loaded face :class:`Model`, or None for the weight-free clean-up. ``background``: "auto", "none",
    "lanczos", or an upscaling model (name, path or Model) for the rest of the photo at ``upscale`` > 1.
    Other options (``upscale``, ``strength``, ``fidelity``, ``face_batch``, ``min_face``, ``min_score``,
    ``detector``, ``detect_tiles``, ``save_faces``, ``deblur``, ``deblur_method``, ``suppress_hf`` and the engine
    options) are validated by :class:`~tessera.options.FaceOptions`. A photo without faces is not an error: it
    comes back unchanged (resized at ``upscale`` > 1). ``report``: a list that receives a :class:`FaceReport`.
    """
    named = {"model": model if isinstance(model, (str, type(None))) else None,
             "background": background if isinstance(background, str) else "auto"}
    opts = parse_options(FaceOptions, **named, **options)
    picture, kind = open_picture(image)
    network, weight_free = _resolve_face_model(model, opts, model_dir)
    network = _with_fidelity(network, opts.fidelity)
    runtime = Runtime.create(opts.device, opts.precision, opts.max_memory, model=network,
                             progress=progress, cancel=cancel)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    detector = available_detector(opts.detector)
    faces = detect_faces(picture.pixels, min_face=opts.min_face, min_score=opts.min_score, detector=detector,
                         tiles=opts.detect_tiles, runtime=runtime)
    timings["detect"] = time.perf_counter() - started

    mark = time.perf_counter()
    background_model = None
    if not isinstance(background, (str, type(None))):  # a loaded model, descriptor or module
        from ..models.loader import as_model

        background_model = as_model(background)
    result, background_name = _background(picture, opts, background_model, progress, cancel, model_dir)
    timings["background"] = time.perf_counter() - mark
    scale = (result.width / picture.width, result.height / picture.height)

    done = FaceReport(network.name, weight_free, detector, background_name, scale, timings=timings)
    if faces:
        canvas = result.pixels if result.pixels.flags.writeable else result.pixels.copy()
        done.faces = _restore(picture.pixels, canvas, faces, network, opts, runtime, scale, timings)
        result = result.with_pixels(canvas)
    timings["total"] = time.perf_counter() - started
    if report is not None:
        report.append(done)
    return deliver(result, kind)


def _resolve_face_model(model: Any, opts: FaceOptions, model_dir: str | None) -> tuple[Model, bool]:
    """The face network and whether it is the weight-free clean-up; ModelError for a model of another task."""
    if model is None:
        return classical_face_model(), True
    from ..models.loader import as_model, load_model

    network = load_model(model, model_dir=model_dir) if isinstance(model, str) else as_model(model)
    if network.task != "face":
        raise ModelError(f"model {network.name} is a {network.task} model, not a face model (try "
                         f"gpen-bfr-512, gfpgan-1.4, codeformer or restoreformer)")
    return network, False


def _with_fidelity(network: Model, fidelity: float) -> Model:
    """CodeFormer takes its fidelity weight as a call argument: a descriptor for this job that passes it."""
    if network.architecture != "CodeFormer":
        return network

    def call(module: Any, image: Any) -> Any:
        return module(image, weight=fidelity)[0]

    return replace(network, call_fn=call)


def _background(picture: Picture, opts: FaceOptions, background_model: Model | None,
                progress: ProgressCallback | None, cancel: threading.Event | None,
                model_dir: str | None) -> tuple[Picture, str]:
    """The canvas the faces are pasted into: a copy, a Lanczos resize, or a network's upscale."""
    choice = "model" if background_model is not None else opts.background
    if choice == "auto":
        choice = "none" if opts.upscale == 1 else "lanczos"
    if choice == "none" and opts.upscale != 1:
        raise OptionError(f"background 'none' keeps the photo's size, but upscale is {opts.upscale:g}: use "
                          f"--background lanczos or an upscaling model")
    if choice in ("none", "lanczos") and opts.upscale == 1:  # Lanczos at 1x is the identity: copy
        return picture.with_pixels(picture.pixels.copy()), "none"
    from .upscale import upscale

    engine = {name: getattr(opts, name) for name in ("device", "precision", "max_memory", "tile", "tile_pad",
                                                     "tile_batch", "blend")}
    upscaler = None if choice == "lanczos" else (background_model or choice)
    reports: list = []
    result = upscale(picture, model=upscaler, scale=opts.upscale, progress=progress, cancel=cancel,
                     model_dir=model_dir, report=reports, **engine)
    return result, "lanczos" if upscaler is None else reports[0].model


def _crop_size(network: Model, face: Face, template: str, scale: tuple[float, float]) -> int:
    """The network's face size, or for size-free methods the face's own size at the output scale."""
    if network.face_size:
        return int(network.face_size)
    return native_crop_size(face.landmarks, template, max(scale))


def _align(pixels: np.ndarray, face: Face, template: str, size: int, opts: FaceOptions) -> AlignedFace:
    """The aligned crop of one face, deblurred first when asked (on the photo region under the crop)."""
    if not opts.deblur:
        return align_face(pixels, face.landmarks, template, size)
    matrix = alignment_matrix(face.landmarks, template, size)
    grow = max(0, (_DEBLUR_MIN_SIDE - min(face.width, face.height)) // 2)
    box = footprint(invert(matrix), size, size, pixels.shape[:2], margin=int(8 + grow))
    if box is None:  # a face entirely outside the photo cannot come from the detector
        return align_face(pixels, face.landmarks, template, size)
    x0, y0, x1, y1 = box
    region = deblur(to_float(pixels[y0:y1, x0:x1]), method=opts.deblur_method)
    aligned = align_face(region, face.landmarks - np.array([x0, y0]), template, size)
    return AlignedFace(aligned.crop, compose(aligned.matrix, translation(-x0, -y0)))


def _restore(pixels: np.ndarray, canvas: np.ndarray, faces: list[Face], network: Model, opts: FaceOptions,
             runtime: Runtime, scale: tuple[float, float], timings: dict[str, float]) -> list[RestoredFace]:
    """Align, restore and paste the faces, a chunk at a time; smaller faces first so larger ones end on top."""
    template = network.face_template or "facexlib"
    quiet = replace(runtime, progress=None)
    order = sorted(faces, key=lambda face: face.size)
    batch = opts.face_batch
    chunk = max(_CHUNK, batch if isinstance(batch, int) else 1)
    restored: list[RestoredFace] = []
    for key in ("align", "restore", "paste"):
        timings[key] = 0.0
    runtime.report("faces", 0, len(order))
    for first in range(0, len(order), chunk):
        runtime.check_cancelled()
        group = order[first:first + chunk]
        mark = time.perf_counter()
        aligned = [_align(pixels, face, template, _crop_size(network, face, template, scale), opts)
                   for face in group]
        timings["align"] += time.perf_counter() - mark
        if opts.save_faces is not None:
            _save_crops(opts.save_faces, first, [item.crop for item in aligned], "", pixels.dtype)
        mark = time.perf_counter()
        outputs = run_model(network, [item.crop for item in aligned], quiet, batch=batch, stage="faces")
        if opts.suppress_hf:
            outputs = [suppress_hf(output) for output in outputs]
        timings["restore"] += time.perf_counter() - mark
        if opts.save_faces is not None:
            _save_crops(opts.save_faces, first, outputs, "_restored", pixels.dtype)
        mark = time.perf_counter()
        for face, item, output in zip(group, aligned, outputs):
            box = paste_face(canvas, output, item.matrix, scale=scale, strength=opts.strength)
            restored.append(RestoredFace(face, item.size, item.matrix, box))
        timings["paste"] += time.perf_counter() - mark
        runtime.report("faces", first + len(group), len(order))
    return restored


def _save_crops(folder: Path, first: int, crops: list[np.ndarray], suffix: str, source_dtype: np.dtype) -> None:
    """Write crops as PNG (16-bit for 16-bit or float sources), numbered in paste order."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{folder}: cannot create the --save-faces folder: {error.strerror or error}") from None
    dtype = np.uint8 if source_dtype == np.uint8 else np.uint16
    for index, crop in enumerate(crops, first):
        save_image(from_float(crop, dtype), folder / f"face_{index:03d}{suffix}.png")
