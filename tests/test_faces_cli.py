"""`tessera enhance` end to end: the weight-free default, --save-faces, a faceless photo, an unknown model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from tessera import cli
from tessera.image import load_image


@pytest.fixture
def portrait(tmp_path) -> Path:
    path = tmp_path / "portrait.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def test_enhance_with_no_model_runs_the_weight_free_clean_up_and_says_how_to_get_gpen(portrait, tmp_path,
                                                                                      capsys):
    out = tmp_path / "out.png"
    faces = tmp_path / "faces"
    assert cli.main(["enhance", str(portrait), "-o", str(out), "--save-faces", str(faces)]) == 0
    result = load_image(out).pixels
    original = data.astronaut()
    assert result.shape == original.shape
    changed = np.argwhere(np.any(result != original, axis=2))
    assert len(changed) and changed[:, 0].max() < 260  # only the face (top half) changed
    err = capsys.readouterr().err
    assert err.count("tessera models pull gpen-bfr-512") == 1 and "weight-free" in err
    assert "1 face(s)" in err
    assert sorted(p.name for p in faces.iterdir()) == ["face_000.png", "face_000_restored.png"]


def test_a_photo_without_faces_is_copied_unchanged_with_a_message(tmp_path, capsys):
    source = tmp_path / "sky.png"
    Image.fromarray(np.full((64, 96, 3), (90, 140, 220), np.uint8)).save(source)
    out = tmp_path / "copy.png"
    assert cli.main(["enhance", str(source), "-o", str(out)]) == 0
    assert out.read_bytes() == source.read_bytes()
    assert "no face found" in capsys.readouterr().err


def test_upscale_without_faces_writes_a_resized_photo(tmp_path):
    source = tmp_path / "sky.png"
    Image.fromarray(np.full((64, 96, 3), (90, 140, 220), np.uint8)).save(source)
    out = tmp_path / "big.jpg"
    assert cli.main(["enhance", str(source), "-o", str(out), "--upscale", "2"]) == 0
    assert load_image(out).pixels.shape == (128, 192, 3)


@pytest.mark.parametrize("argv", [["--model", "no-such-model"], ["--strength", "7"]])
def test_bad_models_and_options_exit_2_with_one_line(portrait, tmp_path, capsys, argv):
    out = tmp_path / "out.png"
    assert cli.main(["enhance", str(portrait), "-o", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tessera: error:")
    assert not out.exists()


def test_an_unknown_detector_is_refused_by_the_parser(portrait, tmp_path):
    with pytest.raises(SystemExit) as info:
        cli.main(["enhance", str(portrait), "-o", str(tmp_path / "out.png"), "--detector", "haar"])
    assert info.value.code == 2
