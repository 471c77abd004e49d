"""Face enhancement cost on a 24-MP photo: it must follow the number of faces, not the photo's pixels.

A 6000x4000 composite holds 1, 8 or 32 faces (scikit-image's astronaut and faces of its LFW subset, scaled up).
Each case runs in its own process (so peak RSS is the case's own) on the CPU with a random-weight GPEN at the
256 configuration (size 256, style 512, 8 MLP layers, channel multiplier 1, narrow 0.5), once (the 1-face
case three times, keeping the minima: its ratio is the goal and the machine may be shared):

- ``detect``: detection alone; ``one_face``: restoring one aligned crop; ``paste``: pasting it back;
- ``total``: the whole ``enhance_faces`` call (detect, copy the background, align, restore, paste);
- ``full_frame_warp``: what one face would cost with a full-frame warp per face (the anti-pattern), for scale;
- ``ratio_1face``: ``total`` of the 1-face case over ``detect + one_face + paste`` (the goal: <= 1.5).

A fourth case, 32 small faces (~100 px), shows the cost of the full-resolution tiled detection pass.

Run: ``PYTHONPATH=src .venv/bin/python bench/faces.py`` (prints a table, writes bench/results/faces-cpu.json).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

HEIGHT, WIDTH = 4000, 6000
GPEN_256 = {"size": 256, "style_dim": 512, "n_mlp": 8, "channel_multiplier": 1, "narrow": 0.5}
CASES = {"1 face": (1, 720), "8 faces": (8, 480), "32 faces": (32, 360), "32 small faces": (32, 100)}
RESULTS = Path(__file__).resolve().parent / "results"


def composite(count: int, face_px: int, seed: int = 0) -> np.ndarray:
    """A 6000x4000 uint8 photo: a smooth textured backdrop and ``count`` faces ``face_px`` tall on a grid.

    Face 0 is the astronaut's head; the others are LFW faces (25x25 gray), enlarged and tinted to skin tones.
    """
    from skimage import data

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT:8, 0:WIDTH:8].astype(np.float32) * 8
    low = np.dstack([120 + 50 * np.sin(xx / 700), 110 + 40 * np.cos(yy / 500), 100 + 30 * np.sin((xx + yy) / 900)])
    photo = cv2.resize(low.astype(np.uint8), (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
    for top in range(0, HEIGHT, 500):  # film grain, a band at a time (no 24-MP float temporaries)
        band = photo[top:top + 500]
        grain = rng.integers(-6, 7, band.shape, dtype=np.int16)
        band[...] = np.clip(band.astype(np.int16) + grain, 0, 255).astype(np.uint8)
    head = data.astronaut()[30:210, 140:310]
    lfw = data.lfw_subset()[:100]  # the first 100 of the subset are faces
    cols = int(np.ceil(np.sqrt(count * WIDTH / HEIGHT)))
    rows = int(np.ceil(count / cols))
    for index in range(count):
        r, c = divmod(index, cols)
        if index == 0:
            face = cv2.resize(head, (round(face_px * 170 / 180), face_px), interpolation=cv2.INTER_CUBIC)
        else:
            gray = cv2.resize((lfw[index % 100] * 255).astype(np.uint8), (face_px, face_px),
                              interpolation=cv2.INTER_CUBIC).astype(np.float32)
            face = np.clip(np.dstack([gray * 1.0, gray * 0.85, gray * 0.72]), 0, 255).astype(np.uint8)
        y = int((r + 0.5) * HEIGHT / rows - face.shape[0] / 2)
        x = int((c + 0.5) * WIDTH / cols - face.shape[1] / 2)
        photo[y:y + face.shape[0], x:x + face.shape[1]] = face
    return photo


def random_gpen_256():
    import torch

    from tessera.models.gpen import GPEN, GPENArch
    from tessera.models.loader import as_model

    torch.manual_seed(0)
    return as_model(GPENArch().load(GPEN(**GPEN_256).state_dict()), name="gpen-256-random")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def run_case(name: str, repeats: int) -> dict:
    """One case, in this process: build the photo, warm up, then time the whole call and its parts.

    With ``repeats`` > 1 every figure is the minimum over the repeats (the least disturbed by other load).
    """
    import os

    import torch

    from tessera.engine import Runtime, _HostPeak, run_model  # _HostPeak: the engine's RSS sampler, reused
    from tessera.faces.align import align_face
    from tessera.faces.detect import detect_faces
    from tessera.faces.paste import paste_face
    from tessera.tasks.faces import enhance_faces

    count, face_px = CASES[name]
    photo = composite(count, face_px)
    model = random_gpen_256()
    runtime = Runtime.create("cpu", "fp32")
    detect_faces(photo[:1200, :1200])  # warm-up: the detector's first call and the network's first forward
    run_model(model, [np.zeros((256, 256, 3), np.float32)], runtime)
    load_before = os.getloadavg()[0]

    times: dict[str, list[float]] = {key: [] for key in ("total", "detect", "one_face", "paste")}
    stages: list[dict[str, float]] = []
    for repeat in range(repeats):
        report: list = []
        with _HostPeak() as sampled:
            started = time.perf_counter()
            enhance_faces(photo, model=model, device="cpu", report=report)
            times["total"].append(time.perf_counter() - started)
        if repeat == 0:
            memory, process_peak, done = sampled, peak_rss(), report[0]
        stages.append(report[0].timings)
        started = time.perf_counter()
        faces = detect_faces(photo)
        times["detect"].append(time.perf_counter() - started)
        aligned = align_face(photo, faces[0].landmarks, "gpen", 256)
        started = time.perf_counter()
        (restored,) = run_model(model, [aligned.crop], runtime)
        times["one_face"].append(time.perf_counter() - started)
        canvas = photo.copy()
        started = time.perf_counter()
        paste_face(canvas, restored, aligned.matrix)
        times["paste"].append(time.perf_counter() - started)
        del canvas
    frame = np.zeros((HEIGHT, WIDTH, 3), np.float32)
    started = time.perf_counter()
    cv2.warpAffine(frame, np.eye(2, 3), (WIDTH, HEIGHT), flags=cv2.INTER_CUBIC)
    full_frame_warp = time.perf_counter() - started
    del frame
    best = {key: min(values) for key, values in times.items()}
    best_stages = {key: round(min(item[key] for item in stages), 3) for key in stages[0]}
    return {
        "case": name, "faces_placed": count, "face_px": face_px, "faces_found": len(done.faces),
        "megapixels": HEIGHT * WIDTH / 1e6, "repeats": repeats,
        "detect_s": best["detect"], "one_face_s": best["one_face"], "paste_s": best["paste"],
        "total_s": best["total"], "per_face_s": (best["total"] - best["detect"]) / max(len(done.faces), 1),
        "full_frame_warp_s": full_frame_warp,
        "ratio_to_detect_one_face_paste": best["total"] / (best["detect"] + best["one_face"] + best["paste"]),
        "stages_s": best_stages,
        "photo_mib": photo.nbytes / 2**20, "process_peak_rss_mib": process_peak / 2**20,
        "enhance_rss_before_mib": memory.base / 2**20, "enhance_peak_rss_mib": memory.peak / 2**20,
        "enhance_extra_rss_mib": memory.used / 2**20,
        "torch_threads": torch.get_num_threads(), "load_average": [load_before, os.getloadavg()[0]],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=list(CASES), help="run one case here and print its JSON")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timing repeats (default: 3 for the 1-face case, whose ratio is the goal, else 1)")
    parser.add_argument("--cases", nargs="*", default=list(CASES), help="cases to run (default: all)")
    parser.add_argument("--output", type=Path, default=RESULTS / "faces-cpu.json")
    args = parser.parse_args()
    if args.case:
        repeats = args.repeats or (3 if args.case == "1 face" else 1)
        print(json.dumps(run_case(args.case, repeats)))
        return 0
    rows = []
    for name in args.cases:
        command = [sys.executable, __file__, "--case", name]
        if args.repeats:
            command += ["--repeats", str(args.repeats)]
        child = subprocess.run(command, capture_output=True, text=True, check=False)
        if child.returncode != 0:
            print(child.stderr, file=sys.stderr)
            return child.returncode
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        row = rows[-1]
        print(f"{row['case']:>15}: {row['faces_found']:>2}/{row['faces_placed']} found, detect {row['detect_s']:.2f}s, "
              f"total {row['total_s']:.2f}s ({row['per_face_s']:.2f}s/face), one face {row['one_face_s']:.2f}s, "
              f"paste {row['paste_s'] * 1000:.1f}ms, full-frame warp {row['full_frame_warp_s']:.2f}s, "
              f"ratio {row['ratio_to_detect_one_face_paste']:.2f}, peak RSS {row['enhance_peak_rss_mib']:.0f} MiB "
              f"(+{row['enhance_extra_rss_mib']:.0f} over the loaded photo and model)",
              flush=True)
    one = next((row for row in rows if row["case"] == "1 face"), None)
    summary = {
        "benchmark": "faces", "device": "cpu", "model": "GPEN 256 configuration, random weights",
        "photo": f"{WIDTH}x{HEIGHT} composite (astronaut + LFW subset faces)",
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                    "cpus": __import__("os").cpu_count()},
        "command": "PYTHONPATH=src .venv/bin/python bench/faces.py",
        "goal_1face_ratio_max": 1.5,
        "ratio_1face": one["ratio_to_detect_one_face_paste"] if one else None,
        "gpu": "not measured: no GPU machine in this session",
        "cases": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.output.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(summary, indent=2) + "\n")
    temporary.replace(args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
