"""The model descriptor: what a network declares so the engine never has to ask "is this LaMa?".

A :class:`Model` takes and returns NCHW float RGB in [0, 1], whatever the network's own range: the conversion to
and from ``input_range`` happens here, once. It carries what the planner and the engine need (scale, size
requirements, context, precisions, tiling advice) and follows spandrel's descriptors, whose ``SizeRequirements``
and ``ModelTiling`` it reuses.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from spandrel import ModelTiling, SizeRequirements

Task = Literal["upscale", "restore", "inpaint", "face", "parse"]  # parse: face parsing (paste-back masks)
Precision = Literal["fp32", "fp16", "bf16"]

PRECISION_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}

# How a network is invoked: (network, image[, mask]) -> image, all in the network's own range.
CallFn = Callable[..., torch.Tensor]


def plain_call(network: Any, image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    return network(image) if mask is None else network(image, mask)


# Modules a network may hold parameters in and still run faster in NHWC memory order: convolutions and the
# per-channel layers between them. Attention, linear and normalisation-over-channels layers are left in NCHW.
_CHANNELS_LAST_MODULES = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.PReLU, torch.nn.BatchNorm2d)


def convolution_only(network: Any) -> bool:
    """True for a module whose every parameter belongs to a 2-D convolution or a per-channel layer."""
    if not isinstance(network, torch.nn.Module):
        return False
    holders = [m for m in network.modules() if any(True for _ in m.parameters(recurse=False))]
    return bool(holders) and all(isinstance(m, _CHANNELS_LAST_MODULES) for m in holders)


@dataclass(frozen=True, eq=False)
class Model:
    """A network ready for the engine: frozen, so a variant is made with :func:`dataclasses.replace`.

    ``network`` is a ``torch.nn.Module`` or any callable; ``call_fn(network, image[, mask])`` invokes it (default:
    ``network(image)`` or ``network(image, mask)``). ``context`` is the receptive-field radius in input pixels the
    network needs around a tile to be exact; ``None`` means unknown, and the engine measures it once.
    ``local`` False marks a network whose output depends on the whole input (global pooling, attention over
    all pixels, Fourier units): no context makes its tiles exact, so they are feathered and one window is used
    where it fits. ``scale`` 0 means unknown (a bare callable): the engine reads it from a small forward.
    ``face_template`` names the alignment template of a face network ("facexlib" or "gpen").

    What the engine and the tasks act on is declared, never guessed from a name: ``takes_mask`` (the network is
    called with an N1HW mask), ``weight_free`` (a classical method, computed on the host), ``half_needs_pow2``
    (Fourier layers: half precision only at power-of-two sizes), ``call_options`` (keyword options the call
    takes per job, e.g. CodeFormer's ``fidelity``), ``face_strength`` (the blend a face model's authors use),
    ``output_resize`` (a resize after the network, as the x2/x3 animevideov3 models have), ``channels_last``
    (the engine runs it in NHWC memory order: None decides from the network, True for convolution-only networks,
    which oneDNN runs faster so on the CPU, bench/cpu_speed.py section ``steps``). ``details`` holds
    descriptive metadata only (tags, notes, a method's parameters): nothing reads it to decide anything.
    """

    network: Any
    name: str
    task: Task = "upscale"
    architecture: str = "custom"
    scale: int = 1
    input_channels: int = 3
    output_channels: int = 3
    size_requirements: SizeRequirements = field(default_factory=SizeRequirements)
    tiling: ModelTiling = ModelTiling.SUPPORTED
    context: int | None = None
    local: bool | None = None  # False: the output depends on the whole input (declared or measured); None: unknown
    supports_half: bool = False
    supports_bfloat16: bool = False
    input_range: tuple[float, float] = (0.0, 1.0)
    face_size: int | None = None
    face_template: str | None = None
    call_fn: CallFn = plain_call
    source: str | None = None
    license: str | None = None
    takes_mask: bool | None = None  # None: an inpainting model takes one, others not
    weight_free: bool = False
    half_needs_pow2: bool = False
    call_options: tuple[str, ...] = ()
    face_strength: float | None = None
    output_resize: tuple[str, float] | None = None
    channels_last: bool | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.takes_mask is None:
            object.__setattr__(self, "takes_mask", self.task == "inpaint")
        if self.channels_last is None:
            object.__setattr__(self, "channels_last", not self.half_needs_pow2 and convolution_only(self.network))

    # ------------------------------------------------------------------ placement
    @property
    def device(self) -> torch.device:
        """The device of the network's parameters (CPU for parameter-free callables)."""
        for tensor in self._tensors():
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point dtype of the network's parameters (float32 for parameter-free callables)."""
        for tensor in self._tensors():
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.float32

    @property
    def precisions(self) -> tuple[Precision, ...]:
        """The precisions this network may run in, best-supported first after fp32."""
        names: list[Precision] = ["fp32"]
        if self.supports_bfloat16:
            names.append("bf16")
        if self.supports_half:
            names.append("fp16")
        return tuple(names)

    @property
    def is_module(self) -> bool:
        return isinstance(self.network, torch.nn.Module)

    def to(self, device: torch.device | str | None = None, precision: Precision | None = None) -> "Model":
        """Move the network in place to ``device`` and/or ``precision``; returns self for chaining."""
        if not self.is_module:
            return self
        if device is not None:
            self.network.to(torch.device(device))
        if precision is not None:
            self.network.to(PRECISION_DTYPES[precision])
        self.network.eval()
        return self

    def to_layout(self) -> "Model":
        """Put the weights in the memory order :attr:`channels_last` asks for (in place; the engine does this
        when it prepares a job, so a network called directly keeps the order it was built in)."""
        if self.is_module and self.channels_last:
            self.network.to(memory_format=torch.channels_last)
        return self

    @property
    def in_layout(self) -> bool:
        """Whether the weights are in NHWC memory order where :attr:`channels_last` asks for it."""
        return not self.channels_last or all(t.is_contiguous(memory_format=torch.channels_last)
                                             for t in self._tensors() if t.ndim == 4)

    def _tensors(self):
        if self.is_module:
            yield from self.network.parameters()
            yield from self.network.buffers()

    # ------------------------------------------------------------------ calling
    def __call__(self, image: torch.Tensor, mask: torch.Tensor | None = None, *, clamp: bool = True) -> torch.Tensor:
        """Run the network on NCHW ``image`` in [0, 1] (and an N1HW binary ``mask`` for inpainting).

        The input must already meet ``size_requirements`` and sit on the model's device and dtype; the output is
        NCHW in [0, 1], ``scale`` times larger. Range conversion to the network's own ``input_range`` happens here.
        ``clamp=False`` keeps values outside [0, 1] (and their gradients) for measurements.
        """
        low, high = self.input_range
        x = image if (low, high) == (0.0, 1.0) else image * (high - low) + low
        if mask is None:
            y = self.call_fn(self.network, x)
        else:
            y = self.call_fn(self.network, x, mask)
        if (low, high) != (0.0, 1.0):
            y = (y - low) / (high - low)
        return y.clamp(0.0, 1.0) if clamp else y

    def describe(self) -> str:
        """One line for logs and the CLI: name, architecture, scale and size requirements."""
        req = self.size_requirements
        parts = [f"{self.name} ({self.architecture}, {self.task}, x{self.scale}"]
        if req.multiple_of > 1:
            parts.append(f", multiple of {req.multiple_of}")
        if req.minimum:
            parts.append(f", min {req.minimum}")
        if self.face_size:
            parts.append(f", face {self.face_size}px")
        parts.append(")")
        return "".join(parts)
