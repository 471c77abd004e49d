"""Wall time of a batch on local worker processes: ``tessera batch upscale --workers 1`` against ``--workers 2``.

Eight photos from scikit-image (astronaut, coffee, chelsea, rocket, immunohistochemistry, colorwheel, cat,
hubble_deep_field; each resized to 512 px on its long side, PNG) are upscaled x4 by a random-weight network of the
size of Real-ESRGAN's animevideov3 (spandrel's Compact, num_feat=64, num_conv=16, saved as a .pth, so each worker
loads it from the file as a user's would), at the command's defaults (x4, ``--precision auto``: bf16 on a CPU
with avx512_bf16 or AMX, else fp32). Each round runs the command as a user types it, in a fresh process,
once per worker count, alternating (1, 2, 1, 2, ...), into a fresh output folder; the figure per worker count is
the best round's total wall time (start of the command to its exit: interpreter, worker start and model load
included). Also kept: the mean of the report's per-image seconds (the time one worker spent on one image: a worker
of two has half the cores, so it takes longer per image even when the batch ends sooner) and the machine's load
averages before and after (the machine is shared; other work skews the figures).

    .venv/bin/python bench/workers.py                 # 2 rounds, bench/results/workers.json
    .venv/bin/python bench/workers.py --rounds 1 --images 4 --json /tmp/workers.json   # smoke run

Prints a Markdown table; ratio = seconds with N workers / seconds with the first count, 1 (below 1: faster).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "workers.json"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "colorwheel", "cat",
          "hubble_deep_field")
LONG_SIDE = 512


def photos(folder: Path, count: int) -> None:
    """``count`` photos of scikit-image's data (cycled when more are asked for), LONG_SIDE px on the long side."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True)
    for i in range(count):
        image = Image.fromarray(getattr(data, PHOTOS[i % len(PHOTOS)])()).convert("RGB")
        factor = LONG_SIDE / max(image.size)
        image.resize((round(image.width * factor), round(image.height * factor)), Image.LANCZOS).save(
            folder / f"{i:02d}_{PHOTOS[i % len(PHOTOS)]}.png")


def save_network(path: Path) -> Path:
    """The random-weight Compact x4 (animevideov3's size), seeded, as a .pth state dict."""
    import torch
    from spandrel.architectures.Compact.__arch.SRVGG import SRVGGNetCompact

    torch.manual_seed(0)
    torch.save(SRVGGNetCompact(num_feat=64, num_conv=16, upscale=4).state_dict(), path)
    return path


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(value, 2) for value in os.getloadavg()]


def batch(source: Path, output: Path, weights: Path, workers: int) -> dict:
    """One `tessera batch upscale` command in a fresh process: its wall time and the report's per-image figures."""
    command = [sys.executable, "-m", "tessera", "batch", "upscale", str(source), "-o", str(output),
               "--model", str(weights), "--workers", str(workers), "--quiet"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    lines = [json.loads(text) for text in (output / "tessera-batch.jsonl").read_text().splitlines()]
    images = [line for line in lines if line.get("status") == "done"]
    if len(images) != len(list(source.glob("*.png"))):
        raise SystemExit(f"{' '.join(command)}: {len(images)} images done:\n{done.stderr}")
    return {"workers": workers, "seconds": round(seconds, 3),
            "mean_image_seconds": round(sum(line["seconds"] for line in images) / len(images), 3),
            "processes": len({line.get("worker") for line in images})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tessera-bench-workers-") as tmp:
        work = Path(tmp)
        photos(work / "in", args.images)
        weights = save_network(work / "compact-f64c16-x4.pth")
        before = load()
        runs = []
        for round_ in range(args.rounds):
            for workers in args.workers:
                run = batch(work / "in", work / f"out-{round_}-{workers}", weights, workers)
                runs.append({"round": round_ + 1, **run})
                print(f"round {round_ + 1}, {workers} worker(s): {run['seconds']:.1f} s", file=sys.stderr)
        after = load()

    best = {w: min((r for r in runs if r["workers"] == w), key=lambda r: r["seconds"]) for w in args.workers}
    base = best[args.workers[0]]["seconds"]
    rows = [{"workers": w, "seconds": r["seconds"], "ratio": round(r["seconds"] / base, 3),
             "seconds_per_image": round(r["seconds"] / args.images, 3),
             "mean_image_seconds": r["mean_image_seconds"]} for w, r in best.items()]
    import torch

    from tessera.engine.runtime import native_cpu_bf16

    result = {
        "benchmark": "workers",
        "command": " ".join(["bench/workers.py", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "cuda": torch.cuda.is_available(),
                    "precision_auto_takes_bf16": native_cpu_bf16()},
        "load_average_before": before, "load_average_after": after,
        "images": args.images, "photos": f"skimage {', '.join(PHOTOS)}, {LONG_SIDE} px on the long side, PNG",
        "network": "spandrel Compact x4 num_feat=64 num_conv=16 (animevideov3's size), random weights, .pth",
        "rows": rows, "runs": runs,
    }
    print(f"{args.images} images, best of {args.rounds} round(s); load averages {before} before, {after} after\n")
    print(f"| workers | seconds | ratio to {args.workers[0]} | seconds per image (wall) "
          "| mean seconds in one worker per image |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['workers']} | {row['seconds']:.2f} | {row['ratio']:.3f} | {row['seconds_per_image']:.2f} "
              f"| {row['mean_image_seconds']:.2f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
