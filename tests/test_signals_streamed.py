"""SIGTERM and kill -9 around streamed jobs and batches (#16, item 3): a terminated streamed inpaint or batch leaves
no temporary file and no scratch folder; what a killed one left is removed when the next command starts."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tessera.cli import main
from tessera.image import atomic
from tessera.image.write import save_image

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")


def leftovers(folder: Path) -> list[str]:
    """What tessera's temporary naming left in ``folder``: temporary files and scratch folders."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".tessera-tmp", ".tessera-scratch")))


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            return
        time.sleep(0.01)
    pytest.fail(f"never saw {what} (exit code {process.poll()}: {process.stderr.read() if process.stderr else ''})")


@pytest.fixture(scope="module")
def holes(tmp_path_factory) -> tuple[Path, Path]:
    """A 2400x2400 tiled TIFF and a mask TIFF with 30 holes: a streamed inpaint of a few seconds."""
    folder = tmp_path_factory.mktemp("holes")
    rng = np.random.default_rng(0)
    tifffile.imwrite(folder / "scan.tif", rng.integers(0, 256, (2400, 2400, 3), dtype=np.uint8), tile=(256, 256))
    mask = np.zeros((2400, 2400), np.uint8)
    for y, x in rng.integers(0, 2340, (30, 2)):
        mask[y:y + 50, x:x + 50] = 255
    tifffile.imwrite(folder / "mask.tif", mask, tile=(256, 256))
    return folder / "scan.tif", folder / "mask.tif"


def inpaint_command(holes: tuple[Path, Path], output: Path) -> list[str]:
    return [sys.executable, "-m", "tessera", "inpaint", str(holes[0]), "--mask", str(holes[1]), "-o", str(output),
            "--max-ram", "60M", "--model", "telea", "--quiet"]


def inpaint_until_its_scratch_folder(holes: tuple[Path, Path], out: Path) -> subprocess.Popen:
    """A streamed inpaint into ``out``, once it has made its scratch folder there."""
    process = subprocess.Popen(inpaint_command(holes, out / "scan.tif"), stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(p.name.endswith(".tessera-scratch") for p in out.iterdir()), process,
                 "the scratch folder")
    except BaseException:
        process.kill()
        raise
    return process


def terminate(process: subprocess.Popen) -> None:
    """SIGTERM ``process`` (a tessera command) and check it ended as terminated: exit 143, one last line."""
    try:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "tessera: terminated", err


def test_sigterm_during_a_streamed_inpaint_removes_its_scratch_folder(tmp_path, holes):
    out = tmp_path / "out"
    out.mkdir()
    terminate(inpaint_until_its_scratch_folder(holes, out))
    assert list(out.iterdir()) == []


def test_what_a_killed_streamed_inpaint_left_goes_when_the_next_run_starts(tmp_path, holes):
    out = tmp_path / "out"
    out.mkdir()
    process = inpaint_until_its_scratch_folder(holes, out)
    try:
        process.kill()
        process.wait(timeout=60)
    finally:
        process.kill()
    assert leftovers(out), "kill -9 left nothing to clean: the test saw no scratch folder"
    source = tmp_path / "small.png"
    save_image(np.zeros((16, 16, 3), np.uint8), source)
    # any command writing into that folder removes it before it starts working
    assert main(["upscale", "--model", "lanczos", str(source), "-o", str(out / "small.png"), "--quiet"]) == 0
    assert leftovers(out) == [] and [p.name for p in out.iterdir()] == ["small.png"]


def test_a_live_writers_scratch_folder_is_left_alone(tmp_path):
    with atomic.scratch_folder(tmp_path) as scratch:
        (scratch / "part.npy").write_bytes(b"in use")
        assert atomic.remove_stale_temporaries(tmp_path) == []
        assert (scratch / "part.npy").exists()
    assert not scratch.exists()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = tmp_path / f".scratch.{atomic._host_tag()}-{child.pid}-0123abcd.tessera-scratch"
    (dead / "group1").mkdir(parents=True)
    assert atomic.remove_stale_temporaries(tmp_path) == [dead] and not dead.exists()


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_sigterm_during_a_batch_leaves_no_temporary_and_the_rerun_finishes(tmp_path, workers):
    """SIGTERM stops the batch inside a write, cleanly: in this process (one worker), or on worker processes,
    which the driver stops too (their temporary files removed, none of them left running); the report keeps
    what was finished and the rerun does the rest, leaving only outputs and the report."""
    import psutil

    (tmp_path / "in").mkdir()
    noise = np.random.default_rng(1).integers(0, 256, (900, 900, 3), dtype=np.uint8)  # slow to deflate
    for i in range(4):
        save_image(noise, tmp_path / "in" / f"img{i}.png")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "tessera", "batch", "upscale", str(tmp_path / "in"), "-o", str(out),
               "--model", "lanczos", "--scale", "2", "--quiet", "--workers", str(workers)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: out.is_dir() and bool(leftovers(out)), process, "a temporary output")
        children = psutil.Process(process.pid).children(recursive=True)
    except BaseException:
        process.kill()
        raise
    terminate(process)
    assert leftovers(out) == []
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, alive
    assert main(command[3:]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["img0.png", "img1.png", "img2.png", "img3.png",
                                                     "tessera-batch.jsonl"]
