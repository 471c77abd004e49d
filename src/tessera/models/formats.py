"""Which container a weight file is, told from its first bytes, and which containers each file name may hold.

Kept free of torch so that the downloader, the web UI's model menu and the CLI's checks before work can use it
without the start-up time of the readers (:mod:`tessera.models.torchfile`, safetensors).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from ..errors import ModelError

Container = Literal["zip", "pickle", "safetensors"]

TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
NCNN_SUFFIX = ".param"  # an ncnn graph; its weights are the .bin beside it
WEIGHT_SUFFIXES = (*TORCH_SUFFIXES, ".safetensors", NCNN_SUFFIX)


def weight_container(path: str | os.PathLike[str]) -> Container | None:
    """The container of ``path`` by its first bytes, or None when it is no weight file at all.

    "zip" (``torch.save`` archives since PyTorch 1.6, TorchScript), "pickle" (legacy ``torch.save``, whose first
    pickle is of protocol 2, starting with 0x80) or "safetensors" (an 8-byte little-endian header length that fits
    the file, then ``{``). An HTML error page, a text file or a picture is None.
    """
    try:
        with open(path, "rb") as stream:
            head = stream.read(9)
            size = os.fstat(stream.fileno()).st_size
    except OSError as error:
        raise ModelError(f"{path}: cannot read ({error.strerror or error})") from error
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    return None


def containers_for(name: str | os.PathLike[str]) -> tuple[Container, ...]:
    """The containers the loader reads under ``name``'s suffix (none for a suffix it does not read)."""
    suffix = Path(name).suffix.lower()
    if suffix == ".safetensors":
        return ("safetensors",)
    return ("zip", "pickle") if suffix in TORCH_SUFFIXES else ()
