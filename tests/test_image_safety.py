"""Decoding hostile files (issue #9): the allow-list of decoders, the memory bound, the memory-aware default limit,
headers that lie about their size, and a representative part of bench/security.py's corpus through the CLI."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
import types
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
import tifffile
from PIL import EpsImagePlugin, Image, ImageCms
from skimage import data as skdata

from conftest import load_bench
from test_image import cmyk_gray_profile

from tessera.cli import main
from tessera.errors import ImageReadError, ImageTooLargeError, OptionError
from tessera.image import decode as image_decode
from tessera.image.read import FirstFrameWarning, load_image, read_image_size
from tessera.image.write import save_image


@pytest.fixture(scope="module")
def bench() -> types.ModuleType:
    return load_bench("security")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(skdata.astronaut()[::2, ::2])  # 256 x 256


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def raw_png(
    rows: np.ndarray,
    colour_type: int,
    *,
    interlaced: bool = False,
    claimed_height: int | None = None,
    claimed_width: int | None = None,
) -> bytes:
    """A PNG of ``rows`` (HxW or HxWxC, uint8 or uint16) written by hand: filter 0 everywhere, Adam7 if asked,
    and a header that may claim another size than the rows it holds."""
    height, width = rows.shape[:2]
    depth = 16 if rows.dtype == np.uint16 else 8
    samples = rows.astype(">u2") if depth == 16 else rows
    passes = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1))
    parts = [samples[top::dy, left::dx] for top, left, dy, dx in passes] if interlaced else [samples]
    raw = b"".join(b"\x00" + row.tobytes() for part in parts if part.size for row in part)
    header = struct.pack(">IIBBBBB", claimed_width or width, claimed_height or height, depth, colour_type, 0, 0,
                         int(interlaced))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


# ------------------------------------------------------------------------------------ 1. the allow-list


@pytest.fixture
def fake_ghostscript(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bench: types.ModuleType) -> Path:
    """A ``gs`` first on PATH that only leaves a marker behind (the bench's); Pillow is made to look for gs afresh."""
    folder, marker = bench.fake_ghostscript(tmp_path)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # as in a fresh process: Pillow would find ours
    return marker


def test_eps_named_png_is_refused_without_running_ghostscript(
    tmp_path: Path, fake_ghostscript: Path, bench: types.ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(bench.EPS)
    with pytest.raises(ImageReadError, match=r"not an image tessera reads \(PostScript/EPS is not read") as caught:
        load_image(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ImageReadError, match="not an image tessera reads"):
        read_image_size(path)
    assert main(["upscale", str(path), "-o", str(tmp_path / "out.png"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert not fake_ghostscript.exists()
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("kind", ["pdf", "psd", "ppm", "jpeg2000", "ico"])
def test_other_formats_are_refused_whatever_their_suffix(
    tmp_path: Path, photo: np.ndarray, bench: types.ModuleType, kind: str
) -> None:
    """PDF and PSD headers, and valid files of formats Pillow reads but tessera does not, all named .png."""
    if kind in ("pdf", "psd"):
        data = bench.PDF if kind == "pdf" else bench.PSD
    else:
        buffer = io.BytesIO()
        Image.fromarray(photo[:64, :64]).save(buffer, {"ppm": "PPM", "jpeg2000": "JPEG2000", "ico": "ICO"}[kind])
        data = buffer.getvalue()
    path = tmp_path / f"{kind}.png"
    path.write_bytes(data)
    with pytest.raises(ImageReadError, match=r"not an image tessera reads \(.*it reads PNG, JPEG, WEBP, TIFF, BMP"):
        load_image(path)


def test_each_allowed_format_is_read_by_content_whatever_its_suffix(tmp_path: Path, photo: np.ndarray) -> None:
    for suffix, wrong in ((".png", ".jpg"), (".tif", ".png"), (".bmp", ".gif"), (".webp", ".bmp")):
        written = save_image(photo, tmp_path / f"a{suffix}")
        renamed = tmp_path / f"b{wrong}"
        renamed.write_bytes(written.read_bytes())
        np.testing.assert_array_equal(load_image(renamed).pixels, load_image(written).pixels)


def test_animated_gif_gives_its_first_frame_with_a_warning(tmp_path: Path, photo: np.ndarray) -> None:
    frames = [Image.fromarray(np.roll(photo, shift * 50, axis=1)).quantize(32) for shift in range(3)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    with pytest.warns(FirstFrameWarning, match="only its first frame") as caught:
        picture = load_image(path)
    assert len(caught) == 1
    np.testing.assert_array_equal(picture.pixels, np.asarray(frames[0].convert("RGB")))
    still = tmp_path / "still.gif"
    frames[0].save(still)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FirstFrameWarning)
        load_image(still)


def test_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    started = time.perf_counter()
    with pytest.raises(ImageReadError, match="not a regular file"):
        load_image(fifo)  # today's open() waits for a writer forever
    assert time.perf_counter() - started < 5


# ------------------------------------------------------------------------------ every decoder agrees with Pillow


def _modes(photo: np.ndarray) -> dict[str, bytes]:
    """Files in every mode the decoders convert band by band, written by Pillow."""
    rgba = np.dstack([photo, photo[:, :, 0]])
    files = {}
    for name, image, fmt, options in (
        ("rgb.png", Image.fromarray(photo), "PNG", {}),
        ("rgba.png", Image.fromarray(rgba), "PNG", {}),
        ("la.png", Image.fromarray(rgba[:, :, [0, 3]], "LA"), "PNG", {}),
        ("l.png", Image.fromarray(photo[:, :, 1]), "PNG", {}),
        ("1.png", Image.fromarray(photo[:, :, 1]).convert("1"), "PNG", {}),
        ("p.png", Image.fromarray(photo).quantize(40), "PNG", {}),
        ("p-key.png", Image.fromarray(photo).quantize(40), "PNG", {"transparency": 3}),
        ("rgb-key.png", Image.fromarray(photo), "PNG", {"transparency": tuple(int(v) for v in photo[0, 0])}),
        ("cmyk.jpg", Image.fromarray(photo).convert("CMYK"), "JPEG", {"quality": 95}),
        ("progressive.jpg", Image.fromarray(photo), "JPEG", {"progressive": True}),
        ("gray.jpg", Image.fromarray(photo[:, :, 2]), "JPEG", {}),
        ("rgb.bmp", Image.fromarray(photo), "BMP", {}),
        ("p.bmp", Image.fromarray(photo).quantize(16), "BMP", {}),
        ("p-key.gif", Image.fromarray(photo).quantize(16), "GIF", {"transparency": 2}),
        ("rgba.webp", Image.fromarray(rgba), "WEBP", {"lossless": True}),
    ):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        files[name] = buffer.getvalue()
    return files


@pytest.fixture
def small_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bands of a row or two, so that small pictures go through many bands (and each band's edge cases)."""
    monkeypatch.setattr(image_decode, "BAND_BYTES", 1 << 12)


@pytest.mark.usefixtures("small_bands")
def test_band_by_band_decoding_matches_pillow_in_every_mode(tmp_path: Path, photo: np.ndarray) -> None:
    for name, data in _modes(np.ascontiguousarray(photo[:72, :100])).items():
        path = tmp_path / name
        path.write_bytes(data)
        picture = load_image(path)
        reference = Image.open(path)
        expected = np.asarray(reference.convert("RGBA" if picture.alpha is not None else "RGB"))
        got = picture.pixels if picture.alpha is None else np.dstack([picture.pixels, picture.alpha])
        np.testing.assert_array_equal(got, expected, err_msg=name)


@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize("interlaced", [False, True])
@pytest.mark.parametrize("colour_type, samples", [(0, 1), (2, 3), (4, 2), (6, 4)])
def test_png_of_every_colour_type_and_depth_is_read_exactly(
    tmp_path: Path, rng: np.random.Generator, colour_type: int, samples: int, interlaced: bool
) -> None:
    for dtype in (np.uint8, np.uint16):
        values = rng.integers(0, np.iinfo(dtype).max, (29, 43, samples), endpoint=True).astype(dtype)
        path = tmp_path / f"t{colour_type}-{dtype.__name__}.png"
        path.write_bytes(raw_png(values[:, :, 0] if samples == 1 else values, colour_type, interlaced=interlaced))
        picture = load_image(path)
        colour = values[:, :, :3] if samples >= 3 else np.repeat(values[:, :, :1], 3, axis=2)
        np.testing.assert_array_equal(picture.pixels, colour)
        if samples in (2, 4):
            assert picture.alpha is not None
            np.testing.assert_array_equal(picture.alpha, values[:, :, -1])
        else:
            assert picture.alpha is None
        assert picture.pixels.dtype == dtype and picture.gray == (samples <= 2)


@pytest.mark.usefixtures("small_bands")
def test_cmyk_profile_is_read_once_for_all_bands(
    tmp_path: Path, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CMYK JPEG is converted band by band (here 256 bands): its colour transform is built, or an unusable
    profile warned about, once for the picture, and the bands together match one conversion of the whole."""
    cmyk = Image.fromarray(photo).convert("CMYK")
    profile = cmyk_gray_profile()
    cmyk.save(tmp_path / "icc.jpg", quality=95, icc_profile=profile)
    cmyk.save(tmp_path / "bad.jpg", quality=95, icc_profile=b"not an ICC profile" * 20)
    built = []

    class CountedTransform(ImageCms.ImageCmsTransform):
        def __init__(self, *args: object, **kwargs: object) -> None:
            built.append(args)
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    with monkeypatch.context() as patch:  # the bands stay small: ``small_bands`` shares ``monkeypatch``
        patch.setattr(ImageCms, "ImageCmsTransform", CountedTransform)
        managed = load_image(tmp_path / "icc.jpg")
    assert len(built) == 1
    source, target = ImageCms.ImageCmsProfile(io.BytesIO(profile)), ImageCms.createProfile("sRGB")
    with Image.open(tmp_path / "icc.jpg") as whole:
        expected = np.asarray(ImageCms.profileToProfile(whole, source, target, outputMode="RGB"))
    np.testing.assert_array_equal(managed.pixels, expected)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        naive = load_image(tmp_path / "bad.jpg")
    assert len([item for item in caught if "ICC profile unusable" in str(item.message)]) == 1
    with Image.open(tmp_path / "bad.jpg") as whole:
        np.testing.assert_array_equal(naive.pixels, np.asarray(whole.convert("RGB")))


def test_16_bit_transparent_keys_become_alpha(tmp_path: Path, rng: np.random.Generator) -> None:
    rgb = rng.integers(0, 65535, (20, 30, 3), endpoint=True).astype(np.uint16)
    rgb[3, 4] = (1000, 2000, 3000)
    data = raw_png(rgb, 2)
    keyed = data[:33] + png_chunk(b"tRNS", struct.pack(">HHH", 1000, 2000, 3000)) + data[33:]
    (tmp_path / "key.png").write_bytes(keyed)
    picture = load_image(tmp_path / "key.png")
    assert picture.alpha is not None and picture.alpha[3, 4] == 0 and int((picture.alpha == 0).sum()) == 1
    np.testing.assert_array_equal(picture.pixels, rgb)


@pytest.mark.usefixtures("small_bands")
@pytest.mark.parametrize("orientation", [2, 3, 4])
def test_in_place_flips_match_numpy(tmp_path: Path, orientation: int) -> None:
    """The flips work in place, band by band: an odd number of rows, bands of a few rows."""
    values = np.random.default_rng(orientation).integers(0, 255, (101, 67, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(values).save(tmp_path / "o.png", exif=exif.tobytes())
    expected = {2: values[:, ::-1], 3: values[::-1, ::-1], 4: values[::-1]}[orientation]
    np.testing.assert_array_equal(load_image(tmp_path / "o.png").pixels, expected)


# -------------------------------------------------------------------------------------- 2. memory bound

PEAK_SLACK = 16 << 20  # a band of the conversions, zlib's and the decoders' buffers, Python's allocations


def _big_picture(side: int, channels: int, dtype: type) -> np.ndarray:
    """A side x side photograph (astronaut, tiled) with some noise: neither flat nor incompressible."""
    tile = skdata.astronaut()
    rows = np.tile(tile, (-(-side // 512), -(-side // 512), 1))[:side, :side]
    picture = np.dstack([rows, rows[:, :, :1]])[:, :, :channels] if channels != 1 else rows[:, :, 1]
    picture = picture ^ (np.arange(side, dtype=np.uint8)[:, None, None] if channels != 1 else np.uint8(0))
    return picture.astype(np.uint16) * 257 if dtype == np.uint16 else picture


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, channels, dtype",
    [("rgb.png", 3, np.uint8), ("rgba.png", 4, np.uint8), ("gray.png", 1, np.uint8), ("rgb16.png", 3, np.uint16),
     ("rgba16.png", 4, np.uint16), ("rgb.jpg", 3, np.uint8), ("rgb.bmp", 3, np.uint8), ("rgba.tif", 4, np.uint8),
     ("rgb16.tif", 3, np.uint16)],
)
def test_decoding_peaks_at_one_and_a_half_times_the_pixels(
    tmp_path: Path, bench: types.ModuleType, name: str, channels: int, dtype: type
) -> None:
    """Peak resident memory of a fresh process loading a 6000x6000 picture, over its baseline after imports."""
    path = tmp_path / name
    values = _big_picture(6000, channels, dtype)
    if name.endswith(".png") and dtype == np.uint16:
        cv2.imwrite(str(path), values[:, :, [2, 1, 0, 3][:channels]], [cv2.IMWRITE_PNG_COMPRESSION, 1])
    elif name.endswith(".tif"):
        tifffile.imwrite(path, values, photometric="rgb", extrasamples=["unassalpha"] if channels == 4 else None)
    else:
        Image.fromarray(values).save(path, compress_level=1) if name.endswith(".png") else Image.fromarray(
            values).save(path)
    del values
    done = subprocess.run([sys.executable, "-c", bench.PEAK_CHILD, str(path)], capture_output=True, text=True,
                          check=True, timeout=300)
    figures = json.loads(done.stdout)
    growth = figures["peak"] - figures["baseline"]
    assert growth <= 1.5 * figures["decoded"] + PEAK_SLACK, (
        f"{name}: peak {growth / figures['decoded']:.2f}x the decoded bytes")
    if name in ("rgb.png", "rgb.jpg", "rgb.bmp"):  # Pillow's storage (4 bytes a pixel) gave its spare quarter back
        assert figures["kept"] <= 1.05 * figures["decoded"] + PEAK_SLACK, (
            f"{name}: keeps {figures['kept'] / figures['decoded']:.2f}x the decoded bytes")


# ------------------------------------------------------------------------------- 3. memory-aware default


def _available(monkeypatch: pytest.MonkeyPatch, available: int) -> None:
    memory = psutil.virtual_memory()._replace(available=available)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory)


def test_default_limit_refuses_what_would_not_fit_in_available_memory(
    tmp_path: Path, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_image(photo, tmp_path / "a.png")  # 256 x 256 RGB: 192 KiB decoded, up to 288 KiB decoding
    _available(monkeypatch, 300 << 10)  # 75 % of it is 225 KiB

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded although it does not fit")

    monkeypatch.setattr(Image.Image, "load", refuse)
    with pytest.raises(ImageTooLargeError) as caught:
        load_image(path)
    message = str(caught.value)
    assert "256x256 = 65,536 pixels" in message and "192.0 KiB decoded" in message
    assert "300.0 KiB of memory available" in message and "the limit is 51,200 pixels" in message
    assert "--max-pixels" in message and "\n" not in message
    monkeypatch.undo()
    _available(monkeypatch, 300 << 10)
    np.testing.assert_array_equal(load_image(path, max_pixels=65_536).pixels, photo)  # an explicit limit wins
    _available(monkeypatch, 400 << 10)
    np.testing.assert_array_equal(load_image(path, max_pixels="auto").pixels, photo)


def test_memory_limit_counts_what_the_decoded_picture_takes(
    tmp_path: Path, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16-bit RGB takes 6 bytes a pixel; a lossless WEBP decodes with libwebp's own frame besides (3.5 times)."""
    path16 = save_image(photo.astype(np.uint16) * 257, tmp_path / "a.png")
    Image.fromarray(photo).save(tmp_path / "a.webp", lossless=True)
    _available(monkeypatch, 1 << 20)
    load_image(path16)  # 6 bytes a pixel x 1.5 = 576 KiB, within 768 KiB
    load_image(tmp_path / "a.webp")  # 3 bytes a pixel x 3.5 = 672 KiB
    _available(monkeypatch, 700 << 10)
    with pytest.raises(ImageTooLargeError, match="384.0 KiB decoded"):
        load_image(path16)
    with pytest.raises(ImageTooLargeError, match="192.0 KiB decoded and up to 672.0 KiB while decoding"):
        load_image(tmp_path / "a.webp")


@pytest.mark.parametrize("value", [0, -5, True, 1.5, "big"])
def test_max_pixels_must_be_a_positive_integer_auto_or_none(tmp_path: Path, photo: np.ndarray, value: object) -> None:
    path = save_image(photo, tmp_path / "a.png")
    with pytest.raises(OptionError, match="max_pixels must be a positive integer, 'auto' or None"):
        load_image(path, max_pixels=value)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- 4. headers that lie


def _never_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the decoder ran")

    monkeypatch.setattr(Image.Image, "load", refuse)


def test_jpeg_claiming_20000x20000_is_refused_as_truncated_before_decoding(
    tmp_path: Path, bench: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = io.BytesIO()
    Image.fromarray(skdata.astronaut()).save(buffer, "JPEG", quality=75)
    for progressive in (False, True):
        data = buffer.getvalue()
        if progressive:
            other = io.BytesIO()
            Image.fromarray(skdata.astronaut()).save(other, "JPEG", quality=75, progressive=True)
            data = other.getvalue()
        path = tmp_path / f"lie{int(progressive)}.jpg"
        path.write_bytes(bench.jpeg_with_size(data, 20_000, 20_000))
        assert path.stat().st_size < 60_000
        with monkeypatch.context() as patch:
            _never_decoded(patch)
            started = time.perf_counter()
            with pytest.raises(ImageReadError, match=r"truncated .*claims 20000x20000 pixels, which take at least"):
                load_image(path)
            assert time.perf_counter() - started < 1


def test_png_whose_rows_end_early_is_refused_as_truncated(tmp_path: Path, rng: np.random.Generator) -> None:
    for dtype, colour_type, samples in ((np.uint8, 2, 3), (np.uint8, 3, 1), (np.uint16, 2, 3), (np.uint16, 4, 2)):
        values = rng.integers(0, 250, (40, 64, samples)).astype(dtype)
        rows = values[:, :, 0] if samples == 1 else values
        for interlaced in (False, True):
            data = raw_png(rows, colour_type, interlaced=interlaced, claimed_height=40 * 3)
            if colour_type == 3:
                data = data[:33] + png_chunk(b"PLTE", bytes(range(256)) * 3) + data[33:]
            path = tmp_path / f"short-{colour_type}-{dtype.__name__}-{int(interlaced)}.png"
            path.write_bytes(data)
            with pytest.raises(ImageReadError, match="truncated"):
                load_image(path)
    one_row = raw_png(rng.integers(0, 250, (1, 64, 3)).astype(np.uint8), 2, interlaced=True, claimed_width=200)
    (tmp_path / "one-row.png").write_bytes(one_row)  # one interlaced row: checked by inflating its data
    with pytest.raises(ImageReadError, match="compressed rows hold"):
        load_image(tmp_path / "one-row.png")


def test_png_claiming_more_than_deflate_can_hold_is_refused_before_decoding(
    tmp_path: Path, photo: np.ndarray, bench: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = save_image(photo, tmp_path / "a.png").read_bytes()
    (tmp_path / "lie.png").write_bytes(bench.png_with_size(data, 20_000, 20_000))
    _never_decoded(monkeypatch)
    with pytest.raises(ImageReadError, match=r"claims 20000x20000 pixels, which take at least 1.1 MiB as PNG"):
        load_image(tmp_path / "lie.png")


def test_flat_png_at_the_best_deflate_ratio_is_read(tmp_path: Path, bench: types.ModuleType) -> None:
    """A legitimately tiny file (one colour, zlib level 9) is within a quarter of deflate's best ratio, 1032:1,
    the bound that refuses lying headers, and is read."""
    path = tmp_path / "flat.png"
    bench.write_flat_png(path, 3000)
    assert path.stat().st_size < 1.25 * 3000 * 3000 * 3 / 1032
    picture = load_image(path)
    assert picture.pixels.shape == (3000, 3000, 3) and (picture.pixels == (40, 90, 160)).all()


@pytest.mark.parametrize("name", ["bmp_rgb", "tiff_rgb_deflate", "tiff_gray_tiled", "gif", "webp_lossy"])
def test_other_formats_with_lying_sizes_are_refused(tmp_path: Path, bench: types.ModuleType, name: str) -> None:
    suffix, data = bench.base_images()[name]
    path = tmp_path / f"lie{suffix}"
    path.write_bytes(bench.lying(name, data))
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        load_image(path)


def test_tiff_with_missing_strips_is_refused_and_tifffile_logs_nothing(
    tmp_path: Path, photo: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, photo, photometric="rgb", rowsperstrip=16)
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tiff:
        tag = tiff.pages.first.tags["RowsPerStrip"]
    struct.pack_into("<H" if tag.dtype == 3 else "<I", data, tag.valueoffset, 8)  # strips of 8 rows, 16 stored
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="strips or tiles"):
        load_image(path)
    assert not [record for record in caplog.records if record.name == "tifffile"]  # stderr, with no logging set up


# -------------------------------------------------------------------------------- 5. the corpus, in-process

REPRESENTATIVE = [
    "png_rgb-cut35.png", "png16_rgba-cut85.png", "jpeg_rgb-cut60.jpg", "jpeg_progressive-cut99.jpg",
    "webp_lossless_rgba-cut60.webp", "tiff16_rgba-cut85.tif", "bmp_gray-cut35.bmp", "gif-cut60.gif",
    "png_rgba-flip-critical.png", "tiff_rgb_deflate-flip-critical.tif", "bmp_rgb-flip-critical.bmp",
    "png_palette-lying.png", "jpeg_gray-lying.jpg", "tiff_gray_tiled-lying.tif", "gif-lying.gif",
    "png_rgb-huge.png", "jpeg_rgb-huge.jpg", "empty.webp", "random-signed.gif", "random.tif",
    "eps-renamed.jpg", "eps-binary-renamed.png", "pdf-renamed.png", "psd-renamed.png", "folder.png", "device.png",
]


def test_representative_malformed_files_exit_2_with_one_line_and_no_output(
    tmp_path: Path, bench: types.ModuleType, fake_ghostscript: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {case.name: case for case in bench.image_cases()}
    assert len(cases) >= 171 and set(REPRESENTATIVE) <= set(cases)
    (tmp_path / "in").mkdir()
    for name in REPRESENTATIVE:
        case = cases[name]
        assert case.expect == bench.REFUSED
        source = bench.write_case(case, tmp_path / "in")
        output = tmp_path / f"{name}.out.png"
        code = main(["upscale", str(source), "-o", str(output), "--quiet", "--model-dir", str(tmp_path / "home")])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (name, lines)
        assert len(lines) == 1 and lines[0].startswith("tessera: error: "), (name, lines)
        assert not output.exists() and not list(tmp_path.glob(f".{name}*")), name
    assert not fake_ghostscript.exists()
