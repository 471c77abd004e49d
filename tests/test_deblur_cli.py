"""`tessera deblur` end to end: a blurred photo comes out sharper, a sharp one unchanged, bad options exit 2."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import load_bench
from tessera.cli import main
from tessera.image.read import load_image


@pytest.fixture(scope="module")
def bench():
    return load_bench("deblur")


@pytest.fixture
def blurred_face(tmp_path, bench) -> tuple[np.ndarray, Path]:
    """The astronaut's face (256 px) and a PNG of it blurred by 15 px at 100 degrees."""
    sharp = bench.astronaut_face()
    path = tmp_path / "blurred.png"
    Image.fromarray(bench.motion_blurred(sharp, 15, 100)).save(path)
    return sharp, path


def test_a_blurred_photo_comes_out_sharper_and_the_command_says_what_it_did(blurred_face, tmp_path, bench, capsys):
    sharp, source = blurred_face
    out = tmp_path / "sharp.png"
    assert main(["deblur", str(source), "-o", str(out), "--quiet"]) == 0
    blurred, result = load_image(source).pixels, load_image(out).pixels
    assert result.shape == blurred.shape and result.dtype == np.uint8
    assert bench.psnr(result, sharp) > bench.psnr(blurred, sharp) + 3
    assert bench.laplacian_variance(result) > 3 * bench.laplacian_variance(blurred)
    err = capsys.readouterr().err
    assert "estimated blur: 15." in err and "at 101 degrees" in err and "hyper-laplacian" in err and "wrote" in err


def test_a_given_blur_is_used_instead_of_the_estimate(blurred_face, tmp_path, bench, capsys):
    sharp, source = blurred_face
    out = tmp_path / "sharp.png"
    assert main(["deblur", str(source), "-o", str(out), "--length", "15", "--angle", "100", "--tile", "64",
                 "--method", "wiener"]) == 0
    assert bench.psnr(load_image(out).pixels, sharp) > bench.psnr(load_image(source).pixels, sharp)
    err = capsys.readouterr().err
    assert "given blur: 15.0 px at 100 degrees; deconvolving with wiener" in err


def test_a_sharp_photo_is_copied_unchanged_with_a_message(tmp_path, photo_uint8, capsys):
    source = tmp_path / "sharp.png"
    Image.fromarray(photo_uint8).save(source)
    same_format = tmp_path / "copy.png"
    assert main(["deblur", str(source), "-o", str(same_format)]) == 0
    assert same_format.read_bytes() == source.read_bytes()
    assert "no motion blur found" in capsys.readouterr().err
    other_format = tmp_path / "copy.tif"
    assert main(["deblur", str(source), "-o", str(other_format)]) == 0
    assert np.array_equal(load_image(other_format).pixels, photo_uint8)


@pytest.mark.parametrize("flags,message", [
    (["--length", "9"], "option length gives the blur only with option angle"),
    (["--angle", "30"], "option angle gives the blur only with option length"),
    (["--length", "1", "--angle", "0"], "option length"),
    (["--tile", "16"], "option tile"),
])
def test_bad_options_exit_2_before_the_input_is_read(flags, message, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert main(["deblur", str(tmp_path / "missing.png"), "-o", str(out), *flags]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_an_unknown_method_is_refused_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["deblur", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--method", "magic"])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_bad_input_and_output_exit_2(tmp_path, photo_uint8, capsys):
    assert main(["deblur", str(tmp_path / "missing.png"), "-o", str(tmp_path / "out.png")]) == 2
    assert "no such file" in capsys.readouterr().err
    source = tmp_path / "photo.png"
    Image.fromarray(photo_uint8).save(source)
    assert main(["deblur", str(source), "-o", str(tmp_path / "out.xyz")]) == 2
    assert main(["deblur", str(source), "-o", str(source), "--length", "9", "--angle", "0"]) == 2
    err = capsys.readouterr().err
    assert "unknown image file suffix" in err and "refusing to overwrite the input" in err
