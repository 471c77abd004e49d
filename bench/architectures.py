"""Small random-weight networks, one per image-to-image architecture spandrel can detect, for tiling sweeps.

A sweep that compares tiled with untiled output needs every architecture family, not only the one it was tuned
on, and it needs them fast on a 2-core CPU: so each builder here instantiates spandrel's (or
spandrel_extra_arches') own architecture class with few blocks and few channels (a 64x64 forward in well under a
second), seeded so the weights are reproducible, then loads the state dict back through spandrel with tessera's
private registry (``tessera.models.architectures.build_registry``: spandrel's and spandrel_extra_arches'
architectures, spandrel's global registry untouched). The round trip proves that spandrel detects the small
configuration as the intended architecture and yields the descriptor tessera would get for a real file.

Public API:

- ``ARCHITECTURES``: name -> builder returning the loaded ``spandrel.ImageModelDescriptor`` (eval, float32, CPU).
- ``LOCAL``: names whose output depends only on a bounded neighbourhood of each pixel (convolutions, windowed or
  patch-wise attention, no global pooling, whole-image attention, FFT over the image or image statistics).
- ``GLOBAL``: name -> one-line reason it has a whole-image path (tiling can never be exact for these).
- ``WINDOW_PERIOD``: name -> the lattice period the small network works on internally (window it pads to, patch
  size, total down-sampling or unshuffle factor; 1 when none), read from the architecture source: tiles whose
  origins are not multiples of it see different windows than the whole image does.

Caveats per network (e.g. AuraSR draws random style noise on every call) are in ``NOTES``; zero-initialised
parameters (residual scales) are given small random values so no branch is silently switched off. Architectures
left out, with the reason, are in ``SKIPPED``. Run ``.venv/bin/python bench/architectures.py`` for
a table (scale, parameters, 64x64 forward time, locality, period).
"""
from __future__ import annotations

import functools
import importlib
import math
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

SEED = 0


def _cls(module: str, name: str) -> Any:
    """``name`` from spandrel's ``architectures.<module>`` or, failing that, spandrel_extra_arches'."""
    try:
        mod = importlib.import_module(f"spandrel.architectures.{module}")
    except ImportError:
        with warnings.catch_warnings():  # it scripts modules at import, which newer torch flags as deprecated
            warnings.simplefilter("ignore", FutureWarning)
            mod = importlib.import_module(f"spandrel_extra_arches.architectures.{module}")
    return getattr(mod, name)


def _make(module: str, name: str, **kwargs: Any) -> Callable[[], torch.nn.Module]:
    """A factory for ``module.name(**kwargs)``, the class imported only when the network is built."""
    return lambda: _cls(module, name)(**kwargs)


SWIN = dict(embed_dim=24, depths=(2,), num_heads=(2,), window_size=8, mlp_ratio=2.0)

# name -> (spandrel architecture id, scale, factory). The small configurations follow the hyperparameter ranges
# that spandrel's own detection tests use; every one is checked by loading it back through spandrel.
_SPECS: dict[str, tuple[str, int, Callable[[], torch.nn.Module]]] = {
    "Compact": ("Compact", 4, _make("Compact", "Compact", num_feat=16, num_conv=4, upscale=4)),
    "ESRGAN": ("ESRGAN", 4, _make("ESRGAN", "ESRGAN", num_filters=16, num_blocks=1, scale=4)),
    "SPAN": ("SPAN", 4, _make("SPAN", "SPAN", num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=4)),
    "SwiftSRGAN": ("SwiftSRGAN", 2, _make("SwiftSRGAN", "SwiftSRGAN", num_channels=16, num_blocks=2,
                                          upscale_factor=2)),
    "DnCNN": ("DnCNN", 1, _make("DnCNN", "DnCNN", in_nc=3, out_nc=3, nc=16, nb=8, act_mode="R")),
    "DRUNet": ("DRUNet", 1, _make("DRUNet", "DRUNet", in_nc=4, out_nc=3, nc=[8, 16, 32, 64], nb=2)),
    "FBCNN": ("FBCNN", 1, _make("FBCNN", "FBCNN", nc=[8, 16, 32, 512], nb=2)),
    "PLKSR": ("PLKSR", 2, _make("PLKSR", "PLKSR", dim=16, n_blocks=2, upscaling_factor=2, kernel_size=9)),
    "RealPLKSR": ("PLKSR", 2, _make("PLKSR", "RealPLKSR", dim=16, n_blocks=2, upscaling_factor=2,
                                    kernel_size=9)),
    "MoSR": ("MoSR", 2, _make("MoSR", "MoSR", n_block=2, dim=16, upscale=2)),
    "MoESR": ("MoESR", 2, _make("MoESR", "MoESR", dim=16, n_blocks=2, n_block=1, scale=2, upsample_dim=16)),
    "SAFMN": ("SAFMN", 2, _make("SAFMN", "SAFMN", dim=8, n_blocks=2, upscaling_factor=2)),
    "SAFMNBCIE": ("SAFMNBCIE", 1, _make("SAFMNBCIE", "SAFMNBCIE", dim=8, n_blocks=2, num_layers=1,
                                        upscaling_factor=2)),
    "SeemoRe": ("SeemoRe", 2, _make("SeemoRe", "SeemoRe", scale=2, num_experts=2, num_layers=1,
                                    embedding_dim=16, recursive=1)),
    "RCAN": ("RCAN", 2, _make("RCAN", "RCAN", scale=2, n_resgroups=1, n_resblocks=2, n_feats=16, reduction=4)),
    "RealCUGAN": ("RealCUGAN", 2, _make("RealCUGAN", "UpCunet2x", in_channels=3, out_channels=3)),
    "RealCUGAN_fast": ("RealCUGAN", 2, _make("RealCUGAN", "UpCunet2x_fast", in_channels=3, out_channels=3)),
    "DCTLSA": ("DCTLSA", 2, _make("DCTLSA", "DCTLSA", nf=20, num_modules=6, upscale=2, num_head=5)),
    "DITN": ("DITN", 2, _make("DITN", "DITN", dim=16, ITL_blocks=1, SAL_blocks=1, UFONE_blocks=1, upscale=2)),
    "OmniSR": ("OmniSR", 2, _make("OmniSR", "OmniSR", num_feat=16, block_num=1, window_size=8, res_num=1,
                                  up_scale=2)),
    "SwinIR": ("SwinIR", 2, _make("SwinIR", "SwinIR", **SWIN, upscale=2, upsampler="pixelshuffledirect")),
    "Swin2SR": ("Swin2SR", 2, _make("Swin2SR", "Swin2SR", **SWIN, upscale=2, upsampler="pixelshuffledirect")),
    "SRFormer": ("SRFormer", 2, _make("SRFormer", "SRFormer", **SWIN, upscale=2, upsampler="pixelshuffledirect")),
    "HAT": ("HAT", 2, _make("HAT", "HAT", **SWIN, upscale=2, num_feat=16, compress_ratio=3, squeeze_factor=4)),
    "DRCT": ("DRCT", 2, _make("DRCT", "DRCT", **SWIN, upscale=2, upsampler="pixelshuffle", gc=8)),
    "ATD": ("ATD", 2, _make("ATD", "ATD", **SWIN, upscale=2, upsampler="pixelshuffledirect", num_tokens=16,
                            category_size=64)),
    "DAT": ("DAT", 2, _make("DAT", "DAT", embed_dim=24, depth=[2], num_heads=[2], split_size=[2, 4],
                            expansion_factor=2.0, upscale=2)),
    "RGT": ("RGT", 2, _make("RGT", "RGT", embed_dim=24, depth=[2], num_heads=[2], split_size=[8, 8],
                            mlp_ratio=2.0, upscale=2)),
    "CRAFT": ("CRAFT", 2, _make("CRAFT", "CRAFT", embed_dim=24, depths=[1], num_heads=[2], upscale=2)),
    "GRL": ("GRL", 2, _make("GRL", "GRL", embed_dim=16, depths=[1], num_heads_window=[1], num_heads_stripe=[1],
                            upscale=2, upsampler="pixelshuffledirect", mlp_ratio=2.0)),
    "FDAT": ("FDAT", 2, _make("FDAT", "FDAT", embed_dim=24, num_groups=1, depth_per_group=2, num_heads=2,
                              scale=2, upsampler_type="pixelshuffle", mid_dim=16)),
    "IPT": ("IPT", 2, _make("IPT", "IPT", patch_size=24, n_feats=16, num_layers=1, scale=[2], rgb_range=1)),
    "MMRealSR": ("MMRealSR", 4, _make("MMRealSR", "MMRealSR", num_in_ch=3, num_out_ch=3, num_block=1,
                                      num_feat=16, num_grow_ch=8, num_feats=[16, 32, 64, 128])),
    "SCUNet": ("SCUNet", 1, _make("SCUNet", "SCUNet", dim=64, config=[1, 1, 1, 1, 1, 1, 1])),
    "Uformer": ("Uformer", 1, _make("Uformer", "Uformer", embed_dim=4, depths=[1] * 9)),
    "NAFNet": ("NAFNet", 1, _make("NAFNet", "NAFNet", width=8, middle_blk_num=1, enc_blk_nums=[1, 1],
                                  dec_blk_nums=[1, 1])),
    "KBNet_s": ("KBNet", 1, _make("KBNet", "KBNet_s", width=16, middle_blk_num=1, enc_blk_nums=[1, 1, 1, 1],
                                  dec_blk_nums=[1, 1, 1, 1])),
    "KBNet_l": ("KBNet", 1, _make("KBNet", "KBNet_l", dim=24, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
                                  heads=[1, 1, 1, 1])),
    "FFTformer": ("FFTformer", 1, _make("FFTformer", "FFTformer", dim=8, num_blocks=[1, 1, 1],
                                        num_refinement_blocks=1)),
    "HVICIDNet": ("HVICIDNet", 1, _make("HVICIDNet", "HVICIDNet", channels=[8, 8, 16, 32], heads=[1, 1, 2, 4])),
    "RetinexFormer": ("RetinexFormer", 1, _make("RetinexFormer", "RetinexFormer", n_feat=8, stage=1,
                                                num_blocks=[1, 1, 1])),
    "MixDehazeNet": ("MixDehazeNet", 1, _make("MixDehazeNet", "MixDehazeNet", embed_dims=[8, 16, 32, 16, 8],
                                              depths=[1, 1, 1, 1, 1])),
    "Restormer": ("Restormer", 1, _make("Restormer", "Restormer", dim=8, num_blocks=[1, 1, 1, 1],
                                        num_refinement_blocks=1, heads=[1, 1, 1, 1])),
    "M3SNet": ("M3SNet", 1, _make("M3SNet", "M3SNet", width=8, enc_blk_nums=[1, 1, 1, 1],
                                  dec_blk_nums=[1, 1, 1, 1])),
    "MIRNet2": ("MIRNet2", 1, _make("MIRNet2", "MIRNet2", n_feat=16, n_MRB=1)),
    "MPRNet": ("MPRNet", 1, _make("MPRNet", "MPRNet", n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8,
                                  num_cab=1)),
    "FeMaSR": ("FeMaSR", 2, _make("FeMaSR", "FeMaSR", codebook_params=[[32, 64, 32]], LQ_stage=True,
                                  scale_factor=2)),
    "AdaCode": ("AdaCode", 2, _make("AdaCode", "AdaCode", codebook_params=[[32, 64, 32]], LQ_stage=True,
                                    scale_factor=2)),
    "AuraSR": ("AuraSR", 4, _make("AuraSR", "AuraSR", dim=8, image_size=256, input_image_size=64,
                                  style_network=dict(dim_in=16, dim_out=64, depth=1), full_attn=(False,) * 5,
                                  mid_attn_depth=1, self_attn_heads=8, self_attn_dim_head=4, num_conv_kernels=2,
                                  flash_attn=False, skip_connect_scale=0.4)),
}


# Read from each architecture's source (spandrel 0.4.2, spandrel_extra_arches 0.2.0); see the module docstring.
LOCAL: frozenset[str] = frozenset({
    "Compact", "ESRGAN", "SPAN", "SwiftSRGAN", "DnCNN", "DRUNet", "PLKSR", "MoSR", "MoESR", "SAFMN",
    "SAFMNBCIE", "DITN", "SwinIR", "Swin2SR", "SRFormer", "DRCT", "GRL", "IPT", "SCUNet",
    "Uformer", "FFTformer",
})

GLOBAL: dict[str, str] = {
    "FBCNN": "JPEG quality predictor: global average pooling, its output modulates the whole decoder",
    "RealPLKSR": "GroupNorm in every block: statistics over the whole image",
    "SeemoRe": "expert router from global average pooling (Router: AdaptiveAvgPool2d(1))",
    "RCAN": "channel attention from global average pooling (CALayer)",
    "RealCUGAN": "squeeze-and-excitation over the whole input (SEBlock: mean over H, W)",
    "RealCUGAN_fast": "squeeze-and-excitation over the whole input (SEBlock: mean over H, W)",
    "DCTLSA": "shifted windows rolled without a mask: the image border wraps round to the opposite border",
    "CRAFT": "hybrid fusion block: transposed (channel) attention over all pixels (HFB)",
    "OmniSR": "grid attention (tokens H/window apart, spanning the image) and squeeze-excitation in MBConv",
    "HAT": "channel attention block (CAB) from global average pooling",
    "ATD": "category attention groups tokens from the whole image by their token-dictionary similarity",
    "DAT": "adaptive channel self-attention over all pixels, and global pooling in its interaction module",
    "RGT": "recursive-generalization attention: every pixel attends to stride-4 summaries of the whole image",
    "FDAT": "channel attention over all pixels and global average pooling",
    "MMRealSR": "degradation estimator with global average pooling modulates the whole network",
    "NAFNet": "simplified channel attention (global average pooling)",
    "KBNet_s": "simplified channel attention (global average pooling)",
    "KBNet_l": "transposed (channel) attention over all pixels and global average pooling",
    "HVICIDNet": "cross attention over channels of all pixels (LCA)",
    "RetinexFormer": "illumination-guided attention over channels of all pixels (IG-MSA)",
    "MixDehazeNet": "channel attention from global average pooling",
    "Restormer": "transposed (channel) attention over all pixels (MDTA)",
    "M3SNet": "global average pooling (simplified channel attention) and transposed attention",
    "MIRNet2": "selective kernel fusion and context blocks from global average pooling",
    "MPRNet": "channel attention from global average pooling; stages split the image into fixed halves/quarters",
    "FeMaSR": "GroupNorm (whole-image statistics) in the encoder/decoder",
    "AdaCode": "GroupNorm (whole-image statistics) in the encoder/decoder",
    "AuraSR": "full attention in the bottleneck, and a style vector drawn from torch.randn on every call",
}

# Lattice period of the small configurations above (window, patch, total down-sampling or unshuffle; 1 if none).
WINDOW_PERIOD: dict[str, int] = {
    "Compact": 1, "ESRGAN": 1, "SPAN": 1, "SwiftSRGAN": 1, "DnCNN": 1, "PLKSR": 1, "RealPLKSR": 1, "MoSR": 1,
    "RCAN": 1, "MMRealSR": 1,
    "MoESR": 2,  # MSG branch: PixelUnshuffle(2)
    "DRUNet": 8, "FBCNN": 8, "HVICIDNet": 8, "KBNet_l": 8, "Restormer": 8,  # three stride-2 levels
    "NAFNet": 4, "MIRNet2": 4, "MixDehazeNet": 4, "RetinexFormer": 4,  # two stride-2 levels
    "KBNet_s": 16, "M3SNet": 16,  # four stride-2 levels
    "SAFMN": 8,  # SAFM pools to h / 2**3 at its deepest of 4 levels
    "SAFMNBCIE": 16,  # PixelUnshuffle(2) in front of SAFM's 8
    "SeemoRe": 4,  # stride-4 aggregation conv
    "RealCUGAN": 4, "RealCUGAN_fast": 8,  # UNet2's two stride-2 convs (fast: after PixelUnshuffle(2))
    "DCTLSA": 16,  # window_size fixed to 16 in its LSAB
    "DITN": 8,  # patch_size (ISA runs inside 8x8 patches)
    "OmniSR": 8, "SwinIR": 8, "Swin2SR": 8, "SRFormer": 8, "HAT": 8, "DRCT": 8, "ATD": 8, "GRL": 8,
    "FDAT": 8,  # window_size 8
    "DAT": 4,  # rectangle windows 2x4 and 4x2
    "RGT": 8,  # rectangle windows 8x8, stride-4 reduction
    "CRAFT": 16,  # window_size 16 (split 4x16)
    "IPT": 6,  # forward_chop: 24 px patches every 24 // 4 px
    "SCUNet": 64,  # pads to 64: 8 px windows at 1/8 resolution
    "Uformer": 128,  # 8 px windows at 1/16 resolution (spandrel pads to a square multiple of 128)
    "FFTformer": 32,  # 8 px FFT patches at 1/4 resolution
    "MPRNet": 8, "FeMaSR": 32, "AdaCode": 32, "AuraSR": 8,
}

# Caveats the sweep should know about, beyond the LOCAL / GLOBAL split.
NOTES: dict[str, str] = {
    "IPT": "spandrel runs it through forward_chop: 24 px patches, global attention inside each, averaged",
    "DITN": "its ISA channel attention runs inside 8x8 patches (UFONE), so it stays local",
    "AuraSR": "seed torch before every call: the style noise is random",
    "MMRealSR": "global by source, but these random weights make its degradation estimate constant",
    "Uformer": "spandrel pads every input to a square multiple of 128 (a 64x64 forward runs 128x128)",
}

SKIPPED: dict[str, str] = {
    "LaMa": "inpainting (MaskedImageModelDescriptor, needs a mask)",
    "MAT": "inpainting (MaskedImageModelDescriptor, needs a mask)",
    "GFPGAN": "face model with a fixed 512x512 input",
    "CodeFormer": "face model with a fixed 512x512 input (square multiple of 512)",
    "RestoreFormer": "face model for aligned 512x512 faces",
    "DDColor": "colorisation of a grey image resized to a fixed input_size; small decoders fail in forward",
}


def _wake_zero_parameters(net: torch.nn.Module, std: float = 0.05) -> None:
    """Give every all-zero parameter small random values (in place, from torch's seeded generator).

    Many architectures zero-initialise their residual scales (NAFNet's beta/gamma, DITN's SDA scale, ...) so a
    freshly built network skips those branches; random weights there would hide a whole-image path from a sweep.
    """
    with torch.no_grad():
        for param in net.parameters():
            if param.is_floating_point() and param.numel() and not bool(param.any()):
                param.normal_(0.0, std)


def _load(name: str) -> Any:
    """Build ``name``'s small network (seeded), load it back through spandrel, check what spandrel detected.

    Raises ``tessera.errors.ModelError`` when spandrel detects another architecture or scale, or returns a
    descriptor that is not an ``ImageModelDescriptor``.
    """
    import spandrel
    from tessera.errors import ModelError
    from tessera.models.architectures import build_registry

    arch_id, scale, factory = _SPECS[name]
    torch.manual_seed(SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spandrel and torch deprecation notes (meshgrid indexing, ...)
        net = factory()
        _wake_zero_parameters(net)
        state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        descriptor = spandrel.ModelLoader(registry=build_registry()).load_from_state_dict(state)
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelError(f"{name}: spandrel returned a {type(descriptor).__name__}, not an ImageModelDescriptor")
    if descriptor.architecture.id != arch_id or descriptor.scale != scale:
        raise ModelError(f"{name}: spandrel detected {descriptor.architecture.id} x{descriptor.scale}, "
                         f"built {arch_id} x{scale}")
    return descriptor.to(torch.device("cpu")).to(torch.float32).eval()


ARCHITECTURES: dict[str, Callable[[], Any]] = {name: functools.partial(_load, name) for name in _SPECS}


def locality(name: str) -> str:
    """``"LOCAL"``, ``"GLOBAL: <reason>"`` or ``"unknown"`` for one architecture name."""
    if name in LOCAL:
        return "LOCAL"
    if name in GLOBAL:
        return f"GLOBAL: {GLOBAL[name]}"
    return "unknown"


def forward_time(descriptor: Any, size: int = 64, repeats: int = 3) -> float:
    """Best of ``repeats`` timed forwards of a ``size`` x ``size`` random image (after one warm-up), seconds."""
    x = torch.rand(1, descriptor.input_channels, size, size, generator=torch.Generator().manual_seed(SEED))
    best = math.inf
    with torch.inference_mode():
        descriptor(x)
        for _ in range(repeats):
            start = time.perf_counter()
            descriptor(x)
            best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str]) -> int:
    """Print name, scale, parameters, 64x64 forward time, locality and period for the named (or all) networks."""
    names = argv or list(ARCHITECTURES)
    unknown = [n for n in names if n not in ARCHITECTURES]
    if unknown:
        from tessera.errors import OptionError

        raise OptionError(f"unknown architecture(s) {', '.join(unknown)}; known: {', '.join(ARCHITECTURES)}")
    print(f"torch threads {torch.get_num_threads()}")
    print(f"{'name':15s} {'scale':>5s} {'params':>10s} {'64px s':>7s} {'period':>6s}  locality")
    for name in names:
        descriptor = ARCHITECTURES[name]()
        params = sum(p.numel() for p in descriptor.model.parameters())
        seconds = forward_time(descriptor)
        print(f"{name:15s} {descriptor.scale:5d} {params:10d} {seconds:7.3f} {WINDOW_PERIOD[name]:6d}  "
              f"{locality(name)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
