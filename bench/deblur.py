"""Motion deblurring quality (CPU): the hyper-Laplacian default against the old Wiener default and Richardson-Lucy.

Photos: scikit-image's bundled astronaut (a 256 px crop of the face), camera, coffee, and a 4x4 mosaic of LFW faces
(25 px each) upscaled 4x with bicubic interpolation. Each is blurred by a known straight motion kernel
(``tessera.filters.motion_kernel``; lengths 9, 15, 21 and 25 px, two angles each), then given Gaussian noise
(sigma 0.003, and 0.01 on some cases) and rounded to 8 bits. Every method runs through ``tessera.filters.deblur``
twice: with the kernel it estimates itself and with the true one.

Measures, all on gray values in [0, 1]:
- PSNR gain over the blurred input, in dB.
- sharpness: the variance of the Laplacian, as a ratio to the sharp original's (blurred inputs sit near 0.05; a
  result above 1 is noisier than the original, not sharper).
- ghost: the amplitude of a doubled edge. The residual's high band (result minus original, each minus its Gaussian
  blur of sigma 1.5) is regressed on the original's high band shifted along the blur by 0.8 to 1.25 times its
  length (beyond the blur's own reach of half a length), either way; the largest |coefficient| is the score. A copy
  of every edge one blur length away (Richardson-Lucy's failure) scores its relative strength; a clean result
  scores near the blurred input's own level.

Prints a table and writes ``bench/results/deblur.json``. Run: ``PYTHONPATH=src .venv/bin/python bench/deblur.py``
(``--quick``: one photo, for a smoke test).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import cv2
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("hyper-laplacian", "wiener", "richardson-lucy")
KERNELS = ((9, 0), (9, 45), (15, 30), (15, 100), (21, 120), (21, 160), (25, 60), (25, 10))
NOISE = 0.003
STRONG_NOISE_KERNELS = ((15, 30), (25, 60))  # also run with noise 0.01
STRONG_NOISE = 0.01
GHOST_RANGE = (0.8, 1.25)  # where a doubled edge is looked for, in blur lengths (beyond the blur's own reach)


def astronaut_face() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[0:256, 120:376])


def lfw_mosaic() -> np.ndarray:
    """Sixteen LFW faces in a 4x4 grid, upscaled 4x (400 px, gray)."""
    from skimage import data

    faces = data.lfw_subset()[:16]
    grid = np.vstack([np.hstack(list(faces[row * 4:row * 4 + 4])) for row in range(4)]).astype(np.float32)
    big = cv2.resize(grid, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    return np.clip(np.rint(big * 255), 0, 255).astype(np.uint8)


def photos(quick: bool = False) -> dict[str, np.ndarray]:
    from skimage import data

    found = {"astronaut-face": astronaut_face()}
    if not quick:
        found.update({"camera": data.camera(), "coffee": data.coffee(), "lfw-faces-4x": lfw_mosaic()})
    return found


def motion_blurred(sharp: np.ndarray, length: float, angle: float, noise: float = NOISE,
                   seed: int = 0) -> np.ndarray:
    """``sharp`` (uint8) blurred by the motion kernel, with Gaussian noise, rounded back to uint8."""
    from tessera.filters import motion_kernel

    kernel = motion_kernel(length, angle).astype(np.float32)
    blurred = cv2.filter2D(sharp.astype(np.float32) / 255, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    blurred = blurred + np.random.default_rng(seed).normal(0, noise, blurred.shape)
    return np.clip(np.rint(blurred * 255), 0, 255).astype(np.uint8)


def gray(image: np.ndarray) -> np.ndarray:
    values = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
    if values.ndim == 3:
        values = cv2.cvtColor(values, cv2.COLOR_RGB2GRAY)
    return values.astype(np.float64)


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    error = np.mean((gray(image) - gray(reference)) ** 2)
    return float(10 * np.log10(1.0 / max(error, 1e-12)))


def laplacian_variance(image: np.ndarray) -> float:
    """The variance of the Laplacian of the gray image in [0, 1] (a common sharpness score)."""
    return float(cv2.Laplacian(gray(image), cv2.CV_64F).var())


def _high_band(values: np.ndarray) -> np.ndarray:
    return values - cv2.GaussianBlur(values, (0, 0), 1.5)


def ghost_score(result: np.ndarray, sharp: np.ndarray, length: float, angle: float) -> float:
    """The largest relative amplitude of a copy of the original's edges found in the result's error at 0.8 to
    1.25 blur lengths along the blur (see the module's docstring); 0 for a perfect result."""
    reference = _high_band(gray(sharp))
    residual = _high_band(gray(result)) - reference
    dx, dy = math.cos(math.radians(angle)), -math.sin(math.radians(angle))
    margin = int(2 * length) + 2
    inner = (slice(margin, -margin), slice(margin, -margin))
    rows, cols = reference.shape
    best = 0.0
    for step in range(round(GHOST_RANGE[0] * length), round(GHOST_RANGE[1] * length) + 1):
        for sign in (1, -1):
            move = np.float64([[1, 0, sign * step * dx], [0, 1, sign * step * dy]])
            shifted = cv2.warpAffine(reference, move, (cols, rows), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT)[inner]
            best = max(best, abs(float((residual[inner] * shifted).sum() / (shifted * shifted).sum())))
    return best


def measure(result: np.ndarray, sharp: np.ndarray, blurred: np.ndarray, length: float, angle: float) -> dict:
    return {"psnr_gain": round(psnr(result, sharp) - psnr(blurred, sharp), 3),
            "sharpness": round(laplacian_variance(result) / laplacian_variance(sharp), 4),
            "ghost": round(ghost_score(result, sharp, length, angle), 4)}


def run_case(name: str, sharp: np.ndarray, length: float, angle: float, noise: float) -> dict:
    from tessera.filters import MotionBlur, deblur, estimate_motion_blur

    blurred = motion_blurred(sharp, length, angle, noise)
    estimate = estimate_motion_blur(blurred)
    row = {"photo": name, "length": length, "angle": angle, "noise": noise,
           "estimated": {"length": round(estimate.length, 2), "angle": round(estimate.angle, 1)},
           "input": measure(blurred, sharp, blurred, length, angle), "methods": {}}
    for method in METHODS:
        for kernel, blur in (("estimated", estimate), ("true", MotionBlur(length, angle))):
            start = time.perf_counter()
            result = deblur(blurred, method=method, blur=blur)
            seconds = time.perf_counter() - start
            row["methods"].setdefault(method, {})[kernel] = {**measure(result, sharp, blurred, length, angle),
                                                             "seconds": round(seconds, 3)}
    return row


def summarise(rows: list[dict]) -> dict:
    """Per method and kernel source: means, and the share of cases where PSNR and sharpness both rise with no
    more ghost than the blurred input shows plus 0.03. With the estimated kernel, over the cases where a blur was
    found (elsewhere every method returns the input)."""
    found = [row for row in rows if row["estimated"]["length"] > 0]
    summary: dict = {"cases": len(rows), "blur_found": len(found)}
    for method in METHODS:
        for kernel, chosen in (("estimated", found), ("true", rows)):
            cells = [(row["input"], row["methods"][method][kernel]) for row in chosen]
            summary.setdefault(method, {})[kernel] = {
                "psnr_gain": round(float(np.mean([c["psnr_gain"] for _, c in cells])), 2),
                "sharpness": round(float(np.mean([c["sharpness"] for _, c in cells])), 3),
                "ghost": round(float(np.mean([c["ghost"] for _, c in cells])), 3),
                "both_up_no_ghost": round(float(np.mean([
                    c["psnr_gain"] > 0 and c["sharpness"] > i["sharpness"] and c["ghost"] <= i["ghost"] + 0.03
                    for i, c in cells])), 3),
                "seconds": round(float(np.mean([c["seconds"] for _, c in cells])), 3)}
    summary["input"] = {"sharpness": round(float(np.mean([row["input"]["sharpness"] for row in rows])), 3),
                        "ghost": round(float(np.mean([row["input"]["ghost"] for row in rows])), 3)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one photo, three kernels (smoke test)")
    args = parser.parse_args()
    cases = [(name, image, length, angle, NOISE) for name, image in photos(args.quick).items()
             for length, angle in (KERNELS[::3] if args.quick else KERNELS)]
    if not args.quick:
        cases += [(name, image, length, angle, STRONG_NOISE) for name, image in photos().items()
                  if name in ("astronaut-face", "camera") for length, angle in STRONG_NOISE_KERNELS]
    rows = []
    print(f"{'photo':15} {'L':>3} {'ang':>4} {'noise':>6} {'est L/ang':>10}  "
          + "  ".join(f"{m[:5] + ' dB/sharp/ghost':>24}" for m in METHODS) + "   (estimated kernel)")
    for name, image, length, angle, noise in cases:
        row = run_case(name, image, length, angle, noise)
        rows.append(row)
        est = row["estimated"]
        cells = "  ".join(f"{c['psnr_gain']:+7.2f} {c['sharpness']:6.3f} {c['ghost']:6.3f}    "
                          for c in (row["methods"][m]["estimated"] for m in METHODS))
        print(f"{name:15} {length:3} {angle:4} {noise:6.3f} {est['length']:5.1f}/{est['angle']:4.0f}  {cells}",
              flush=True)
    summary = summarise(rows)
    print(f"\nmeans (estimated kernel: the {summary['blur_found']} of {summary['cases']} cases where a blur was "
          f"found)   dB gain  sharpness  ghost  both-up-no-ghost  seconds  (input: sharpness "
          f"{summary['input']['sharpness']}, ghost {summary['input']['ghost']})")
    for method in METHODS:
        for kernel in ("estimated", "true"):
            s = summary[method][kernel]
            print(f"{method:16} {kernel:9} {s['psnr_gain']:+6.2f} {s['sharpness']:9.3f} {s['ghost']:6.3f} "
                  f"{s['both_up_no_ghost']:10.0%} {s['seconds']:12.2f}")
    if args.quick:
        return
    RESULTS.mkdir(exist_ok=True)
    out = {"machine": f"{platform.machine()}, {platform.python_version()}", "noise": [NOISE, STRONG_NOISE],
           "kernels": [list(k) for k in KERNELS], "summary": summary, "cases": rows}
    (RESULTS / "deblur.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
