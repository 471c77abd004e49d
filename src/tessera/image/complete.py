"""Whether an image file is whole: what a resumed batch checks before it skips an output as finished.

Outputs are written atomically, so a file at its final path was complete when it was written; but a copy, a
full disk, a crash of another tool or a synced folder can leave a file whose header is fine and whose pixels
are cut off or zeroed. A header check passes those (a PNG truncated at 2 % still reports its size). Each format
is checked where a cut shows, at a fraction of a full decode's cost:

- PNG: every chunk read and its CRC checked, up to IEND (no inflating);
- JPEG: the end-of-image marker at the end, and the entropy-coded data decoded at 1/8 scale (all of it is read);
- WEBP: the RIFF size equal to the file's, then decoded;
- TIFF: every page's strips or tiles inside the file, and the first page's last tile (or strip) decoded;
- BMP, GIF: decoded.
"""
from __future__ import annotations

import os
from pathlib import Path

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8"


def is_whole_image(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is an image of a readable format whose data is all there (see the module docstring)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            head = file.read(16)
            if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
                return _tiff_whole(path, size)
            if head.startswith(b"RIFF") and head[8:12] == b"WEBP" and int.from_bytes(head[4:8], "little") + 8 != size:
                return False
            if head.startswith(_JPEG):
                file.seek(max(0, size - 2))
                if file.read(2) != b"\xff\xd9":
                    return False
            file.seek(0)
            return _pillow_whole(file, path, png=head.startswith(_PNG), jpeg=head.startswith(_JPEG))
    except Exception:  # noqa: BLE001 - whatever a damaged file raises, it is not whole
        return False


def _pillow_whole(file, path: Path, *, png: bool, jpeg: bool) -> bool:
    from .pillow import open_with_pillow

    image = open_with_pillow(file, path)
    if png:
        image.verify()  # every chunk and its CRC, up to IEND
        return True
    if jpeg:
        image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
    image.load()  # raises on data that ends early (truncated images are not accepted)
    return True


def _tiff_whole(path: Path, size: int) -> bool:
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        for page in tiff.pages:
            offsets, counts = page.dataoffsets, page.databytecounts
            if not offsets or any(o <= 0 or c <= 0 or o + c > size for o, c in zip(offsets, counts)):
                return False
        first = tiff.pages.first
        last = len(first.dataoffsets) - 1
        with open(path, "rb") as file:
            file.seek(first.dataoffsets[last])
            data = file.read(first.databytecounts[last])
        decoded, _index, _shape = first.decode(data, last)
        return decoded is not None
