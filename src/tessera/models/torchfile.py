"""Read PyTorch weight files as data: ``torch.save`` archives (zip and legacy), TorchScript archives, in bounds.

Nothing here calls ``torch.load`` or ``torch.jit.load``: both run what the file asks for (a TorchScript archive
carries code, ``__setstate__`` included, that ``torch.jit.load`` executes). Instead the file's pickle is read by
:mod:`tessera.models.unpickler` and every storage it references is read by name from the archive, after its declared
size has been checked against what the archive holds and against a byte budget (:func:`weight_budget`), so a
small file cannot make tessera allocate gigabytes.

- **zip archives** (``torch.save`` since 1.6, and TorchScript): ``<root>/data.pkl`` is the pickle, storages are
  ``<root>/data/<key>``. The budget is checked on the zip directory before anything is read.
- **legacy archives** (``torch.save(..., _use_new_zipfile_serialization=False)``, older ESRGAN models): magic number,
  protocol and system-info pickles, the main pickle, the list of storage keys, then each storage as an 8-byte
  element count and its bytes. A storage must fit in what is left of the file before it is allocated.
- **TorchScript**: the pickle is a tree of ``__torch__`` module objects; their tensor attributes, named by their
  path (``model.1.conv.weight``), are the state dict ``torch.jit.load(...).state_dict()`` would give.
"""
from __future__ import annotations

import io
import os
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ..errors import OptionError
from ..options import format_bytes, parse_size
from .formats import weight_container
from .unpickler import InertObject, StorageRef, StorageType, UnsafeWeightsError, element_size, restricted_load

DEFAULT_WEIGHT_BUDGET = 4 << 30
BUDGET_VARIABLE = "TESSERA_MAX_WEIGHT_BYTES"

# A zip archive's members may be compressed (torch stores them raw; TorchScript deflates its code). Declared
# sizes beyond this ratio of the compressed bytes are a decompression bomb, not weights.
_MAX_COMPRESSION_RATIO = 20
_MAX_MEMBERS = 200_000
# A pickle's objects take up to ~15x its bytes in memory (a small int per 3 bytes, say); real state-dict pickles
# are well under a megabyte (the tensors live in storages, outside the pickle).
_MAX_PICKLE_BYTES = 32 << 20
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_CHUNK = 16 << 20


def weight_budget(max_bytes: int | str | None = None) -> int:
    """The most bytes of tensors one weight file may hold: ``max_bytes``, else ``$TESSERA_MAX_WEIGHT_BYTES``
    (e.g. ``8G``), else 4 GiB."""
    value = max_bytes if max_bytes is not None else os.environ.get(BUDGET_VARIABLE) or DEFAULT_WEIGHT_BUDGET
    try:
        return parse_size(value)
    except ValueError as error:
        raise OptionError(f"weight budget: {error} (set {BUDGET_VARIABLE} to e.g. 8G)") from error


def _over_budget(what: str, size: int, budget: int) -> UnsafeWeightsError:
    return UnsafeWeightsError(f"{what} declares {format_bytes(size)} of weights, over the "
                              f"{format_bytes(budget)} budget (raise it with {BUDGET_VARIABLE}=8G)")


def read_torch_file(path: str | os.PathLike[str], max_bytes: int | str | None = None) -> Any:
    """What a ``.pth``/``.pt``/``.ckpt``/``.bin`` file holds (state dicts, checkpoints, TorchScript modules as
    their state dict), read without running code and within ``max_bytes`` (see :func:`weight_budget`)."""
    path = Path(path)
    budget = weight_budget(max_bytes)
    container = weight_container(path)
    if container in ("zip", "pickle"):
        with open(path, "rb") as file:
            if container == "zip":
                return _read_zip(file, budget)
            return _read_legacy(file, os.fstat(file.fileno()).st_size, budget)
    if container == "safetensors":
        raise UnsafeWeightsError("is a safetensors file: name it .safetensors")
    if _looks_like_tar(path):
        raise UnsafeWeightsError("is in PyTorch's pre-1.0 tar format, which tessera does not read")
    raise UnsafeWeightsError("is not a PyTorch archive (neither a zip archive nor a pickle)")


def _looks_like_tar(path: Path) -> bool:
    with open(path, "rb") as file:
        file.seek(257)
        return file.read(5) == b"ustar"


# ---------------------------------------------------------------------------------------------------- storages
def _storage_id(pid: tuple) -> tuple[StorageType, str, int]:
    """(type, key, element count) of a ``('storage', type, key, location, numel, ...)`` persistent id."""
    if len(pid) < 5:
        raise UnsafeWeightsError(f"malformed storage reference {pid!r:.80}")
    kind, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(kind, StorageType) or not isinstance(key, str) or not key.isalnum():
        raise UnsafeWeightsError(f"malformed storage reference {pid!r:.80}")
    if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
        raise UnsafeWeightsError(f"storage {key} declares {numel!r:.40} elements")
    return kind, key, numel


def _fill(buffer: torch.Tensor, source: BinaryIO, what: str) -> None:
    """Read exactly ``buffer.numel()`` bytes from ``source`` into the uint8 tensor ``buffer``."""
    view, done = memoryview(buffer.numpy()), 0
    while done < len(view):
        count = source.readinto(view[done: done + _CHUNK])
        if not count:
            raise UnsafeWeightsError(f"{what} is truncated ({done} of {len(view)} bytes)")
        done += count


class _Storages:
    """Resolves persistent ids to StorageRefs, each storage read (or allocated) once."""

    def __init__(self, read: Callable[[str, int], torch.Tensor]) -> None:
        self._read = read
        self.loaded: dict[str, StorageRef] = {}

    def __call__(self, pid: tuple) -> StorageRef:
        kind, key, numel = _storage_id(pid)
        if key in self.loaded:
            return self.loaded[key]
        self.loaded[key] = ref = StorageRef(self._read(key, numel * element_size(kind.dtype)), kind.dtype)
        return ref


# ---------------------------------------------------------------------------------------------------- zip archives
def _check_zip_directory(archive: zipfile.ZipFile, file_size: int, budget: int) -> None:
    members = archive.infolist()
    if len(members) > _MAX_MEMBERS:
        raise UnsafeWeightsError(f"zip archive has {len(members)} members (at most {_MAX_MEMBERS})")
    declared = sum(member.file_size for member in members)
    compressed = sum(member.compress_size for member in members)
    if declared > budget:
        raise _over_budget("zip archive", declared, budget)
    if declared > _MAX_COMPRESSION_RATIO * max(compressed, 1) + (1 << 20) or compressed > file_size:
        raise UnsafeWeightsError(f"zip archive declares {format_bytes(declared)} in {format_bytes(file_size)}: "
                                 f"a decompression bomb, not weights")


def _archive_root(archive: zipfile.ZipFile) -> str:
    """The folder holding ``data.pkl`` (torch names it after the file, or ``archive``)."""
    roots = [name[: -len("data.pkl")] for name in archive.namelist()
             if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(roots) != 1:
        raise UnsafeWeightsError("zip archive is not a PyTorch archive (no single <folder>/data.pkl)")
    return roots[0]


def _read_zip(file: BinaryIO, budget: int) -> Any:
    try:
        archive = zipfile.ZipFile(file)
    except zipfile.BadZipFile as error:
        raise UnsafeWeightsError(f"broken zip archive: {error}") from error
    with archive:
        _check_zip_directory(archive, os.fstat(file.fileno()).st_size, budget)
        root = _archive_root(archive)
        if archive.NameToInfo.get(f"{root}byteorder") and archive.read(f"{root}byteorder").strip() == b"big":
            raise UnsafeWeightsError("was saved on a big-endian machine, which tessera does not read")
        pickle_info = archive.getinfo(f"{root}data.pkl")
        if pickle_info.file_size > _MAX_PICKLE_BYTES:
            raise UnsafeWeightsError(f"its pickle declares {format_bytes(pickle_info.file_size)} "
                                     f"(at most {format_bytes(_MAX_PICKLE_BYTES)})")

        def read_storage(key: str, nbytes: int) -> torch.Tensor:
            info = archive.NameToInfo.get(f"{root}data/{key}")
            if info is None or info.file_size < nbytes:
                held = "missing" if info is None else f"{info.file_size} bytes"
                raise UnsafeWeightsError(f"storage {key} declares {nbytes} bytes; the archive holds {held}")
            buffer = torch.empty(nbytes, dtype=torch.uint8)
            with archive.open(info) as source:
                _fill(buffer, source, f"storage {key}")
            return buffer

        content = restricted_load(io.BytesIO(archive.read(pickle_info)), _Storages(read_storage))
        if f"{root}constants.pkl" in archive.NameToInfo or isinstance(content, InertObject):
            return torchscript_state_dict(content)
        return content


# ---------------------------------------------------------------------------------------------------- legacy
class _Bounded:
    """A read-only view of the first ``size`` bytes of ``file``.

    Python's unpickler reads a length it finds in the stream in one call, and buffered readers allocate the
    length they are asked for before reading: clamping it keeps a lying length from allocating anything. While the
    pickles are read, ``size`` also stops at the pickle limit.
    """

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file, self.size = file, size

    def _left(self) -> int:
        return max(self.size - self._file.tell(), 0)

    def read(self, count: int | None = -1) -> bytes:
        left = self._left()
        return self._file.read(left if count is None or count < 0 else min(count, left))

    def readline(self) -> bytes:
        return self._file.readline(min(self._left(), _CHUNK))

    def readinto(self, buffer: Any) -> int:
        return self._file.readinto(memoryview(buffer)[: self._left()])

    def tell(self) -> int:
        return self._file.tell()


def _read_legacy(file: BinaryIO, file_size: int, budget: int) -> Any:
    stream = _Bounded(file, min(file_size, _MAX_PICKLE_BYTES))
    if restricted_load(stream) != _LEGACY_MAGIC:
        raise UnsafeWeightsError("is a pickle, not a PyTorch archive (no PyTorch magic number)")
    if restricted_load(stream) != _LEGACY_PROTOCOL:
        raise UnsafeWeightsError("is a PyTorch archive of an unknown legacy protocol")
    system = restricted_load(stream)
    if not isinstance(system, dict) or not system.get("little_endian", True):
        raise UnsafeWeightsError("was saved on a big-endian machine, which tessera does not read")
    declared = [0]

    def allocate(key: str, nbytes: int) -> torch.Tensor:
        # the storage's bytes come after the pickles, so they must fit in what is left of the file
        declared[0] += nbytes
        if declared[0] > budget:
            raise _over_budget("legacy archive", declared[0], budget)
        if declared[0] > file_size - stream.tell():
            raise UnsafeWeightsError(f"storage {key} declares {nbytes} bytes, more than the file holds")
        return torch.empty(nbytes, dtype=torch.uint8)

    storages = _Storages(allocate)
    content = restricted_load(stream, storages)
    keys = restricted_load(stream)
    stream.size = file_size
    if not isinstance(keys, list) or set(keys) != set(storages.loaded) or len(keys) != len(storages.loaded):
        raise UnsafeWeightsError("legacy archive lists other storages than its pickle uses")
    for key in keys:
        ref = storages.loaded[key]
        (count,) = struct.unpack("<q", stream.read(8).ljust(8, b"\xff"))
        if count * element_size(ref.dtype) != ref.nbytes:
            raise UnsafeWeightsError(f"storage {key} holds {count} elements, its pickle declared otherwise")
        _fill(ref.data, stream, f"storage {key}")
    return content


# ---------------------------------------------------------------------------------------------------- TorchScript
def torchscript_state_dict(root: Any) -> dict[str, torch.Tensor]:
    """The tensors of a TorchScript module tree, keyed by attribute path (parameters and buffers)."""
    if not isinstance(root, InertObject):
        raise UnsafeWeightsError("TorchScript archive does not hold a module")
    state: dict[str, torch.Tensor] = {}
    seen: set[int] = set()

    def walk(module: InertObject, prefix: str) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        attributes = module.__dict__.get("inert_state")
        if not isinstance(attributes, dict):
            return
        for name, value in attributes.items():
            if isinstance(value, torch.Tensor):
                state[f"{prefix}{name}"] = value
            elif isinstance(value, InertObject) and value.inert_global.startswith("__torch__."):
                walk(value, f"{prefix}{name}.")

    walk(root, "")
    return state
