"""ParseNet, the face-parsing network GFPGAN and CodeFormer use (through facexlib) for their paste-back masks.

Written here in plain PyTorch with facexlib's module and parameter names, so the official ``parsing_parsenet.pth``
(a bare state dict) strict-loads: an encoder of residual blocks that halve the size (512 -> 32 px), a body of
residual blocks at 32 px, a decoder that doubles it back, and two 3x3 heads, a 19-class parsing map and an image.
Convolutions use reflection padding; residual blocks use batch norm and LeakyReLU(0.2), their shortcuts a plain
biased convolution when the size or width changes. The network takes 512x512 RGB normalised to [-1, 1] (mean 0.5,
std 0.5), which is what facexlib feeds it.

The classes (CelebAMask-HQ order): 0 background, 1 skin, 2 nose, 3 eyeglasses, 4 left eye, 5 right eye, 6 left
brow, 7 right brow, 8 left ear, 9 right ear, 10 mouth, 11 upper lip, 12 lower lip, 13 hair, 14 hat, 15 earring,
16 necklace, 17 neck, 18 cloth. facexlib's paste-back keeps 1-13 and 15 and drops background, hat, necklace, neck
and cloth (:data:`FACE_CLASSES`).

:func:`parsing_model` wraps a loaded network into a :class:`~tessera.models.descriptor.Model` whose call returns
that face-region mask (1 channel, 0 or 1), so the engine batches it like any other network.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from spandrel import ModelTiling, SizeRequirements
from torch import nn
from torch.nn import functional as F

from ..errors import ModelError
from ..models.descriptor import Model

ARCHITECTURE = "ParseNet"
# The size the network was trained at and facexlib runs it at (in and out).
PARSING_SIZE = 512
# Parsing classes facexlib's paste-back keeps in the face mask (its MASK_COLORMAP's 255 entries).
FACE_CLASSES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15)
CLASS_COUNT = 19

# The keys that say a state dict is ParseNet's (the two heads).
_MASK_HEAD = "out_mask_conv.conv2d.weight"
_IMAGE_HEAD = "out_img_conv.conv2d.weight"
_LEAKY_SLOPE = 0.2


class _Conv(nn.Module):
    """A 3x3 convolution with reflection padding; optionally a nearest 2x upsampling before it ("up") or a stride
    of 2 ("down"), and batch norm plus LeakyReLU after it. Parameters: ``conv2d.*`` and ``norm.norm.*``."""

    def __init__(self, in_channels: int, out_channels: int, *, resample: str = "none", norm: bool = False,
                 activate: bool = False) -> None:
        super().__init__()
        self.upsample = resample == "up"
        self.pad = nn.ReflectionPad2d(1)
        self.conv2d = nn.Conv2d(in_channels, out_channels, 3, stride=2 if resample == "down" else 1, bias=not norm)
        # facexlib nests the batch norm one level down (NormLayer.norm); a ModuleDict gives the same key path.
        self.norm = nn.ModuleDict({"norm": nn.BatchNorm2d(out_channels)}) if norm else None
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv2d(self.pad(x))
        if self.norm is not None:
            x = self.norm["norm"](x)
        return F.leaky_relu(x, _LEAKY_SLOPE) if self.activate else x


class _Residual(nn.Module):
    """Two normalised convolutions plus a shortcut (identity, or a plain convolution when shape changes).
    Downsampling happens in the second convolution, upsampling in the first, as in facexlib."""

    def __init__(self, in_channels: int, out_channels: int, resample: str = "none") -> None:
        super().__init__()
        changes = resample != "none" or in_channels != out_channels
        self.shortcut_func = _Conv(in_channels, out_channels, resample=resample) if changes else None
        self.conv1 = _Conv(in_channels, out_channels, resample="up" if resample == "up" else "none", norm=True,
                           activate=True)
        self.conv2 = _Conv(out_channels, out_channels, resample="down" if resample == "down" else "none",
                           norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut_func is None else self.shortcut_func(x)
        return identity + self.conv2(self.conv1(x))


class ParseNet(nn.Module):
    """facexlib's ParseNet; the defaults are its ``in_size=out_size=512`` configuration (``parsing_parsenet.pth``).

    Widths start at ``base_channels`` and double per downsampling step, clipped to ``channel_range``; the decoder
    halves them back. ``forward`` returns (parsing logits N x classes x H x W, image N x 3 x H x W) like facexlib's.
    """

    def __init__(self, base_channels: int = 64, parsing_channels: int = CLASS_COUNT, res_depth: int = 10,
                 down_steps: int = 4, up_steps: int = 4, channel_range: tuple[int, int] = (32, 256)) -> None:
        super().__init__()
        low, high = channel_range

        def clip(channels: int) -> int:
            return max(low, min(channels, high))

        head = base_channels
        encoder: list[nn.Module] = [_Conv(3, base_channels)]
        for _ in range(down_steps):
            encoder.append(_Residual(clip(head), clip(head * 2), "down"))
            head *= 2
        self.encoder = nn.Sequential(*encoder)
        self.body = nn.Sequential(*(_Residual(clip(head), clip(head)) for _ in range(res_depth)))
        decoder: list[nn.Module] = []
        for _ in range(up_steps):
            decoder.append(_Residual(clip(head), clip(head // 2), "up"))
            head //= 2
        self.decoder = nn.Sequential(*decoder)
        self.out_img_conv = _Conv(clip(head), 3)
        self.out_mask_conv = _Conv(clip(head), parsing_channels)
        self.down_steps = down_steps

    def features(self, x: torch.Tensor) -> torch.Tensor:
        encoded = self.encoder(x)
        return self.decoder(encoded + self.body(encoded))

    def parse(self, x: torch.Tensor) -> torch.Tensor:
        """The parsing logits only (the image head is not computed)."""
        return self.out_mask_conv(self.features(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x)
        return self.out_mask_conv(features), self.out_img_conv(features)


# ---------------------------------------------------------------------------------------------------- loading
def is_parsenet_state(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict holds ParseNet's weights (both of its heads are there)."""
    return _MASK_HEAD in state and _IMAGE_HEAD in state


def _block_count(state: Mapping[str, torch.Tensor], part: str) -> int:
    pattern = re.compile(rf"{part}\.(\d+)\.")
    return len({match.group(1) for key in state if (match := pattern.match(key))})


def _configuration(state: Mapping[str, torch.Tensor]) -> dict:
    """ParseNet's constructor arguments read from the shapes of a state dict."""
    widths = [int(value.shape[0]) for key, value in state.items()
              if key.endswith("conv2d.weight") and key.startswith(("encoder.", "body.", "decoder."))]
    return {
        "base_channels": int(state["encoder.0.conv2d.weight"].shape[0]),
        "parsing_channels": int(state[_MASK_HEAD].shape[0]),
        "res_depth": _block_count(state, "body"),
        "down_steps": _block_count(state, "encoder") - 1,
        "up_steps": _block_count(state, "decoder"),
        # Clipping only shows where it bites, so the narrowest and widest layers give an equivalent range.
        "channel_range": (min(widths), max(widths)),
    }


def load_parsenet(state: Mapping[str, torch.Tensor], source: str = "weights") -> ParseNet:
    """A ParseNet strict-loaded from ``state`` (in eval mode); ModelError naming ``source`` when it does not fit.

    BatchNorm's ``num_batches_tracked`` counters may be missing (older checkpoints): torch fills them in.
    """
    if not is_parsenet_state(state) or "encoder.0.conv2d.weight" not in state:
        raise ModelError(f"{source}: not ParseNet weights (no {_MASK_HEAD!r})")
    try:
        network = ParseNet(**_configuration(state))
        network.load_state_dict(dict(state), strict=True)
    except (RuntimeError, ValueError, KeyError) as error:
        first = " ".join(str(error).split())[:300]
        raise ModelError(f"{source}: weights do not fit ParseNet: {first}") from error
    return network.eval()


def _face_region(network: ParseNet, image: torch.Tensor) -> torch.Tensor:
    """The call of a parsing Model: image in [0, 1] -> 1 where the parsed class belongs to the face, else 0."""
    logits = network.parse(image * 2.0 - 1.0)  # facexlib's normalisation: mean 0.5, std 0.5
    classes = torch.tensor(FACE_CLASSES, device=logits.device)
    return torch.isin(logits.argmax(dim=1, keepdim=True), classes).to(image.dtype)


def parsing_model(network: ParseNet, *, name: str = "facexlib-parsenet", source: str | None = None,
                  license: str | None = None) -> Model:
    """A parsing network as a Model: NCHW RGB in [0, 1] at :data:`PARSING_SIZE` -> N x 1 face-region mask.

    Its task is "parse", so no task takes it for an image-to-image network; ``face_size`` is the input size.
    """
    return Model(
        network=network, name=name, task="parse", architecture=ARCHITECTURE, input_channels=3, output_channels=1,
        size_requirements=SizeRequirements(multiple_of=2 ** network.down_steps, square=True),
        tiling=ModelTiling.DISCOURAGED, supports_half=True, supports_bfloat16=True, face_size=PARSING_SIZE,
        call_fn=_face_region, source=source, license=license,
        details={"classes": FACE_CLASSES, "auxiliary": True},
    )
