"""`stitch` reads manifests that may be crafted: region files confined to the manifest's folder, regular files
only (a FIFO must not hang it), counts, boxes, sizes and types checked; each failure one InputError line, exit 2
from the CLI, no traceback, no output."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from tessera.cli import main
from tessera.errors import InputError
from tessera.image.write import save_image
from tessera.tasks import inpaint_paste, manifest_checks
from tessera.tasks.inpaint import inpaint, stitch


@pytest.fixture
def saved(tmp_path) -> tuple[Path, dict]:
    """A real --save-regions folder (two regions, weight-free fill) and its manifest's data."""
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.png"
    save_image(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), photo)
    mask = np.zeros((96, 128), np.uint8)
    mask[10:20, 10:20] = 255
    mask[70:80, 100:110] = 255
    folder = tmp_path / "regions"
    inpaint(photo, mask, model="telea", save_regions=folder, crop_margin=8)
    manifest = folder / "manifest.json"
    data = json.loads(manifest.read_text())
    assert len(data["regions"]) == 2
    return manifest, data


def _rewrite(manifest: Path, data: dict) -> Path:
    manifest.write_text(json.dumps(data))
    return manifest


def _refused_by_the_cli(manifest: Path, capsys, words: str) -> None:
    output = manifest.parent.parent / "stitched.png"
    code = main(["stitch", str(manifest), "-o", str(output)])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("tessera: error: ") and "Traceback" not in err, err
    assert words in lines[0], lines[0]
    assert not output.exists()


def _region(data: dict, **changes) -> dict:
    data["regions"][0].update(changes)
    return data

# ----------------------------------------------------------------------------------------------- paths


def test_a_path_out_of_the_folder_is_refused(saved, tmp_path, capsys):
    manifest, data = saved
    outside = tmp_path / "outside.png"
    save_image(np.zeros((8, 8), np.uint8), outside)
    for name in ("../outside.png", str(outside), "sub/../../outside.png"):
        _rewrite(manifest, _region(data, result=name))
        with pytest.raises(InputError, match="is not inside the manifest's folder"):
            stitch(manifest)
    _refused_by_the_cli(manifest, capsys, "is not inside the manifest's folder")


def test_a_symbolic_link_leading_out_is_refused_one_staying_inside_is_followed(saved, tmp_path, capsys):
    manifest, data = saved
    mask = manifest.parent / data["regions"][0]["mask"]
    outside = tmp_path / "outside.png"
    outside.write_bytes(mask.read_bytes())
    (manifest.parent / "link.png").symlink_to(outside)
    _rewrite(manifest, _region(data, mask="link.png"))
    with pytest.raises(InputError, match="leads out of the manifest's folder"):
        stitch(manifest)
    _refused_by_the_cli(manifest, capsys, "leads out")

    (manifest.parent / "inside.png").symlink_to(mask)
    _rewrite(manifest, _region(data, mask="inside.png"))
    stitch(manifest)


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("role", ["result", "mask", "manifest", "photo"])
def test_a_fifo_is_refused_without_blocking(saved, tmp_path, role):
    manifest, data = saved
    fifo = manifest.parent / "fifo.png"
    os.mkfifo(fifo)
    if role in ("result", "mask"):
        _rewrite(manifest, _region(data, **{role: "fifo.png"}))
    elif role == "manifest":
        manifest = fifo
    else:
        _rewrite(manifest, {**data, "input": str(fifo)})
    outcome: list = []

    def run() -> None:
        try:
            stitch(manifest)
        except InputError as error:
            outcome.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():  # unblock the reader so the test run can end, then fail
        with open(fifo, "wb", buffering=0):
            pass
        pytest.fail(f"stitch blocked on a FIFO as the {role}")
    assert outcome and "not a regular file" in str(outcome[0])


def test_a_folder_as_region_file_is_refused(saved):
    manifest, data = saved
    (manifest.parent / "dir.png").mkdir()
    _rewrite(manifest, _region(data, result="dir.png"))
    with pytest.raises(InputError, match="not a regular file"):
        stitch(manifest)

# ----------------------------------------------------------------------------------------------- counts, boxes, sizes


def test_the_number_of_regions_is_capped(saved, capsys):
    manifest, data = saved
    _rewrite(manifest, {**data, "regions": data["regions"][:1] * (inpaint_paste.MAX_REGIONS + 1)})
    with pytest.raises(InputError, match="over the limit of 10,000"):
        inpaint_paste.read_manifest(manifest)
    _refused_by_the_cli(manifest, capsys, "over the limit")


def test_a_crop_outside_the_photo_is_refused(saved, capsys):
    manifest, data = saved
    _rewrite(manifest, _region(data, crop=[0, 0, 97, 10]))
    _refused_by_the_cli(manifest, capsys, "lies outside the 128x96 photo")


def test_region_files_of_another_size_are_refused_before_anything_is_decoded(saved, monkeypatch, capsys):
    manifest, data = saved
    second = data["regions"][1]
    save_image(np.zeros((5, 7, 3), np.uint8), manifest.parent / second["result"])
    from tessera.image import read as image_read
    from tessera.tasks import common

    def reached(*args, **kwargs):
        raise AssertionError("decoded before the region files were checked")

    monkeypatch.setattr(image_read, "load_image", reached)
    monkeypatch.setattr(common, "load_image", reached)
    with pytest.raises(InputError, match="is 7x5, expected"):
        stitch(manifest)
    _refused_by_the_cli(manifest, capsys, "is 7x5, expected")


def test_a_photo_of_another_size_is_refused_from_its_header(saved, tmp_path):
    manifest, _ = saved
    other = tmp_path / "other.png"
    save_image(np.zeros((10, 10, 3), np.uint8), other)
    with pytest.raises(InputError, match="the photo is 10x10 but manifest"):
        stitch(manifest, other)

# ----------------------------------------------------------------------------------------------- types


WRONG_TYPES = {
    "width as text": lambda d: {**d, "width": "128"},
    "height as float": lambda d: {**d, "height": 96.0},
    "height as bool": lambda d: {**d, "height": True},
    "feather as float": lambda d: {**d, "feather": 1.5},
    "feather negative": lambda d: {**d, "feather": -1},
    "version as bool": lambda d: {**d, "version": True},
    "dtype unknown": lambda d: {**d, "dtype": "complex128"},
    "input as number": lambda d: {**d, "input": 7},
    "regions as object": lambda d: {**d, "regions": {"0": d["regions"][0]}},
    "region as text": lambda d: {**d, "regions": ["region_000"]},
    "crop as text": lambda d: _region(d, crop="0,0,10,10"),
    "crop of text": lambda d: _region(d, crop=["0", "0", "10", "10"]),
    "crop of floats": lambda d: _region(d, crop=[0.5, 0, 10, 10]),
    "crop of bools": lambda d: _region(d, crop=[False, False, True, True]),
    "crop of three": lambda d: _region(d, crop=[0, 0, 10]),
    "crop empty box": lambda d: _region(d, crop=[10, 10, 10, 20]),
    "mask as number": lambda d: _region(d, mask=5),
    "result missing": lambda d: {**d, "regions": [{k: v for k, v in d["regions"][0].items() if k != "result"}]},
    "result with a NUL": lambda d: _region(d, result="a\x00b.png"),
    "result empty": lambda d: _region(d, result=""),
    "top level list": lambda d: [d],
}


@pytest.mark.parametrize("case", sorted(WRONG_TYPES))
def test_wrong_types_are_one_input_error_line(case, saved, capsys):
    manifest, data = saved
    _rewrite(manifest, WRONG_TYPES[case](data))
    with pytest.raises(InputError) as caught:
        stitch(manifest)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400
    _refused_by_the_cli(manifest, capsys, "manifest")


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"tessera": "inpaint-regions", "version": 1e999}',
                                  "\ufeff{}", '{"width": ' + "9" * 5000 + "}"])
def test_hostile_json_is_one_input_error_line(text, saved, capsys):
    manifest, _ = saved
    manifest.write_text(text, encoding="utf-8")
    with pytest.raises(InputError):
        stitch(manifest)
    _refused_by_the_cli(manifest, capsys, "manifest")


def test_an_oversized_manifest_is_refused_unread(saved, monkeypatch):
    manifest, _ = saved
    monkeypatch.setattr(manifest_checks, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(InputError, match="is over"):
        inpaint_paste.read_manifest(manifest)


def test_the_untouched_manifest_still_stitches(saved):
    manifest, _ = saved
    assert stitch(manifest).pixels.shape == (96, 128, 3)


def test_a_version_1_manifest_stitches_only_without_feather(saved, capsys):
    """Version 1 blended a feather band inside the mask; version 2 blends one outside it: an old manifest with
    a feather would stitch differently, so it is refused, one without is the same and read."""
    manifest, data = saved
    _rewrite(manifest, {**data, "version": 1})
    assert np.array_equal(stitch(manifest).pixels, stitch(_rewrite(manifest, data)).pixels)
    _rewrite(manifest, {**data, "version": 1, "feather": 3})
    with pytest.raises(InputError, match="version 1, whose feather band lay inside the mask"):
        stitch(manifest)
    _refused_by_the_cli(manifest, capsys, "version 1")
