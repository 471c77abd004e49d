"""``tessera resize`` for TIFF files of several pages: every page shrunk, none dropped (SubIFDs are refused).

Each page is decoded with tifffile, shrunk in its own sample type and layout (area averaging; bilevel pages
stay bilevel, palette pages are matched back to their own colour map) and written again, in order, with its
photometric interpretation, planar configuration, extra samples (alpha), compression (where tifffile can write
it, deflate otherwise), predictor, tiling or strip height, colour map, ICC profile, resolution, orientation and
descriptive tags; the EXIF and GPS blocks of the first page are kept as for a single page. The pages keep their
stored orientation and its tag (pages are not turned upright here, unlike single pictures). A file this cannot
rewrite faithfully is refused whole and left as it is: pages in SubIFDs (pyramids, DNG), volumetric pages,
YCbCr pages not JPEG-compressed, 16-bit palettes. A reduced-resolution page (a thumbnail, a pyramid level in
the main chain) is shrunk by the ratio of the page it reduces, and so keeps its place in the pyramid.

Decoding is bounded as :func:`tessera.image.read.load_image` bounds it: each page's size is checked against the
memory available and its data against the file's size before it is decoded, and the pages together are held to
:data:`DEFAULT_MAX_PIXELS`; one page is in memory at a time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import tifffile
from PIL import Image

from ..errors import ImageReadError, ImageTooLargeError
from ..image.atomic import write_atomically
from ..image.decode import DECODE_ERRORS, DEFAULT_MAX_PIXELS, check_limits, corrupt
from ..image.exif import DESCRIPTIVE_TAGS, append_tiff_sub_ifds, descriptive_tiff_tags, exif_sub_ifds, placeholder_tag
from ..image.tiff import check_tiff_complete, open_tiff, tifffile_messages
from .resize_pixels import fitted_size, nearest_in_palette, shrink_array

__all__ = ["needs_pages", "page_sizes", "resize_pages"]

_PHOTOMETRIC = tifffile.PHOTOMETRIC
_COMPRESSION = tifffile.COMPRESSION
# tags copied as they are, beyond those tifffile writes from its arguments and the descriptive ones
_KEPT_TAGS = (269, 274, 285, 297, 332, 333, 334, 700)  # DocumentName, Orientation, PageName, PageNumber, inks, XMP
_REDUCED_RESOLUTION = 1  # NewSubfileType bit: a reduced-resolution version of another page


def needs_pages(tiff: tifffile.TiffFile) -> bool:
    """Whether a TIFF holds more than its first page (more pages, or SubIFDs), which a single picture drops."""
    try:
        return len(tiff.pages) > 1 or bool(tiff.pages.first.subifds)
    except (tifffile.TiffFileError, *DECODE_ERRORS):
        return True  # resize_pages refuses it with the decoder's own message


def page_sizes(tiff: tifffile.TiffFile, path: Path) -> list[tuple[int, int]]:
    """(width, height) of every page, as stored."""
    return [(int(page.imagewidth), int(page.imagelength)) for page in _pages(tiff, path)]


def _pages(tiff: tifffile.TiffFile, path: Path) -> list[tifffile.TiffPage]:
    try:
        return list(tiff.pages)
    except (tifffile.TiffFileError, *DECODE_ERRORS) as error:
        raise corrupt(path, error) from None


def _check_supported(pages: list[tifffile.TiffPage], path: Path) -> None:
    """Refuse a file whose pages cannot all be rewritten faithfully, naming the first such page and why."""
    for number, page in enumerate(pages, 1):
        reason = _unsupported(page)
        if reason:
            raise ImageReadError(f"{path}: page {number} of {len(pages)} {reason}: not resized, so that no page is "
                                 f"lost")


def _unsupported(page: tifffile.TiffPage) -> str | None:
    if page.subifds:
        return "has SubIFDs (images inside the page: a pyramid, a DNG's raw data)"
    if page.imagedepth > 1:
        return f"is volumetric (depth {page.imagedepth})"
    if int(page.photometric) == _PHOTOMETRIC.YCBCR and int(page.compression) != _COMPRESSION.JPEG:
        return "holds YCbCr samples without JPEG compression"
    if int(page.photometric) == _PHOTOMETRIC.PALETTE and (page.dtype is None or page.dtype.itemsize != 1):
        return "has a palette of more than 256 colours"
    if int(page.photometric) == _PHOTOMETRIC.PALETTE and page.colormap is None:
        return "is a palette page without a colour map"
    return None


def resize_pages(file: BinaryIO, source: Path, target: Path, max_side: int, quality: int) -> None:
    """Shrink every page of the TIFF in ``file`` (opened from ``source``) to ``max_side`` and write them all to
    ``target``, atomically (see the module's docstring)."""
    file.seek(0)
    with tifffile_messages(source), open_tiff(file, source) as tiff:
        pages = _pages(tiff, source)
        _check_supported(pages, source)
        total = sum(int(page.imagewidth) * int(page.imagelength) for page in pages)
        if total > DEFAULT_MAX_PIXELS:
            raise ImageTooLargeError(f"{source}: {len(pages)} pages of {total:,} pixels in all are over the limit "
                                     f"of {DEFAULT_MAX_PIXELS:,} pixels")
        for page in pages:
            samples = 3 if int(page.photometric) == _PHOTOMETRIC.PALETTE else int(page.samplesperpixel)
            check_limits(source, int(page.imagewidth), int(page.imagelength),
                         samples * (page.dtype.itemsize if page.dtype is not None else 1), "auto")
            check_tiff_complete(file, page, source)
        sub_ifds = _first_exif_sub_ifds(file, tiff)

        def write(out: BinaryIO) -> None:
            bigtiff = bool(tiff.is_bigtiff)
            with tifffile.TiffWriter(out, bigtiff=bigtiff, byteorder="<") as writer:
                for number, (page, size) in enumerate(zip(pages, _target_sizes(pages, max_side))):
                    extra = [(placeholder_tag(tag), 16 if bigtiff else 4, 1, 0, True)
                             for tag in sub_ifds] if number == 0 else []
                    samples, options = _shrunk_page(page, source, size, quality)
                    writer.write(samples, **options, extratags=_kept_tags(page) + extra)
            if sub_ifds:
                append_tiff_sub_ifds(out, sub_ifds, bigtiff)

        write_atomically(target, write, "TIFF")


def _target_sizes(pages: list[tifffile.TiffPage], max_side: int) -> list[tuple[int, int]]:
    """The size each page is shrunk to: fitted to ``max_side``, except a reduced-resolution page (a thumbnail,
    a pyramid level), which is shrunk by the ratio of the full-resolution page before it, and so stays as much
    smaller than that page as it was."""
    sizes, ratio = [], 1.0
    for page in pages:
        width, height = int(page.imagewidth), int(page.imagelength)
        if int(page.subfiletype) & _REDUCED_RESOLUTION:
            sizes.append((max(1, round(width * ratio)), max(1, round(height * ratio))))
            continue
        sizes.append(fitted_size(width, height, max_side))
        ratio = sizes[-1][0] / width
    return sizes


def _shrunk_page(page: tifffile.TiffPage, path: Path, size: tuple[int, int], quality: int) -> tuple[np.ndarray, dict]:
    """A page's samples shrunk in their own layout, and tifffile's options that write them as the page was."""
    try:
        samples = page.asarray()
    except DECODE_ERRORS as error:
        raise corrupt(path, error) from None
    width, height = size
    separate = int(page.planarconfig) == tifffile.PLANARCONFIG.SEPARATE and samples.ndim == 3
    layout = np.moveaxis(samples, 0, -1) if separate else samples
    if int(page.photometric) == _PHOTOMETRIC.PALETTE:
        colormap = _colormap8(page.colormap)
        shrunk = nearest_in_palette(shrink_array(colormap[layout], width, height), colormap)
    else:
        shrunk = shrink_array(layout, width, height)
    if separate:
        shrunk = np.moveaxis(shrunk, -1, 0)
    options = _write_options(page, quality)
    bits, dtype = int(page.bitspersample), shrunk.dtype
    if dtype.kind == "u" and bits < dtype.itemsize * 8 and int(page.photometric) != _PHOTOMETRIC.PALETTE:
        if options["compression"] == _COMPRESSION.NONE:
            options["bitspersample"] = bits  # e.g. 12-bit samples, which tifffile packs uncompressed only
        else:  # brought to the full range of their type, which tifffile compresses
            top = np.iinfo(dtype).max
            shrunk = np.clip(np.rint(shrunk * (top / ((1 << bits) - 1))), 0, top).astype(dtype)
    return np.ascontiguousarray(shrunk), options


def _colormap8(colormap: np.ndarray) -> np.ndarray:
    """A TIFF colour map as Kx3 uint8 (some writers store 8-bit values in its 16-bit entries)."""
    table = np.asarray(colormap).T
    return table.astype(np.uint8) if table.max(initial=0) < 256 else (table >> 8).astype(np.uint8)


def _write_options(page: tifffile.TiffPage, quality: int) -> dict[str, Any]:
    compression = page.compression if page.compression in tifffile.TIFF.COMPRESSORS else _COMPRESSION.ADOBE_DEFLATE
    options: dict[str, Any] = {
        "photometric": page.photometric,
        "planarconfig": page.planarconfig if int(page.samplesperpixel) > 1 else None,
        "extrasamples": page.extrasamples or None,
        "compression": compression,
        "subfiletype": page.subfiletype,
        "iccprofile": page.tags.valueof(34675),
        "metadata": None,
        "software": False,
    }
    if compression == _COMPRESSION.JPEG:
        options["compressionargs"] = {"level": quality}
        if int(page.photometric) == _PHOTOMETRIC.YCBCR:
            options["subsampling"] = page.subsampling
    if compression == page.compression and int(page.predictor) > 1:
        options["predictor"] = page.predictor
    if page.is_tiled:
        options["tile"] = (page.tilelength, page.tilewidth)
    elif int(page.rowsperstrip) > 0:
        options["rowsperstrip"] = int(page.rowsperstrip)
    if int(page.photometric) == _PHOTOMETRIC.PALETTE:
        colormap = np.asarray(page.colormap)
        options["colormap"] = np.pad(colormap, ((0, 0), (0, 256 - colormap.shape[1])))  # tifffile wants 256
    if 282 in page.tags and 283 in page.tags:
        options["resolution"] = page.resolution
        options["resolutionunit"] = page.resolutionunit
    return options


def _kept_tags(page: tifffile.TiffPage) -> list[tuple[int, int, int, Any, bool]]:
    """The page's descriptive tags (an ImageDescription describing the old pixels left out) and _KEPT_TAGS."""
    exif = Image.Exif()
    for code in DESCRIPTIVE_TAGS:
        value = page.tags.valueof(code)
        if isinstance(value, str):
            exif[code] = value
    kept = [(tag.code, int(tag.dtype), 0 if int(tag.dtype) == 2 else tag.count, tag.value, True)
            for tag in (page.tags.get(code) for code in _KEPT_TAGS) if tag is not None]
    return descriptive_tiff_tags(exif) + kept


def _first_exif_sub_ifds(file: BinaryIO, tiff: tifffile.TiffFile) -> dict[int, dict[int, Any]]:
    """The EXIF and GPS blocks of the first page (Pillow reads them from the file), as for a single page."""
    try:
        exif = Image.Exif()
        exif.endian = tiff.byteorder
        exif.bigtiff = bool(tiff.is_bigtiff)
        exif.load_from_fp(file, tiff.pages.first.offset)
        return exif_sub_ifds(exif)
    except (*DECODE_ERRORS, TypeError):
        return {}
