"""`tessera upscale` end to end, and every image I/O error through the CLI: exit 2, one line, no output left."""
from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from tessera.cli import main
from tessera.image.read import load_image


@pytest.fixture
def photo_file(tmp_path, photo_uint8) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(photo_uint8[:60, :80]).save(path)
    return path


def test_upscale_writes_the_result_and_says_which_model_ran(photo_file, tmp_path, capsys):
    out = tmp_path / "out" / "big.png"
    out.parent.mkdir()
    assert main(["upscale", "--model", "lanczos", str(photo_file), "-o", str(out), "--device", "cpu", "--tile", "32"]) == 0
    assert load_image(out).pixels.shape == (120, 160, 3)
    err = capsys.readouterr().err
    assert "weight-free" in err and "--model auto" in err and "tile(s) of 32px" in err


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's calling card)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def _truncated_png(path: Path, photo: np.ndarray) -> None:
    Image.fromarray(photo).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_INPUTS = {
    "missing": (lambda p, photo: None, "no such file"),
    "not an image": (lambda p, photo: p.write_text("hello, not pixels"), "not an image"),
    "truncated": (_truncated_png, "truncated"),
    "unsupported mode": (lambda p, photo: tifffile.imwrite(p.with_suffix(".tif"), np.zeros((8, 8), np.complex64)),
                         "unsupported"),
    "over the pixel limit": (lambda p, photo: _png_header_only(p, 30000, 20000), "pixel"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_exit_2_with_one_line_and_no_output(case, tmp_path, photo_uint8, capsys):
    make, words = BAD_INPUTS[case]
    source = tmp_path / "input.png"
    make(source, photo_uint8[:50, :50])
    if case == "unsupported mode":
        source = source.with_suffix(".tif")
    out = tmp_path / "result.png"
    assert main(["upscale", "--model", "lanczos", str(source), "-o", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("tessera: error: ") and str(source) in err and words in err.lower()
    assert not out.exists() and list(tmp_path.glob("*result*")) == []


def test_pixel_limit_is_configurable(photo_file, tmp_path, capsys):
    out = tmp_path / "result.png"
    assert main(["upscale", "--model", "lanczos", str(photo_file), "-o", str(out), "--max-pixels", "1000"]) == 2
    assert "4,800 pixels" in capsys.readouterr().err and not out.exists()


def test_unwritable_output_exit_2(photo_file, tmp_path, capsys):
    out = tmp_path / "no-such-folder" / "result.png"
    assert main(["upscale", "--model", "lanczos", str(photo_file), "-o", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out) in err and not out.exists()


def test_the_input_is_not_overwritten_unless_asked(photo_file, capsys):
    before = photo_file.read_bytes()
    assert main(["upscale", "--model", "lanczos", str(photo_file), "-o", str(photo_file), "--device", "cpu"]) == 2
    assert "overwrite" in capsys.readouterr().err and photo_file.read_bytes() == before
    assert main(["upscale", "--model", "lanczos", str(photo_file), "-o", str(photo_file), "--device", "cpu", "--overwrite"]) == 0
    assert load_image(photo_file).pixels.shape == (120, 160, 3)


def test_bad_options_exit_2(photo_file, tmp_path, capsys):
    out = tmp_path / "result.png"
    for flags in (["--tile", "huge"], ["--max-memory", "lots"], ["--scale", "0"], ["--device", "tpu"],
                  ["--model", "no-such-model"]):
        assert main(["upscale", "--model", "lanczos", str(photo_file), "-o", str(out), *flags]) == 2, flags
        assert capsys.readouterr().err.count("\n") == 1
    assert not out.exists()


def test_console_script_exit_code(photo_file, tmp_path):
    done = subprocess.run([sys.executable, "-m", "tessera", "upscale", "--model", "lanczos", str(tmp_path / "nope.png"), "-o",
                           str(tmp_path / "x.png")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no such file" in done.stderr
