"""GPEN face restoration generator, written for tessera in plain PyTorch.

GPEN (Yang et al., "GAN Prior Embedded Network for Blind Face Restoration in the Wild", CVPR 2021) is a StyleGAN2
generator fed by a convolutional encoder: the encoder's feature map at each resolution is concatenated to the
generator's activations where StyleGAN2 would add noise, and its last feature map, flattened, becomes the style
vector. This module re-implements that network so that the official checkpoints (``GPEN-BFR-256/512/1024/2048``)
load with ``strict=True`` under their original key names, without the compiled CUDA extensions of the original
code: the FIR resampling (``upfirdn2d``) and the biased leaky ReLU are expressed with ``F.pad``/``conv2d``, so the
same code runs on CPU, CUDA (fp32/fp16/bf16) and MPS.

Public names:

- :class:`GPEN`: the network; ``GPEN(size, style_dim, n_mlp, channel_multiplier, narrow)``; input and output are
  NCHW RGB in [-1, 1] (the output is not clamped), exactly ``size`` x ``size`` pixels.
- :func:`gpen_config_from_state_dict`: the constructor arguments read from a state dict's keys and shapes.
- :class:`GPENArch`: a spandrel ``Architecture`` that detects and loads GPEN state dicts, for a private
  ``spandrel.ArchRegistry`` (nothing is registered globally).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from spandrel import Architecture, ImageModelDescriptor, ModelTiling, SizeRequirements
from spandrel.util import KeyCondition
from torch import nn

from tessera.errors import InputError, ModelError

__all__ = ["GPEN", "GPENArch", "gpen_config_from_state_dict"]

# The FIR filter StyleGAN2 uses for every up/down-sampling step.
_BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)
_LRELU_SLOPE = 0.2
_LRELU_GAIN = math.sqrt(2.0)
_MLP_LR_MUL = 0.01
_EPS = 1e-8


# ---------------------------------------------------------------------------------------------------- primitives
def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)):
    """Upsample by zero insertion, pad, filter with ``kernel`` (true convolution) and subsample, per channel.

    ``pad`` is (before, after), applied to both axes of the zero-stuffed image; negative values crop. This is the
    reference ``upfirdn2d`` of StyleGAN2 with equal factors on both axes, built from ``F.pad`` and a depthwise
    ``conv2d`` so it runs on any device and dtype.
    """
    batch, channels, height, width = x.shape
    if up > 1:
        stuffed = x.new_zeros(batch, channels, height * up, width * up)
        stuffed[:, :, ::up, ::up] = x
        x = stuffed
    before, after = pad
    x = F.pad(x, [max(before, 0), max(after, 0), max(before, 0), max(after, 0)])
    if before < 0 or after < 0:
        x = x[:, :, max(-before, 0) : x.shape[2] - max(-after, 0), max(-before, 0) : x.shape[3] - max(-after, 0)]
    taps = torch.flip(kernel, [0, 1]).to(dtype=x.dtype)
    weight = taps[None, None].expand(channels, 1, *taps.shape)
    return F.conv2d(x, weight, stride=down, groups=channels)


def _fir_kernel(taps: Sequence[float], gain: float) -> torch.Tensor:
    """The separable 2-D filter from 1-D ``taps``, normalised to sum to ``gain``."""
    row = torch.tensor(taps, dtype=torch.float32)
    kernel = row[None, :] * row[:, None]
    return kernel / kernel.sum() * gain


def bias_leaky_relu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's "fused" activation: add a per-channel bias, leaky ReLU (slope 0.2), multiply by sqrt(2)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape), _LRELU_SLOPE) * _LRELU_GAIN


class FIRFilter(nn.Module):
    """A fixed FIR resampling step; its ``kernel`` buffer is part of the checkpoints, so it stays persistent."""

    def __init__(self, pad: tuple[int, int], up: int = 1, gain: float = 1.0):
        super().__init__()
        self.register_buffer("kernel", _fir_kernel(_BLUR_TAPS, gain))
        self.pad = pad
        self.up = up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.up, pad=self.pad)


class BiasLeakyReLU(nn.Module):
    """Per-channel bias followed by the scaled leaky ReLU (``FusedLeakyReLU`` in the original)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bias_leaky_relu(x, self.bias)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weights are stored unit-scale and scaled at run time."""

    def __init__(self, in_dim: int, out_dim: int, *, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul
        if self.activate:
            return bias_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)


class EqualConv2d(nn.Module):
    """Bias-free convolution with equalised learning rate (the bias lives in the following activation)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, padding: int = 0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, stride=self.stride, padding=self.padding)


class PixelNorm(nn.Module):
    """Normalise each latent vector to unit root-mean-square."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + _EPS)


# ---------------------------------------------------------------------------------------------------- generator
class ModulatedConv2d(nn.Module):
    """StyleGAN2's style-modulated convolution, optionally demodulated and/or followed by 2x upsampling.

    The original folds the per-sample style into the weights and runs one grouped convolution per batch. Here the
    style scales the input channels and the demodulation scales the output channels, around one ordinary
    convolution with the shared weight: the same linear map, but one dense convolution for the whole batch,
    which is what cuDNN, channels-last and half precision run best.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int, *,
                 demodulate: bool = True, upsample: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.demodulate = demodulate
        self.upsample = upsample
        self.padding = kernel_size // 2
        if upsample:
            # After the stride-2 transposed convolution: a 4x4 blur (gain 4), input padded by one pixel on each side.
            extra = len(_BLUR_TAPS) - 2 - (kernel_size - 1)
            self.blur = FIRFilter(pad=((extra + 1) // 2 + 1, extra // 2 + 1), gain=4.0)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        weight = self.weight[0] * self.scale  # (out, in, k, k)
        gains = self.modulation(style)  # (batch, in)
        x = x * gains[:, :, None, None].to(x.dtype)
        if self.upsample:
            x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
        else:
            x = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # Norm of each sample's modulated filter: sum_i gains_i^2 * sum_k weight[o,i,k]^2, in float32.
            energy = weight.float().square().sum(dim=(2, 3))  # (out, in)
            norms = torch.rsqrt(gains.float().square() @ energy.t() + _EPS)  # (batch, out)
            x = x * norms[:, :, None, None].to(x.dtype)
        if self.upsample:
            x = self.blur(x)
        return x


class FeatureConcat(nn.Module):
    """GPEN's "noise injection": the encoder feature map, scaled by a learnt scalar, joins the channels."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.weight * feature), dim=1)


class StyledConv(nn.Module):
    """Modulated convolution, encoder features concatenated, biased leaky ReLU over both halves."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, *, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim, upsample=upsample)
        self.noise = FeatureConcat()
        self.activate = BiasLeakyReLU(out_channels * 2)

    def forward(self, x: torch.Tensor, style: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), feature))


class ToRGB(nn.Module):
    """1x1 modulated convolution to RGB, added to the upsampled RGB of the previous resolution."""

    def __init__(self, in_channels: int, style_dim: int, *, upsample: bool = True):
        super().__init__()
        if upsample:
            self.upsample = FIRFilter(pad=(2, 1), up=2, gain=4.0)
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        rgb = self.conv(x, style) + self.bias
        if skip is not None:
            rgb = rgb + self.upsample(skip)
        return rgb


class ConstantInput(nn.Module):
    """The learnt 4x4 map the generator starts from."""

    def __init__(self, channels: int):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, 4, 4))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


def gpen_channels(channel_multiplier: float, narrow: float) -> dict[int, int]:
    """Feature channels per resolution, as GPEN computes them (including its ``int`` truncation)."""
    wide = {4: 512, 8: 512, 16: 512, 32: 512}
    narrowing = {64: 256, 128: 128, 256: 64, 512: 32, 1024: 16, 2048: 8}
    channels = {res: int(base * narrow) for res, base in wide.items()}
    channels.update({res: int(base * channel_multiplier * narrow) for res, base in narrowing.items()})
    return channels


class StyleGenerator(nn.Module):
    """The StyleGAN2 synthesis network of GPEN, with the style MLP, taking encoder features at every layer."""

    def __init__(self, size: int, style_dim: int, n_mlp: int, channels: Mapping[int, int]):
        super().__init__()
        log_size = int(math.log2(size))
        self.style = nn.Sequential(
            PixelNorm(),
            *(EqualLinear(style_dim, style_dim, lr_mul=_MLP_LR_MUL, activate=True) for _ in range(n_mlp)),
        )
        self.input = ConstantInput(channels[4])
        self.conv1 = StyledConv(channels[4], channels[4], style_dim)
        self.to_rgb1 = ToRGB(channels[4] * 2, style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channels = channels[4]
        for level in range(3, log_size + 1):
            out_channels = channels[2**level]
            self.convs.append(StyledConv(in_channels * 2, out_channels, style_dim, upsample=True))
            self.convs.append(StyledConv(out_channels * 2, out_channels, style_dim))
            self.to_rgbs.append(ToRGB(out_channels * 2, style_dim))
            in_channels = out_channels

    def forward(self, code: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """``code``: (batch, style_dim) encoder output; ``features``: encoder maps from 4x4 up to full size."""
        style = self.style(code)
        x = self.conv1(self.input(code.shape[0]), style, features[0])
        rgb = self.to_rgb1(x, style)
        for index, to_rgb in enumerate(self.to_rgbs):
            feature = features[index + 1]
            x = self.convs[2 * index](x, style, feature)
            x = self.convs[2 * index + 1](x, style, feature)
            rgb = to_rgb(x, style, rgb)
        return rgb


def _encoder_stage(in_channels: int, out_channels: int, *, downsample: bool) -> nn.Sequential:
    """One encoder stage, nested as in the checkpoints (``ecdN.0.<i>``): [blur,] conv, biased leaky ReLU."""
    if downsample:
        layers = [FIRFilter(pad=(2, 2)), EqualConv2d(in_channels, out_channels, 3, stride=2)]
    else:
        layers = [EqualConv2d(in_channels, out_channels, 1)]
    return nn.Sequential(nn.Sequential(*layers, BiasLeakyReLU(out_channels)))


class GPEN(nn.Module):
    """GPEN's full generator (``FullGenerator`` with ``isconcat=True``): encoder + StyleGAN2 decoder.

    Takes and returns NCHW RGB in [-1, 1] of exactly ``size`` x ``size`` pixels; the output is not clamped.
    State-dict keys match the official checkpoints.
    """

    def __init__(self, size: int = 512, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: float = 2,
                 narrow: float = 1):
        super().__init__()
        log_size = int(math.log2(size)) if size > 0 else 0
        if size < 8 or 2**log_size != size or size > 2048:
            raise ModelError(f"GPEN size {size} is not a power of two between 8 and 2048")
        self.size = size
        self.style_dim = style_dim
        self.n_mlp = n_mlp
        self.channel_multiplier = channel_multiplier
        self.narrow = narrow
        channels = gpen_channels(channel_multiplier, narrow)
        self.generator = StyleGenerator(size, style_dim, n_mlp, channels)
        # Encoder: ecd0 maps RGB to features at full size, each further stage halves the size down to 4x4.
        self.stage_names = tuple(f"ecd{index}" for index in range(log_size - 1))
        self.add_module("ecd0", _encoder_stage(3, channels[size], downsample=False))
        for index, level in enumerate(range(log_size, 2, -1), start=1):
            self.add_module(f"ecd{index}", _encoder_stage(channels[2**level], channels[2 ** (level - 1)],
                                                           downsample=True))
        self.final_linear = nn.Sequential(EqualLinear(channels[4] * 16, style_dim, activate=True))

    @property
    def config(self) -> dict[str, float]:
        """The constructor arguments, as :func:`gpen_config_from_state_dict` returns them."""
        return {"size": self.size, "style_dim": self.style_dim, "n_mlp": self.n_mlp,
                "channel_multiplier": self.channel_multiplier, "narrow": self.narrow}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, self.size, self.size):
            raise InputError(f"GPEN-{self.size} needs a (N, 3, {self.size}, {self.size}) input, got {tuple(x.shape)}")
        features = []
        for name in self.stage_names:
            x = getattr(self, name)(x)
            features.append(x)
        code = self.final_linear(torch.flatten(x, 1))
        return self.generator(code, features[::-1])


# ---------------------------------------------------------------------------------------------------- detection
_PREFIX = "module."
_DETECT_KEYS = (
    "generator.style.1.weight",
    "generator.input.input",
    "generator.conv1.conv.weight",
    "generator.to_rgb1.conv.weight",
    "ecd0.0.0.weight",
    "final_linear.0.weight",
)


def _strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state_dict and all(key.startswith(_PREFIX) for key in state_dict):
        return {key[len(_PREFIX):]: value for key, value in state_dict.items()}
    return dict(state_dict)


def _count(state_dict: Mapping[str, object], pattern: str, start: int = 0) -> int:
    """How many consecutive indices ``start, start+1, ...`` have ``pattern.format(index)`` in the state dict."""
    index = start
    while pattern.format(index) in state_dict:
        index += 1
    return index - start


def _tidy(value: float) -> float:
    """An integral float as an int (``1.0`` -> ``1``), so configurations print and compare like the originals."""
    return int(value) if float(value).is_integer() else value


def gpen_config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Read GPEN's constructor arguments (size, style_dim, n_mlp, channel_multiplier, narrow) from a state dict.

    A ``module.`` prefix is ignored. The result is checked by comparing every key and shape with those of a
    network built from it (on the meta device, so nothing is allocated); a state dict that is not exactly a GPEN
    layout raises :class:`ModelError` naming the first difference.
    """
    state_dict = _strip_prefix(state_dict)
    missing = [key for key in _DETECT_KEYS if key not in state_dict]
    if missing:
        raise ModelError(f"not a GPEN state dict: key {missing[0]!r} is missing")
    n_rgb = _count(state_dict, "generator.to_rgbs.{}.conv.weight")
    size = 2 ** (n_rgb + 2)
    style_dim = int(state_dict["generator.style.1.weight"].shape[0])
    n_mlp = _count(state_dict, "generator.style.{}.weight", start=1)
    narrow = _tidy(state_dict["generator.input.input"].shape[1] / 512)
    channel_multiplier: float = 2 if size >= 64 else 1  # below 64 px no layer depends on it
    if size >= 64:
        # Resolution 64 is produced by the upsampling conv of level 6 (convs.6); its output has channels[64].
        c64 = int(state_dict["generator.convs.6.conv.weight"].shape[1])
        channel_multiplier = _tidy(round(c64 / (256 * narrow), 4))
    config = {"size": size, "style_dim": style_dim, "n_mlp": n_mlp,
              "channel_multiplier": channel_multiplier, "narrow": narrow}
    _check_layout(state_dict, config)
    return config


def _check_layout(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, float]) -> None:
    """Raise ModelError unless ``state_dict`` has exactly the keys and shapes of ``GPEN(**config)``."""
    try:
        with torch.device("meta"):
            expected = {key: tuple(value.shape) for key, value in GPEN(**config).state_dict().items()}
    except (ModelError, KeyError, ValueError, RuntimeError) as error:
        raise ModelError(f"unsupported GPEN layout {dict(config)}: {error}") from error
    for key, shape in expected.items():
        if key not in state_dict:
            raise ModelError(f"GPEN state dict {dict(config)} lacks key {key!r}")
        if tuple(state_dict[key].shape) != shape:
            raise ModelError(f"GPEN state dict key {key!r} has shape {tuple(state_dict[key].shape)}, "
                             f"expected {shape} for {dict(config)}")
    unexpected = sorted(set(state_dict) - set(expected))
    if unexpected:
        raise ModelError(f"GPEN state dict {dict(config)} has unexpected key {unexpected[0]!r}")


def _call_gpen(model: GPEN, image: torch.Tensor) -> torch.Tensor:
    """Run GPEN on an image in its own [-1, 1] range and return the raw (unclamped) output."""
    return model(image)


class GPENArch(Architecture[GPEN]):
    """spandrel architecture for GPEN: detection from key names, configuration from shapes, strict loading.

    Add it to a private registry (``ArchRegistry().add(ArchSupport.from_architecture(GPENArch()))``). The
    descriptor's ``call_fn`` returns GPEN's raw [-1, 1] output; spandrel's own ``__call__`` clamps to [0, 1],
    so callers that convert ranges must call ``descriptor._call_fn`` (as tessera's loader does).
    """

    def __init__(self) -> None:
        super().__init__(id="GPEN", name="GPEN", detect=KeyCondition.has_all(*_DETECT_KEYS))

    def load(self, state_dict: Mapping[str, torch.Tensor]) -> ImageModelDescriptor[GPEN]:
        state_dict = _strip_prefix(state_dict)
        config = gpen_config_from_state_dict(state_dict)
        # No random initialisation: the descriptor's strict load below overwrites every parameter and buffer.
        with torch.device("meta"):
            model = GPEN(**config)
        model.to_empty(device="cpu")
        size = config["size"]
        return ImageModelDescriptor(
            model,
            state_dict,
            architecture=self,
            purpose="FaceSR",
            tags=[f"{size}px", f"cm{config['channel_multiplier']}", f"narrow{config['narrow']}"],
            supports_half=True,
            supports_bfloat16=True,
            scale=1,
            input_channels=3,
            output_channels=3,
            size_requirements=SizeRequirements(minimum=size, multiple_of=size, square=True),
            tiling=ModelTiling.INTERNAL,
            call_fn=_call_gpen,
        )
