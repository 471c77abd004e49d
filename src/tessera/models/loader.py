"""Load a model by catalog name or file path into a :class:`~tessera.models.descriptor.Model`.

Files are read as data, never as code: safetensors through its own reader, every PyTorch archive (``torch.save``
files, Lightning checkpoints, TorchScript) through :mod:`tessera.models.torchfile`, within a byte budget. Then
spandrel detects the architecture from the state dict's keys and shapes, with tessera's private registry
(:mod:`tessera.models.architectures`), and the descriptor it returns is wrapped into a Model
(:mod:`tessera.models.wrapping`). Nothing is ever downloaded here: a known model that is not in the cache raises
ModelError naming the ``tessera models pull`` command that fetches it.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from spandrel import ArchRegistry, ModelBase, UnsupportedModelError, canonicalize_state_dict

from ..errors import ModelError, OptionError, look_up_option
from ..options import format_bytes
from .architectures import build_registry
from .catalog import CatalogEntry, entry_for_file, find_entry, get_entry, model_path
from .checksums import check_cached_file
from .descriptor import PRECISION_DTYPES, Model
from .formats import NCNN_SUFFIX, TORCH_SUFFIXES, WEIGHT_SUFFIXES
from .torchfile import BUDGET_VARIABLE, read_torch_file, weight_budget
from .unpickler import UnsafeWeightsError
from .wrapping import from_descriptor, resized_output


# Where LaMa's authors' code puts the generator: in the Lightning module's state dict (``best.ckpt``) as
# ``generator.``, next to its discriminator and loss weights, and once more wrapped by ``bin/to_jit.py`` (its
# JITWrapper holds the Lightning module as ``.model``) as ``model.generator.``. spandrel's LaMa calls it ``model.``.
_LAMA_GENERATOR_PREFIXES = ("generator.", "model.generator.")
_LAMA_GENERATOR_PROBE = "model.1.bn_l.running_mean"  # the first FFC block, present in every LaMa generator


def as_model(obj: Any, *, name: str | None = None, model_dir: str | os.PathLike[str] | None = None) -> Model:
    """Normalise whatever a caller passes as a model into a Model.

    - a ``Model``: returned as is;
    - a spandrel descriptor: wrapped (:func:`from_descriptor`);
    - a catalog name or a path: loaded (:func:`load_model`);
    - any other ``torch.nn.Module`` or callable: wrapped as an "upscale" network taking and returning [0, 1]
      with ``scale=0``, which means "unknown": the engine infers the scale by running it once on a small probe.
      Half precisions are not assumed; build a ``Model`` yourself to declare more.
    """
    if isinstance(obj, Model):
        return obj
    if isinstance(obj, ModelBase):
        return from_descriptor(obj, name=name)
    if isinstance(obj, (str, os.PathLike)):
        return load_model(obj, model_dir=model_dir)
    if isinstance(obj, torch.nn.Module) or callable(obj):
        return Model(network=obj, name=name or type(obj).__name__, task="upscale", architecture="custom", scale=0)
    raise ModelError(f"cannot use a {type(obj).__name__} as a model (expected a name, a path, a torch module, "
                     f"a spandrel descriptor or a tessera Model)")


# ---------------------------------------------------------------------------------------------------- files
def _read_file(path: Path, max_bytes: int | str | None) -> Any:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        budget = weight_budget(max_bytes)
        if path.stat().st_size > budget:  # safetensors checks every offset against the file itself
            raise UnsafeWeightsError(f"holds {format_bytes(path.stat().st_size)} of weights, over the "
                                     f"{format_bytes(budget)} budget (raise it with {BUDGET_VARIABLE}=8G)")
        return load_file(str(path), device="cpu")
    if suffix in TORCH_SUFFIXES:
        return read_torch_file(path, max_bytes)
    raise ModelError(f"{path}: unsupported weight file type {suffix or '(none)'!r} "
                     f"(expected one of {', '.join(WEIGHT_SUFFIXES)})")


def _canonical_state_dict(content: Any, path: Path) -> dict[str, torch.Tensor]:
    """Unwrap the weights spandrel-style and bring the keys of LaMa's generator, as its authors' Lightning
    checkpoint and to_jit wrapper name them, to spandrel's names."""
    if not isinstance(content, Mapping):
        raise ModelError(f"{path}: holds a {type(content).__name__}, not a state dict of weights")
    state = canonicalize_state_dict(dict(content))
    lama_prefix = next((prefix for prefix in _LAMA_GENERATOR_PREFIXES if prefix + _LAMA_GENERATOR_PROBE in state),
                       None)
    if lama_prefix is not None:  # keep the generator only (no discriminator, no loss networks)
        state = {"model." + key[len(lama_prefix):]: value
                 for key, value in state.items() if key.startswith(lama_prefix)}
    tensors = {str(key): value for key, value in state.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise ModelError(f"{path}: contains no weight tensors")
    return tensors


def read_state_dict(path: str | os.PathLike[str], max_bytes: int | str | None = None) -> dict[str, torch.Tensor]:
    """The canonical state dict of a weight file (.pth, .pt, .ckpt, .bin, .safetensors), on the CPU.

    Never runs code from the file (TorchScript included: its tensors are read as data) and never holds more than
    ``max_bytes`` of tensors (default: ``$TESSERA_MAX_WEIGHT_BYTES`` or 4 GiB). Raises ModelError naming the file
    when it is missing, not a regular file, unreadable, refused by the restricted reader, or holds no weights.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        content = _read_file(path, max_bytes)
    except UnsafeWeightsError as error:
        raise UnsafeWeightsError(f"{path}: {error}") from error
    except ModelError:
        raise
    except Exception as error:  # unpickling and archive readers raise many types; all mean "unreadable"
        raise ModelError(f"{path}: cannot read weights: {_first_line(error)}") from error
    return _canonical_state_dict(content, path)


def _ncnn_state(path: Path) -> tuple[dict[str, torch.Tensor], tuple[str, float] | None]:
    """The spandrel state dict of an ncnn ``.param`` (its ``.bin`` beside it) and its output resize, if any."""
    from .ncnn import read_ncnn
    from .ncnn_graph import convert

    conversion = convert(read_ncnn(path))
    return {key: torch.from_numpy(value) for key, value in conversion.state.items()}, conversion.output_resize


def _declared_resize(path: Path) -> tuple[str, float] | None:
    """The output resize a safetensors file converted by tessera declares in its metadata (None elsewhere)."""
    if path.suffix.lower() != ".safetensors":
        return None
    from safetensors import safe_open

    from .ncnn_cache import parse_resize

    try:
        with safe_open(str(path), "pt") as handle:
            return parse_resize(handle.metadata())
    except ModelError as error:
        raise ModelError(f"{path}: {error}") from None
    except Exception as error:  # a header safetensors cannot parse: read_state_dict already said so
        raise ModelError(f"{path}: cannot read weights: {_first_line(error)}") from error


def load_file(path: str | os.PathLike[str], *, entry: CatalogEntry | None = None,
              registry: ArchRegistry | None = None) -> Model:
    """Load a weight file or an ncnn ``.param`` into a Model (no placement); ``entry`` defaults to the catalog
    entry of its file name."""
    path = Path(path)
    entry = entry or entry_for_file(path)
    if path.suffix.lower() == NCNN_SUFFIX:
        state, resize = _ncnn_state(path)
    else:
        state, resize = read_state_dict(path), _declared_resize(path)
    from ..faces.parsenet import is_parsenet_state, load_parsenet, parsing_model

    if is_parsenet_state(state):  # facexlib's face parser: a paste-back helper, not an image-to-image network
        return parsing_model(load_parsenet(state, str(path)), name=entry.name if entry else path.stem,
                             source=str(path), license=entry.license if entry else None)
    registry = registry or build_registry()
    try:
        descriptor = registry.load(state)
    except UnsupportedModelError as error:
        first = next(iter(state))
        raise ModelError(f"{path}: unknown architecture ({len(state)} tensors, first key {first!r})") from error
    except ModelError as error:
        raise ModelError(f"{path}: {error}") from error
    except Exception as error:  # an architecture matched but its loader rejected the weights
        raise ModelError(f"{path}: weights do not fit the detected architecture: {_first_line(error)}") from error
    model = from_descriptor(descriptor, name=entry.name if entry else path.stem, source=str(path), entry=entry)
    return model if resize is None else resized_output(model, *resize)


def _first_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------------- by name
def resolve_model_file(name_or_path: str | os.PathLike[str],
                       model_dir: str | os.PathLike[str] | None = None) -> tuple[Path, CatalogEntry | None]:
    """The weight file that ``name_or_path`` designates, and its catalog entry if any. Never downloads.

    An existing file wins (a path is the user's choice and is not checksum-checked); otherwise a catalog name
    resolves to its cached file, and ModelError says how to pull it when it is not there. Every load of a catalog
    model by name passes here, so this is where its cached file is checked: ChecksumError, before anything reads
    it, when it does not match its published or recorded sha256 or has neither (hashing is cached per file
    version). An unknown name raises ModelError suggesting the nearest known one.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return path, entry_for_file(path)
    if path.is_dir():
        raise ModelError(f"{path} is a folder, not a weight file")
    entry = find_entry(text)
    if entry is not None:
        if entry.auxiliary and entry.task != "parse":  # face parsers load (as parsing Models); detectors do not
            raise ModelError(f"{entry.name} is a {entry.architecture} helper file, not an image model")
        cached = model_path(entry, model_dir)
        if entry.bundled is not None:  # converted from its package on first use (a no-op once done)
            from .ncnn_cache import install_bundled

            install_bundled(entry, model_dir)
        if cached.is_file():
            check_cached_file(entry, model_dir)
            return cached, entry
        flag = f" --model-dir {model_dir}" if model_dir is not None else ""
        raise ModelError(f"model {entry.name!r} is not downloaded (no {cached}); "
                         f"run `tessera models pull {entry.name}{flag}` first")
    if path.suffix.lower() in WEIGHT_SUFFIXES or os.sep in text or "/" in text:
        raise ModelError(f"model file not found: {path}")
    from .ncnn_cache import find_imported

    imported = find_imported(text, model_dir)
    if imported is not None:
        return imported, None
    get_entry(text)  # raises ModelError with the nearest known name
    raise ModelError(f"unknown model {text!r}")  # pragma: no cover - get_entry raised


def _place(model: Model, device: str | torch.device | None, precision: str | None) -> Model:
    if precision in (None, "auto"):
        precision = None
    else:
        look_up_option(precision, PRECISION_DTYPES, "precision")
        if precision not in model.precisions:
            raise OptionError(f"model {model.name} does not support precision {precision!r} "
                              f"(it supports {', '.join(model.precisions)})")
    if isinstance(device, str) and device == "auto":
        device = None
    try:
        return model.to(device, precision)  # type: ignore[arg-type]
    except (RuntimeError, AssertionError) as error:
        raise OptionError(f"cannot move model {model.name} to device {str(device)!r}: {_first_line(error)}") from error


def load_model(name_or_path: Any, *, device: str | torch.device | None = None, precision: str | None = None,
               model_dir: str | os.PathLike[str] | None = None) -> Model:
    """Load a model by catalog name (``"gpen-bfr-512"``, ``"RealESRGAN_x4plus"``...) or weight-file path.

    Returns a :class:`Model` taking and returning NCHW RGB in [0, 1], in eval mode, on ``device`` (default CPU)
    in ``precision`` ("fp32", "fp16", "bf16"; default: as stored, fp32 for most files; "auto" leaves the choice
    to the engine). A Model, spandrel descriptor or torch module is accepted too (see :func:`as_model`). Names
    resolve to files in the cache (``model_dir`` or ``$TESSERA_HOME`` or ``~/.cache/tessera``); nothing is
    downloaded: a missing file raises ModelError naming ``tessera models pull NAME``.
    """
    if isinstance(name_or_path, (str, os.PathLike)):
        path, entry = resolve_model_file(name_or_path, model_dir)
        model = load_file(path, entry=entry)
    else:
        model = as_model(name_or_path)
        if model is name_or_path and device is None and precision is None:
            return model
    return _place(model, device, precision)
