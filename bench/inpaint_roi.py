"""Inpainting cost follows the mask (CPU, random-weight LaMa, one run of each).

A 6000x4000 photo (scikit-image's astronaut enlarged, with mild noise) with 5 marks of ~60x60 px:
1. ``auto``: ``tessera.inpaint(strategy="auto")`` end to end on the in-memory photo (mask preparation, planning,
   the engine's memory probe, the network on the crops, paste-back); peak RSS of the process after it.
2. ``crops alone``: the same network called directly on the same crops (the planner's crops, batch 1), nothing
   else: the floor ``auto`` is compared with (acceptance: auto <= 2x).
3. ``full``: the whole photo in one pass. LaMa needs ~3 kB per pixel on the CPU (72 GB at 6000x4000), so it is
   estimated from one run at ``FULL_PROBE`` px square, scaled by area (FFT cost grows slightly faster than
   the area, so the estimate is a lower bound). Acceptance: auto >= 10x faster.
4. ``long scratch``: a 6 px scratch across the photo (corner to corner), ``--max-size 2000`` as in issue 11:
   the planner's full-resolution pieces against the single crop of the former plan (``split=False``), the same
   network and paste-back for both (best of two runs); the run scale of each crop, the network input pixels over
   the scratch's pixels, the seconds per megapixel of scratch, and ``tessera.inpaint`` end to end.

Prints a table and writes ``bench/results/inpaint_roi.json``.
Run: ``PYTHONPATH=src .venv/bin/python bench/inpaint_roi.py [--full-probe 2048] [--only-scratch]``
(``--only-scratch``: run row 4 alone and update its entry of the JSON file).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
WIDTH, HEIGHT = 6000, 4000
MARKS = ((500, 700), (1300, 4200), (2100, 2500), (3100, 900), (3500, 5200))  # (y, x) of each ~60x60 mark
MB = 1 << 20
SCRATCH = ((300, 100), (3700, 5900), 6)  # (y, x) ends and thickness of the long scratch
SCRATCH_MAX_SIZE = 2000


def lama():
    from spandrel import ModelLoader
    from spandrel.architectures.LaMa import LaMa

    torch.manual_seed(0)
    return ModelLoader().load_from_state_dict(LaMa(in_nc=4, out_nc=3).state_dict()).eval()


def big_photo() -> np.ndarray:
    from skimage import data

    image = cv2.resize(data.astronaut(), (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    noise = np.random.default_rng(0).integers(-3, 4, image.shape, dtype=np.int16)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def marks_mask() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    for i, (y, x) in enumerate(MARKS):
        cv2.ellipse(mask, (x, y), (30 + i % 3, 28 + i % 2), 15.0 * i, 0, 360, 255, -1)
    return mask


def scratch_mask() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    (y0, x0), (y1, x1), thickness = SCRATCH
    cv2.line(mask, (x0, y0), (x1, y1), 255, thickness)
    return mask


def long_scratch(descriptor, model, photo: np.ndarray) -> dict:
    """Row 4: the long scratch, split into pieces against the former single crop."""
    from tessera.engine import Runtime
    from tessera.image.pixels import from_float
    from tessera.tasks.inpaint import inpaint, run_regions, sizing_for
    from tessera.tasks.inpaint_paste import paste_region
    from tessera.tasks.inpaint_plan import plan_regions

    mask = scratch_mask()
    hole = mask > 127
    runtime = Runtime.create("cpu", "fp32", None, model=model)
    sizing = sizing_for(model, runtime, SCRATCH_MAX_SIZE)

    def fill(regions) -> np.ndarray:
        out = photo.copy()
        for region, result in run_regions(model, photo, hole, regions, runtime, canvas=out):
            paste_region(out, photo, region.crop, region.paste_mask(hole), from_float(result, out.dtype), None)
        return out

    plans = {"pieces": plan_regions(hole, sizing=sizing), "single crop": plan_regions(hole, sizing=sizing, split=False)}
    row: dict = {"scratch": {"from": list(SCRATCH[0]), "to": list(SCRATCH[1]), "thickness": SCRATCH[2],
                             "pixels": int(hole.sum())}, "max_size": SCRATCH_MAX_SIZE}
    outputs = {}
    for name, regions in plans.items():
        # best of two: the first run of a new input shape also pays LaMa's FFT set-up on the CPU
        runs = [timed(lambda regions=regions: fill(regions)) for _ in range(2)]
        outputs[name], seconds = min(runs, key=lambda run: run[1])
        run_pixels = sum(r.run_shape[0] * r.run_shape[1] for r in regions)
        row[name] = {"regions": len(regions), "seconds": seconds,
                     "seconds_per_scratch_mp": seconds / (hole.sum() / 1e6),
                     "run_pixels_over_scratch_pixels": run_pixels / int(hole.sum()),
                     "scales": sorted({round(r.scale, 3) for r in regions}),
                     "crops": [{"crop": r.crop.as_list(), "run_shape": list(r.run_shape), "scale": round(r.scale, 3),
                                "phase": r.phase} for r in regions]}
        assert np.array_equal(outputs[name][~hole], photo[~hole])
    _, row["auto_end_to_end_seconds"] = timed(
        lambda: inpaint(photo, mask, model=model, device="cpu", max_size=SCRATCH_MAX_SIZE))
    return row


def print_scratch(row: dict) -> None:
    print(f"long scratch: {row['scratch']['pixels']:,} px, 6 px wide corner to corner, --max-size {row['max_size']}")
    print(f"{'plan':<14}{'crops':>7}{'scales':>22}{'input/scratch px':>18}{'seconds':>10}{'s per scratch MP':>18}")
    for name in ("pieces", "single crop"):
        r = row[name]
        scales = ", ".join(f"{v:g}" for v in r["scales"])
        print(f"{name:<14}{r['regions']:>7}{scales:>22}{r['run_pixels_over_scratch_pixels']:>18.1f}"
              f"{r['seconds']:>10.2f}{r['seconds_per_scratch_mp']:>18.1f}")
    print(f"tessera.inpaint end to end (pieces): {row['auto_end_to_end_seconds']:.2f} s")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssPeak:
    """Peak resident memory between start() and stop() (sampled every 2 ms), and the resident memory before it."""

    def start(self) -> None:
        import psutil

        self._process = psutil.Process()
        self.before = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-probe", type=int, default=2048, help="side of the square run that estimates full")
    parser.add_argument("--only-scratch", action="store_true", help="run the long-scratch row alone")
    args = parser.parse_args()

    from tessera.models.loader import as_model
    from tessera.tasks.inpaint import inpaint, region_input

    torch.set_grad_enabled(False)
    descriptor = lama()
    model = as_model(descriptor)
    photo, mask = big_photo(), marks_mask()
    with torch.inference_mode():  # one small warm-up forward: first-call kernel set-up is not what we measure
        descriptor(torch.rand(1, 3, 64, 64), torch.ones(1, 1, 64, 64))
    if args.only_scratch:
        scratch = long_scratch(descriptor, model, photo)
        print_scratch(scratch)
        path = RESULTS / "inpaint_roi.json"
        result = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**result, "long_scratch": scratch}, indent=2) + "\n")
        return
    rss = RssPeak()
    rss.start()
    done, auto_s = timed(lambda: inpaint(photo, mask, model=model, strategy="auto", device="cpu"))
    rss.stop()
    out, regions = done.image, done.report.regions
    del done
    hole = mask > 127
    assert np.array_equal(out[~hole], photo[~hole])
    del out

    def crops_alone() -> None:
        grown = mask > 127
        for region in regions:
            image, hole_mask = region_input(photo, grown, region)
            x = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()  # NCHW, as the engine feeds it
            with torch.inference_mode():
                descriptor(x, torch.from_numpy(hole_mask)[None, None])

    _, crops_s = timed(crops_alone)

    side = args.full_probe
    probe = np.ascontiguousarray(cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA))
    probe_mask = cv2.resize(mask, (side, side), interpolation=cv2.INTER_NEAREST)
    x = torch.from_numpy(probe.astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()
    m = torch.from_numpy((probe_mask > 127).astype(np.float32))[None, None]

    def full_probe() -> None:
        with torch.inference_mode():
            descriptor(x, m)

    _, probe_s = timed(full_probe)
    rss_probe = peak_rss()
    full_estimate = probe_s * (WIDTH * HEIGHT) / (side * side)

    shapes = sorted({r.run_shape for r in regions})
    table = [
        ("auto (tessera.inpaint)", auto_s),
        (f"crops alone ({len(regions)} x {', '.join(f'{w}x{h}' for h, w in shapes)})", crops_s),
        (f"full, {side}x{side} run", probe_s),
        (f"full, estimated {WIDTH}x{HEIGHT} (x{WIDTH * HEIGHT / side / side:.2f} area)", full_estimate),
    ]
    print(f"{'run':<52}{'seconds':>10}")
    for name, seconds in table:
        print(f"{name:<52}{seconds:10.2f}")
    print(f"auto / crops alone = {auto_s / crops_s:.2f} (acceptance <= 2); "
          f"full estimate / auto = {full_estimate / auto_s:.1f} (acceptance >= 10)")
    print(f"RSS: {rss.before / MB:.0f} MB before auto (model + photo), peak {rss.peak / MB:.0f} MB during auto "
          f"(+{(rss.peak - rss.before) / MB:.0f} MB); process peak {rss_probe / MB:.0f} MB after the {side}px "
          f"full run")
    RESULTS.mkdir(exist_ok=True)
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "network": "spandrel LaMa (big-lama architecture), random weights, fp32, CPU",
        "photo": f"{WIDTH}x{HEIGHT} uint8", "marks": len(MARKS), "mask_pixels": int(hole.sum()),
        "regions": [{"crop": r.crop.as_list(), "run_shape": list(r.run_shape)} for r in regions],
        "auto_seconds": auto_s, "crops_alone_seconds": crops_s,
        "full_probe_side": side, "full_probe_seconds": probe_s,
        "full_estimated_seconds": full_estimate, "full_is_estimate": True,
        "auto_over_crops": auto_s / crops_s, "full_over_auto": full_estimate / auto_s,
        "rss_before_auto_mb": rss.before / MB, "peak_rss_during_auto_mb": rss.peak / MB,
        "peak_rss_process_after_full_probe_mb": rss_probe / MB,
        "long_scratch": long_scratch(descriptor, model, photo),
    }
    print_scratch(result["long_scratch"])
    (RESULTS / "inpaint_roi.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
