"""Face enhancement cost on a 24-MP photo: it must follow the number of faces, not the photo's pixels.

A 6000x4000 composite holds 1, 8 or 32 faces (scikit-image's astronaut and faces of its LFW subset, scaled up).
Each case runs in its own process (so peak RSS is the case's own) on the CPU with a random-weight GPEN at the
256 configuration (size 256, style 512, 8 MLP layers, channel multiplier 1, narrow 0.5), once (the 1-face
case three times, keeping the minima: its ratio is the goal and the machine may be shared):

- ``detect``: detection alone; ``one_face``: restoring one aligned crop; ``paste``: pasting it back;
- ``total``: the whole ``enhance_faces`` call (detect, copy the background, align, restore, paste);
- ``full_frame_warp``: what one face would cost with a full-frame warp per face (the anti-pattern), for scale;
- ``ratio_1face``: ``total`` of the 1-face case over ``detect + one_face + paste`` (the goal: <= 1.5).

A fourth case, 32 small faces (~100 px), shows the cost of the finer detection passes.

A second section, detection on a scan-size group photo (``--section group``): a generated sepia group photo of 29
people in three rows (LFW and astronaut faces on a cluttered wall, suits, legs; :func:`group_photo`), at 1x and
upscaled 4x and 6x with Lanczos, searched three ways: the first pass alone (``tiles="never"``), the pyramid
(``"auto"``) and the first pass plus full-resolution tiles everywhere (``"always"``, the search before the
pyramid). Each gives faces found / expected, false positives, time and the raster pixels the detector searched.

Run: ``PYTHONPATH=src .venv/bin/python bench/faces.py`` (prints tables, writes bench/results/faces-cpu.json and
bench/results/faces-group-cpu.json; ``--section cases|group`` runs one of them).
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

GROUP_SIZE = (896, 1328)  # rows, cols of the 1x group photo (the Solvay 1927 photo's proportions)
GROUP_ROWS = ((10, 30), (10, 34), (9, 38))  # (people, face px at 1x), back row to front row
GROUP_SCALES = (1, 4, 6)
# LFW faces that YuNet finds when shown alone at 48 and 64 px (score >= 0.8): the group photo measures the search
# across scales, not the detector's recall on faces it cannot see at any size.
GROUP_LFW = (0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21, 22, 24, 25, 26, 27, 29, 31, 33, 34, 35)


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


def group_photo(scale: int = 1, seed: int = 0) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """A sepia group photo of 29 people in three rows, and the true face boxes (x0, y0, x1, y1), at ``scale``.

    Built at 1x (1328x896) from scikit-image's photos: LFW faces (25x25, tight crops) and the astronaut's face
    as the faces; LFW's non-face patches as clutter on a panelled, mottled wall; dark suits with white collars,
    and in the seated front row legs with bright gaps between them (the clutter that gave false faces on the
    Solvay photo). ``scale`` > 1 enlarges it with Lanczos (cv2), as an upscaler's plain baseline would, and the
    boxes with it.
    """
    from skimage import data

    rng = np.random.default_rng(seed)
    rows, cols = GROUP_SIZE
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    mottle = cv2.GaussianBlur(rng.normal(0, 1, (rows, cols)).astype(np.float32), (0, 0), 12) * 60
    wall = 150 + 18 * np.sin(xx / 37.0) * (np.sin(xx / 7.0) > 0.6) + mottle  # panels and stains
    wall[(xx % 220 > 40) & (xx % 220 < 120) & (yy > 60) & (yy < 300)] += 35  # windows behind the group
    gray = wall
    lfw = data.lfw_subset()
    for patch in lfw[100:200]:  # non-faces: crops of clutter, scattered over the wall
        size = int(rng.integers(20, 70))
        y, x = int(rng.integers(0, rows - size)), int(rng.integers(0, cols - size))
        piece = cv2.resize(patch.astype(np.float32) * 255, (size, size), interpolation=cv2.INTER_CUBIC)
        gray[y:y + size, x:x + size] = 0.5 * gray[y:y + size, x:x + size] + 0.5 * piece
    head = cv2.cvtColor(data.astronaut()[60:185, 165:285], cv2.COLOR_RGB2GRAY).astype(np.float32)
    faces = [lfw[index].astype(np.float32) * 255 for index in GROUP_LFW]
    boxes = []
    person = 0
    for row, (count, face_px) in enumerate(GROUP_ROWS):
        centre_y = 250 + row * 190
        pitch = cols / (count + 0.6)
        for index in range(count):
            size = face_px + int(rng.integers(-3, 4))
            x = int((index + 0.8) * pitch + rng.integers(-8, 9) - size / 2)
            y = int(centre_y + rng.integers(-6, 7) - size / 2)
            shoulders = (x - size // 2, y + size, x + size + size // 2, min(rows, y + 5 * size))
            gray[shoulders[1]:shoulders[3], shoulders[0]:shoulders[2]] = 40 + rng.normal(0, 6)  # dark suit
            collar = np.abs(xx[shoulders[1]:shoulders[1] + size, shoulders[0]:shoulders[2]] - (x + size / 2))
            depth = yy[shoulders[1]:shoulders[1] + size, shoulders[0]:shoulders[2]] - shoulders[1]
            gray[shoulders[1]:shoulders[1] + size, shoulders[0]:shoulders[2]][collar < size / 3 - depth / 3] = 215
            if row == len(GROUP_ROWS) - 1:  # seated: legs, with the bright floor showing between them
                top = y + 3 * size
                for leg in (x - size // 3, x + size // 2):
                    gray[top:rows, leg:leg + size * 2 // 3] = 30
                gray[top + size:rows, x + size // 3 - 2:x + size // 2 - 1] = 200
            gray[y - size // 5:y + size // 3, x - 2:x + size + 2] = 35  # hair, above and behind the face
            source = head if person == 0 else faces[person - 1]
            gray[y:y + size, x:x + size] = cv2.resize(source, (size, size), interpolation=cv2.INTER_AREA)
            boxes.append((float(x), float(y), float(x + size), float(y + size)))
            person += 1
    gray += rng.normal(0, 4, gray.shape).astype(np.float32)  # film grain
    photo = np.clip(np.dstack([gray * 1.0, gray * 0.9, gray * 0.75]) + (0, 6, 14), 0, 255).astype(np.uint8)
    if scale != 1:
        photo = cv2.resize(photo, (cols * scale, rows * scale), interpolation=cv2.INTER_LANCZOS4)
        boxes = [tuple(value * scale for value in box) for box in boxes]
    return photo, boxes


def match_faces(faces: list, boxes: list[tuple[float, float, float, float]]) -> tuple[int, list]:
    """Faces matched to true boxes (centre inside, size within a factor 2 of the box), and the false positives.

    YuNet's box is smaller than an LFW crop (about 0.7 of it), hence the loose size criterion; each true box
    matches at most one detection, so a face found twice counts once and its double as a false positive.
    """
    matched: set[int] = set()
    false = []
    for face in faces:
        cx, cy = face.centre
        hit = next((index for index, (x0, y0, x1, y1) in enumerate(boxes) if index not in matched
                    and x0 <= cx <= x1 and y0 <= cy <= y1 and 0.5 <= face.size / (x1 - x0) <= 2.0), None)
        if hit is None:
            false.append(face)
        else:
            matched.add(hit)
    return len(matched), false


def counted_backend(name: str = "yunet") -> tuple[list[int], object]:
    """Wraps the detector ``name`` so that each call's raster pixels are recorded; returns (record, restore)."""
    from tessera.faces import backends

    real = backends.BACKENDS[name]
    searched: list[int] = []

    def counting(bgr, min_score):
        searched.append(bgr.shape[0] * bgr.shape[1])
        return real(bgr, min_score)

    backends.BACKENDS[name] = counting
    return searched, lambda: backends.BACKENDS.__setitem__(name, real)


def run_group(scale: int, modes: tuple[str, ...] = ("never", "auto", "always"), repeats: int = 3) -> list[dict]:
    """The group photo at ``scale``, detected with each tile mode: found/expected, false positives, time, pixels.

    The time is the minimum over ``repeats`` runs (one for "always", which is slow and far off), the least
    disturbed by other load on a shared machine.
    """
    from tessera.faces.detect import detect_faces

    photo, boxes = group_photo(scale)
    detect_faces(photo[:600, :600])  # warm-up: the detector's first call
    searched, restore = counted_backend()
    rows = []
    try:
        for mode in modes:
            times = []
            for _ in range(1 if mode == "always" else repeats):
                searched.clear()
                started = time.perf_counter()
                faces = detect_faces(photo, tiles=mode)
                times.append(time.perf_counter() - started)
            seconds = min(times)
            found, false = match_faces(faces, boxes)
            rows.append({"scale": scale, "size": f"{photo.shape[1]}x{photo.shape[0]}", "tiles": mode,
                         "faces_found": found, "faces_expected": len(boxes), "false_positives": len(false),
                         "false_boxes": [[round(v) for v in face.box] for face in false],
                         "detect_s": seconds, "detector_calls": len(searched),
                         "searched_mpx": sum(searched) / 1e6})
    finally:
        restore()
    one = next(row for row in rows if row["tiles"] == "never")
    for row in rows:
        row["time_vs_one_pass"] = row["detect_s"] / one["detect_s"]
    return rows


def group_section(output: Path) -> int:
    """Detection on the group photo at each of GROUP_SCALES, in one process per scale (each its own peak)."""
    import os

    rows = []
    for scale in GROUP_SCALES:
        child = subprocess.run([sys.executable, __file__, "--group-scale", str(scale)], capture_output=True,
                               text=True, check=False)
        if child.returncode != 0:
            print(child.stderr, file=sys.stderr)
            return child.returncode
        for row in json.loads(child.stdout.strip().splitlines()[-1]):
            rows.append(row)
            print(f"group {row['scale']}x ({row['size']}), tiles={row['tiles']:>6}: {row['faces_found']}/"
                  f"{row['faces_expected']} found, {row['false_positives']} false, {row['detect_s']:.2f}s "
                  f"({row['time_vs_one_pass']:.1f}x one pass), {row['detector_calls']} detector calls, "
                  f"{row['searched_mpx']:.1f} Mpx searched", flush=True)
    summary = {
        "benchmark": "faces-group", "device": "cpu",
        "photo": "generated group photo (bench/faces.py group_photo), 29 faces, 1328x896 at 1x, Lanczos 4x/6x",
        "command": "PYTHONPATH=src .venv/bin/python bench/faces.py --section group",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "note": "times on a shared 2-core machine are noisy; searched_mpx (raster pixels the detector saw) is not",
        "rows": rows,
    }
    _write_json(output, summary)
    return 0


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    temporary.replace(path)
    print(f"wrote {path}")


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

    from tessera.engine import HostPeak, Runtime, run_model  # HostPeak: the engine's RSS sampler, reused
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
        with HostPeak() as sampled:
            started = time.perf_counter()
            report = enhance_faces(photo, model=model, device="cpu").report
            times["total"].append(time.perf_counter() - started)
        if repeat == 0:
            memory, process_peak, done = sampled, peak_rss(), report
        stages.append(report.timings)
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
    parser.add_argument("--section", choices=("all", "cases", "group"), default="all",
                        help="the enhancement cases, the group-photo detection, or both (default)")
    parser.add_argument("--group-output", type=Path, default=RESULTS / "faces-group-cpu.json")
    parser.add_argument("--group-scale", type=int, help="run the group photo at this scale here and print JSON")
    args = parser.parse_args()
    if args.group_scale:
        print(json.dumps(run_group(args.group_scale)))
        return 0
    if args.case:
        repeats = args.repeats or (3 if args.case == "1 face" else 1)
        print(json.dumps(run_case(args.case, repeats)))
        return 0
    if args.section in ("all", "group"):
        status = group_section(args.group_output)
        if status or args.section == "group":
            return status
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
    _write_json(args.output, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
