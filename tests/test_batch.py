"""Batch folders: planning, resume after kill -9, a bad file failing alone, reports, streaming of large images."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tessera.batch import REPORT_NAME, read_report, run_batch
from tessera.batch.plan import find_mask, plan_jobs
from tessera.errors import InputError, OptionError
from tessera.image.read import load_image
from tessera.image.write import save_image

SRC = Path(__file__).resolve().parents[1] / "src"
# The CLI in a child process.
RUNNER = "import sys\nfrom tessera import cli\nsys.exit(cli.main(sys.argv[1:]))"


def photo(height: int, width: int, seed: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.random((max(2, height // 16), max(2, width // 16), 3)).astype(np.float32)
    return (cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1) * 255).astype(np.uint8)


def make_folder(root: Path, count: int, size: tuple[int, int] = (48, 64), suffix: str = ".png") -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    return [save_image(photo(*size, seed=i), root / f"img{i:02d}{suffix}") for i in range(count)]


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}

# ----------------------------------------------------------------------------------------------- planning


def test_plan_mirrors_the_tree_and_matches_masks_by_stem(tmp_path):
    make_folder(tmp_path / "in", 2)
    make_folder(tmp_path / "in" / "sub", 1, suffix=".jpg")
    (tmp_path / "in" / ".hidden.png").write_bytes(b"x")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    masks = tmp_path / "masks"
    make_folder(masks, 1)                      # masks/img00.png serves in/img00.png
    make_folder(masks / "sub", 1)              # masks/sub/img00.png serves in/sub/img00.jpg
    jobs = plan_jobs(tmp_path / "in", tmp_path / "out", masks=masks, recursive=True, format="webp")
    assert [j.name for j in jobs] == ["img00.png", "img01.png", "sub/img00.jpg"]
    assert [j.output for j in jobs] == [tmp_path / "out" / n for n in ("img00.webp", "img01.webp", "sub/img00.webp")]
    assert jobs[0].mask == masks / "img00.png" and jobs[2].mask == masks / "sub" / "img00.png"
    assert jobs[1].mask is None and "no mask named img01" in jobs[1].error
    assert all(j.streamed_output.suffix == ".tif" for j in jobs)
    assert [j.name for j in plan_jobs(tmp_path / "in", tmp_path / "o", pattern="*01*")] == ["img01.png"]


def test_one_mask_file_serves_every_image(tmp_path):
    mask = save_image(np.zeros((4, 4), np.uint8), tmp_path / "mask.png")
    assert find_mask(Path("a/b.png"), mask) == mask


def test_two_inputs_for_one_output_fail_alone(tmp_path):
    (tmp_path / "in").mkdir()
    save_image(photo(20, 20, 0), tmp_path / "in" / "a.png")
    save_image(photo(20, 20, 1), tmp_path / "in" / "a.jpg")
    save_image(photo(20, 20, 2), tmp_path / "in" / "a.tif")
    jobs = plan_jobs(tmp_path / "in", tmp_path / "out", format="png")
    assert [j.error is None for j in jobs] == [True, False, False]
    same = plan_jobs(tmp_path / "in", tmp_path / "out2", format="same")
    assert all(j.error is None for j in same)
    png = next(j for j in same if j.name == "a.png")
    assert png.streamed_output.name == "a.png.tif"  # a.tif is another input's output


def test_output_folder_inside_the_input_is_not_read(tmp_path):
    make_folder(tmp_path, 2)
    make_folder(tmp_path / "out", 1)
    assert len(plan_jobs(tmp_path, tmp_path / "out", recursive=True)) == 2

# ----------------------------------------------------------------------------------------------- running


def test_batch_resumes_reports_and_fails_bad_files_alone(tmp_path):
    make_folder(tmp_path / "in", 3)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    first = run_batch("upscale", tmp_path / "in", tmp_path / "out", model="lanczos", format="jpg", scale=2)
    assert first.counts() == {"done": 3, "skipped": 0, "failed": 1}
    assert "broken.png" in first.failed[0].file and first.failed[0].error
    for i in range(3):
        assert load_image(tmp_path / "out" / f"img{i:02d}.jpg").pixels.shape == (96, 128, 3)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.jpg")}
    second = run_batch("upscale", tmp_path / "in", tmp_path / "out", model="lanczos", format="jpg", scale=2)
    assert second.counts() == {"done": 0, "skipped": 3, "failed": 1}
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.jpg")}
    lines = read_report(tmp_path / "out" / REPORT_NAME)
    assert [line["status"] for line in lines].count("done") == 3
    assert {"file", "status", "seconds"} <= set(lines[0])
    summaries = [json.loads(t) for t in (tmp_path / "out" / REPORT_NAME).read_text().splitlines() if "summary" in t]
    assert summaries[-1]["summary"] == {"done": 0, "skipped": 3, "failed": 1}


def test_an_output_that_does_not_decode_is_redone(tmp_path):
    make_folder(tmp_path / "in", 1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "img00.png").write_bytes(b"garbage")
    summary = run_batch("upscale", tmp_path / "in", tmp_path / "out", model="lanczos")
    assert summary.counts()["done"] == 1
    assert load_image(tmp_path / "out" / "img00.png").width == 128


@pytest.mark.slow
def test_kill_9_midway_then_resume(tmp_path):
    """A batch of 20 killed with SIGKILL, run again: all 20 outputs, each decodes, finished ones untouched."""
    make_folder(tmp_path / "in", 20, size=(200, 200))
    out = tmp_path / "out"
    command = [sys.executable, "-c", RUNNER, "batch", "upscale", "--model", "lanczos", str(tmp_path / "in"), "-o", str(out),
               "--scale", "3", "--quiet"]
    child = subprocess.Popen(command, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    report = out / REPORT_NAME
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if report.exists() and report.read_text().count('"done"') >= 3:
            break
        time.sleep(0.01)
    assert child.poll() is None, f"the batch ended before it could be killed: {child.stderr.read().decode()}"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    finished = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("img*.png")}
    assert 3 <= len(finished) < 20

    rerun = run_batch("upscale", tmp_path / "in", out, model="lanczos", scale=3)  # the same batch, run again
    assert rerun.counts()["failed"] == 0
    outputs = sorted(out.glob("img*.png"))
    assert len(outputs) == 20
    for path in outputs:
        assert load_image(path).pixels.shape == (600, 600, 3)
    for path, stamp in finished.items():
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp  # not redone
    lines = read_report(report)
    second_run = lines[-20:]
    assert sum(line["status"] == "skipped" for line in second_run) == len(finished)
    assert sum(line["status"] == "done" for line in second_run) == 20 - len(finished)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_batch_inpaint_with_one_mask_for_every_image(tmp_path):
    make_folder(tmp_path / "in", 2, size=(64, 64))
    mask = np.zeros((64, 64), np.uint8)
    mask[20:30, 20:40] = 255
    save_image(mask, tmp_path / "mask.png")
    summary = run_batch("inpaint", tmp_path / "in", tmp_path / "out", masks=tmp_path / "mask.png", model="telea")
    assert summary.counts()["done"] == 2
    for i in range(2):
        source = load_image(tmp_path / "in" / f"img{i:02d}.png").pixels
        result = load_image(tmp_path / "out" / f"img{i:02d}.png").pixels
        assert np.array_equal(result[mask == 0], source[mask == 0])
        assert not np.array_equal(result[mask > 0], source[mask > 0])


def test_images_over_the_ram_budget_are_streamed(tmp_path):
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "scan.tif", photo(90, 70, 3), tile=(32, 32), compression="zlib")
    save_image(photo(90, 70, 4), tmp_path / "in" / "poster.png")
    summary = run_batch("upscale", tmp_path / "in", tmp_path / "out", model="lanczos", format="png", max_ram="100K", scale=2)
    by_file = {o.file: o for o in summary.outcomes}
    assert by_file["scan.tif"].status == "done" and by_file["scan.tif"].streamed
    streamed = tifffile.imread(tmp_path / "out" / "scan.tif")
    assert streamed.shape == (180, 140, 3)
    assert by_file["poster.png"].status == "failed" and "only TIFF" in by_file["poster.png"].error
    again = run_batch("upscale", tmp_path / "in", tmp_path / "out", model="lanczos", format="png", max_ram="100K", scale=2)
    assert {o.file: o.status for o in again.outcomes}["scan.tif"] == "skipped"


def test_options_are_checked_before_any_image(tmp_path):
    make_folder(tmp_path / "in", 1)
    with pytest.raises(OptionError, match="tile"):
        run_batch("upscale", tmp_path / "in", tmp_path / "out", model="lanczos", tile="huge")
    with pytest.raises(OptionError, match="masks"):
        run_batch("upscale", tmp_path / "in", tmp_path / "out", model="lanczos", masks=tmp_path)
    with pytest.raises(OptionError, match="needs --masks"):
        run_batch("inpaint", tmp_path / "in", tmp_path / "out")
    with pytest.raises(OptionError, match="batch task"):
        run_batch("upscal", tmp_path / "in", tmp_path / "out")
    with pytest.raises(OptionError, match="max_ram"):
        run_batch("upscale", tmp_path / "in", tmp_path / "out", model="lanczos", max_ram="lots")
    with pytest.raises(InputError, match="not a folder"):
        run_batch("upscale", tmp_path / "nothing", tmp_path / "out", model="lanczos")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.png"))


def test_cli_exit_codes(tmp_path, capsys):
    from tessera import cli

    make_folder(tmp_path / "in", 1)
    command = ["batch", "upscale", "--model", "lanczos", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--quiet"]
    assert cli.main(command) == 0
    assert "1 done" in capsys.readouterr().err
    (tmp_path / "in" / "bad.png").write_bytes(b"nope")
    assert cli.main(command) == 1
    assert "failed: bad.png" in capsys.readouterr().err
    assert cli.main([*command, "--tile", "huge"]) == 2


def test_model_names_and_fail_fast_on_a_missing_model(tmp_path):
    from tessera.errors import ModelError
    from tessera.tasks.registry import get_task

    def model_names(task: str, options: dict) -> dict:
        return get_task(task).weight_options(options)

    assert model_names("enhance", {"model": "gpen-bfr-512", "background": "lanczos"}) == {"model": "gpen-bfr-512"}
    assert model_names("enhance", {"background": "x.pth"}) == {"background": "x.pth"}
    assert model_names("inpaint", {"model": "telea"}) == {}
    assert model_names("upscale", {"model": None, "scale": 2}) == {}
    make_folder(tmp_path / "in", 1)
    with pytest.raises(ModelError):
        run_batch("upscale", tmp_path / "in", tmp_path / "out", model=str(tmp_path / "missing.pth"))
    assert not list((tmp_path / "out").glob("*.png"))


def test_batch_enhance_weight_free(tmp_path):
    from skimage import data

    (tmp_path / "in").mkdir()
    save_image(data.astronaut()[:192, 96:288], tmp_path / "in" / "portrait.png")
    summary = run_batch("enhance", tmp_path / "in", tmp_path / "out", format="jpg")
    assert summary.counts()["done"] == 1
    assert load_image(tmp_path / "out" / "portrait.jpg").pixels.shape == (192, 192, 3)
