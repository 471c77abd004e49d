"""What a batch leaves in its output folder: a resumed run skips only outputs whose data is all there
(truncated or zero-filled files whose header still decodes are redone), a photo without faces is copied as it
is, a TIFF result does not carry the input's shape description (issue #16, items 1 and 7)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tessera.batch import run_batch
from tessera.image.complete import is_whole_image
from tessera.image.read import load_image
from tessera.image.write import save_image


def photo(seed: int = 0) -> np.ndarray:
    import cv2

    noise = (np.random.default_rng(seed).random((60, 80, 3)) * 255).astype(np.uint8)
    return cv2.GaussianBlur(noise, (5, 5), 0)


def cut(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:max(1, int(len(data) * fraction))])


def zero_second_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] + bytes(len(data) - len(data) // 2))


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif", ".bmp"])
def test_whole_images_pass_and_truncated_ones_do_not(tmp_path, suffix):
    path = save_image(photo(), tmp_path / f"a{suffix}")
    assert is_whole_image(path)
    for fraction in (0.5, 0.02, 0.999):
        copy = tmp_path / f"cut-{fraction}{suffix}"
        copy.write_bytes(path.read_bytes())
        cut(copy, fraction)
        assert not is_whole_image(copy), fraction


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])  # WEBP and BMP hold no check of their data
def test_a_zero_filled_second_half_is_not_whole(tmp_path, suffix):
    path = save_image(photo(), tmp_path / f"a{suffix}")
    zero_second_half(path)
    assert not is_whole_image(path)


def test_a_streamed_tiled_bigtiff_is_checked_at_its_last_tile(tmp_path):
    from tessera.image.regions import TiffCanvas
    from tessera.tiling import ArraySource

    image = photo()
    canvas = TiffCanvas(tmp_path / "big.tif", image.shape, image.dtype)
    tiles = canvas.plan(*image.shape[:2], 16, 0)
    source = ArraySource(image)
    results = ((t, source.read(t.y.start, t.y.stop, t.x.start, t.x.stop).astype(np.float32) / 255) for t in tiles)
    written = canvas.consume(results, 1)
    assert is_whole_image(written)
    zero_second_half(written)
    assert not is_whole_image(written)


@pytest.mark.parametrize("damage", ["cut 50 %", "cut 2 %", "cut 99.9 %", "zeros"])
def test_a_resumed_batch_redoes_damaged_outputs(tmp_path, damage):
    (tmp_path / "in").mkdir()
    for i in range(3):
        save_image(photo(i), tmp_path / "in" / f"p{i}.png")
    first = run_batch("upscale", tmp_path / "in", tmp_path / "out", model="lanczos", scale=2)
    assert first.counts()["done"] == 3
    damaged = tmp_path / "out" / "p1.png"
    if damage == "zeros":
        zero_second_half(damaged)
    else:
        cut(damaged, float(damage.split()[1]) / 100)
    again = run_batch("upscale", tmp_path / "in", tmp_path / "out", model="lanczos", scale=2)
    assert again.counts() == {"done": 1, "skipped": 2, "failed": 0}
    assert load_image(damaged).pixels.shape == (120, 160, 3)


@pytest.mark.slow
def test_batch_enhance_copies_a_photo_without_faces_byte_for_byte(tmp_path):
    """As the single ``enhance`` does: nothing to change, so no re-encoding (a JPEG keeps its bytes, EXIF and all)."""
    from skimage import data

    (tmp_path / "in").mkdir()
    save_image(data.coffee(), tmp_path / "in" / "coffee.jpg", quality=90)
    summary = run_batch("enhance", tmp_path / "in", tmp_path / "out")
    assert summary.counts()["done"] == 1
    assert (tmp_path / "out" / "coffee.jpg").read_bytes() == (tmp_path / "in" / "coffee.jpg").read_bytes()


def test_a_tiff_result_does_not_keep_the_inputs_shape_description(tmp_path):
    """tifffile writes the pixel shape into ImageDescription; a result of another size must not carry it, or
    tifffile reads the output against the input's shape ("shaped series shape does not match", issue #16)."""
    import tifffile

    from tessera import upscale

    source = tmp_path / "in.tif"
    tifffile.imwrite(source, photo(), photometric="rgb")
    save_image(upscale(str(source), model="lanczos", scale=2).image, tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tiff:
        assert '"shape"' not in tiff.pages.first.description
        assert tiff.series[0].shape == (120, 160, 3)
