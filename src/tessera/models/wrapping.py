"""Wrapping a spandrel descriptor into a tessera :class:`~tessera.models.descriptor.Model`.

What the descriptor declares (task, channels, scale, size requirements, tiling, precisions) is carried over; what
it gets wrong or leaves out is fixed here: face networks (GFPGAN, CodeFormer, RestoreFormer, GPEN) are called raw
and declared in [-1, 1], LaMa's Fourier units compute in float32 whatever precision the rest runs in, and a
catalog entry adds the name, licence, face metadata and tile context. :func:`resized_output` appends the output
resize some converted ncnn models declare.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from spandrel import ModelBase

from ..errors import ModelError
from .catalog import CatalogEntry
from .descriptor import Model, plain_call


# spandrel's purpose -> tessera's task
_PURPOSE_TASKS = {"SR": "upscale", "Restoration": "restore", "Inpainting": "inpaint", "FaceSR": "face"}


# ---------------------------------------------------------------------------------------------------- face traits
def _first_output(network: Any, image: torch.Tensor) -> torch.Tensor:
    """Call a face network that returns a tuple (image, extras...) and keep the image, in its own range."""
    return network(image)[0]


@dataclass(frozen=True)
class _FaceTraits:
    face_size: int | None  # None: the size requirements' minimum
    template: str
    call_fn: Callable[..., torch.Tensor] | None  # None: keep the descriptor's own
    call_options: tuple[str, ...] = ()  # keyword options its call takes per job


# Face networks work in [-1, 1]. spandrel's wrappers differ (GFPGAN and CodeFormer pass [0, 1] straight through,
# RestoreFormer converts inside its call), so tessera calls these networks raw and converts in Model.__call__.
_FACE_ARCHITECTURES: dict[str, _FaceTraits] = {
    "GFPGAN": _FaceTraits(512, "facexlib", _first_output),
    "CodeFormer": _FaceTraits(512, "facexlib", _first_output, ("fidelity",)),
    "RestoreFormer": _FaceTraits(512, "facexlib", _first_output),
    "GPEN": _FaceTraits(None, "gpen", None),
}


# ---------------------------------------------------------------------------------------------------- wrapping
def _spectral_in_fp32(network: Any) -> None:
    """Make LaMa's Fourier units compute in float32 whatever precision the rest of the network runs in.

    torch.fft has no bfloat16 kernels and does float16 only at power-of-two sizes, and spandrel's LaMa casts to
    float32 only for CUDA float16. So in bf16 (the engine's GPU choice when a model declares it) each
    ``FourierUnit`` gets its input in float32, keeps its own small convolution in float32, and hands back the
    network's dtype: the spatial convolutions, which hold most of the work, stay in half precision. No effect
    in float32; applied once per network, when it is loaded.
    """
    if not isinstance(network, torch.nn.Module):
        return
    for unit in network.modules():
        if type(unit).__name__ != "FourierUnit" or unit.__dict__.get("_tessera_spectral_fp32"):
            continue
        unit.forward = _float32_forward(unit, unit.forward)
        unit._tessera_spectral_fp32 = True


def _float32_forward(unit: torch.nn.Module, forward: Callable[[torch.Tensor], torch.Tensor]):
    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            unit.float()
            return forward(x.float()).to(x.dtype)
        return forward(x)

    return run


def from_descriptor(descriptor: ModelBase[Any], *, name: str | None = None, source: str | None = None,
                    entry: CatalogEntry | None = None) -> Model:
    """Wrap a spandrel descriptor into a Model; a catalog ``entry`` fills the name, licence and face metadata.

    The network is called through the descriptor's ``_call_fn`` (not its ``__call__``, which clamps and pads),
    or raw for face networks, whose [-1, 1] range Model converts.
    """
    arch_id = str(descriptor.architecture.id)
    call_fn = descriptor._call_fn  # the unclamped call: Model converts the range and clamps once
    input_range = (0.0, 1.0)
    face_size = face_template = None
    traits = _FACE_ARCHITECTURES.get(arch_id)
    if traits is not None:
        input_range = (-1.0, 1.0)
        face_size = traits.face_size or descriptor.size_requirements.minimum or None
        face_template = traits.template
        call_fn = traits.call_fn or call_fn
    details: dict[str, Any] = {"tags": list(descriptor.tags), "purpose": descriptor.purpose}
    context = None
    fourier = arch_id == "LaMa"  # half precision needs power-of-two sizes, and bf16 no FFT at all
    if fourier:
        _spectral_in_fp32(descriptor.model)
    if entry is not None:
        face_size = entry.face_size or face_size
        face_template = entry.face_template or face_template
        if entry.notes:
            details["notes"] = entry.notes
        context = entry.tile_pad
    return Model(
        network=descriptor.model,
        name=name or (entry.name if entry else arch_id),
        task=_PURPOSE_TASKS[descriptor.purpose],
        architecture=arch_id,
        scale=descriptor.scale,
        input_channels=descriptor.input_channels,
        output_channels=descriptor.output_channels,
        size_requirements=descriptor.size_requirements,
        tiling=descriptor.tiling,
        supports_half=descriptor.supports_half,
        supports_bfloat16=descriptor.supports_bfloat16,
        input_range=input_range,
        face_size=face_size,
        face_template=face_template,
        call_fn=call_fn,
        context=context,
        source=source,
        license=entry.license if entry else None,
        takes_mask=_PURPOSE_TASKS[descriptor.purpose] == "inpaint",
        half_needs_pow2=fourier,
        call_options=traits.call_options if traits is not None else (),
        face_strength=entry.face_strength if entry is not None else None,
        details=details,
    )


# ---------------------------------------------------------------------------------------------------- output resize
class ResizedOutput(torch.nn.Module):
    """A network followed by an interpolation of its output (``align_corners=False``, as ncnn's Interp)."""

    def __init__(self, network: Any, call_fn: Callable[..., torch.Tensor], mode: str, factor: float) -> None:
        super().__init__()
        self.network, self.call_fn, self.mode, self.factor = network, call_fn, mode, factor

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.call_fn(self.network, image)
        return F.interpolate(out, scale_factor=self.factor, mode=self.mode, align_corners=False)


def resized_output(model: Model, mode: str, factor: float) -> Model:
    """``model`` followed by a ``mode`` resize of its output by ``factor``: the x2/x3 animevideov3 models are
    the x4 network and a bicubic 0.5/0.75 resize. Tileable at the integer factor ``scale * factor``; the resize
    reaches one more input pixel of context."""
    scale = model.scale * factor
    if (mode not in ("bicubic", "bilinear") or abs(scale - round(scale)) > 1e-9 or round(scale) < 1
            or model.input_range != (0.0, 1.0)):
        raise ModelError(f"{model.name}: a {mode} resize by {factor:g} of a x{model.scale} network is not a "
                         f"network of integer scale")
    details = {**model.details, "network_scale": model.scale}
    return replace(model, network=ResizedOutput(model.network, model.call_fn, mode, factor),
                   call_fn=plain_call, scale=int(round(scale)), output_resize=(mode, factor),
                   context=None if model.context is None else model.context + 1, details=details)
