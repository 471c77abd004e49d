"""Quality of the weight-free inpainting methods (CPU): PSNR and SSIM inside the holes.

Photos: scikit-image's bundled colour photos (astronaut, coffee, chelsea, rocket, immunohistochemistry), at
most 384 px on the long side. Masks, synthetic and seeded: thin scratches (random 2-3 px lines), blobs (random
ellipses ~15-40 px), text (OpenCV Hershey lettering), and large boxes (one rectangle of ~12 % of the photo).
Each method and setting runs through ``tessera.inpaint`` (default strategy: crops around the holes), the same
way the CLI runs it. PSNR is computed over the hole pixels only; SSIM is the mean of skimage's SSIM map
(7x7 windows, per channel) over the hole pixels.

The weight-free default of ``tessera inpaint`` is the method/setting with the best mean PSNR over all photos and
masks. Prints a table and writes ``bench/results/inpaint_quality.json``.
Run: ``PYTHONPATH=src .venv/bin/python bench/inpaint_quality.py``.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
MASKS = ("scratches", "blobs", "text", "boxes")
LONG_SIDE = 384


def photo(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()[:, :, :3]
    scale = LONG_SIDE / max(image.shape[:2])
    if scale < 1:
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def synthetic_mask(kind: str, shape: tuple[int, int], seed: int) -> np.ndarray:
    """A uint8 0/255 mask of ``kind`` for a photo of ``shape``."""
    rng = np.random.default_rng(seed)
    height, width = shape
    mask = np.zeros(shape, np.uint8)
    if kind == "scratches":
        for _ in range(6):
            p0 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(mask, p0, p1, 255, int(rng.integers(2, 4)))
    elif kind == "blobs":
        for _ in range(6):
            center = (int(rng.integers(20, width - 20)), int(rng.integers(20, height - 20)))
            axes = (int(rng.integers(8, 20)), int(rng.integers(8, 20)))
            cv2.ellipse(mask, center, axes, float(rng.integers(0, 180)), 0, 360, 255, -1)
    elif kind == "text":
        for row in range(3):
            origin = (int(rng.integers(5, width // 4)), int((row + 1) * height / 4))
            cv2.putText(mask, "tessera 2024", origin, cv2.FONT_HERSHEY_SIMPLEX, width / 600, 255, 2, cv2.LINE_AA)
        mask = np.where(mask > 127, 255, 0).astype(np.uint8)
    elif kind == "boxes":
        h, w = int(height * 0.35), int(width * 0.35)
        y, x = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        mask[y:y + h, x:x + w] = 255
    else:
        raise ValueError(kind)
    return mask


def hole_psnr(result: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> float:
    diff = result[hole].astype(np.float64) - truth[hole].astype(np.float64)
    mse = float(np.mean(diff ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def hole_ssim(result: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    _, full = structural_similarity(truth, result, channel_axis=2, data_range=255, full=True)
    return float(full.mean(axis=2)[hole].mean())


def methods() -> dict[str, object]:
    from tessera.models.classical.inpaint import patchmatch_model, telea_model

    return {
        "telea r3": telea_model(3),
        "telea r5": telea_model(5),
        "telea r9": telea_model(9),
        "patchmatch p5": patchmatch_model(5),
        "patchmatch p7": patchmatch_model(7),
        "patchmatch p9": patchmatch_model(9),
        "patchmatch p7 edge": patchmatch_model(7, edge_weighted=True),
    }


def main() -> None:
    import warnings

    import tessera.tasks.inpaint as task

    rows = []
    candidates = methods()
    for index, name in enumerate(PHOTOS):
        truth = photo(name)
        for kind in MASKS:
            mask = synthetic_mask(kind, truth.shape[:2], seed=index * 10 + MASKS.index(kind))
            hole = mask > 127
            for method, model in candidates.items():
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = task.inpaint(truth, mask, model=model)
                seconds = time.perf_counter() - start
                rows.append({"photo": name, "mask": kind, "method": method, "coverage": float(hole.mean()),
                             "psnr": hole_psnr(result, truth, hole), "ssim": hole_ssim(result, truth, hole),
                             "seconds": seconds})
    summary = {}
    for method in candidates:
        mine = [r for r in rows if r["method"] == method]
        summary[method] = {
            "psnr": float(np.mean([r["psnr"] for r in mine])),
            "ssim": float(np.mean([r["ssim"] for r in mine])),
            "seconds": float(np.mean([r["seconds"] for r in mine])),
            **{f"psnr_{kind}": float(np.mean([r["psnr"] for r in mine if r["mask"] == kind])) for kind in MASKS},
            **{f"ssim_{kind}": float(np.mean([r["ssim"] for r in mine if r["mask"] == kind])) for kind in MASKS},
        }
    winner = max(summary, key=lambda m: summary[m]["psnr"])
    print(f"{'method':<20}{'PSNR':>7}{'SSIM':>7}" + "".join(f"{k[:7]:>9}" for k in MASKS) + f"{'s/img':>8}")
    for method, s in summary.items():
        print(f"{method:<20}{s['psnr']:7.2f}{s['ssim']:7.3f}"
              + "".join(f"{s['psnr_' + k]:9.2f}" for k in MASKS) + f"{s['seconds']:8.2f}")
    print(f"(per-mask columns: PSNR in dB) winner by mean PSNR: {winner}; "
          f"tessera's weight-free default: {task.DEFAULT_WEIGHT_FREE}")
    RESULTS.mkdir(exist_ok=True)
    out = {"machine": f"{platform.machine()}, {platform.python_version()}", "photos": list(PHOTOS),
           "long_side": LONG_SIDE, "masks": list(MASKS), "summary": summary, "winner": winner,
           "default": task.DEFAULT_WEIGHT_FREE, "rows": rows}
    (RESULTS / "inpaint_quality.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
