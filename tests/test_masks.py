"""Masks: any image kind in, a boolean hole mask out; size checks, growing, empty and large masks."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from tessera.errors import ImageReadError, InputError
from tessera.masks import LargeMaskWarning, fit_mask, grow_mask, load_mask, mask_from_array, prepare_mask


def _strokes(h: int = 40, w: int = 60) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[5:9, 10:50] = True
    mask[20:35, 30:34] = True
    return mask


def test_grey_rgb_and_coloured_strokes_threshold_at_127():
    values = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    assert mask_from_array(values).tolist() == [[False, False, True, True]]
    rgb = np.zeros((1, 4, 3), np.uint8)
    rgb[0, 1] = (255, 255, 255)
    rgb[0, 2] = (200, 0, 0)    # a red brush stroke counts
    rgb[0, 3] = (100, 100, 100)
    assert mask_from_array(rgb).tolist() == [[False, True, True, False]]
    assert mask_from_array(np.array([[32767, 32768]], np.uint16)).tolist() == [[False, True]]
    assert mask_from_array(np.array([[0.49, 0.5]], np.float32)).tolist() == [[False, True]]
    assert mask_from_array(np.array([[0, 1]], bool)).tolist() == [[False, True]]


def test_rgba_uses_alpha_when_it_varies_else_colour():
    mask = _strokes()
    rgba = np.zeros(mask.shape + (4,), np.uint8)
    rgba[..., 3] = np.where(mask, 255, 0)  # black strokes on a transparent layer
    assert np.array_equal(mask_from_array(rgba), mask)
    opaque = np.zeros(mask.shape + (4,), np.uint8)
    opaque[..., :3] = np.where(mask, 255, 0)[..., None]
    opaque[..., 3] = 255
    assert np.array_equal(mask_from_array(opaque), mask)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA"])
def test_mask_files_of_any_mode(tmp_path, mode):
    mask = _strokes()
    white = np.where(mask, 255, 0).astype(np.uint8)
    if mode == "L":
        image = Image.fromarray(white, "L")
    elif mode == "RGB":
        image = Image.fromarray(np.stack([white] * 3, axis=2), "RGB")
    elif mode == "RGBA":
        image = Image.fromarray(np.dstack([np.zeros_like(white)] * 3 + [white]), "RGBA")
    else:
        image = Image.fromarray(np.dstack([np.zeros_like(white), white]), "LA")
    path = tmp_path / f"mask_{mode}.png"
    image.save(path)
    assert np.array_equal(load_mask(path), mask)


def test_non_image_mask_is_a_read_error(tmp_path):
    path = tmp_path / "mask.png"
    path.write_text("not an image")
    with pytest.raises(ImageReadError):
        load_mask(path)


def test_wrong_size_is_an_error_unless_resized():
    mask = _strokes(40, 60)
    with pytest.raises(InputError, match="60x40.*120x80.*--resize-mask"):
        fit_mask(mask, (80, 120))
    bigger = fit_mask(mask, (80, 120), resize=True)
    assert bigger.shape == (80, 120)
    assert abs(bigger.mean() - mask.mean()) < 0.01
    thin = np.zeros((400, 400), bool)
    thin[200, 20:380] = True  # a one-pixel scratch survives a 4x shrink
    small = fit_mask(thin, (100, 100), resize=True)
    assert small[50, 10:90].all()


@pytest.mark.parametrize("pixels", [1, 3, 10])
def test_grow_is_euclidean_dilation(pixels):
    rng = np.random.default_rng(pixels)
    mask = np.zeros((90, 110), bool)
    for _ in range(6):
        y, x = rng.integers(0, 90), rng.integers(0, 110)
        mask[y:y + rng.integers(1, 12), x:x + rng.integers(1, 12)] = True
    expected = ndimage.distance_transform_edt(~mask) <= pixels
    assert np.array_equal(grow_mask(mask, pixels), expected)
    assert np.array_equal(grow_mask(mask, 0), mask)


def test_empty_mask_is_an_error():
    with pytest.raises(InputError, match="empty"):
        prepare_mask(np.zeros((20, 30), np.uint8), (20, 30))
    with pytest.raises(InputError, match="empty"):
        prepare_mask(np.full((20, 30), 127, np.uint8), (20, 30))


def test_large_mask_warns_small_does_not():
    big = np.zeros((100, 100), np.uint8)
    big[:, :40] = 255
    with pytest.warns(LargeMaskWarning, match="40%"):
        prepare_mask(big, (100, 100))
    small = np.zeros((100, 100), np.uint8)
    small[10:20, 10:20] = 255
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grown = prepare_mask(small, (100, 100), grow=2)
    assert grown.sum() > 100 and grown[10:20, 10:20].all()


@pytest.mark.filterwarnings("ignore::tessera.masks.LargeMaskWarning")
def test_a_mask_that_leaves_nothing_to_fill_from_is_an_error():
    with pytest.raises(InputError, match="leaves no pixel outside it: nothing to fill from"):
        prepare_mask(np.full((20, 30), 255, np.uint8), (20, 30))
    spot = np.zeros((100, 100), np.uint8)
    spot[50, 50] = 255
    with pytest.raises(InputError, match=r"mask, grown by 80 px, leaves no pixel"):
        prepare_mask(spot, (100, 100), grow=80)
    nearly = np.full((100, 100), 255, np.uint8)
    nearly[0, :99] = 0  # 0.99 % left: under the 1 % needed
    with pytest.raises(InputError, match=r"only 0\.99% of the photo"):
        prepare_mask(nearly, (100, 100))
    nearly[1, :2] = 0  # 1.01 %
    assert prepare_mask(nearly, (100, 100)).sum() == 100 * 100 - 101
