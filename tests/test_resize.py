"""`tessera resize`: only shrinks, keeps the aspect, format and metadata, atomic, each file alone."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from tessera.batch.resize import fitted_size, resize_files, shrink
from tessera.errors import OptionError
from tessera.image.pixels import Picture
from tessera.image.read import load_image
from tessera.image.write import save_image


def gradient(height: int, width: int, dtype=np.uint8) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    top = 65535 if dtype == np.uint16 else 255
    values = np.stack([xs / width, ys / height, (xs + ys) / (width + height)], axis=2) * top
    return values.astype(dtype)


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("size, expected", [((4000, 3000), (2000, 1500)), ((1000, 3001), (666, 2000)),
                                            ((2000, 10), (2000, 10)), ((5, 5), (5, 5))])
def test_fitted_size_only_shrinks(size, expected):
    assert fitted_size(*size, 2000) == expected


def test_shrink_keeps_metadata_alpha_and_depth():
    alpha = np.full((300, 400), 40000, np.uint16)
    picture = Picture(gradient(300, 400, np.uint16), alpha=alpha, icc_profile=b"icc", exif=b"Exif\x00\x00data")
    small = shrink(picture, 100)
    assert small.pixels.shape == (75, 100, 3) and small.pixels.dtype == np.uint16
    assert small.alpha.shape == (75, 100) and int(small.alpha.max()) == 40000
    assert small.icc_profile == b"icc" and small.exif == picture.exif
    assert shrink(picture, 400) is picture
    with pytest.raises(OptionError):
        shrink(picture, 0)


def test_resize_folder_in_place(tmp_path):
    icc = srgb_profile()
    big = save_image(Picture(gradient(600, 900), icc_profile=icc), tmp_path / "big.jpg")
    keep = save_image(gradient(100, 150), tmp_path / "small.png")
    (tmp_path / "sub").mkdir()
    deep = save_image(gradient(500, 200), tmp_path / "sub" / "tall.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    small_bytes, small_stamp = keep.read_bytes(), keep.stat().st_mtime_ns

    outcomes = resize_files([tmp_path], 300, recursive=True)
    status = {o.file: o.status for o in outcomes}
    assert status == {"big.jpg": "done", "small.png": "skipped", "sub/tall.png": "done", "broken.png": "failed"}
    resized = load_image(big)
    assert resized.pixels.shape == (200, 300, 3) and resized.icc_profile == icc and resized.format == "JPEG"
    assert load_image(deep).pixels.shape == (300, 120, 3)
    assert keep.read_bytes() == small_bytes and keep.stat().st_mtime_ns == small_stamp  # untouched
    assert not [p for p in tmp_path.rglob(".*")]  # atomic writes leave no temporary file


def test_resize_into_another_folder_mirrors_the_tree(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    original = save_image(gradient(400, 400), tmp_path / "in" / "sub" / "a.png")
    save_image(gradient(50, 50), tmp_path / "in" / "b.png")
    outcomes = resize_files([tmp_path / "in"], 100, output_dir=tmp_path / "out", recursive=True)
    assert {o.status for o in outcomes} == {"done"}
    assert load_image(tmp_path / "out" / "sub" / "a.png").pixels.shape == (100, 100, 3)
    assert load_image(original).pixels.shape == (400, 400, 3)  # the input is left alone
    assert (tmp_path / "out" / "b.png").read_bytes() == (tmp_path / "in" / "b.png").read_bytes()


def test_exif_is_kept(tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "Scanner maker"
    buffer = io.BytesIO()
    Image.fromarray(gradient(400, 300)).save(buffer, format="JPEG", exif=exif.tobytes())
    path = tmp_path / "scan.jpg"
    path.write_bytes(buffer.getvalue())
    resize_files([path], 100)
    with Image.open(path) as result:
        assert result.size == (75, 100)
        assert result.getexif().get(0x010F) == "Scanner maker"


def test_cli(tmp_path, capsys):
    from tessera import cli

    path = save_image(gradient(300, 200), tmp_path / "a.png")
    assert cli.main(["resize", str(tmp_path), "--max-side", "150", "--quiet"]) == 0
    assert load_image(path).pixels.shape == (150, 100, 3)
    assert "resized 1" in capsys.readouterr().err
    assert cli.main(["resize", str(tmp_path / "missing.png"), "--max-side", "150"]) == 2
