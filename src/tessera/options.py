"""One schema of options shared by the Python API, the CLI and the web UI.

Each task's options are a pydantic model; the CLI builds its flags from the fields (``cli.add_options``), the web UI
its controls, and the API validates keyword arguments through :func:`parse_options`. A value that fails validation
raises :class:`~tessera.errors.OptionError` with one line naming the option and the value.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import OptionError

Auto = Literal["auto"]

_DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?", re.IGNORECASE)

_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
               "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40,
               "tib": 1 << 40}


def parse_size(value: Any) -> int | None:
    """Parse a memory size such as ``"4G"``, ``"512MB"``, ``"1.5GiB"`` or a byte count into bytes."""
    if value is None or isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a memory size: {value!r} (examples: 512MB, 4G, 1.5GiB)")
    size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    if size <= 0:
        raise ValueError(f"memory size must be positive, got {value!r}")
    return size


def format_bytes(n: float) -> str:
    """A byte count for people: ``1.5 GiB``, ``312.0 MiB``, ``512 B`` (the inverse of :func:`parse_size`)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)

# ----------------------------------------------------------------------------------------------- running


def _auto_or_int(value: Any) -> Any:
    """Accept ``"auto"`` or anything that reads as an integer (CLI strings included)."""
    if isinstance(value, str) and value.strip().lower() != "auto":
        try:
            return int(value)
        except ValueError:
            return value
    return value.strip().lower() if isinstance(value, str) else value


MemorySize = Annotated[Union[int, None], BeforeValidator(parse_size)]
AutoInt = Annotated[Union[Auto, Annotated[int, Field(ge=0)]], BeforeValidator(_auto_or_int)]
PositiveAutoInt = Annotated[Union[Auto, Annotated[int, Field(ge=1)]], BeforeValidator(_auto_or_int)]


class Options(BaseModel):
    """Base of every options model: immutable, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineOptions(Options):
    """Where and how networks run: device, precision, memory budget and tiling."""

    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps (auto: cuda, then mps, then cpu)")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="auto: fp16/bf16 on a GPU where the model supports it; fp32 on the CPU "
        "(bf16 where it computes bf16 natively and it was measured faster and within 2 levels)")
    max_memory: MemorySize = Field(
        None, description="budget for device memory (host memory on the CPU), e.g. 4G; default: what is free")
    tile: PositiveAutoInt = Field("auto", description="tile size in input pixels, or auto (largest that fits the budget)")
    tile_pad: AutoInt = Field("auto", description="context around each tile in input pixels, or auto (measured)")
    tile_batch: PositiveAutoInt = Field("auto", description="tiles per batch, or auto")
    blend: Literal["auto", "crop", "feather"] = Field(
        "auto", description="crop: exact for local networks; feather: also blend the inner overlap; "
                            "auto: crop, or feather for networks that are not local")

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        """The device's form is checked here; whether this machine has it, when the work starts."""
        if not _DEVICE_NAME.fullmatch(device.strip()):
            raise ValueError("unknown device: choose from auto, cpu, cuda, cuda:N, mps")
        return device


WEIGHT_FREE_DEFAULT_SCALE = 2.0  # the upscale factor of the weight-free method when none is asked for
AUTO_DEFAULT_SCALE = 4.0  # of model "auto": the factor of every network it may choose, kept when it falls back
WEIGHT_FREE_NAMES = ("lanczos", "weight-free")  # model names that mean "no network"


class UpscaleOptions(EngineOptions):
    """`tessera upscale`: tiled super-resolution, multi-pass beyond the model's factor."""

    model: str | None = Field("auto", description="model name or path, lanczos (weight-free), or auto: a real "
                                                  "network if one is available, else lanczos")
    scale: float | None = Field(None, ge=1, le=16, description="output scale from 1 to 16; default: the model's "
                                                               "own factor")
    sharpen: float = Field(0.0, ge=0, le=2, description="unsharp-mask amount for the weight-free method (with model "
                                                        "auto, asking for it chooses that method)")

    @model_validator(mode="after")
    def _sharpen_only_without_model(self) -> UpscaleOptions:
        if self.sharpen and self.model is not None and self.model.strip().lower() not in ("auto", *WEIGHT_FREE_NAMES):
            raise ValueError(f"option sharpen: applies to the weight-free method only, not to model {self.model!r}")
        return self


class InpaintOptions(EngineOptions):
    """`tessera inpaint`: fill the masked parts, at a cost that follows the mask."""

    model: str = Field("auto", description="lama, a model name or path, patchmatch or telea; auto: lama if "
                                           "cached, else the best weight-free method")
    strategy: Literal["auto", "crop", "resize", "full"] = Field("auto", description="how regions are run")
    crop_margin: AutoInt = Field("auto", description="context around each hole in pixels, or auto")
    max_size: AutoInt = Field("auto", description="never run the network above this many pixels per side")
    grow: int = Field(0, ge=0, le=512, description="dilate the mask by this many pixels")
    feather: int = Field(0, ge=0, le=256, description="blend band around the (grown) mask, outside it, in pixels")
    resize_mask: bool = Field(False, description="resize a mask of another size to the photo")
    save_regions: Path | None = Field(None, description="write each crop's input, mask and result here")

    @field_validator("max_size")
    @classmethod
    def _network_sees_enough(cls, max_size: Any) -> Any:
        from .tasks.inpaint_sizing import MIN_RUN_SIDE

        if max_size != "auto" and max_size < MIN_RUN_SIDE:
            raise ValueError(f"must be at least {MIN_RUN_SIDE} px or auto")
        return max_size


MAX_FACE_INDICES = 10_000


def _face_indices(value: Any) -> Any:
    """``"0,2,5"`` (CLI, web) or a sequence of integers -> a sorted list of distinct indices; None/"" -> None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        parts = [part.strip() for part in value.replace(" ", ",").split(",") if part.strip()]
        if not all(part.isdigit() for part in parts):
            raise ValueError("face indices are whole numbers separated by commas, e.g. 0,2,5")
        value = [int(part) for part in parts]
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise ValueError("face indices are whole numbers from 0, e.g. [0, 2, 5]")
    if len(value) > MAX_FACE_INDICES:
        raise ValueError(f"at most {MAX_FACE_INDICES:,} face indices")
    return sorted(set(value)) or None


FaceIndices = Annotated[Union[list[int], None], BeforeValidator(_face_indices)]


# The deconvolutions of tessera.filters (its DEBLUR_METHODS), the default first.
DeblurMethodName = Literal["hyper-laplacian", "wiener", "richardson-lucy"]


class FaceOptions(EngineOptions):
    """`tessera enhance`: detect, align, restore and paste back faces."""

    model: str | None = Field(None, description="face model name or path (gpen-bfr-512, gfpgan-1.4, codeformer, "
                                                "restoreformer...); default: weight-free clean-up")
    upscale: float = Field(1.0, ge=1, le=8, description="output scale of the whole photo")
    background: str = Field("auto", description="auto (none at --upscale 1, else lanczos), none, lanczos, or an "
                                                "upscaling model name or path for the background")
    strength: float | None = Field(None, ge=0, le=1, description="blend of the restored face with the original; "
                                                                 "default: the model's own (0.8 for gpen-bfr-2048, "
                                                                 "as GPEN runs it), else 1")
    fidelity: float = Field(0.5, ge=0, le=1, description="CodeFormer fidelity weight (0: quality, 1: fidelity)")
    face_batch: PositiveAutoInt = Field("auto", description="faces per batch, or auto")
    min_face: int = Field(16, ge=4, description="ignore faces smaller than this many pixels")
    min_score: float = Field(0.6, ge=0, le=1, description="face detection score threshold")
    detector: Literal["auto", "yunet", "cascade"] = Field(
        "auto", description="auto: YuNet (yuface) if installed, else scikit-image's LBP cascade")
    detect_tiles: Literal["auto", "always", "never"] = Field(
        "auto", description="finer passes: auto (only where small faces were found), always (full resolution)")
    aligned: bool = Field(False, description="the input is one aligned face crop (as GPEN's and GFPGAN's "
                                             "--aligned): no detection, the whole image is restored")
    only_center_face: bool = Field(False, description="restore only the face nearest the photo's centre")
    only_largest_face: bool = Field(False, description="restore only the largest face")
    faces: FaceIndices = Field(None, description="restore only these faces, by index (e.g. 0,2,5: largest first, "
                                                 "as --list-faces prints them)")
    save_faces: Path | None = Field(None, description="write each face's aligned crop, its restored crop and a "
                                                      "manifest.json here (put edited faces back with "
                                                      "`tessera enhance-stitch`)")
    deblur: bool = Field(False, description="estimate and remove motion blur first")
    deblur_method: DeblurMethodName = Field("hyper-laplacian", description="deconvolution for --deblur")
    suppress_hf: bool = Field(False, description="smooth ringing in the result")
    parse_mask: Literal["auto", "parsenet", "box"] = Field(
        "auto", description="paste mask: parsenet (facexlib's face parsing, `tessera models pull parsenet`), box "
                            "(soft square), or auto: parsenet if downloaded, else box")

    @model_validator(mode="after")
    def _background_fits_the_scale(self) -> FaceOptions:
        if self.background.strip().lower() == "none" and self.upscale != 1:
            raise ValueError(f"background 'none' keeps the photo's size, but upscale is {self.upscale:g}: "
                             f"choose background lanczos or an upscaling model")
        return self

    @model_validator(mode="after")
    def _one_way_to_choose_faces(self) -> FaceOptions:
        chosen = [name for name in ("only_center_face", "only_largest_face", "faces") if getattr(self, name)]
        if len(chosen) > 1:
            raise ValueError(f"options {' and '.join(chosen)} both choose faces: give one of them")
        if self.aligned and chosen:
            raise ValueError(f"option {chosen[0]} chooses among detected faces, but an aligned input is one face "
                             f"and nothing is detected")
        return self


class DeblurOptions(Options):
    """`tessera deblur`: remove a straight motion blur from the whole photo, tile by tile."""

    method: DeblurMethodName = Field("hyper-laplacian", description="deconvolution: hyper-laplacian (sharpens, "
                                                                    "free borders), wiener (soft) or richardson-lucy")
    length: float | None = Field(None, ge=2, le=512, description="blur length in pixels (with --angle); default: "
                                                                 "estimated from the photo")
    angle: float | None = Field(None, ge=-360, le=360, description="blur direction in degrees, 0 = horizontal, "
                                                                   "counter-clockwise (with --length)")
    tile: int = Field(1024, ge=64, le=8192, description="tile side in pixels (memory grows with it)")

    @model_validator(mode="after")
    def _length_and_angle_together(self) -> DeblurOptions:
        if (self.length is None) != (self.angle is None):
            given, missing = ("length", "angle") if self.angle is None else ("angle", "length")
            raise ValueError(f"option {given} gives the blur only with option {missing}: give both, or neither "
                             f"to estimate the blur")
        return self


OptionsT = TypeVar("OptionsT", bound=Options)


def parse_options(cls: type[OptionsT], values: dict[str, Any] | None = None, **kwargs: Any) -> OptionsT:
    """Validate ``values``/``kwargs`` into ``cls``; any problem becomes one OptionError line."""
    data = {**(values or {}), **kwargs}
    try:
        return cls(**data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        loc = first.get("loc", ())
        if not loc:  # a combination of options (a model validator): its message names them
            raise OptionError(first.get("msg", "invalid options").removeprefix("Value error, ")) from None
        name = str(loc[0])
        given = first.get("input")
        # a union ("auto" or an integer >= 1) fails once per member: say every way the value could be right
        messages = [e.get("msg", "invalid value") for e in errors if e.get("loc", ())[:1] == loc[:1]]
        prefix = "Input should be "
        if len(messages) > 1 and all(m.startswith(prefix) for m in messages):
            messages = [prefix + " or ".join(dict.fromkeys(m[len(prefix):] for m in messages))]
        message = " or ".join(dict.fromkeys(messages))
        if first.get("type") == "extra_forbidden":
            raise OptionError(f"unknown option {name!r}", option=name, value=given,
                              expected=", ".join(cls.model_fields)) from None
        expected = message.removeprefix("Value error, ")
        raise OptionError(f"option {name}: {expected} (got {given!r})", option=name, value=given,
                          expected=expected) from None
