"""Image I/O: round trips per format and mode, metadata carried, orientation, limits, bad inputs, atomic writes."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms, ImageOps
from skimage import data as skdata

from tessera.errors import ImageReadError, ImageTooLargeError, InputError, OptionError, OutputError
from tessera.image import atomic as image_atomic, pixels as image_pixels, tiff as image_tiff, write as image_write
from tessera.image.pixels import Picture, from_float, to_float
from tessera.image.read import DEFAULT_MAX_PIXELS, load_image, read_image_size
from tessera.image.write import save_image

# ------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A small, non-square, non-symmetric RGB photograph (so that any rotation or flip shows)."""
    return np.ascontiguousarray(skdata.astronaut()[40:136:2, 100:260:2])  # 48 x 80


@pytest.fixture(scope="module")
def photo16(photo: np.ndarray) -> np.ndarray:
    """16-bit pixels that use the low byte too (a 16-bit file reduced to 8 bits would lose it)."""
    return photo.astype(np.uint16) * 257 + np.arange(photo.size, dtype=np.uint16).reshape(photo.shape) % 200


@pytest.fixture(scope="module")
def ramp_alpha(photo: np.ndarray) -> np.ndarray:
    height, width = photo.shape[:2]
    return np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1))

# Every format with each bit depth it stores.
FORMATS_AND_DEPTHS = [(".png", np.uint8), (".png", np.uint16), (".jpg", np.uint8), (".webp", np.uint8),
                      (".tif", np.uint8), (".tif", np.uint16)]


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def make_exif(orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    exif[0x0110] = "Model 7"
    exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x9003] = "2021:06:01 12:00:00"
    exif.get_ifd(0x8825)[0x0001] = "N"
    return exif.tobytes()


def exif_fields(exif: bytes | None) -> tuple[object, object, object, object]:
    assert exif is not None and exif.startswith(b"Exif\x00\x00")
    parsed = Image.Exif()
    parsed.load(exif)
    return (
        parsed.get(0x010F),
        parsed.get(0x0112, 1),
        parsed.get_ifd(0x8769).get(0x9003),
        parsed.get_ifd(0x8825).get(0x0001),
    )


def png_header(path: Path) -> tuple[int, int]:
    """(bit depth, colour type) from a PNG's IHDR."""
    header = path.read_bytes()[:26]
    return header[24], header[25]


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def cmyk_gray_profile() -> bytes:
    """A minimal ICC v2 CMYK output profile whose A2B0 table maps every ink mix to a neutral grey.

    Pillow cannot create CMYK profiles, so the test builds one (lut8Type, 2-point grid). Under it, pure cyan is
    grey; the naive CMYK formula would give (0, 255, 255): the two paths are easy to tell apart.
    """
    description = b"test CMYK\x00"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(description)) + description + bytes(8) + bytes(3) + bytes(67)
    white = b"XYZ " + bytes(4) + _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    copyright_ = b"text" + bytes(4) + b"none\x00"
    ramp = bytes(range(256))
    grid = bytearray()
    for c in range(2):
        for m in range(2):
            for y in range(2):
                for k in range(2):
                    lightness = 1.0 - (c + m + y + k) / 4
                    grid += bytes([round(lightness * 255), 128, 128])  # Lab, a = b = 0
    identity = b"".join(_s15(1.0 if index % 4 == 0 else 0.0) for index in range(9))
    lut = b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + identity + ramp * 4 + bytes(grid) + ramp * 3
    tags = [(b"desc", desc), (b"wtpt", white), (b"cprt", copyright_), (b"A2B0", lut)]
    table = struct.pack(">I", len(tags))
    body = b""
    start = 128 + 4 + 12 * len(tags)
    for signature, payload in tags:
        payload += bytes(-len(payload) % 4)
        table += signature + struct.pack(">II", start + len(body), len(payload))
        body += payload
    size = start + len(body)
    header = (
        struct.pack(">I", size)
        + bytes(4)
        + struct.pack(">I", 0x02100000)
        + b"prtrCMYKLab "
        + bytes(12)
        + b"acsp"
        + bytes(24)
        + bytes(4)
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
        + bytes(48)
    )
    assert len(header) == 128
    return header + table + body


# ---------------------------------------------------------------------------------------- round trips: 8-bit


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff", ".bmp"])
def test_lossless_formats_round_trip_rgb_exactly(tmp_path: Path, photo: np.ndarray, suffix: str) -> None:
    path = save_image(photo, tmp_path / f"out{suffix}")
    picture = load_image(path)
    assert picture.pixels.dtype == np.uint8 and picture.pixels.flags.c_contiguous
    np.testing.assert_array_equal(picture.pixels, photo)
    assert picture.alpha is None and not picture.gray
    assert picture.source == path and picture.format == image_write.IMAGE_SUFFIXES[suffix]
    assert (picture.width, picture.height) == (photo.shape[1], photo.shape[0]) == read_image_size(path)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".webp"])
def test_lossy_formats_round_trip_rgb_closely(tmp_path: Path, photo: np.ndarray, suffix: str) -> None:
    picture = load_image(save_image(photo, tmp_path / f"out{suffix}", quality=95))
    assert picture.pixels.shape == photo.shape and picture.pixels.dtype == np.uint8
    assert np.abs(picture.pixels.astype(int) - photo).mean() < 4
    low = load_image(save_image(photo, tmp_path / f"low{suffix}", quality=10))
    assert np.abs(low.pixels.astype(int) - photo).mean() > np.abs(picture.pixels.astype(int) - photo).mean()


def test_png_rgba_gray_and_gray_alpha_round_trip(tmp_path: Path, photo: np.ndarray, ramp_alpha: np.ndarray) -> None:
    rgba = load_image(save_image(np.dstack([photo, ramp_alpha]), tmp_path / "rgba.png"))
    np.testing.assert_array_equal(rgba.pixels, photo)
    np.testing.assert_array_equal(rgba.alpha, ramp_alpha)
    assert png_header(tmp_path / "rgba.png") == (8, 6)

    gray_values = photo[:, :, 1]
    gray = load_image(save_image(gray_values, tmp_path / "gray.png"))
    assert gray.gray and gray.alpha is None
    np.testing.assert_array_equal(gray.pixels, np.dstack([gray_values] * 3))
    assert png_header(tmp_path / "gray.png") == (8, 0)

    gray_alpha = load_image(save_image(np.dstack([gray_values, ramp_alpha]), tmp_path / "la.png"))
    assert gray_alpha.gray
    np.testing.assert_array_equal(gray_alpha.pixels[:, :, 2], gray_values)
    np.testing.assert_array_equal(gray_alpha.alpha, ramp_alpha)
    assert png_header(tmp_path / "la.png") == (8, 4)


def test_palette_png_becomes_rgb_and_palette_transparency_becomes_alpha(tmp_path: Path, photo: np.ndarray) -> None:
    paletted = Image.fromarray(photo).quantize(colors=16)
    paletted.save(tmp_path / "p.png")
    picture = load_image(tmp_path / "p.png")
    assert not picture.gray and picture.alpha is None
    np.testing.assert_array_equal(picture.pixels, np.asarray(paletted.convert("RGB")))

    index = int(np.asarray(paletted)[0, 0])
    paletted.save(tmp_path / "pt.png", transparency=index)
    transparent = load_image(tmp_path / "pt.png")
    assert transparent.alpha is not None
    hidden = np.asarray(paletted) == index
    assert (transparent.alpha[hidden] == 0).all() and (transparent.alpha[~hidden] == 255).all()


def test_gray_with_transparency_key_and_gray_palette_stay_gray(tmp_path: Path, photo: np.ndarray) -> None:
    gray_values = photo[:, :, 0]
    Image.fromarray(gray_values).save(tmp_path / "key.png", transparency=int(gray_values[0, 0]))
    keyed = load_image(tmp_path / "key.png")
    assert keyed.gray and keyed.alpha is not None
    hidden = gray_values == gray_values[0, 0]
    assert (keyed.alpha[hidden] == 0).all() and (keyed.alpha[~hidden] == 255).all()

    Image.fromarray(gray_values).convert("P").save(tmp_path / "graypalette.png")
    paletted = load_image(tmp_path / "graypalette.png")
    assert paletted.gray and paletted.alpha is None
    np.testing.assert_array_equal(paletted.pixels[:, :, 0], gray_values)


def test_one_bit_image_loads_as_gray_0_255_usable_as_mask(tmp_path: Path) -> None:
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:12, 8:20] = True
    Image.fromarray(mask).save(tmp_path / "mask.png")
    picture = load_image(tmp_path / "mask.png")
    assert picture.gray and picture.pixels.dtype == np.uint8
    np.testing.assert_array_equal(picture.pixels[:, :, 0], mask.astype(np.uint8) * 255)


def test_bmp_gray_round_trips_and_alpha_is_dropped(tmp_path: Path, photo: np.ndarray, ramp_alpha: np.ndarray) -> None:
    gray = load_image(save_image(photo[:, :, 0], tmp_path / "g.bmp"))
    assert gray.gray
    np.testing.assert_array_equal(gray.pixels[:, :, 0], photo[:, :, 0])
    rgba = load_image(save_image(np.dstack([photo, ramp_alpha]), tmp_path / "a.bmp"))
    assert rgba.alpha is None
    np.testing.assert_array_equal(rgba.pixels, photo)


def test_jpeg_drops_alpha_and_keeps_gray(tmp_path: Path, photo: np.ndarray, ramp_alpha: np.ndarray) -> None:
    rgba = load_image(save_image(np.dstack([photo, ramp_alpha]), tmp_path / "a.jpg"))
    assert rgba.alpha is None
    gray = load_image(save_image(photo[:, :, 0], tmp_path / "g.jpg"))
    assert gray.gray
    with Image.open(tmp_path / "g.jpg") as written:
        assert written.mode == "L"


def test_webp_keeps_alpha(tmp_path: Path, photo: np.ndarray, ramp_alpha: np.ndarray) -> None:
    picture = load_image(save_image(np.dstack([photo, ramp_alpha]), tmp_path / "a.webp"))
    assert picture.alpha is not None
    assert np.abs(picture.alpha.astype(int) - ramp_alpha).max() <= 2
    assert np.abs(picture.pixels.astype(int) - photo)[ramp_alpha > 128].mean() < 4


# ---------------------------------------------------------------------------------------- round trips: 16-bit


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_rgb_and_rgba_stay_16_bit(tmp_path: Path, photo16: np.ndarray, suffix: str) -> None:
    rgb = load_image(save_image(photo16, tmp_path / f"rgb{suffix}"))
    assert rgb.pixels.dtype == np.uint16 and rgb.max_value == 65535
    np.testing.assert_array_equal(rgb.pixels, photo16)

    alpha = (photo16[:, :, 0] // 3 + 7).astype(np.uint16)
    rgba = load_image(save_image(Picture(photo16, alpha), tmp_path / f"rgba{suffix}"))
    np.testing.assert_array_equal(rgba.pixels, photo16)
    np.testing.assert_array_equal(rgba.alpha, alpha)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_gray_and_gray_alpha_stay_one_channel(tmp_path: Path, photo16: np.ndarray, suffix: str) -> None:
    gray_values = photo16[:, :, 1]
    alpha = (gray_values // 5).astype(np.uint16)
    gray = load_image(save_image(gray_values, tmp_path / f"g{suffix}"))
    assert gray.gray and gray.pixels.dtype == np.uint16
    np.testing.assert_array_equal(gray.pixels[:, :, 0], gray_values)
    gray_alpha = load_image(save_image(np.dstack([gray_values, alpha]), tmp_path / f"la{suffix}"))
    assert gray_alpha.gray
    np.testing.assert_array_equal(gray_alpha.pixels[:, :, 0], gray_values)
    np.testing.assert_array_equal(gray_alpha.alpha, alpha)
    if suffix == ".png":
        assert png_header(tmp_path / "g.png") == (16, 0)
        assert png_header(tmp_path / "la.png") == (16, 4)
        with Image.open(tmp_path / "la.png") as independent:  # another decoder accepts our 16-bit LA encoder
            independent.load()
            assert independent.size == (gray_values.shape[1], gray_values.shape[0])


def test_16_bit_to_8_bit_formats_is_rounded(tmp_path: Path, photo16: np.ndarray) -> None:
    picture = load_image(save_image(photo16, tmp_path / "out.bmp"))
    expected = np.rint(photo16 / 257).astype(np.uint8)
    np.testing.assert_array_equal(picture.pixels, expected)


def test_lzw_tiff_16_bit_is_read_at_16_bit(tmp_path: Path, photo16: np.ndarray) -> None:
    """LZW needs imagecodecs in tifffile; without it the OpenCV fallback must still keep 16 bits."""
    path = tmp_path / "lzw.tif"
    assert cv2.imwrite(str(path), cv2.cvtColor(photo16, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_TIFF_COMPRESSION, 5])
    picture = load_image(path)
    assert picture.pixels.dtype == np.uint16
    np.testing.assert_array_equal(picture.pixels, photo16)


# ------------------------------------------------------------------------------------------- float and TIFF


def test_float_tiff_round_trips_and_float_png_becomes_16_bit(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = rng.random((24, 40, 3), dtype=np.float32)
    picture = load_image(save_image(values, tmp_path / "f.tif"))
    assert picture.pixels.dtype == np.float32 and picture.max_value == 1.0
    np.testing.assert_array_equal(picture.pixels, values)
    png = load_image(save_image(values, tmp_path / "f.png"))
    assert png.pixels.dtype == np.uint16
    np.testing.assert_array_equal(png.pixels, from_float(values, np.uint16))


def test_float_tiff_out_of_range_is_clipped(tmp_path: Path) -> None:
    values = np.array([[-0.5, 0.25, 2.0, np.nan]], dtype=np.float32)
    tifffile.imwrite(tmp_path / "hdr.tif", values)
    picture = load_image(tmp_path / "hdr.tif")
    assert picture.gray
    np.testing.assert_array_equal(picture.pixels[0, :, 0], [0.0, 0.25, 1.0, 0.0])


def test_bigtiff_and_tiled_tiff_are_read(tmp_path: Path, photo16: np.ndarray) -> None:
    tifffile.imwrite(tmp_path / "big.tif", photo16, photometric="rgb", bigtiff=True)
    np.testing.assert_array_equal(load_image(tmp_path / "big.tif").pixels, photo16)
    tifffile.imwrite(tmp_path / "tiled.tif", photo16, photometric="rgb", tile=(16, 16), compression="zlib")
    np.testing.assert_array_equal(load_image(tmp_path / "tiled.tif").pixels, photo16)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(photo16, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(load_image(tmp_path / "planar.tif").pixels, photo16)


def test_bigtiff_is_written_when_data_exceeds_the_classic_limit(
    tmp_path: Path, photo16: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(image_write, "_BIGTIFF_FROM_BYTES", 1000)  # stands for ~4 GB
    path = save_image(Picture(photo16, exif=make_exif()), tmp_path / "big.tif")
    assert path.read_bytes()[:4] == b"II+\x00"
    picture = load_image(path)
    np.testing.assert_array_equal(picture.pixels, photo16)
    assert exif_fields(picture.exif) == ("TestCam", 1, "2021:06:01 12:00:00", "N")


def test_tiff_orientation_tag_is_applied(tmp_path: Path, photo: np.ndarray) -> None:
    tifffile.imwrite(tmp_path / "o.tif", photo, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
    picture = load_image(tmp_path / "o.tif")
    np.testing.assert_array_equal(picture.pixels, np.rot90(photo, -1))
    assert read_image_size(tmp_path / "o.tif") == (photo.shape[0], photo.shape[1])


def test_palette_and_min_is_white_tiffs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    colormap = rng.integers(0, 65536, size=(3, 256), dtype=np.uint16)
    indices = rng.integers(0, 256, size=(10, 12), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "p.tif", indices, photometric="palette", colormap=colormap)
    palette = load_image(tmp_path / "p.tif")
    assert not palette.gray
    np.testing.assert_array_equal(palette.pixels, np.rint(colormap.T[indices] / 257).astype(np.uint8))

    tifffile.imwrite(tmp_path / "w.tif", indices, photometric="miniswhite")
    inverted = load_image(tmp_path / "w.tif")
    assert inverted.gray
    np.testing.assert_array_equal(inverted.pixels[:, :, 0], 255 - indices)


def test_tiff_premultiplied_alpha_is_unpremultiplied(tmp_path: Path) -> None:
    colour = np.full((4, 4, 3), 200, dtype=np.uint8)
    alpha = np.full((4, 4), 128, dtype=np.uint8)
    premultiplied = np.rint(colour * (alpha[:, :, None] / 255)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "pm.tif", np.dstack([premultiplied, alpha]), photometric="rgb", extrasamples=[1])
    picture = load_image(tmp_path / "pm.tif")
    np.testing.assert_array_equal(picture.alpha, alpha)
    assert np.abs(picture.pixels.astype(int) - 200).max() <= 2


# --------------------------------------------------------------------------------------------------- CMYK


def test_cmyk_jpeg_without_profile_uses_the_naive_conversion(tmp_path: Path, photo: np.ndarray) -> None:
    Image.fromarray(photo).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    picture = load_image(tmp_path / "c.jpg")
    with Image.open(tmp_path / "c.jpg") as reference:
        assert reference.mode == "CMYK"
        np.testing.assert_array_equal(picture.pixels, np.asarray(reference.convert("RGB")))
    assert not picture.gray and picture.icc_profile is None


def test_cmyk_jpeg_with_profile_is_converted_through_it(tmp_path: Path) -> None:
    cyan = np.zeros((16, 16, 4), dtype=np.uint8)
    cyan[:, :, 0] = 255
    image = Image.frombytes("CMYK", (16, 16), cyan.tobytes())
    image.save(tmp_path / "plain.jpg", quality=95)
    image.save(tmp_path / "icc.jpg", quality=95, icc_profile=cmyk_gray_profile())
    naive = load_image(tmp_path / "plain.jpg").pixels.astype(int)
    managed = load_image(tmp_path / "icc.jpg")
    assert naive[8, 8, 0] < 30 and naive[8, 8, 1] > 225  # cyan
    centre = managed.pixels[8, 8].astype(int)
    assert centre.max() - centre.min() <= 3 and 100 < centre[0] < 250  # neutral grey from the profile
    assert managed.icc_profile is None  # the pixels are sRGB now


def test_cmyk_tiff_is_converted(tmp_path: Path, photo: np.ndarray) -> None:
    cmyk = np.asarray(Image.fromarray(photo).convert("CMYK"))
    tifffile.imwrite(tmp_path / "c.tif", cmyk, photometric="separated")
    picture = load_image(tmp_path / "c.tif")
    expected = np.asarray(Image.frombytes("CMYK", photo.shape[1::-1], cmyk.tobytes()).convert("RGB"))
    np.testing.assert_array_equal(picture.pixels, expected)


# -------------------------------------------------------------------------------------- orientation, metadata


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow_exif_transpose(tmp_path: Path, photo: np.ndarray, orientation: int) -> None:
    path = tmp_path / "o.png"
    Image.fromarray(photo).save(path, exif=make_exif(orientation))
    picture = load_image(path)
    with Image.open(path) as source:
        expected = np.asarray(ImageOps.exif_transpose(source).convert("RGB"))
    np.testing.assert_array_equal(picture.pixels, expected)
    assert exif_fields(picture.exif) == ("TestCam", 1, "2021:06:01 12:00:00", "N")
    assert read_image_size(path) == (expected.shape[1], expected.shape[0])


def test_jpeg_exif_orientation_6_is_transposed_and_reset(tmp_path: Path, photo: np.ndarray) -> None:
    path = tmp_path / "rotated.jpg"
    Image.fromarray(photo).save(path, quality=95, exif=make_exif(6))
    picture = load_image(path)
    with Image.open(path) as source:
        stored = np.asarray(source.convert("RGB"))
    assert picture.pixels.shape == (photo.shape[1], photo.shape[0], 3)
    np.testing.assert_array_equal(picture.pixels, np.rot90(stored, -1))
    assert exif_fields(picture.exif) == ("TestCam", 1, "2021:06:01 12:00:00", "N")
    # written back, it is displayed the same way (orientation 1, pixels upright)
    again = load_image(save_image(picture, tmp_path / "again.png"))
    np.testing.assert_array_equal(again.pixels, picture.pixels)


@pytest.mark.parametrize("suffix, dtype", FORMATS_AND_DEPTHS)
def test_icc_and_exif_are_carried(tmp_path: Path, photo: np.ndarray, suffix: str, dtype: type) -> None:
    profile = srgb_profile()
    pixels = photo if dtype == np.uint8 else photo.astype(np.uint16) * 257
    picture = Picture(pixels, icc_profile=profile, exif=make_exif(1))
    loaded = load_image(save_image(picture, tmp_path / f"meta{suffix}"))
    assert loaded.icc_profile == profile
    assert exif_fields(loaded.exif) == ("TestCam", 1, "2021:06:01 12:00:00", "N")


def test_orientation_in_a_hand_made_picture_is_reset_on_save(tmp_path: Path, photo: np.ndarray) -> None:
    picture = Picture(photo, exif=make_exif(8))
    loaded = load_image(save_image(picture, tmp_path / "upright.png"))
    np.testing.assert_array_equal(loaded.pixels, photo)


# ----------------------------------------------------------------------------------------------- pixel limit


def fake_png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"not deflate data") + chunk(b"IEND", b"")


def test_huge_header_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(fake_png_header(100_000, 100_000))  # its data would not even decode
    with pytest.raises(ImageTooLargeError, match=r"10,000,000,000 pixels .* limit of 500,000,000") as caught:
        load_image(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert read_image_size(path) == (100_000, 100_000)
    assert DEFAULT_MAX_PIXELS == 500_000_000


def test_limit_is_configurable_and_checked_before_any_decoder_runs(
    tmp_path: Path, photo: np.ndarray, photo16: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [
        save_image(photo, tmp_path / "a.jpg"),
        save_image(photo16, tmp_path / "b.png"),
        save_image(photo16, tmp_path / "c.tif"),
    ]

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded although over the limit")

    monkeypatch.setattr(Image.Image, "load", refuse)
    monkeypatch.setattr(image_tiff, "_decode_with_opencv", refuse)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", refuse)
    pixels = photo.shape[0] * photo.shape[1]
    for path in paths:
        with pytest.raises(ImageTooLargeError, match=f"limit of {pixels - 1:,}"):
            load_image(path, max_pixels=pixels - 1)


def test_pillow_global_guard_is_neither_used_nor_changed(
    tmp_path: Path, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_image(photo, tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would refuse this picture
    picture = load_image(path, max_pixels=photo.shape[0] * photo.shape[1])
    np.testing.assert_array_equal(picture.pixels, photo)
    assert Image.MAX_IMAGE_PIXELS == 100


# ------------------------------------------------------------------------------------------------ bad inputs


def test_missing_file_folder_text_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="folder"):
        load_image(tmp_path)
    (tmp_path / "notes.png").write_text("these are notes, not pixels\n" * 20)
    with pytest.raises(ImageReadError, match="not an image"):
        load_image(tmp_path / "notes.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match="not an image"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageReadError, match="no such file"):
        read_image_size(tmp_path / "missing.png")


@pytest.mark.parametrize("suffix, dtype", FORMATS_AND_DEPTHS)
def test_truncated_files_are_refused(tmp_path: Path, photo: np.ndarray, suffix: str, dtype: type) -> None:
    pixels = photo if dtype == np.uint8 else photo.astype(np.uint16) * 257
    whole = save_image(pixels, tmp_path / f"whole{suffix}").read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(ImageReadError, match="truncated or corrupt") as caught:
        load_image(cut)
    assert str(cut) in str(caught.value) and "\n" not in str(caught.value)


def test_corrupt_png_data_is_refused(tmp_path: Path, photo: np.ndarray) -> None:
    data = bytearray(save_image(photo, tmp_path / "ok.png").read_bytes())
    start = data.index(b"IDAT") + 20
    data[start : start + 40] = bytes(40)
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(ImageReadError):
        load_image(tmp_path / "bad.png")


def test_unsupported_sample_type_is_refused(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "signed.tif", np.full((8, 8), -5, dtype=np.int16))
    with pytest.raises(ImageReadError, match="unsupported"):
        load_image(tmp_path / "signed.tif")


# ----------------------------------------------------------------------------------------------------- saving


def test_unknown_suffix_and_explicit_format(tmp_path: Path, photo: np.ndarray) -> None:
    with pytest.raises(OptionError, match="suffix"):
        save_image(photo, tmp_path / "out.gif")
    with pytest.raises(OptionError):
        save_image(photo, tmp_path / "out.png", format="GIF")
    path = save_image(photo, tmp_path / "noext", format="png")
    assert path.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(OptionError, match="quality"):
        save_image(photo, tmp_path / "q.jpg", quality=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noext"]


def test_missing_folder_and_folder_in_the_way_raise_output_error(tmp_path: Path, photo: np.ndarray) -> None:
    target = tmp_path / "nowhere" / "out.png"
    with pytest.raises(OutputError, match="does not exist") as caught:
        save_image(photo, target)
    assert str(target) in str(caught.value)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(OutputError):
        save_image(photo, tmp_path / "file.txt" / "out.png")
    (tmp_path / "taken.png").mkdir()
    with pytest.raises(OutputError, match="folder"):
        save_image(photo, tmp_path / "taken.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "taken.png"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_folder_raises_output_error_and_leaves_nothing(tmp_path: Path, photo: np.ndarray) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            save_image(photo, folder / "out.png")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def test_permission_denied_on_the_temporary_file_is_an_output_error(
    tmp_path: Path, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same path as a read-only folder, reachable when the tests run as root."""
    real_open = open

    def no_creation(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if "x" in mode:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(image_atomic, "open", no_creation, raising=False)
    with pytest.raises(OutputError, match="permission denied") as caught:
        save_image(photo, tmp_path / "out.png")
    assert str(tmp_path / "out.png") in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_overwriting_the_input_is_refused_unless_asked(tmp_path: Path, photo: np.ndarray) -> None:
    path = save_image(photo, tmp_path / "in.png")
    picture = load_image(path)
    before = path.read_bytes()
    for spelling in (path, tmp_path / "." / "in.png", tmp_path / ".." / tmp_path.name / "in.png"):
        with pytest.raises(OutputError, match="overwrite the input"):
            save_image(picture.with_pixels(255 - picture.pixels), spelling)
    assert path.read_bytes() == before
    save_image(picture.with_pixels(255 - picture.pixels), path, overwrite_input=True)
    np.testing.assert_array_equal(load_image(path).pixels, 255 - photo)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_failed_encoding_leaves_neither_temporary_nor_output(
    tmp_path: Path, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_then_fail(picture: Picture, file: io.BufferedIOBase, quality: int) -> None:
        file.write(b"\x89PNG partial")
        raise RuntimeError("encoder crashed")

    monkeypatch.setitem(image_write._ENCODERS, "PNG", half_then_fail)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        save_image(photo, tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []

    existing = tmp_path / "kept.png"
    existing.write_bytes(b"previous content")
    with pytest.raises(RuntimeError):
        save_image(photo, existing)
    assert existing.read_bytes() == b"previous content"

    def disk_error(picture: Picture, file: io.BufferedIOBase, quality: int) -> None:
        file.write(b"x" * 100)
        raise OSError(5, "Input/output error")

    monkeypatch.setitem(image_write._ENCODERS, "PNG", disk_error)
    with pytest.raises(OutputError, match="out.png"):
        save_image(photo, tmp_path / "out.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.png"]


def test_jpeg_side_limit_is_checked_before_writing(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="JPEG cannot hold"):
        save_image(np.zeros((1, 70_000), dtype=np.uint8), tmp_path / "wide.jpg")
    assert list(tmp_path.iterdir()) == []


def test_gray_picture_with_colour_pixels_is_saved_as_luma(tmp_path: Path, photo: np.ndarray) -> None:
    picture = Picture(photo, gray=True)
    loaded = load_image(save_image(picture, tmp_path / "luma.png"))
    assert loaded.gray
    expected = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(loaded.pixels[:, :, 0], expected)
    with Image.open(tmp_path / "luma.png") as written:
        assert written.mode == "L"


def test_saved_file_permissions_follow_the_umask(tmp_path: Path, photo: np.ndarray) -> None:
    path = save_image(photo, tmp_path / "perm.png")
    reference = tmp_path / "reference"
    reference.write_bytes(b"")
    assert (path.stat().st_mode & 0o777) == (reference.stat().st_mode & 0o777)


# ------------------------------------------------------------------------------------------ Picture and helpers


def test_with_pixels_keeps_metadata_and_resizes_alpha(photo: np.ndarray, ramp_alpha: np.ndarray) -> None:
    picture = Picture(photo, ramp_alpha, icc_profile=b"icc", exif=make_exif(), format="PNG")
    bigger = picture.with_pixels(cv2.resize(photo, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC))
    assert bigger.alpha is not None and bigger.alpha.shape == (photo.shape[0] * 2, photo.shape[1] * 2)
    assert (bigger.icc_profile, bigger.exif, bigger.format) == (picture.icc_profile, picture.exif, "PNG")
    assert abs(int(bigger.alpha[:, -1].mean()) - 255) <= 2 and int(bigger.alpha[:, 0].mean()) <= 2
    smaller = picture.with_pixels(to_float(photo[::2, ::2]))
    assert smaller.alpha is not None and smaller.alpha.dtype == np.float32
    assert smaller.alpha.shape == (photo.shape[0] // 2, photo.shape[1] // 2)
    assert 0.0 <= smaller.alpha.min() and smaller.alpha.max() <= 1.0
    dropped = picture.with_pixels(photo, alpha=None)
    assert dropped.alpha is None and picture.alpha is not None


def test_picture_validates_its_arrays(photo: np.ndarray) -> None:
    with pytest.raises(InputError, match="HxWx3"):
        Picture(photo[:, :, 0])
    with pytest.raises(InputError, match="uint8, uint16 or float32"):
        Picture(photo.astype(np.int32))
    with pytest.raises(InputError, match="alpha"):
        Picture(photo, np.zeros((3, 3), dtype=np.uint8))
    with pytest.raises(InputError, match="dtype"):
        Picture(photo, np.zeros(photo.shape[:2], dtype=np.uint16))
    strided = Picture(photo[:, ::-1])
    assert strided.pixels.flags.c_contiguous


def test_float_conversions_round_trip_and_clip() -> None:
    every8 = np.arange(256, dtype=np.uint8)
    every16 = np.arange(65536, dtype=np.uint16)
    np.testing.assert_array_equal(from_float(to_float(every8), np.uint8), every8)
    np.testing.assert_array_equal(from_float(to_float(every16), np.uint16), every16)
    assert to_float(every8).dtype == np.float32 and to_float(every8)[-1] == 1.0
    out_of_range = np.array([-1.0, 0.5, 3.0, np.nan], dtype=np.float32)
    np.testing.assert_array_equal(from_float(out_of_range, np.uint8), [0, 128, 255, 0])
    np.testing.assert_array_equal(from_float(out_of_range, np.float32), [0.0, 0.5, 1.0, 0.0])
    np.testing.assert_array_equal(
        image_pixels.convert_dtype(every16, np.dtype(np.uint8)), from_float(to_float(every16), np.uint8)
    )
