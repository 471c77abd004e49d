"""Inpainting end to end: untouched pixels stay bit-identical, region files round-trip through `stitch`, and
the CLI refuses bad masks with one line and exit 2. (LaMa itself: test_inpaint_lama.py.)"""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from tessera.errors import CancelledError, InputError
from tessera.image.read import load_image
from tessera.image.write import save_image
from tessera.models.classical.inpaint import inpaint_patchmatch, inpaint_telea, telea_model
from tessera.tasks.inpaint import inpaint, region_input, region_output, stitch
from tessera.tasks.inpaint_regions import Box, Region


class _TinyInpainter(torch.nn.Module):
    """A small random convolutional inpainter: cheap stand-in for LaMa where only the plumbing is under test."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(4, 16, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(16, 3, 3, padding=1), torch.nn.Sigmoid())

    def forward(self, image, mask):
        return self.body(torch.cat([image * (1 - mask), mask], dim=1))


@pytest.fixture(scope="module")
def tiny():
    from spandrel import SizeRequirements

    from tessera.models.descriptor import Model

    return Model(network=_TinyInpainter().eval(), name="tiny-inpainter", task="inpaint", architecture="tiny",
                 size_requirements=SizeRequirements(multiple_of=8))


@pytest.fixture
def photo() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100:340, 60:380])  # 240x320


def _marks(shape, *boxes) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    for y0, x0, y1, x1 in boxes:
        mask[y0:y1, x0:x1] = 255
    return mask


def _grown(mask: np.ndarray, grow: int) -> np.ndarray:
    return ndimage.distance_transform_edt(mask <= 127) <= grow


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_pixels_outside_the_grown_mask_are_bit_identical(tiny, photo, dtype):
    scale = 257 if dtype == np.uint16 else 1
    rng = np.random.default_rng(3)
    alpha = rng.integers(0, 256, photo.shape[:2]).astype(np.uint16) * scale
    image = np.dstack([photo.astype(np.uint16) * scale, alpha]).astype(dtype)  # RGBA
    mask = _marks(photo.shape[:2], (20, 30, 40, 60), (180, 250, 230, 300))
    for model in (tiny, "telea"):
        done = inpaint(image, mask, model=model, grow=3, feather=4, device="cpu")
        out, report = done.image, done.report
        assert len(report.regions) == 2
        assert out.dtype == image.dtype and out.shape == image.shape
        grown = _grown(mask, 3 + 4)  # the grown mask and its feather band
        assert np.array_equal(out[~grown], image[~grown])
        assert np.array_equal(out[..., 3], image[..., 3])  # alpha untouched everywhere
        assert (out[grown][:, :3] != image[grown][:, :3]).any()


def test_strategies_keep_outside_pixels_and_fill_holes(photo):
    mask = _marks(photo.shape[:2], (10, 10, 30, 30), (200, 280, 230, 310))
    hole = mask > 127
    for strategy in ("auto", "crop", "resize", "full"):
        done = inpaint(photo, mask, model="telea", strategy=strategy, max_size=128 if strategy == "resize" else "auto")
        out, report = done.image, done.report
        assert np.array_equal(out[~hole], photo[~hole]), strategy
        assert np.abs(out[hole].astype(int) - photo[hole]).mean() < 40, strategy  # a fill, not garbage
        if strategy == "resize":
            assert max(report.regions[0].run_shape) <= 128


def test_grey_photo_stays_grey_and_2d(photo):
    grey = np.ascontiguousarray(photo[:, :, 1])
    out = inpaint(grey, _marks(grey.shape, (50, 50, 70, 90)), model="patchmatch").image
    assert out.shape == grey.shape and out.dtype == np.uint8


def test_telea_and_patchmatch_fill_a_smooth_hole():
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    image = np.dstack([xx / 63, yy / 63, (xx + yy) / 126]).astype(np.float32)
    hole = np.zeros((64, 64), bool)
    hole[24:40, 20:44] = True
    for fill in (inpaint_telea, inpaint_patchmatch):
        result = fill(image, hole)
        assert result.shape == image.shape and result.dtype == np.float32
        assert np.abs(result[hole] - image[hole]).mean() < 0.05, fill.__name__


def test_region_input_output_with_downscale_and_padding():
    pixels = np.random.default_rng(0).integers(0, 255, (100, 120, 3)).astype(np.uint8)
    mask = np.zeros((100, 120), bool)
    mask[40:41, 50:90] = True  # one-pixel line must survive the downscale
    region = Region(Box(10, 20, 90, 120), (Box(40, 50, 41, 90),), run_shape=(40, 50), pad_to=(64, 64))
    image, hole = region_input(pixels, mask, region)
    assert image.shape == (64, 64, 3) and hole.shape == (64, 64)
    assert hole[15, 15:35].all()
    back = region_output(image, region)
    assert back.shape == (80, 100, 3)


def test_save_regions_and_stitch_round_trip(tmp_path, photo):
    source = tmp_path / "photo.png"
    save_image(photo, source)
    mask = _marks(photo.shape[:2], (20, 30, 40, 60), (180, 250, 230, 300))
    folder = tmp_path / "regions"
    done = inpaint(source, mask, model="telea", feather=3, save_regions=folder)
    out, manifest = done.image, done.report.manifest
    data = json.loads(manifest.read_text())
    assert len(data["regions"]) == 2 and data["input"] == str(source.resolve())
    assert np.array_equal(stitch(manifest).pixels, out.pixels)

    first = data["regions"][0]
    edited = np.array(Image.open(folder / first["result"]))
    edited[...] = (255, 0, 0)
    Image.fromarray(edited).save(folder / first["result"])
    again = stitch(manifest, source).pixels
    y0, x0, y1, x1 = first["crop"]
    paste = np.array(Image.open(folder / first["mask"])) > 127
    changed = np.zeros(photo.shape[:2], bool)
    changed[y0:y1, x0:x1] = paste
    assert np.array_equal(again[~changed], out.pixels[~changed])
    assert (again[changed] != out.pixels[changed]).any()


def test_progress_and_cancel(photo):
    events = []
    mask = _marks(photo.shape[:2], (20, 30, 40, 60), (180, 250, 230, 300))
    inpaint(photo, mask, model=telea_model(), progress=events.append)
    regions = [e for e in events if e.stage == "regions"]
    assert regions[-1].done == regions[-1].total == 2
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        inpaint(photo, mask, model="telea", cancel=cancel)


def test_bad_options_and_masks_raise_input_errors(photo):
    with pytest.raises(InputError, match="empty"):
        inpaint(photo, np.zeros(photo.shape[:2], np.uint8), model="telea")
    with pytest.raises(InputError, match="resize-mask"):
        inpaint(photo, np.zeros((10, 10), np.uint8), model="telea")
    with pytest.raises(InputError, match="strategy"):
        inpaint(photo, _marks(photo.shape[:2], (5, 5, 9, 9)), model="telea", strategy="tiles")
    with pytest.raises(InputError, match="max_size"):
        inpaint(photo, _marks(photo.shape[:2], (5, 5, 9, 9)), model="telea", max_size=8)
    resized = inpaint(photo, np.kron(_marks((120, 160), (10, 10, 20, 20)), np.ones((3, 3), np.uint8)),
                      model="telea", resize_mask=True).image
    assert resized.shape == photo.shape


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """`tessera ...` with the inpaint module registered, an empty model cache, and no stray output."""
    from tessera import cli as cli_package

    if "inpaint" not in cli_package.COMMANDS:
        monkeypatch.setattr(cli_package, "COMMANDS", [*cli_package.COMMANDS, "inpaint"])
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "cache"))
    return cli_package.main


@pytest.mark.parametrize("problem", ["wrong-size", "empty", "not-an-image"])
def test_cli_bad_mask_exits_2_with_one_line_and_no_output(cli, tmp_path, photo, capsys, problem):
    source = tmp_path / "photo.png"
    save_image(photo, source)
    mask = tmp_path / "mask.png"
    if problem == "wrong-size":
        save_image(_marks((50, 50), (10, 10, 20, 20)), mask)
    elif problem == "empty":
        save_image(np.zeros(photo.shape[:2], np.uint8), mask)
    else:
        mask.write_bytes(b"%PDF-1.4 this is no image")
    output = tmp_path / "out.png"
    code = cli(["inpaint", str(source), "--mask", str(mask), "-o", str(output), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("tessera: error: ") and "mask" in err[0]
    assert not output.exists()


def test_cli_falls_back_to_weight_free_and_says_so_once(cli, tmp_path, photo, capsys):
    source = tmp_path / "photo.png"
    save_image(photo, source)
    mask = tmp_path / "mask.png"
    save_image(_marks(photo.shape[:2], (20, 30, 40, 60), (180, 250, 230, 300)), mask)
    output = tmp_path / "out.png"
    folder = tmp_path / "regions"
    code = cli(["inpaint", str(source), "--mask", str(mask), "-o", str(output), "--quiet", "--grow", "2",
                "--save-regions", str(folder)])
    err = capsys.readouterr().err
    assert code == 0 and output.exists()
    assert err.count("LaMa weights are not in the cache") == 1 and "tessera models pull big-lama" in err
    result = load_image(output).pixels
    grown = _grown(np.asarray(Image.open(mask)), 2)
    assert np.array_equal(result[~grown], photo[~grown])

    stitched = tmp_path / "stitched.png"
    assert cli(["stitch", str(folder / "manifest.json"), "-o", str(stitched)]) == 0
    assert np.array_equal(load_image(stitched).pixels, result)


# ---------------------------------------------------------------------------------------------- issue 11


def test_a_long_scratch_is_filled_in_pieces_exactly_and_without_a_step_at_their_boundaries():
    import cv2
    from skimage import data

    photo = cv2.resize(data.coffee(), (3000, 2000), interpolation=cv2.INTER_CUBIC)
    mask = np.zeros(photo.shape[:2], np.uint8)
    cv2.line(mask, (40, 1000), (2960, 1060), 255, 6)
    hole = mask > 127
    done = inpaint(photo, mask, model="telea", max_size=1024)
    out, regions = done.image, done.report.regions
    assert len(regions) > 4 and not any(r.downscaled for r in regions) and any(r.known for r in regions)
    assert np.array_equal(out[~hole], photo[~hole])
    assert (out[hole] != photo[hole]).any()
    # along the scratch, the step between neighbouring columns where one piece hands over to the next is no
    # larger than the steps inside the pieces
    owner = np.full(hole.shape, -1)
    for index, region in enumerate(regions):
        owner[region.crop.slices][region.paste_mask(hole)] = index
    columns = np.arange(60, 2940)
    rows = np.array([np.flatnonzero(hole[:, x]).mean().round().astype(int) for x in columns])
    values = out[rows, columns].astype(float)
    steps = np.abs(np.diff(values, axis=0)).max(axis=1)
    handover = owner[rows[:-1], columns[:-1]] != owner[rows[1:], columns[1:]]
    assert handover.sum() >= 4
    assert steps[handover].max() <= max(2 * np.percentile(steps[~handover], 99), 12)


def test_feather_without_grow_leaves_nothing_of_the_object_and_stitches_back_exactly(tmp_path):
    import cv2
    from skimage import data

    grey = cv2.resize(data.camera(), (320, 320))
    photo = np.dstack([grey] * 3)
    cv2.circle(photo, (160, 150), 40, (230, 20, 20), -1)
    mask = np.zeros(grey.shape, np.uint8)
    cv2.circle(mask, (160, 150), 40, 255, -1)

    def reddish(image):
        image = image.astype(int)
        return int(((image[..., 0] > image[..., 1] + 40) & (image[..., 0] > image[..., 2] + 40)).sum())

    assert reddish(photo) > 4000
    folder = tmp_path / "regions"
    done = inpaint(photo, mask, model="telea", feather=6, save_regions=folder)
    out, report = done.image, done.report
    assert reddish(out) == 0
    band = _grown(mask, 6)
    assert np.array_equal(out[~band], photo[~band])
    assert (out[band & (mask <= 127)] != photo[band & (mask <= 127)]).any()  # the band blends
    assert np.array_equal(stitch(report.manifest, photo), out)


@pytest.mark.filterwarnings("ignore::tessera.masks.LargeMaskWarning")
def test_a_mask_covering_the_whole_photo_is_an_input_error(photo):
    with pytest.raises(InputError, match="nothing to fill from"):
        inpaint(photo, np.full(photo.shape[:2], 255, np.uint8), model="telea")
    almost = np.full(photo.shape[:2], 255, np.uint8)
    almost[:4, :4] = 0
    with pytest.raises(InputError, match="only 0.02% of the photo"):
        inpaint(photo, almost, model="telea")
    most = np.full(photo.shape[:2], 255, np.uint8)
    most[:60] = 0
    with pytest.raises(InputError, match="feather band"):
        inpaint(photo, most, model="telea", feather=59)


def test_full_strategy_beyond_the_budget_is_refused_before_any_region_runs(tiny, photo):
    from tessera.errors import ResourceError

    events = []
    with pytest.raises(ResourceError, match=r"--strategy full .* which needs about .* over the memory budget"):
        inpaint(photo, _marks(photo.shape[:2], (20, 30, 40, 60)), model=tiny, strategy="full", max_memory="64K",
                device="cpu", progress=events.append)
    assert not [e for e in events if e.stage == "regions"]


def test_progress_inside_one_big_region_moves(monkeypatch):
    import tessera.tasks.inpaint as task

    monkeypatch.setattr(task, "STEP_PIXELS", 200 * 200)
    image = np.random.default_rng(0).integers(0, 256, (240, 240, 3), dtype=np.uint8)
    events = []
    inpaint(image, _marks(image.shape[:2], (100, 100, 140, 140)), model="telea", strategy="full",
            progress=events.append)
    steps = [e for e in events if e.stage == "steps"]
    assert [e.done for e in steps] == [0, 1, 2, 3] and {e.total for e in steps} == {3}
    assert "running telea" in steps[1].message and "240x240 region" in steps[1].message
    assert [e.done for e in events if e.stage == "regions"][-1] == 1


def test_auto_without_lama_uses_patchmatch_or_says_why_not(monkeypatch, tmp_path):
    import tessera.tasks.inpaint as task

    model, notice = task.resolve_inpaint_model("auto", model_dir=str(tmp_path))
    assert model.name == "patchmatch" and "weight-free patchmatch method;" in notice
    monkeypatch.setattr(task, "patchmatch_available", lambda: False)
    model, notice = task.resolve_inpaint_model("auto", model_dir=str(tmp_path))
    assert model.name == "telea" and "patchmatch-cython" in notice and "tessera[inpaint]" in notice


def test_the_weight_free_default_is_the_one_the_quality_bench_chose():
    from conftest import load_bench

    import tessera.tasks.inpaint as task
    from tessera.models.classical.inpaint import PATCH_SIZE

    bench = load_bench("inpaint_quality")
    summary = json.loads((bench.RESULTS / "inpaint_quality.json").read_text())["summary"]
    assert bench.choose_default(summary) == f"{task.DEFAULT_WEIGHT_FREE} p{PATCH_SIZE}"
    # the rule: best texture within MAX_PSNR_LOSS dB of the best PSNR, else the PSNR winner
    made_up = {"blur": {"psnr": 30.0, "texture": 0.5}, "sharp": {"psnr": 29.5, "texture": 0.9},
               "noisy": {"psnr": 20.0, "texture": 0.95}}
    assert bench.choose_default(made_up) == "sharp"
    assert bench.choose_default({**made_up, "sharp": {"psnr": 28.0, "texture": 0.9}}) == "blur"
