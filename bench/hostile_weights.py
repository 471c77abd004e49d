"""Hostile weight files, built the way an attacker would: code that runs on load, and files that declare far more
memory than they hold. Shared by bench/security.py (its ``weights`` section) and tests/test_models_torchfile.py.

Every file is a real PyTorch container (a ``torch.save`` zip archive, the legacy format, TorchScript) or a
safetensors file, so torch's own readers would take it as one; :func:`weight_cases` lists them with what
tessera must do: refuse each with one line, run nothing, and allocate nothing the file does not hold.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List

import numpy as np
import torch


# ---------------------------------------------------------------------------------------------------- crafting
class Storage:
    """Pickled as the persistent id torch.save writes for a storage: ``('storage', torch.FloatStorage, key,
    'cpu', numel)``; legacy archives add a view field."""

    def __init__(self, key: str, numel: int, kind: Any = torch.FloatStorage, legacy: bool = False):
        self.key, self.numel, self.kind, self.legacy = key, numel, kind, legacy


class Call:
    """Pickled as ``function(*args)``: any call a crafted pickle can ask for."""

    def __init__(self, function: Any, *args: Any):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def tensor_call(storage: Storage, size: tuple, stride: tuple, offset: int = 0) -> Call:
    """The call torch.save writes for a tensor viewing ``storage``."""
    return Call(torch._utils._rebuild_tensor_v2, storage, offset, size, stride, False, OrderedDict())


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, Storage):
            return ("storage", obj.kind, obj.key, "cpu", obj.numel, *([None] if obj.legacy else []))
        return None


def crafted_pickle(content: Any, protocol: int = 2) -> bytes:
    """``content`` pickled as torch.save pickles (protocol 2, storages as persistent ids)."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=protocol).dump(content)
    return buffer.getvalue()


def write_zip_archive(path: Path, content: Any, storages: dict[str, bytes],
                      compress: int = zipfile.ZIP_STORED) -> Path:
    """A torch.save zip archive holding ``content`` as its pickle and ``storages`` as its raw storages."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", crafted_pickle(content))
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        for key, data in storages.items():
            archive.writestr(f"archive/data/{key}", data, compress_type=compress)
    return path


def write_deflated_zero_storage(path: Path, nbytes: int) -> Path:
    """A zip archive whose one float storage is ``nbytes`` of zeros, deflated: 6 GB fit in ~6 MB."""
    numel = nbytes // 4
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", crafted_pickle({"w": tensor_call(Storage("0", numel), (numel,), (1,))}))
        archive.writestr("archive/version", "3\n")
        with archive.open("archive/data/0", "w", force_zip64=True) as member:
            block = bytes(64 << 20)
            for start in range(0, nbytes, len(block)):
                member.write(block[: min(len(block), nbytes - start)])
    return path


def write_legacy_archive(path: Path, content: Any, storages: dict[str, tuple[int, bytes]]) -> Path:
    """torch's legacy layout: magic, protocol, system info, the pickle, its storage keys, each storage's
    element count and bytes."""
    with open(path, "wb") as file:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, file, protocol=2)
        file.write(crafted_pickle(content))
        pickle.dump(list(storages), file, protocol=2)
        for count, data in storages.values():
            file.write(struct.pack("<q", count) + data)
    return path


class Evil:
    """Pickles as ``os.system(command)``."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class Payload(torch.nn.Module):
    """A TorchScript module whose ``__setstate__`` writes 16 bytes into ``marker``: torch.jit.load runs it."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    @torch.jit.export
    def __getstate__(self) -> List[str]:
        return [self.marker]

    @torch.jit.export
    def __setstate__(self, state: List[str]) -> None:
        self.marker = state[0]
        written = torch.from_file(self.marker, shared=True, size=16, dtype=torch.uint8).fill_(33)
        self.training = bool(written.sum() < 0)

    def forward(self, x):
        return x


class NetWithPayload(torch.nn.Module):
    """A convolution next to the payload: the weights a victim expects, and the code they do not."""

    def __init__(self, marker: str):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)
        self.payload = Payload(marker)

    def forward(self, x):
        return self.payload(self.conv(x))


def quietly(function: Any, *args: Any) -> Any:
    """Call ``function`` with torch's deprecation warnings for TorchScript silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args)


def write_torchscript_payload(path: Path, marker: Path) -> Path:
    quietly(torch.jit.script, NetWithPayload(str(marker))).save(str(path))
    return path


# ---------------------------------------------------------------------------------------------------- the corpus
@dataclass(frozen=True)
class WeightCase:
    """One hostile file: where it is, what kind of attack it is, and the file its payload would write."""

    path: Path
    kind: str
    marker: Path | None = None


SIX_GB = 6_000_000_000


def weight_cases(folder: Path, big: bool = True) -> list[WeightCase]:
    """Write every hostile weight file into ``folder``. ``big`` adds the issue's 6 GB deflated zip bomb (~6 MB on
    disk; writing it deflates 6 GB of zeros, about half a minute)."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "payload-ran"
    cases = [
        WeightCase(write_torchscript_payload(folder / "torchscript-setstate.pt", marker), "code", marker),
        WeightCase(folder / "reduce-system.pth", "code", marker),
        WeightCase(folder / "reduce-system-legacy.pth", "code", marker),
        WeightCase(folder / "lightning-payload.ckpt", "code", marker),
    ]
    for case, legacy in zip(cases[1:3], (False, True)):
        torch.save({"params": {"conv.weight": torch.zeros(1)}, "x": Evil(f"touch {marker}")}, case.path,
                   _use_new_zipfile_serialization=not legacy)
    torch.save({"state_dict": {"conv.weight": torch.zeros(4)}, "pytorch-lightning_version": "1.2.9",
                "callbacks": {"ModelCheckpoint": {"best_model_path": Evil(f"touch {marker}")}}}, cases[3].path)
    six_gb = Storage("0", numel=SIX_GB // 4)
    four = {"0": bytes(16)}
    cases += [
        WeightCase(write_zip_archive(folder / "storage-lie-6gb.pth", {"w": tensor_call(six_gb, (4,), (1,))}, four),
                   "allocation"),
        WeightCase(write_zip_archive(folder / "view-beyond-storage.pth",
                                     {"w": tensor_call(Storage("0", 4), (10**9,), (1,))}, four), "allocation"),
        WeightCase(write_zip_archive(folder / "broadcast-view.pth",
                                     {"w": tensor_call(Storage("0", 4), (10**5, 10**5), (0, 0))}, four),
                   "allocation"),
        WeightCase(write_legacy_archive(folder / "legacy-lie-2gb.pth",
                                        {"w": tensor_call(Storage("0", 500_000_000, legacy=True), (4,), (1,))},
                                        {"0": (4, bytes(16))}), "allocation"),
        WeightCase(write_zip_archive(folder / "zero-block.pth", {"w": Call(bytes, 10**11)}, {}), "allocation"),
        WeightCase(write_zip_archive(folder / "numpy-object-array.pth",
                                     {"w": Call(np._core.multiarray._reconstruct, np.ndarray, (0,), b"b"),
                                      "dtype": np.dtype(object)}, {}), "crash"),
        WeightCase(_memo_index(folder / "memo-index.pth"), "allocation"),
        WeightCase(_safetensors_lie(folder / "header-lie.safetensors"), "allocation"),
        WeightCase(_text(folder / "text.pth"), "not weights"),
        WeightCase(_write(folder / "empty.pth", b""), "not weights"),
        WeightCase(_write(folder / "random.pth", np.random.default_rng(0).bytes(4096)), "not weights"),
        WeightCase(_truncated(folder / "truncated.pth"), "broken"),
        WeightCase(_write(folder / "plain-pickle.pth", pickle.dumps({"w": 1}, protocol=2)), "not weights"),
    ]
    if big:
        cases.append(WeightCase(write_deflated_zero_storage(folder / "zip-bomb-6gb.pth", SIX_GB), "allocation"))
    return cases


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _text(path: Path) -> Path:
    return _write(path, b"<html><body>404 Not Found</body></html>\n" * 400)


def _memo_index(path: Path) -> Path:
    """A pickle storing into memo slot 2**30: the C unpickler would zero a 16 GB memo table for it."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}r\x00\x00\x00\x40.")
        archive.writestr("archive/version", "3\n")
    return path


def _safetensors_lie(path: Path) -> Path:
    """A safetensors header declaring a 6 GB tensor in a file of a few bytes."""
    header = b'{"w":{"dtype":"F32","shape":[1500000000],"data_offsets":[0,6000000000]}}'
    return _write(path, struct.pack("<Q", len(header)) + header + bytes(16))


def _truncated(path: Path) -> Path:
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(65536, dtype=torch.float32)}, buffer)
    return _write(path, buffer.getvalue()[: len(buffer.getvalue()) // 2])
