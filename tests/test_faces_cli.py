"""`tessera enhance` end to end: the weight-free default, --save-faces, a faceless photo, an unknown model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from tessera import cli
from tessera.image.read import load_image


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
    assert sorted(p.name for p in faces.iterdir()) == ["face_000.png", "face_000_restored.png", "manifest.json"]


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


def test_list_faces_prints_index_box_and_score_without_an_output(portrait, capsys):
    assert cli.main(["enhance", str(portrait), "--list-faces"]) == 0
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert lines[0].split() == ["index", "x0", "y0", "x1", "y1", "size", "score"] and len(lines) == 2
    index, x0, y0, x1, y1, size, score = lines[1].split()
    assert index == "0" and 0 <= int(x0) < int(x1) <= 512 and 0 <= int(y0) < int(y1) <= 512
    assert 0.0 < float(score) <= 1.0 and "1 face(s)" in out.err


def test_enhance_needs_an_output_unless_it_lists_faces(portrait, capsys):
    assert cli.main(["enhance", str(portrait)]) == 2
    assert "-o OUTPUT" in capsys.readouterr().err


def test_a_face_index_that_was_not_found_exits_2_with_one_line(portrait, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert cli.main(["enhance", str(portrait), "-o", str(out), "--faces", "0,3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "face 3 not found" in err[0] and not out.exists()


@pytest.mark.slow
def test_save_faces_then_enhance_stitch_gives_the_same_image_and_takes_edits(portrait, tmp_path, capsys):
    out, faces, again = tmp_path / "out.png", tmp_path / "faces", tmp_path / "again.png"
    assert cli.main(["enhance", str(portrait), "-o", str(out), "--save-faces", str(faces), "--upscale", "2"]) == 0
    assert "tessera enhance-stitch" in capsys.readouterr().err
    assert cli.main(["enhance-stitch", str(faces / "manifest.json"), "-o", str(again)]) == 0  # photo from manifest
    assert np.array_equal(load_image(again).pixels, load_image(out).pixels)
    restored = faces / "face_000_restored.png"
    Image.fromarray(np.zeros((*Image.open(restored).size[::-1], 3), np.uint8)).save(restored)
    assert cli.main(["enhance-stitch", str(faces / "manifest.json"), "--input", str(portrait), "-o",
                     str(again)]) == 0
    assert not np.array_equal(load_image(again).pixels, load_image(out).pixels)
    (faces / "manifest.json").write_text("{}")
    assert cli.main(["enhance-stitch", str(faces / "manifest.json"), "-o", str(again)]) == 2
    assert "not a tessera face manifest" in capsys.readouterr().err


def test_aligned_input_through_the_cli(tmp_path, capsys):
    source = tmp_path / "crop.png"
    Image.fromarray(np.ascontiguousarray(data.astronaut()[40:200, 150:310])).save(source)
    out = tmp_path / "out.png"
    assert cli.main(["enhance", str(source), "-o", str(out), "--aligned"]) == 0
    assert load_image(out).pixels.shape == (160, 160, 3)
    assert "aligned input restored whole at 160x160 px" in capsys.readouterr().err
