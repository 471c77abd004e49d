"""Check before work: every image command refuses a bad output, option, device or model name with exit 2 and
one line, before the input is decoded or a model is loaded (both are made to fail loudly here if reached)."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from tessera.cli import main
from tessera.image.write import save_image


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty model cache, so that catalog names resolve to 'not downloaded'."""
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    pixels = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    save_image(pixels, path)
    return path


@pytest.fixture
def mask(tmp_path) -> Path:
    path = tmp_path / "mask.png"
    marks = np.zeros((60, 80), np.uint8)
    marks[20:30, 30:40] = 255
    save_image(marks, path)
    return path


@pytest.fixture
def out(tmp_path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.fixture
def weights(tmp_path) -> Path:
    path = tmp_path / "net.pth"
    path.write_bytes(b"not read: the checks come first")
    return path


@pytest.fixture
def no_work(monkeypatch):
    """Make decoding an image and loading a model fail loudly (AssertionError is not a tessera error: main()
    would not turn it into an exit code)."""
    from tessera.image import read as image_read
    from tessera.models import loader
    from tessera.tasks import common

    def reached(*args, **kwargs):
        raise AssertionError("work started before the checks")

    for module, name in ((image_read, "load_image"), (common, "load_image"), (loader, "load_model"),
                         (loader, "load_file")):
        monkeypatch.setattr(module, name, reached)


def _refused(argv: list[str], capsys, words: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("tessera: error: ") and "Traceback" not in err, err
    assert words in lines[0], lines[0]
    return lines[0]


def _header_only_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header says ``width`` x ``height``: enough for the checks, which never decode."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path

# ----------------------------------------------------------------------------------------------- upscale


UPSCALE_CASES = {
    "missing folder": (["-o", "{out}/missing/dir/big.png"], "does not exist"),
    "unknown suffix": (["-o", "{out}/big.xyz"], "unknown image file suffix '.xyz'"),
    "scale too large": (["--scale", "20"], "option scale"),
    "scale too small": (["--scale", "0.0001"], "option scale"),
    "quality": (["--quality", "0"], "quality"),
    "max pixels": (["--max-pixels", "0"], "--max-pixels"),
    "device name": (["--device", "tpu"], "unknown device"),
    "unknown model": (["--model", "no-such-model"], "unknown model"),
    "model not pulled": (["--model", "realesrgan-x4plus"], "not downloaded"),
    "model file, bad output": (["--model", "{weights}", "-o", "{out}/big.xyz"], ".xyz"),
    "sharpen with a model": (["--model", "{weights}", "--sharpen", "1"], "option sharpen: applies to the weight-free"),
    "replaces the input": (["-o", "{photo}"], "overwrite"),
}


@pytest.mark.parametrize("case", sorted(UPSCALE_CASES))
def test_upscale_checks_before_work(case, photo, out, weights, home, no_work, capsys):
    flags, words = UPSCALE_CASES[case]
    flags = [f.format(out=out, weights=weights, photo=photo) for f in flags]
    if "-o" not in flags:
        flags += ["-o", str(out / "big.png")]
    before = photo.read_bytes()
    _refused(["upscale", "--model", "lanczos", str(photo), *flags, "--quiet"], capsys, words)
    assert list(out.iterdir()) == [] and photo.read_bytes() == before


def test_upscale_refuses_an_output_its_format_cannot_hold_before_decoding(tmp_path, out, home, no_work, capsys):
    wide = _header_only_png(tmp_path / "wide.png", 1100, 10)
    _refused(["upscale", "--model", "lanczos", str(wide), "-o", str(out / "big.webp"), "--scale", "16"], capsys, "WEBP cannot hold 17600x160")
    assert list(out.iterdir()) == []

# ----------------------------------------------------------------------------------------------- inpaint


INPAINT_CASES = {
    "max size": (["--max-size", "8"], "max_size"),
    "unknown suffix": (["-o", "{out}/filled.xyz"], ".xyz"),
    "missing mask": (["--mask", "{out}/no-mask.png"], "mask"),
    "mask of another size": (["--mask", "{small}"], "--resize-mask"),
    "save-regions is a file": (["--save-regions", "{weights}"], "is not a folder"),
    "lama not pulled": (["--model", "lama"], "not downloaded"),
}


@pytest.mark.parametrize("case", sorted(INPAINT_CASES))
def test_inpaint_checks_before_work(case, tmp_path, photo, mask, out, weights, home, no_work, capsys):
    small = tmp_path / "small.png"
    save_image(np.zeros((10, 10), np.uint8), small)
    flags, words = INPAINT_CASES[case]
    flags = [f.format(out=out, small=small, weights=weights) for f in flags]
    if "--mask" not in flags:
        flags += ["--mask", str(mask)]
    if "-o" not in flags:
        flags += ["-o", str(out / "filled.png")]
    _refused(["inpaint", str(photo), *flags, "--quiet"], capsys, words)
    assert list(out.iterdir()) == []

# ----------------------------------------------------------------------------------------------- enhance


ENHANCE_CASES = {
    "background none at upscale 2": (["--background", "none", "--upscale", "2"], "background 'none'"),
    "missing folder": (["-o", "{out}/missing/faces.png"], "does not exist"),
    "model not pulled": (["--model", "gpen-bfr-512"], "not downloaded"),
    "save-faces is a file": (["--save-faces", "{weights}"], "is not a folder"),
}


@pytest.mark.parametrize("case", sorted(ENHANCE_CASES))
def test_enhance_checks_before_work(case, photo, out, weights, home, no_work, capsys):
    flags, words = ENHANCE_CASES[case]
    flags = [f.format(out=out, weights=weights) for f in flags]
    if "-o" not in flags:
        flags += ["-o", str(out / "faces.png")]
    _refused(["enhance", str(photo), *flags, "--quiet"], capsys, words)
    assert list(out.iterdir()) == []

# ----------------------------------------------------------------------------------------------- stitch


@pytest.fixture
def manifest(tmp_path, photo, mask, home) -> Path:
    folder = tmp_path / "regions"
    assert main(["inpaint", str(photo), "--mask", str(mask), "-o", str(tmp_path / "filled.png"), "--model", "telea",
                 "--save-regions", str(folder), "--quiet"]) == 0
    return folder / "manifest.json"


@pytest.mark.parametrize("flags, words", [
    (["-o", "{out}/stitched.xyz"], ".xyz"),
    (["-o", "{out}/missing/stitched.png"], "does not exist"),
    (["-o", "{photo}"], "overwrite"),
])
def test_stitch_checks_before_work(flags, words, manifest, photo, out, no_work, capsys):
    capsys.readouterr()
    flags = [f.format(out=out, photo=photo) for f in flags]
    before = photo.read_bytes()
    _refused(["stitch", str(manifest), *flags], capsys, words)
    assert list(out.iterdir()) == [] and photo.read_bytes() == before

# ----------------------------------------------------------------------------------------------- folders


def test_resize_refuses_an_output_folder_that_is_a_file(photo, weights, no_work, capsys):
    _refused(["resize", str(photo), "--max-side", "10", "-o", str(weights)], capsys, "is not a folder")


def test_batch_refuses_an_output_folder_it_cannot_create(tmp_path, photo, weights, home, no_work, capsys):
    _refused(["batch", "upscale", "--model", "lanczos", str(tmp_path), "-o", str(weights / "below"), "--quiet"], capsys, "is not a folder")
