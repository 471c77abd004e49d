"""``tessera resize`` for the pictures Pillow rewrites whole: animations (GIF, APNG, animated WEBP) with every
frame, and palette pictures (GIF, palette PNG and BMP) kept palette.

Every frame is decoded whole as Pillow composes it (disposal and blending applied), turned upright by the EXIF
orientation, shrunk, and written back with its duration, the loop count, and the GIF and APNG disposal methods.
The frames written are whole pictures, so an APNG's frames are blended by replacement ("source") and a GIF's
"restore to previous" is written as "restore to background", which shows the same whole frames with Pillow's
delta encoding. The writers (Pillow's GIF and APNG, libwebp) merge a frame identical to the one before it into
that one, adding the durations: the animation plays the same.

Palette frames stay palette: the shrunk colours are matched to the colours of the frame's own palette (a PNG's
or BMP's palette, the first GIF frame's), or, for frames Pillow composes in full colour (later GIF frames), to
the distinct colours of the frame itself (median cut where there are more than fit), so that the colours, their
count and the file size stay those of the source; transparency is kept as one transparent entry. A palette with
partly transparent entries is quantised with its alpha instead (Pillow's fast octree) to no more entries.

The decoding is bounded like :func:`tessera.image.read.load_image`'s: the plugins of the allowed formats only,
each frame within the memory available, and the frames together within :data:`DEFAULT_MAX_PIXELS`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from ..errors import ImageReadError, ImageTooLargeError, OutputError
from ..image.atomic import write_atomically
from ..image.decode import DECODE_ERRORS, DEFAULT_MAX_PIXELS, check_limits, corrupt
from ..image.exif import exif_orientation, normalise_exif, reset_orientation
from ..image.pillow import load_checked, open_with_pillow, own_limit_only, pillow_decode_peak
from ..image.png import png_header
from .resize_pixels import fitted_size, nearest_in_palette, shrink_array, shrink_premultiplied

__all__ = ["ANIMATION_FORMATS", "PALETTE_FORMATS", "frame_count", "resize_frames"]

ANIMATION_FORMATS = ("GIF", "PNG", "WEBP")
"""The formats that hold an animation, as written here."""
PALETTE_FORMATS = ("GIF", "PNG", "BMP")
"""The formats whose palette pictures stay palette."""

# Pillow's transpositions that turn a picture stored with an EXIF orientation upright (as ImageOps.exif_transpose)
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
_GIF_RESTORE_PREVIOUS, _GIF_RESTORE_BACKGROUND = 3, 2
_APNG_BLEND_SOURCE = 0
_OPAQUE_FROM = 128  # a shrunk pixel at least this opaque stays visible in a one-transparent-entry palette
# Peak memory of a frame, in 4-byte pixels: Pillow's frame, its RGBA copy, and the float32 premultiplied samples
_FRAME_PEAK = 6.5


@dataclass
class _Frames:
    """The shrunk frames of one file and what is written with them."""

    images: list[Image.Image] = field(default_factory=list)
    durations: list[Any] = field(default_factory=list)
    disposals: list[Any] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # of the first frame: loop, ICC profile, EXIF, comment


def frame_count(image: Image.Image, path: Path) -> int:
    """How many frames ``image`` (opened by :func:`open_with_pillow`) holds, its later frames' headers read."""
    try:
        with own_limit_only(path):
            return int(getattr(image, "n_frames", 1))
    except DECODE_ERRORS as error:
        raise corrupt(path, error) from None


def resize_frames(file: BinaryIO, source: Path, target: Path, target_format: str, max_side: int,
                  quality: int) -> None:
    """Shrink every frame of the picture in ``file`` (opened from ``source``) to ``max_side`` and write them all
    to ``target`` in ``target_format`` (GIF, PNG, WEBP or BMP), atomically; palette pictures stay palette."""
    file.seek(0)
    with open_with_pillow(file, source) as image:
        count = frame_count(image, source)
        if count > 1 and target_format not in ANIMATION_FORMATS:
            raise OutputError(f"{target}: {target_format} cannot hold the {count} frames of {source.name} "
                              f"(use a .gif, .png or .webp name)")
        if count > 1 and image.format == "PNG" and png_header(file)[0] == 16:
            raise ImageReadError(f"{source}: 16-bit animated PNG is not resized (its frames decode at 8 bits)")
        _check_frame_limits(image, source, count)
        frames = _shrunk_frames(image, source, count, target_format, max_side)
        lossless = image.format == "WEBP" and _webp_is_lossless(file)
    options = _save_options(frames, target_format, quality, lossless)
    first = frames.images[0]
    write_atomically(target, lambda out: first.save(out, format=target_format, **options), target_format)


def _check_frame_limits(image: Image.Image, path: Path, count: int) -> None:
    """One frame's decoding within the memory available, all the frames within DEFAULT_MAX_PIXELS."""
    width, height = image.size
    check_limits(path, width, height, 4, "auto", max(pillow_decode_peak(image), _FRAME_PEAK))
    if width * height * count > DEFAULT_MAX_PIXELS:
        raise ImageTooLargeError(f"{path}: {count} frames of {width}x{height} = {width * height * count:,} pixels "
                                 f"are over the limit of {DEFAULT_MAX_PIXELS:,} pixels")


def _shrunk_frames(image: Image.Image, path: Path, count: int, target_format: str, max_side: int) -> _Frames:
    exif = normalise_exif(image.info.get("exif"))
    orientation = exif_orientation(exif)
    kept = ["loop", "icc_profile", "comment", "default_image"] + (["background"] if image.format == "WEBP" else [])
    frames = _Frames(info={key: image.info[key] for key in kept if key in image.info})
    if exif:
        frames.info["exif"] = reset_orientation(exif)
    palette = _keeps_palette(image, count, target_format)
    for index in range(count):
        try:
            with own_limit_only(path):
                image.seek(index)
        except DECODE_ERRORS as error:
            raise corrupt(path, error) from None
        load_checked(image, path)
        frames.durations.append(image.info.get("duration"))
        frames.disposals.append(getattr(image, "disposal_method", None) if image.format == "GIF"
                                else image.info.get("disposal"))
        frame = image.transpose(_UPRIGHT[orientation]) if orientation in _UPRIGHT else image
        width, height = fitted_size(*frame.size, max_side)
        frames.images.append(_palette_frame(frame, width, height) if palette else _colour_frame(frame, width, height))
    return frames


def _keeps_palette(image: Image.Image, count: int, target_format: str) -> bool:
    """Whether the frames are written as palette frames: always to GIF; to PNG and BMP from a palette source,
    except for an APNG that shares no palette (one composed from a GIF's) or has partly transparent entries
    (quantised per frame): an APNG has one palette for all its frames."""
    if target_format == "GIF":
        return True
    if target_format not in PALETTE_FORMATS or image.mode != "P":
        return False
    return count == 1 or (image.format == "PNG" and not _partly_transparent(image))


def _colour_frame(frame: Image.Image, width: int, height: int) -> Image.Image:
    """``frame`` shrunk in full colour (or gray), with its alpha (premultiplied averaging)."""
    gray = frame.mode in ("1", "L", "LA", "La") or (frame.mode in ("P", "PA") and _gray_palette(frame))
    has_alpha = frame.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in frame.info
    mode = ("LA" if has_alpha else "L") if gray else ("RGBA" if has_alpha else "RGB")
    samples = np.asarray(frame.convert(mode))
    if samples.ndim == 2:
        return _from_array(shrink_array(samples, width, height), mode)
    if has_alpha:
        colour, alpha = shrink_premultiplied(samples[:, :, :-1], samples[:, :, -1], width, height, 255)
        return _from_array(np.dstack([colour, alpha]), mode)
    return _from_array(shrink_array(samples, width, height), mode)


def _palette_frame(frame: Image.Image, width: int, height: int) -> Image.Image:
    """``frame`` shrunk and matched back to a palette (see the module's docstring); mode P."""
    rgba = np.asarray(frame.convert("RGBA"))
    colour, alpha = shrink_premultiplied(rgba[:, :, :3], rgba[:, :, 3], width, height, 255)
    hidden = alpha < _OPAQUE_FROM
    if frame.mode == "P" and _partly_transparent(frame):
        entries = len(frame.getpalette() or ()) // 3 or 256
        small = _from_array(np.dstack([colour, alpha]), "RGBA")
        return small.quantize(entries, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    if frame.mode == "P":
        palette = np.asarray(frame.getpalette("RGB") or [0, 0, 0], np.uint8).reshape(-1, 3)
        alphas = _entry_alphas(frame, len(palette))
        transparent, opaque = np.flatnonzero(alphas == 0), np.flatnonzero(alphas == 255)
        indices = opaque[nearest_in_palette(colour, palette[opaque])] if len(opaque) else np.zeros_like(alpha)
        info = {"transparency": frame.info["transparency"]} if len(transparent) else {}
        hidden_index = int(transparent[0]) if len(transparent) else None
    else:
        palette = _distinct_colours(rgba)
        indices = nearest_in_palette(colour, palette)
        hidden_index = len(palette) if hidden.any() else None
        if hidden_index is not None:
            palette = np.vstack([palette, np.zeros((1, 3), np.uint8)])
        info = {"transparency": hidden_index} if hidden_index is not None else {}
    if hidden_index is not None and hidden.any():
        indices = np.where(hidden, hidden_index, indices)
    result = _from_array(indices.astype(np.uint8), "P")
    result.putpalette(palette.tobytes())
    result.info.update(info)
    return result


def _entry_alphas(frame: Image.Image, count: int) -> np.ndarray:
    """The alpha of each of the ``count`` entries of a palette frame's palette (PNG's tRNS, GIF's one index)."""
    alphas = np.full(count, 255, np.uint8)
    transparency = frame.info.get("transparency")
    if isinstance(transparency, int) and 0 <= transparency < count:
        alphas[transparency] = 0
    elif isinstance(transparency, bytes):
        values = np.frombuffer(transparency[:count], np.uint8)
        alphas[:len(values)] = values
    return alphas


def _distinct_colours(rgba: np.ndarray) -> np.ndarray:
    """The Kx3 distinct colours of a full-colour frame's visible pixels (those that stay visible with one
    transparent entry), reduced by median cut beyond 255 (one entry is left for transparency)."""
    pixels = rgba[:, :, :3][rgba[:, :, 3] >= _OPAQUE_FROM]
    if not len(pixels):
        return np.zeros((1, 3), np.uint8)
    packed = np.unique((pixels[:, 0].astype(np.uint32) << 16) | (pixels[:, 1].astype(np.uint32) << 8) | pixels[:, 2])
    if len(packed) <= 255:
        return np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=1).astype(np.uint8)
    quantised = _from_array(pixels[None], "RGB").quantize(255, method=Image.Quantize.MEDIANCUT)
    count = int(np.asarray(quantised).max()) + 1
    return np.asarray(quantised.getpalette("RGB"), np.uint8).reshape(-1, 3)[:count]


def _partly_transparent(frame: Image.Image) -> bool:
    """Whether a palette frame has entries neither opaque nor fully transparent (a PNG's tRNS may)."""
    transparency = frame.info.get("transparency")
    if frame.mode == "PA":
        return True
    return isinstance(transparency, bytes) and any(value not in (0, 255) for value in transparency)


def _gray_palette(frame: Image.Image) -> bool:
    entries = np.asarray(frame.getpalette("RGB") or [], np.uint8).reshape(-1, 3)
    return bool(len(entries)) and bool((entries == entries[:, :1]).all())


def _from_array(array: np.ndarray, mode: str) -> Image.Image:
    array = np.ascontiguousarray(array)
    return Image.frombytes(mode, (array.shape[1], array.shape[0]), array.tobytes())


def _save_options(frames: _Frames, target_format: str, quality: int, lossless: bool) -> dict[str, Any]:
    """Pillow's save options that write every frame with its duration, disposal, and the file's metadata."""
    info = frames.info
    options: dict[str, Any] = {}
    # an APNG's default image, shown by viewers without APNG, is not a frame of its animation
    default_image = target_format == "PNG" and bool(info.get("default_image"))
    durations, disposals = (frames.durations[1:], frames.disposals[1:]) if default_image else \
        (frames.durations, frames.disposals)
    if len(frames.images) > 1:
        options.update(save_all=True, append_images=frames.images[1:])
        # a frame without a duration (a GIF frame without its control block) shows for no time
        options["duration"] = [round(duration or 0) if target_format == "GIF" else duration or 0
                               for duration in durations]
        if "loop" in info:
            options["loop"] = info["loop"]
    if target_format == "GIF":
        if len(frames.images) > 1 and all(isinstance(method, int) for method in disposals):
            options["disposal"] = [_GIF_RESTORE_BACKGROUND if method == _GIF_RESTORE_PREVIOUS else method
                                   for method in disposals]
        if "comment" in info:
            options["comment"] = info["comment"]
        return options
    options.update({key: info[key] for key in ("icc_profile", "exif") if key in info and target_format != "BMP"})
    if target_format == "PNG" and len(frames.images) > 1:
        options.update(blend=_APNG_BLEND_SOURCE, default_image=default_image)
        if all(isinstance(method, int) for method in disposals):
            options["disposal"] = disposals
    if target_format == "WEBP":
        options.update(lossless=lossless, quality=100 if lossless else quality)
        if "background" in info:
            options["background"] = info["background"]
    return options


def _webp_is_lossless(file: BinaryIO) -> bool:
    """Whether every image of a WEBP is lossless (VP8L), from its chunks: a lossless source stays lossless."""
    file.seek(0)
    data = file.read()
    kinds = []
    position = 12
    while position + 8 <= len(data):
        kind, size = data[position:position + 4], int.from_bytes(data[position + 4:position + 8], "little")
        if kind == b"ANMF":
            inner = position + 8 + 16  # an ANMF chunk's frame header, then the frame's own chunks
            while inner + 8 <= position + 8 + size:
                sub, sub_size = data[inner:inner + 4], int.from_bytes(data[inner + 4:inner + 8], "little")
                kinds.append(sub)
                inner += 8 + sub_size + (sub_size & 1)
        else:
            kinds.append(kind)
        position += 8 + size + (size & 1)
    images = [kind for kind in kinds if kind in (b"VP8 ", b"VP8L")]
    return bool(images) and all(kind == b"VP8L" for kind in images)
