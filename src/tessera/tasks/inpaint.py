"""Inpainting at a cost that follows the mask: LaMa (or any inpainting network) and weight-free methods.

The flow: prepare the mask (load, fit, grow; :mod:`tessera.masks`; add the feather band), plan one crop per group
of holes, long thin ones split into full-resolution pieces (:mod:`.inpaint_plan`), run the crops through the model
in batches of one shape and phase (:func:`tessera.engine.run_model`), and paste each result back into its own
holes only (:mod:`.inpaint_paste`). A 40-MP photo with a few marks costs about what the marks' crops cost, and
every pixel outside the grown mask (and its feather band) is the input's, bit for bit.

``stitch`` puts the region files written by ``save_regions`` back, after a user has fixed some by hand.
"""
from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..engine import Runtime, fits, measure_memory, run_model
from ..errors import OptionError
from ..progress import ProgressCallback, ProgressEvent
from ..image.pixels import from_float, to_float
from ..masks import coverage, prepare_mask, require_context
from ..models.classical.inpaint import WEIGHT_FREE_INPAINT, patchmatch_available
from ..models.descriptor import Model
from ..options import InpaintOptions, parse_options
from .common import deliver, open_picture
from .inpaint_paste import (Manifest, RegionWriter, check_photo, check_region_files, feather_band, feather_weights,
                            paste_region, read_manifest, stitch_pixels, to_gray)
from .inpaint_plan import plan_regions
from .inpaint_regions import Region
from .inpaint_sizing import QUANTUM, Sizing
from .result import Result

LAMA = "big-lama"                 # catalog name of the network `--model auto` uses when it is cached
DEFAULT_WEIGHT_FREE = "patchmatch"  # keeps texture at a small PSNR cost (bench/inpaint_quality.py); needs the extra
FALLBACK_WEIGHT_FREE = "telea"    # best mean PSNR, blurs: the default when patchmatch-cython is not installed
CHUNK_PIXELS = 16 << 20           # network input pixels prepared at once (host memory stays bounded)
CHUNK_REGIONS = 32
STEP_PIXELS = 1 << 20             # a region this large (input pixels) alone in its batch reports its steps


@dataclass
class InpaintReport:
    """What an inpaint did: the model, the regions it ran, and the notice when LaMa was not available."""

    model: str
    strategy: str
    device: str
    precision: str
    coverage: float
    regions: list[Region] = field(default_factory=list)
    weight_free: bool = False
    fallback: str | None = None
    manifest: Path | None = None

    def describe(self) -> str:
        scaled = sum(r.downscaled for r in self.regions)
        pieces = sum(r.phase > 0 for r in self.regions)
        detail = (f", {scaled} downscaled" if scaled else "") + (f", {pieces} pieces of thin holes" if pieces else "")
        return (f"{len(self.regions)} region(s){detail} with {self.model} ({self.strategy}) on {self.device} "
                f"{self.precision}; mask covers {self.coverage:.2%}")


# ---------------------------------------------------------------------------------------------- models


def resolve_inpaint_model(model: Any, model_dir: str | None = None) -> tuple[Model, str | None]:
    """The model to run, and a notice when ``auto`` fell back to the weight-free method.

    ``model``: ``auto`` (LaMa when its weights are cached, else the best weight-free method), ``lama`` or any
    catalog name or path, ``patchmatch``, ``telea``, or a loaded model (tessera Model, spandrel descriptor).
    """
    notice = None
    if isinstance(model, str):
        name = model.strip().lower()
        if name in WEIGHT_FREE_INPAINT:
            return WEIGHT_FREE_INPAINT[name](), None
        if name == "auto":
            model = auto_inpaint_choice(model_dir)
            if model in WEIGHT_FREE_INPAINT:
                from ..models.catalog import get_entry, model_path

                why = default_weight_free()[1]
                notice = (f"LaMa weights are not in the cache ({model_path(get_entry(LAMA), model_dir)}): used the "
                          f"weight-free {model} method{why}; for LaMa run `tessera models pull {LAMA}`")
                return WEIGHT_FREE_INPAINT[model](), notice
        from ..models.loader import load_model

        network = load_model(model, model_dir=model_dir)
    else:
        from ..models.loader import as_model

        network = as_model(model)
    if network.task != "inpaint":
        raise OptionError(f"model {network.name} is a {network.task} model, not an inpainting one")
    return network, notice


def auto_inpaint_choice(model_dir: str | None = None) -> str:
    """What ``model="auto"`` runs now: LaMa when its weights are cached, else the default weight-free method."""
    from ..models.catalog import get_entry, model_path

    return LAMA if model_path(get_entry(LAMA), model_dir).is_file() else default_weight_free()[0]


def default_weight_free() -> tuple[str, str]:
    """The weight-free method ``auto`` falls back to, and why it is not the usual one ("" when it is)."""
    if DEFAULT_WEIGHT_FREE != "patchmatch" or patchmatch_available():
        return DEFAULT_WEIGHT_FREE, ""
    return FALLBACK_WEIGHT_FREE, (" (patchmatch-cython, which keeps texture better, is not installed: "
                                  "pip install 'tessera[inpaint]')")


def is_weight_free(model: Model) -> bool:
    return model.weight_free


def sizing_for(model: Model, runtime: Runtime, max_size: int | None) -> Sizing:
    """Crop shapes for ``model`` on ``runtime``: multiples of 64 (power-of-two sides where an FFT network runs
    in half precision), capped by ``max_size``, checked against the memory budget."""
    if is_weight_free(model):
        return Sizing(quantum=1, pow2=False, max_size=max_size, fits=None)
    fft = model.half_needs_pow2
    multiple = max(1, model.size_requirements.multiple_of)
    quantum = QUANTUM * multiple // math.gcd(QUANTUM, multiple)
    return Sizing(quantum=quantum, pow2=fft and runtime.precision in ("fp16", "bf16"), max_size=max_size,
                  fits=lambda height, width: fits(model, height, width, runtime),
                  estimate=lambda height, width: measure_memory(model, runtime).bytes_for(height, width),
                  budget=runtime.budget)


# ---------------------------------------------------------------------------------------------- running


def region_input(pixels: np.ndarray, mask: np.ndarray, region: Region,
                 canvas: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The network's input for ``region``: float32 crop and 0/1 mask, downscaled and padded as planned.

    The region's ``known`` boxes (filled by regions of earlier phases) are read from ``canvas``, the output so
    far, as known pixels; every other hole pixel keeps the input's value, so the input does not depend on the
    order of the regions within a phase. Without a canvas the known boxes stay holes.
    """
    source = pixels[region.crop.slices]
    hole = mask[region.crop.slices]
    if region.known and canvas is not None:
        source, hole = source.copy(), hole.copy()
        for box in region.known:
            local = box.relative_to(region.crop).slices
            source[local] = canvas[box.slices]
            hole[local] = False
    crop = to_float(source)
    if region.downscaled:
        height, width = region.run_shape
        crop = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)
        # a run pixel is a hole when any part of it is: the fill then covers every full-size hole pixel
        hole = cv2.resize(hole.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA) > 1e-6
    if region.pad_to is not None:
        extra = ((0, region.pad_to[0] - crop.shape[0]), (0, region.pad_to[1] - crop.shape[1]))
        crop = np.pad(crop, (*extra, (0, 0)), mode="reflect")
        hole = np.pad(hole, extra, mode="reflect")
    return np.ascontiguousarray(crop, dtype=np.float32), hole.astype(np.float32)


def region_output(result: np.ndarray, region: Region) -> np.ndarray:
    """The network's output back at the crop's size (padding removed, upscaled when it ran downscaled)."""
    height, width = region.run_shape
    result = result[:height, :width]
    if region.downscaled:
        result = cv2.resize(result, (region.crop.width, region.crop.height), interpolation=cv2.INTER_CUBIC)
    return np.clip(result, 0.0, 1.0)


def _input_shape(region: Region) -> tuple[int, int]:
    return region.pad_to or region.run_shape


def _batch_key(region: Region) -> tuple[int, tuple[int, int]]:
    return region.phase, _input_shape(region)


def _chunks(regions: Sequence[Region]) -> Iterator[list[int]]:
    """Region indices in runs of one phase and input shape, phases in order, each run bounded in count and
    pixels."""
    order = sorted(range(len(regions)), key=lambda i: _batch_key(regions[i]))
    chunk: list[int] = []
    pixels = 0
    for index in order:
        shape = _input_shape(regions[index])
        size = shape[0] * shape[1]
        if chunk and (len(chunk) >= CHUNK_REGIONS or pixels + size > CHUNK_PIXELS
                      or _batch_key(regions[chunk[0]]) != _batch_key(regions[index])):
            yield chunk
            chunk, pixels = [], 0
        chunk.append(index)
        pixels += size
    if chunk:
        yield chunk


def _progress_offset(runtime: Runtime, offset: int, total: int) -> Runtime:
    """A view of ``runtime`` whose progress counts ``offset`` regions already done out of ``total``."""
    if runtime.progress is None:
        return runtime
    parent = runtime.progress

    def forward(event: ProgressEvent) -> None:
        done = event.done + offset
        eta = event.elapsed / done * (total - done) if done else None
        parent(dataclasses.replace(event, done=done, total=total, eta=eta))

    return dataclasses.replace(runtime, progress=forward)


def run_regions(model: Model, pixels: np.ndarray, mask: np.ndarray, regions: Sequence[Region], runtime: Runtime,
                *, batch: int | str = "auto", canvas: np.ndarray | None = None
                ) -> Iterator[tuple[Region, np.ndarray]]:
    """Run every region through ``model`` (same phase and shape batched, phases in order); yields each region
    with its float32 result at crop size, as soon as its batch is back.

    ``canvas``: the output being pasted into as results are yielded; later phases read their ``known`` boxes
    from it (a batch is prepared only after the caller has handled every earlier result). A region alone in
    its batch and of at least STEP_PIXELS reports its steps (stage ``"steps"``: input, model, paste), so
    that the progress of one big region moves.
    """
    done = 0
    for chunk in _chunks(regions):
        runtime.check_cancelled()
        steps = _Steps(runtime, regions[chunk[0]], model.name) if len(chunk) == 1 else None
        prepared = [region_input(pixels, mask, regions[i], canvas) for i in chunk]
        if steps:
            steps.report(1)
        outputs = run_model(model, [p[0] for p in prepared], _progress_offset(runtime, done, len(regions)),
                            masks=[p[1] for p in prepared], batch=batch, stage="regions")
        del prepared
        if steps:
            steps.report(2)
        for index, output in zip(chunk, outputs):
            yield regions[index], region_output(output, regions[index])
        if steps:
            steps.report(3)  # the caller has pasted the result when the generator resumes
        done += len(chunk)


class _Steps:
    """Progress inside one big region: 0/3 preparing its input, 1/3 running the model, 2/3 pasting, 3/3 done."""

    NAMES = ("preparing the input", "running {model}", "pasting the result", "done")

    def __init__(self, runtime: Runtime, region: Region, model: str):
        height, width = _input_shape(region)
        self.runtime, self.model = runtime, model
        self.active = height * width >= STEP_PIXELS
        self.what = f"{region.crop.width}x{region.crop.height} region" + (
            f" run at {width}x{height}" if region.downscaled or region.pad_to else "")
        self.report(0)

    def __bool__(self) -> bool:
        return self.active

    def report(self, step: int) -> None:
        if self.active:
            name = self.NAMES[step].format(model=self.model)
            self.runtime.report("steps", step, 3, f"{self.what}: {name}")


# ---------------------------------------------------------------------------------------------- API


def inpaint(image: Any, mask: Any, *, model: str | Model | Any = "auto", progress: ProgressCallback | None = None,
            cancel: threading.Event | None = None, model_dir: str | None = None,
            **options: Any) -> Result[InpaintReport]:
    """Fill the masked parts of ``image``: a :class:`Result` whose ``image`` has the form given (a Picture for a
    path) and whose ``report`` is an :class:`InpaintReport`.

    ``image``: a path, a :class:`~tessera.image.pixels.Picture` or a numpy array (HxW, HxWx3, HxWx4; uint8, uint16,
    float32). ``mask``: a path, a Picture or an array: grey, white-on-black RGB, or RGBA (alpha); above 127 is
    a hole. ``model``: ``auto`` (LaMa if cached, else the weight-free default), ``lama``, a name or path,
    ``patchmatch``, ``telea``, or a loaded model. Options (validated by :class:`~tessera.options.InpaintOptions`):
    ``strategy`` (auto, crop, resize, full), ``crop_margin``, ``max_size``, ``grow``, ``feather``,
    ``resize_mask``, ``save_regions`` and the engine's ``device``, ``precision``, ``max_memory``, ``tile_batch``.
    ``feather`` N blends the fill into a band of N px around the grown mask (the mask itself is replaced whole).
    Pixels outside the grown mask and that band, alpha and metadata are returned unchanged. A mask that leaves
    too little of the photo to fill from is an InputError.
    """
    opts = parse_options(InpaintOptions, model=model if isinstance(model, str) else "auto", **options)
    max_size = None if opts.max_size == "auto" else int(opts.max_size)  # the schema checked MIN_RUN_SIDE
    picture, kind = open_picture(image)
    pixels = picture.pixels
    grown = prepare_mask(mask, pixels.shape[:2], grow=opts.grow, resize=opts.resize_mask)
    filled = feather_band(grown, opts.feather)  # what the model fills: the grown mask and the feather band
    if opts.feather:
        require_context(filled, how=f" with its {opts.feather} px feather band")
    network, notice = resolve_inpaint_model(model, model_dir)
    runtime = Runtime.create(opts.device, opts.precision, opts.max_memory, model=network,
                             progress=progress, cancel=cancel)
    regions = plan_regions(filled, strategy=opts.strategy, margin=opts.crop_margin,
                           sizing=sizing_for(network, runtime, max_size))
    writer = None
    if opts.save_regions is not None:
        writer = RegionWriter(opts.save_regions, photo=picture, feather=opts.feather, strategy=opts.strategy,
                              model=network.name)
    out = pixels.copy()
    for region, result in run_regions(network, pixels, filled, regions, runtime, batch=opts.tile_batch,
                                      canvas=out):
        if picture.gray:
            result = to_gray(result)
        result = from_float(result, out.dtype)
        paste = region.paste_mask(filled)
        paste_region(out, pixels, region.crop, paste, result, feather_weights(grown, region.crop, opts.feather))
        if writer is not None:
            writer.add(region, pixels[region.crop.slices], paste, result, core=grown[region.crop.slices])
    manifest = writer.finish() if writer is not None else None
    report = InpaintReport(
        model=network.name, strategy=opts.strategy, device=str(runtime.device), precision=runtime.precision,
        coverage=coverage(grown), regions=list(regions), weight_free=is_weight_free(network),
        fallback=notice, manifest=manifest)
    return Result(deliver(picture.with_pixels(out), kind), report)


def stitch(manifest: str | Path | Manifest, image: Any = None) -> Any:
    """Put the region results of a ``save_regions`` manifest (edited or not) back into the photo.

    ``image``: the photo (path, Picture or array); default: the input file the manifest names. Only pixels of
    each region's mask change, blended with the manifest's feather; the result comes back in the form given
    (a Picture for a path or the default). Everything that can be checked is checked before a pixel is decoded:
    the manifest (:func:`~.inpaint_paste.read_manifest`), the region files' headers, the photo's header.
    """
    import os

    from ..image.read import read_image_size

    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    image = stitch_photo(manifest, image)
    check_region_files(manifest)
    if isinstance(image, (str, os.PathLike)):
        check_photo(manifest, *read_image_size(image))  # the reader refuses a FIFO without blocking on it
    picture, kind = open_picture(image)
    return deliver(picture.with_pixels(stitch_pixels(manifest, picture)), kind)


def stitch_photo(manifest: Manifest, image: Any = None) -> Any:
    """The photo to stitch into: ``image`` when given, else the one the manifest names."""
    if image is not None:
        return image
    if manifest.input is None:
        raise OptionError(f"manifest {manifest.path} names no input photo (it came from an array): give the photo")
    return manifest.input
