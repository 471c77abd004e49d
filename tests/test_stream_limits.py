"""The streaming decision uses the limits that would refuse the in-memory run (#16, item 5): an image (or its mask)
over the decoder's pixel limit is streamed when it can be, and refused from its header when it cannot, never
loaded only to be refused."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

import tessera.image.decode as decode
from tessera.batch import run_batch
from tessera.errors import InputError
from tessera.image.write import save_image
from tessera.tasks.files import stream_decision
from tessera.tasks.registry import get_task

from test_batch import photo

LIMIT = 5000  # pixels: the decoder's default limit in these tests (90x70 = 6300 is over it)


@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.setattr(decode, "DEFAULT_MAX_PIXELS", LIMIT)


def square_mask(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[30:50, 20:40] = 255
    return mask


def test_a_batch_inpaint_over_the_pixel_limit_streams_within_the_ram_budget(tmp_path, small_limit, monkeypatch):
    import tessera.image.read as read

    (tmp_path / "in").mkdir()
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "in" / "scan.tif", photo(90, 70, 1), tile=(32, 32))
    tifffile.imwrite(tmp_path / "masks" / "scan.tif", square_mask(90, 70), tile=(32, 32))

    def never(*args, **kwargs):
        raise AssertionError("the in-memory flow loaded an image it would refuse")

    monkeypatch.setattr(read, "load_image", never)
    summary = run_batch("inpaint", tmp_path / "in", tmp_path / "out", masks=tmp_path / "masks", model="telea",
                        max_ram="8G")
    [outcome] = summary.outcomes
    assert outcome.status == "done" and outcome.streamed, outcome
    result = tifffile.imread(tmp_path / "out" / "scan.tif")
    source = tifffile.imread(tmp_path / "in" / "scan.tif")
    outside = square_mask(90, 70) == 0
    assert result.shape == source.shape and np.array_equal(result[outside], source[outside])


def test_an_image_over_the_pixel_limit_that_cannot_stream_is_refused_from_its_header(tmp_path, small_limit):
    save_image(photo(90, 70, 2), tmp_path / "poster.png")
    save_image(square_mask(90, 70), tmp_path / "mask.png")
    task = get_task("inpaint")
    with pytest.raises(InputError, match=f"more than the {LIMIT:,} pixels.*only TIFF"):
        stream_decision(task, tmp_path / "poster.png", 1.0, 8 << 30, mask=tmp_path / "mask.png")
    assert not stream_decision(task, tmp_path / "poster.png", 1.0, 8 << 30, strict=False)  # the CLI's own limits
    # within the limit and the budget, in memory; with no image limit (batch), the mask's still counts
    save_image(photo(60, 70, 2), tmp_path / "small.png")
    assert not stream_decision(task, tmp_path / "small.png", 1.0, 8 << 30)
    with pytest.raises(InputError, match="pixels"):
        stream_decision(task, tmp_path / "small.png", 1.0, 8 << 30, pixel_limit=None, mask=tmp_path / "mask.png")
    assert not stream_decision(get_task("upscale"), tmp_path / "poster.png", 2.0, 8 << 30, pixel_limit=None)


def test_the_mask_counts_in_the_ram_estimate(tmp_path):
    tifffile.imwrite(tmp_path / "scan.tif", photo(100, 100, 3))
    save_image(square_mask(100, 100), tmp_path / "mask.png")
    task = get_task("inpaint")
    image_only = 100 * 100 * 4 * 4  # input and three outputs, 4 bytes a pixel
    assert not stream_decision(task, tmp_path / "scan.tif", 1.0, image_only)
    assert stream_decision(task, tmp_path / "scan.tif", 1.0, image_only, mask=tmp_path / "mask.png")
