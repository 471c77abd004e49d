"""`tessera resize` drops nothing: every TIFF page and every animation frame is shrunk and kept, palette pictures
stay palette, GIFs are found and resized, a file that cannot be kept whole is refused untouched, and no torch."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageSequence

from tessera.batch import resize_frames
from tessera.batch.resize import resize_files

PALETTE = np.array([[0, 0, 0], [230, 30, 30], [30, 200, 60], [40, 60, 220], [250, 250, 250], [255, 0, 255]],
                   np.uint8)


def pattern(height: int, width: int, shift: int = 0) -> np.ndarray:
    """Palette indices 0..4: bands and a moving square, so frames differ and shrinking mixes colours."""
    ys, xs = np.mgrid[0:height, 0:width]
    indices = ((xs // 7 + ys // 11) % 4).astype(np.uint8)
    indices[20 + shift:60 + shift, 30:90] = 4
    return indices


def colour_frame(height: int, width: int, shift: int) -> np.ndarray:
    return PALETTE[pattern(height, width, shift)]


def frame_info(path: Path) -> list[dict]:
    with Image.open(path) as image:
        frames = []
        for frame in ImageSequence.Iterator(image):
            frame.load()
            frames.append({"size": frame.size, "mode": frame.mode, "duration": frame.info.get("duration"),
                           "disposal": getattr(frame, "disposal_method", frame.info.get("disposal"))})
        return frames


def test_three_page_tiff_in_place_keeps_every_page_shrunk(tmp_path):
    path = tmp_path / "scan.tif"
    colormap = np.zeros((3, 256), np.uint16)
    colormap[:, :len(PALETTE)] = PALETTE.T.astype(np.uint16) * 257
    with tifffile.TiffWriter(path) as writer:
        writer.write(colour_frame(300, 400, 0), photometric="rgb", compression="zlib", predictor=True,
                     extratags=[(285, "s", 0, "front", True)])
        writer.write((np.arange(500 * 200, dtype=np.uint16).reshape(500, 200) * 7), photometric="minisblack",
                     compression="lzw")
        writer.write(pattern(240, 320), photometric="palette", colormap=colormap, compression="packbits")

    [outcome] = resize_files([path], 100)
    assert outcome.status == "done", outcome.error
    with tifffile.TiffFile(path) as tiff:
        pages = list(tiff.pages)
        assert [page.shape[:2] for page in pages] == [(75, 100), (100, 40), (75, 100)]
        assert [page.dtype for page in pages] == [np.uint8, np.uint16, np.uint8]
        assert [page.photometric.name for page in pages] == ["RGB", "MINISBLACK", "PALETTE"]
        assert [page.compression.name for page in pages] == ["ADOBE_DEFLATE", "LZW", "PACKBITS"]
        assert pages[0].predictor.name == "HORIZONTAL" and pages[0].tags.valueof(285) == "front"
        indices = pages[2].asarray()
        assert set(np.unique(indices)) <= set(range(len(PALETTE)))  # matched back to its own colour map
        assert np.array_equal(pages[2].colormap, colormap)
        assert int(pages[1].asarray().max()) > 40000  # 16-bit range kept, not squeezed through 8 bits


def test_animated_webp_keeps_four_frames_with_durations_and_loop(tmp_path):
    path = tmp_path / "clip.webp"
    frames = [Image.fromarray(colour_frame(200, 300, 25 * k)) for k in range(4)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=[100, 200, 300, 400], loop=3,
                   lossless=True)

    [outcome] = resize_files([path], 150)
    assert outcome.status == "done", outcome.error
    info = frame_info(path)
    assert [frame["size"] for frame in info] == [(150, 100)] * 4
    assert [frame["duration"] for frame in info] == [100, 200, 300, 400]
    with Image.open(path) as image:
        assert image.info["loop"] == 3
    assert b"VP8L" in path.read_bytes()  # a lossless source stays lossless


def test_gif_in_a_folder_is_resized_with_all_its_frames(tmp_path):
    path = tmp_path / "anim.gif"
    frames = []
    for k in range(3):
        indices = pattern(200, 300, 30 * k)
        indices[:40, :40] = 5  # transparent corner
        frame = Image.frombytes("P", (300, 200), indices.tobytes())
        frame.putpalette(PALETTE.tobytes())
        frames.append(frame)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=[120, 250, 400], loop=0,
                   disposal=[1, 2, 1], transparency=5)

    [outcome] = resize_files([tmp_path], 60)
    assert (outcome.file, outcome.status) == ("anim.gif", "done"), outcome.error
    info = frame_info(path)
    assert [frame["size"] for frame in info] == [(60, 40)] * 3
    assert [frame["duration"] for frame in info] == [120, 250, 400]
    assert [frame["disposal"] for frame in info] == [1, 2, 1]
    with Image.open(path) as image:
        assert image.info["loop"] == 0 and image.mode == "P" and "transparency" in image.info
        corner = np.asarray(image.convert("RGBA"))[:5, :5, 3]
        assert (corner == 0).all()  # transparency kept


def test_palette_png_stays_palette_and_small(tmp_path):
    path = tmp_path / "logo.png"
    rng = np.random.default_rng(3)
    indices = rng.integers(0, 5, (300, 400), dtype=np.uint8)  # noise: the encoded size follows the pixel count
    indices[:20, :20] = 5
    image = Image.frombytes("P", (400, 300), indices.tobytes())
    image.putpalette(PALETTE.tobytes())
    image.save(path, transparency=5)
    original = path.stat().st_size

    [outcome] = resize_files([path], 100)
    assert outcome.status == "done", outcome.error
    with Image.open(path) as result:
        assert result.mode == "P" and result.size == (100, 75)
        assert len(result.getpalette()) // 3 <= len(PALETTE)
        assert np.asarray(result.convert("RGBA"))[0, 0, 3] == 0  # its transparent entry kept
        rgb = io.BytesIO()
        result.convert("RGB").save(rgb, format="PNG")
    area_ratio = (100 * 75) / (400 * 300)
    assert path.stat().st_size <= original * area_ratio * 1.5
    assert path.stat().st_size < len(rgb.getvalue())  # smaller than the same pixels in RGB


def test_apng_keeps_frames_durations_and_disposal(tmp_path):
    path = tmp_path / "anim.png"
    frames = [Image.fromarray(np.dstack([colour_frame(120, 160, 10 * k), np.full((120, 160), 255, np.uint8)]))
              for k in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=[50, 60, 70], loop=2,
                   disposal=[0, 1, 0])

    [outcome] = resize_files([path], 80)
    assert outcome.status == "done", outcome.error
    info = frame_info(path)
    assert [frame["size"] for frame in info] == [(80, 60)] * 3
    assert [frame["duration"] for frame in info] == [50, 60, 70]
    assert [frame["disposal"] for frame in info] == [0, 1, 0]


def test_a_tiff_with_subifds_is_refused_untouched(tmp_path):
    path = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(path) as writer:
        writer.write(colour_frame(400, 400, 0), photometric="rgb", subifds=1)
        writer.write(colour_frame(100, 100, 0), photometric="rgb", subfiletype=1)  # into the first page's SubIFD
    before = path.read_bytes()

    [outcome] = resize_files([path], 50)
    assert outcome.status == "failed"
    assert "page 1 of 1 has SubIFDs" in outcome.error and "\n" not in outcome.error
    assert path.read_bytes() == before
    assert resize_files([path], 400)[0].status == "skipped"  # small enough: nothing to refuse


def test_a_thumbnail_page_keeps_its_ratio_to_its_page(tmp_path):
    path = tmp_path / "with-thumbnail.tif"
    with tifffile.TiffWriter(path) as writer:
        writer.write(colour_frame(400, 800, 0), photometric="rgb")
        writer.write(colour_frame(100, 200, 0), photometric="rgb", subfiletype=1)  # a reduced-resolution copy
    [outcome] = resize_files([path], 400)
    assert outcome.status == "done", outcome.error
    with tifffile.TiffFile(path) as tiff:
        assert [page.shape[:2] for page in tiff.pages] == [(200, 400), (50, 100)]
        assert tiff.pages[1].subfiletype == 1


def test_an_animation_named_for_a_single_picture_format_is_refused_untouched(tmp_path):
    path = tmp_path / "clip.jpg"  # an animated WEBP, read by its content, cannot become a JPEG of all its frames
    frames = [Image.fromarray(colour_frame(200, 300, 25 * k)) for k in range(4)]
    frames[0].save(path, format="WEBP", save_all=True, append_images=frames[1:], duration=100)
    before = path.read_bytes()

    [outcome] = resize_files([path], 100)
    assert outcome.status == "failed" and "cannot hold the 4 frames" in outcome.error
    assert path.read_bytes() == before


def test_frames_over_the_pixel_limit_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "long.gif"
    frames = [Image.fromarray(colour_frame(100, 100, 5 * k)).quantize(8) for k in range(5)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    before = path.read_bytes()
    monkeypatch.setattr(resize_frames, "DEFAULT_MAX_PIXELS", 40_000)  # 5 frames of 10,000 pixels

    [outcome] = resize_files([path], 50)
    assert outcome.status == "failed" and "over the limit" in outcome.error
    assert path.read_bytes() == before


def test_the_resize_command_imports_no_torch(tmp_path):
    Image.fromarray(colour_frame(200, 300, 0)).save(tmp_path / "a.png")
    frames = [Image.fromarray(colour_frame(200, 300, 20 * k)) for k in range(2)]
    frames[0].save(tmp_path / "b.gif", save_all=True, append_images=frames[1:])
    script = ("import sys; from tessera import cli; "
              f"code = cli.main(['resize', {str(tmp_path)!r}, '--max-side', '50', '--quiet']); "
              "assert code == 0, code; assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "resized 2" in done.stderr
    with Image.open(tmp_path / "b.gif") as image:
        assert image.size == (50, 33) and image.n_frames == 2


@pytest.mark.parametrize("suffix", [".png", ".bmp"])
def test_already_small_palette_files_are_left_untouched(tmp_path, suffix):
    path = tmp_path / f"small{suffix}"
    image = Image.frombytes("P", (40, 30), pattern(30, 40).tobytes())
    image.putpalette(PALETTE.tobytes())
    image.save(path)
    before = path.read_bytes()
    [outcome] = resize_files([path], 100)
    assert outcome.status == "skipped" and path.read_bytes() == before


def test_tiff_page_layouts_and_first_page_exif_are_kept(tmp_path):
    from tessera.image.pixels import Picture
    from tessera.image.write import save_image

    rng = np.random.default_rng(5)
    rgb = colour_frame(300, 400, 0)
    exif = Image.Exif()
    exif[0x010F] = "Scanner maker"
    exif.get_ifd(0x8769)[0x9003] = "2020:01:01 10:00:00"
    path = save_image(Picture(rgb, exif=b"Exif\x00\x00" + exif.tobytes()), tmp_path / "layouts.tif")
    pages = [
        (np.moveaxis(rgb, 2, 0), {"photometric": "rgb", "planarconfig": "separate", "tile": (64, 64)}),
        (rng.random((200, 300)) > 0.5, {"photometric": "miniswhite", "compression": "packbits"}),
        (rng.random((300, 200)).astype(np.float32), {"photometric": "minisblack", "compression": "zlib"}),
        (np.dstack([rgb, rgb[:, :, :1]]), {"photometric": "separated", "compression": "lzw"}),
        (np.dstack([rgb, rgb[:, :, :1]]), {"photometric": "rgb", "extrasamples": ["unassalpha"]}),
    ]
    for samples, options in pages:
        tifffile.imwrite(path, samples, append=True, **options)

    [outcome] = resize_files([path], 100)
    assert outcome.status == "done", outcome.error
    with tifffile.TiffFile(path) as tiff:
        written = list(tiff.pages)
        assert len(written) == 6
        assert [page.shape for page in written[1:]] == [(3, 75, 100), (67, 100), (100, 67), (75, 100, 4),
                                                        (75, 100, 4)]
        assert written[1].is_tiled and written[1].planarconfig == tifffile.PLANARCONFIG.SEPARATE
        assert written[2].dtype == np.bool_ and written[2].photometric.name == "MINISWHITE"
        assert written[3].dtype == np.float32
        assert written[4].photometric.name == "SEPARATED" and written[5].extrasamples == (2,)
    with Image.open(path) as image:
        assert image.size == (100, 75) and image.getexif().get(0x010F) == "Scanner maker"
        assert image.getexif().get_ifd(0x8769).get(0x9003) == "2020:01:01 10:00:00"
