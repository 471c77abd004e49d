"""Quality of the weight-free inpainting methods (CPU): PSNR, SSIM and texture inside the holes.

Photos: scikit-image's bundled colour photos (astronaut, coffee, chelsea, rocket, immunohistochemistry), at
most 384 px on the long side. Masks, synthetic and seeded: thin scratches (random 2-3 px lines), blobs (random
ellipses ~15-40 px), text (OpenCV Hershey lettering), and large boxes (one rectangle of ~12 % of the photo).
Each method and setting runs through ``tessera.inpaint`` (default strategy: crops around the holes), the same
way the CLI runs it. PSNR is computed over the hole pixels only; SSIM is the mean of skimage's SSIM map
(7x7 windows, per channel) over the hole pixels. PSNR rewards blur (a smeared fill is never far off), so texture
is measured too, against the true content under the mask: ``grad`` is the mean gradient magnitude (Sobel, grey)
of the fill over that of the truth inside the holes, ``lapvar`` the same ratio of the variance of the Laplacian
(1: as much detail as the photo; below: blurred; above: noisier), and ``texture`` = mean of min(grad, 1/grad)
(1 is best).

The weight-free default of ``tessera inpaint`` is the setting with the best texture among those within
MAX_PSNR_LOSS dB of the best mean PSNR. Prints a table and writes ``bench/results/inpaint_quality.json``.
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
MAX_PSNR_LOSS = 1.0  # dB of mean PSNR a method may give up against the PSNR winner for better texture


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


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


def texture_ratios(result: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> tuple[float, float]:
    """(gradient-magnitude ratio, Laplacian-variance ratio) of the fill over the truth inside the holes."""
    def gradient(image: np.ndarray) -> float:
        grey = _grey(image)
        gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
        return float(np.sqrt(gx ** 2 + gy ** 2)[hole].mean())

    def laplacian_variance(image: np.ndarray) -> float:
        return float(cv2.Laplacian(_grey(image), cv2.CV_32F, ksize=3)[hole].var())

    return (gradient(result) / max(gradient(truth), 1e-9),
            laplacian_variance(result) / max(laplacian_variance(truth), 1e-12))


def choose_default(summary: dict[str, dict[str, float]]) -> str:
    """The best texture among the settings within MAX_PSNR_LOSS dB of the best mean PSNR."""
    best_psnr = max(s["psnr"] for s in summary.values())
    close = [m for m, s in summary.items() if s["psnr"] >= best_psnr - MAX_PSNR_LOSS]
    return max(close, key=lambda m: summary[m]["texture"])


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
                    result = task.inpaint(truth, mask, model=model).image
                seconds = time.perf_counter() - start
                grad, lapvar = texture_ratios(result, truth, hole)
                rows.append({"photo": name, "mask": kind, "method": method, "coverage": float(hole.mean()),
                             "psnr": hole_psnr(result, truth, hole), "ssim": hole_ssim(result, truth, hole),
                             "grad": grad, "lapvar": lapvar, "texture": min(grad, 1 / max(grad, 1e-9)),
                             "seconds": seconds})
    summary = {}
    for method in candidates:
        mine = [r for r in rows if r["method"] == method]
        summary[method] = {
            "psnr": float(np.mean([r["psnr"] for r in mine])),
            "ssim": float(np.mean([r["ssim"] for r in mine])),
            "seconds": float(np.mean([r["seconds"] for r in mine])),
            **{key: float(np.mean([r[key] for r in mine])) for key in ("grad", "lapvar", "texture")},
            **{f"grad_{kind}": float(np.mean([r["grad"] for r in mine if r["mask"] == kind])) for kind in MASKS},
            **{f"psnr_{kind}": float(np.mean([r["psnr"] for r in mine if r["mask"] == kind])) for kind in MASKS},
            **{f"ssim_{kind}": float(np.mean([r["ssim"] for r in mine if r["mask"] == kind])) for kind in MASKS},
        }
    by_psnr = max(summary, key=lambda m: summary[m]["psnr"])
    winner = choose_default(summary)
    print(f"{'method':<20}{'PSNR':>7}{'SSIM':>7}{'grad':>7}{'lapvar':>8}{'texture':>8}"
          + "".join(f"{k[:7]:>9}" for k in MASKS) + "".join(f"{'g ' + k[:5]:>9}" for k in MASKS) + f"{'s/img':>8}")
    for method, s in summary.items():
        print(f"{method:<20}{s['psnr']:7.2f}{s['ssim']:7.3f}{s['grad']:7.2f}{s['lapvar']:8.2f}{s['texture']:8.3f}"
              + "".join(f"{s['psnr_' + k]:9.2f}" for k in MASKS) + "".join(f"{s['grad_' + k]:9.2f}" for k in MASKS)
              + f"{s['seconds']:8.2f}")
    print(f"(per-mask columns: PSNR in dB, then gradient ratio) best mean PSNR: {by_psnr}; best texture within "
          f"{MAX_PSNR_LOSS:g} dB of it: {winner}; tessera's weight-free default: {task.DEFAULT_WEIGHT_FREE}")
    RESULTS.mkdir(exist_ok=True)
    out = {"machine": f"{platform.machine()}, {platform.python_version()}", "photos": list(PHOTOS),
           "long_side": LONG_SIDE, "masks": list(MASKS), "max_psnr_loss": MAX_PSNR_LOSS, "summary": summary,
           "winner_by_psnr": by_psnr, "winner": winner, "default": task.DEFAULT_WEIGHT_FREE, "rows": rows}
    (RESULTS / "inpaint_quality.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
