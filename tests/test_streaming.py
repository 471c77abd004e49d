"""Out-of-core images: lazy TIFF regions, streamed tiled BigTIFF output equal to the in-memory result."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from conftest import random_compact
from tessera.image.regions import TiffRegions
from tessera.tasks import files
from tessera.tasks.inpaint_stream import stream_inpaint
from tessera.tasks.upscale_stream import stream_upscale
from tessera.tiling import ArraySource
from tessera.engine import tiled_apply
from tessera.errors import ImageReadError, InputError, OptionError
from tessera.models.descriptor import Model


def compact(scale: int = 2, seed: int = 0) -> Model:
    return Model(random_compact(scale, num_feat=8, num_conv=2, seed=seed), "compact", scale=scale)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    rng = np.random.default_rng(1)
    base = rng.random((9, 13, 3))
    import cv2

    smooth = cv2.resize(base, (203, 150), interpolation=cv2.INTER_CUBIC)
    noisy = smooth + rng.normal(0, 0.05, smooth.shape)
    return np.clip(noisy * 255, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("layout", [
    {},                                              # uncompressed, contiguous: positioned reads
    {"byteorder": ">"},                              # big-endian contiguous
    {"tile": (32, 48), "compression": "zlib"},       # tiled and compressed: zarr store
    {"rowsperstrip": 7, "compression": "zlib"},      # compressed strips
])
def test_regions_read_exactly_the_rectangle(tmp_path, photo, layout):
    path = tmp_path / "scan.tif"
    tifffile.imwrite(path, photo, **layout)
    with TiffRegions(path) as reader:
        assert reader.shape == photo.shape and reader.dtype == np.uint8
        assert np.array_equal(reader.read(0, 150, 0, 203), photo)
        assert np.array_equal(reader.read(17, 99, 41, 160), photo[17:99, 41:160])
        assert np.array_equal(reader.read(149, 150, 202, 203), photo[149:, 202:])
        with pytest.raises(OptionError):
            reader.read(0, 151, 0, 10)


def test_regions_refuse_what_cannot_be_streamed(tmp_path, photo):
    path = tmp_path / "rotated.tif"
    tifffile.imwrite(path, photo, extratags=[(274, "H", 1, 6, True)])
    with pytest.raises(ImageReadError, match="orientation 6"):
        TiffRegions(path)
    with pytest.raises(ImageReadError, match="no such file"):
        TiffRegions(tmp_path / "missing.tif")


@pytest.mark.parametrize("dtype, layout", [(np.uint8, {}), (np.uint16, {"tile": (64, 64), "compression": "zlib"})])
@pytest.mark.slow
def test_streamed_upscale_equals_in_memory_tiling(tmp_path, photo, dtype, layout):
    pixels = photo.astype(np.uint16) * 257 if dtype == np.uint16 else photo
    source = tmp_path / "scan.tif"
    tifffile.imwrite(source, pixels, **layout)
    out, report = stream_upscale(source, tmp_path / "big.tif", model=compact(), tile=48)
    reports = [report]
    expected = tiled_apply(compact(), pixels, tile=48)
    with tifffile.TiffFile(out) as tiff:
        page = tiff.pages.first
        assert tiff.is_bigtiff and page.is_tiled
        assert page.tilewidth == page.tilelength == reports[0].block * 2
        result = page.asarray()
    assert result.dtype == dtype and result.shape == expected.shape == (300, 406, 3)
    assert np.abs(result.astype(np.int64) - expected).max() <= 1  # float rounding at most
    assert reports[0].blocks == 4 * 5  # 150 / 48 -> 4 block rows, 203 / 48 -> 5 block columns


def test_weight_free_stream_matches_the_upscale_task(tmp_path, photo):
    from tessera.tasks.upscale import upscale

    source = tmp_path / "scan.tif"
    tifffile.imwrite(source, photo)
    out = stream_upscale(source, tmp_path / "x2.tif", model="lanczos").image
    assert np.array_equal(tifffile.imread(out), upscale(photo, model="lanczos").image)


@pytest.mark.parametrize("batch", [2, 3, 4])
def test_batched_blocks_are_written_each_once_in_file_order(tmp_path, photo, batch):
    """Block windows differ in shape at the borders (a row of three: first, middle, last), so a batch of several
    blocks must be a run from the front of the queue: the file then holds every block once, in its place."""
    from tessera.tasks.upscale import upscale

    pixels = photo[:64, :96]  # 2 x 3 blocks of 32 px: the first and the last of a row share a window shape
    source = tmp_path / "scan.tif"
    tifffile.imwrite(source, pixels)
    out, report = stream_upscale(source, tmp_path / "x2.tif", model="lanczos", scale=2, tile=32, tile_batch=batch)
    assert report.blocks == 6
    assert np.array_equal(tifffile.imread(out), upscale(pixels, model="lanczos", scale=2).image)


def test_multi_pass_is_chained_per_block(tmp_path, photo):
    from tessera.tasks.upscale import upscale

    source = tmp_path / "scan.tif"
    tifffile.imwrite(source, photo[:60, :70])
    out = stream_upscale(source, tmp_path / "x4.tif", model=compact(), scale=4, tile=32).image
    expected = upscale(photo[:60, :70], model=compact(), scale=4, tile=32).image
    result = tifffile.imread(out)
    assert result.shape == expected.shape == (240, 280, 3)
    assert np.abs(result.astype(np.int64) - expected).max() <= 1


def test_gray_and_alpha_keep_their_channels(tmp_path, photo):
    gray = tmp_path / "gray.tif"
    tifffile.imwrite(gray, photo[:, :, 1])
    assert tifffile.imread(stream_upscale(gray, tmp_path / "g2.tif", model="lanczos").image).shape == (300, 406)
    rgba = tmp_path / "rgba.tif"
    alpha = np.full(photo.shape[:2], 200, np.uint8)
    tifffile.imwrite(rgba, np.dstack([photo, alpha]), extrasamples=["unassalpha"], tile=(32, 32),
                     compression="zlib")
    result = tifffile.imread(stream_upscale(rgba, tmp_path / "a2.tif", model=compact(), tile=48).image)
    assert result.shape == (300, 406, 4)
    assert np.abs(result[:, :, 3].astype(int) - 200).max() <= 1  # a flat alpha stays flat through Lanczos


def test_memory_follows_the_block_not_the_image(monkeypatch, tmp_path, photo):
    """The largest region read (and so the largest array held) is the same for a 4x larger image."""
    largest = []

    def spy(self, y0, y1, x0, x1):
        largest[-1] = max(largest[-1], (y1 - y0) * (x1 - x0))
        return np.array(self.array[y0:y1, x0:x1])

    monkeypatch.setattr(ArraySource, "read", spy)
    tiles = []
    for reps in (1, 2):
        largest.append(0)
        big = np.tile(photo, (reps, reps, 1))
        report = stream_upscale(big, tmp_path / f"o{reps}.tif", model="lanczos", tile=40, tile_pad=4).report
        tiles.append(report.blocks)
    assert tiles[1] > 3 * tiles[0]
    assert largest[0] == largest[1] == (40 + 2 * 4) ** 2  # one block and its context on both sides


def test_streaming_refuses_what_it_cannot_do(tmp_path, photo):
    source = tmp_path / "scan.tif"
    tifffile.imwrite(source, photo)
    with pytest.raises(OptionError, match="integer scale"):
        stream_upscale(source, tmp_path / "o.tif", model="lanczos", scale=1.5)
    with pytest.raises(OptionError, match="tif"):
        stream_upscale(source, tmp_path / "o.png", model="lanczos")
    with pytest.raises(OptionError, match="power of 2"):
        stream_upscale(source, tmp_path / "o.tif", model=compact(), scale=6)


@pytest.fixture(scope="module")
def astronaut_pair(tmp_path_factory):
    from skimage import data

    folder = tmp_path_factory.mktemp("inpaint")
    image = np.ascontiguousarray(np.concatenate([data.astronaut(), data.astronaut()[:, ::-1]], axis=1))
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[100:130, 200:260] = 255   # two holes near each other, one far away
    mask[300:302, 500:520] = 255
    mask[400:420, 900:1000] = 255
    tifffile.imwrite(folder / "photo.tif", image, tile=(128, 128), compression="zlib")
    tifffile.imwrite(folder / "mask.tif", mask)
    return folder, image, mask


def test_streamed_inpaint_equals_in_memory_inpaint(tmp_path, astronaut_pair):
    from tessera.tasks.inpaint import inpaint

    folder, image, mask = astronaut_pair
    out, report = stream_inpaint(folder / "photo.tif", folder / "mask.tif", tmp_path / "filled.tif", model="telea")
    reports = [report]
    result = tifffile.imread(out)
    assert np.array_equal(result[mask == 0], image[mask == 0])   # outside the holes: the input, bit for bit
    assert (result[mask > 0] != image[mask > 0]).any(axis=1).mean() > 0.9
    assert np.array_equal(result, inpaint(image, mask, model="telea").image)
    assert reports[0].regions == 2   # the two near holes share a crop
    assert not list(tmp_path.glob(".tessera-*"))  # scratch removed


def test_inpaint_mask_must_match(tmp_path, astronaut_pair):
    folder, image, _mask = astronaut_pair
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((10, 10), np.uint8))
    with pytest.raises(InputError, match="photo's size"):
        stream_inpaint(folder / "photo.tif", tmp_path / "small.tif", tmp_path / "o.tif", model="telea")
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros(image.shape[:2], np.uint8))
    with pytest.raises(InputError, match="empty"):
        stream_inpaint(folder / "photo.tif", tmp_path / "empty.tif", tmp_path / "o.tif", model="telea")


def test_needs_streaming_follows_the_budget(tmp_path, photo):
    source = tmp_path / "scan.tif"
    tifffile.imwrite(source, photo)
    need = files.in_memory_bytes(203, 150, scale=2, itemsize=1, channels=3)
    assert files.in_memory_estimate(source, scale=2) == (203, 150, need)
    assert files.needs_streaming(source, scale=2, max_ram=need - 1)
    assert not files.needs_streaming(source, scale=2, max_ram=need)


def test_the_upscale_command_streams_a_tiff_over_max_ram(tmp_path, photo, capsys):
    """`tessera upscale` decides to stream from --max-ram as batch does: same pixels as the in-memory task."""
    from tessera.cli import main
    from tessera.tasks.upscale import upscale

    source = tmp_path / "scan.tif"
    tifffile.imwrite(source, photo)
    out = tmp_path / "x2.tif"
    assert main(["upscale", str(source), "-o", str(out), "--model", "lanczos", "--max-ram", "64K", "--quiet"]) == 0
    assert "streamed" in capsys.readouterr().err
    with tifffile.TiffFile(out) as tiff:
        assert tiff.is_bigtiff and tiff.pages.first.is_tiled
        assert np.array_equal(tiff.pages.first.asarray(), upscale(photo, model="lanczos").image)
    assert main(["upscale", str(source), "-o", str(tmp_path / "x2.png"), "--model", "lanczos",
                 "--max-ram", "64K"]) == 2
    assert "name the output .tif" in capsys.readouterr().err
    assert not (tmp_path / "x2.png").exists()
    in_memory = tmp_path / "small.tif"
    assert main(["upscale", str(source), "-o", str(in_memory), "--model", "lanczos", "--quiet"]) == 0
    assert "streamed" not in capsys.readouterr().err  # within the default budget: the in-memory flow


def test_the_inpaint_command_streams_a_tiff_over_max_ram(tmp_path, astronaut_pair, capsys):
    from tessera.cli import main

    folder, image, mask = astronaut_pair
    out = tmp_path / "filled.tif"
    assert main(["inpaint", str(folder / "photo.tif"), "--mask", str(folder / "mask.tif"), "-o", str(out),
                 "--model", "telea", "--max-ram", "5M", "--quiet"]) == 0
    assert "2 group(s) of holes" in capsys.readouterr().err
    result = tifffile.imread(out)
    assert np.array_equal(result[mask == 0], image[mask == 0])
    assert (result[mask > 0] != image[mask > 0]).any(axis=1).mean() > 0.9


def test_streaming_an_array_leaves_the_caller_s_array_unchanged(tmp_path, astronaut_pair):
    """Array sources hand out views (no copy per window): what the stream lays over a region is its own copy."""
    _folder, image, mask = astronaut_pair
    photo = image.copy()
    out = stream_inpaint(photo, mask, tmp_path / "filled.tif", model="telea").image
    assert np.array_equal(photo, image)
    assert not np.array_equal(tifffile.imread(out), image)
