"""Peak memory and time of streamed (out-of-core) jobs against the image size, through the API and the commands.

For each size (megapixels, square images) a TIFF is generated tile by tile (smooth colours plus noise, tiled,
zlib), with a mask of a few scratches. Then three fresh processes each stream one job into a tiled BigTIFF:
``tessera.tasks.upscale_stream.stream_upscale`` (the API), ``tessera upscale scan.tif -o out.tif --max-ram 512M``
and ``tessera inpaint scan.tif --mask mask.tif -o out.tif --max-ram 512M --model telea`` (the plain commands, which
stream because the image is over ``--max-ram``). The upscaler is a small random-weight network (spandrel's
Compact, num_feat=8, num_conv=2, x2: the smallest real super-resolution architecture, so that 256 MP runs in
minutes on two CPU cores; saved as a .pth for the command). Each figure is the whole process's peak resident memory
(``ru_maxrss``): interpreter, torch, model and the streaming itself. The claim under test: the peak does not grow
with the image (less than 10 % from 16 to 256 MP), while the in-memory flow would need the input plus the output
(5x the input's bytes at x2) and more.

    .venv/bin/python bench/bigimage.py                      # 4 16 64 256 MP, results in bench/results/
    .venv/bin/python bench/bigimage.py --sizes 4 16 --workdir /tmp/big

Prints a table; writes bench/results/bigimage.json and bench/results/bigimage.png (peak RSS against size).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GROWTH_LIMIT = 0.10
TILE = 256
WAYS = {"api stream_upscale": "o-", "tessera upscale": "^-", "tessera inpaint": "v-"}


def generate(path: Path, side: int, seed: int = 0) -> None:
    """A side x side RGB uint8 tiled TIFF, written tile by tile (the generator never holds the image)."""
    import cv2
    import tifffile

    rng = np.random.default_rng(seed)
    coarse = rng.random((side // 512 + 2, side // 512 + 2, 3)).astype(np.float32)

    def tiles():
        for y in range(0, side, TILE):
            for x in range(0, side, TILE):
                # a smooth field sampled at this tile, plus grain: compressible like a scan, not flat
                ys = (np.arange(y, y + TILE, dtype=np.float32) / 512)[:, None].repeat(TILE, 1)
                xs = (np.arange(x, x + TILE, dtype=np.float32) / 512)[None, :].repeat(TILE, 0)
                field = cv2.remap(coarse, xs, ys, cv2.INTER_LINEAR)
                grain = rng.normal(0, 6, (TILE, TILE, 3)).astype(np.float32)
                yield np.clip(field * 255 + grain, 0, 255).astype(np.uint8)

    tifffile.imwrite(path, tiles(), shape=(side, side, 3), dtype=np.uint8, tile=(TILE, TILE), photometric="rgb",
                     compression="zlib", bigtiff=side * side * 3 > 2**31, metadata=None)


def save_network(path: Path, scale: int) -> Path:
    """The random-weight Compact network as a weight file, for the commands (seeded: the child's network too)."""
    import torch

    torch.save(compact(scale).state_dict(), path)
    return path


def compact(scale: int) -> Any:
    import torch
    from spandrel.architectures.Compact.__arch.SRVGG import SRVGGNetCompact

    torch.manual_seed(0)
    return SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale).eval()


def generate_mask(path: Path, side: int) -> None:
    """A mask of the photo's size with a few scratches and spots (what a scan has), written tile by tile."""
    import tifffile

    rng = np.random.default_rng(1)
    marks = [(int(y), int(x)) for y, x in rng.integers(0, side - 64, size=(12, 2))]

    def tiles():
        for y in range(0, side, TILE):
            for x in range(0, side, TILE):
                tile = np.zeros((TILE, TILE), np.uint8)
                for my, mx in marks:
                    if y <= my < y + TILE - 48 and x <= mx < x + TILE - 48:
                        tile[my - y:my - y + 40, mx - x:mx - x + 6] = 255  # a scratch 40 px long
                yield tile

    tifffile.imwrite(path, tiles(), shape=(side, side), dtype=np.uint8, tile=(TILE, TILE), compression="zlib",
                     bigtiff=side * side > 2**31, metadata=None)


def child(source: Path, output: Path, scale: int) -> dict:
    """Runs in a fresh process: stream the upscale through the API, return timings and this process's peak RSS."""
    import torch

    from tessera.models.descriptor import Model
    from tessera.tasks.upscale_stream import stream_upscale

    model = Model(compact(scale), "compact-f8c2", scale=scale)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    report = stream_upscale(source, output, model=model, tile=TILE, tile_pad="auto").report
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "peak_rss": peak, "rss_before_streaming": before, "block": report.block,
            "context": report.context, "blocks": report.blocks, "output_shape": list(report.output_shape),
            "output_file_bytes": output.stat().st_size, "threads": torch.get_num_threads()}


def command(arguments: list[str]) -> dict:
    """Runs in a fresh process: one `tessera ...` command as a user types it, in a grandchild; returns its
    time and peak RSS (``RUSAGE_CHILDREN`` of this process, which waits for that one command only)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tessera", *arguments], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"tessera {' '.join(arguments)} exited {done.returncode}:\n{done.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"seconds": seconds, "peak_rss": peak, "said": done.stderr.strip().splitlines()}


def _in_child(*arguments: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, __file__, *arguments], env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {' '.join(arguments)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_size(megapixels: int, workdir: Path, scale: int, weights: Path, max_ram: str) -> list[dict]:
    """The three rows of one size: the API, `tessera upscale` and `tessera inpaint`, each in a fresh process."""
    side = round(math.sqrt(megapixels * 1e6) / TILE) * TILE
    source = workdir / f"scan_{megapixels}mp.tif"
    mask = workdir / f"scan_{megapixels}mp_mask.tif"
    output = workdir / f"scan_{megapixels}mp_out.tif"
    started = time.perf_counter()
    if not source.exists():
        generate(source, side)
        generate_mask(mask, side)
    generated = time.perf_counter() - started
    input_bytes = side * side * 3
    common = {"megapixels": megapixels, "side": side, "input_file_bytes": source.stat().st_size,
              "generate_seconds": generated}
    rows = [{"way": "api stream_upscale", **_in_child("--child", str(source), str(output), str(scale)),
             "in_memory_floor": input_bytes * (1 + scale * scale), **common}]
    output.unlink()
    upscale = ["upscale", str(source), "-o", str(output), "--model", str(weights), "--tile", str(TILE),
               "--max-ram", max_ram, "--device", "cpu", "--quiet"]
    rows.append({"way": "tessera upscale", **_in_child("--command", *upscale),
                 "in_memory_floor": input_bytes * (1 + scale * scale), **common})
    output.unlink()
    inpaint = ["inpaint", str(source), "--mask", str(mask), "-o", str(output), "--model", "telea",
               "--max-ram", max_ram, "--quiet"]
    rows.append({"way": "tessera inpaint", **_in_child("--command", *inpaint), "in_memory_floor": 2 * input_bytes,
                 **common})
    output.unlink()
    for row in rows:
        row["megapixels_per_second"] = side * side / 1e6 / row["seconds"]
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for way, style in WAYS.items():
        mine = [r for r in rows if r["way"] == way]
        ax.plot([r["megapixels"] for r in mine], [r["peak_rss"] / 2**20 for r in mine], style,
                label=f"{way}: peak RSS (whole process)")
    upscales = [r for r in rows if r["way"] == "tessera upscale"]
    ax.plot([r["megapixels"] for r in upscales], [r["in_memory_floor"] / 2**20 for r in upscales], "s--",
            color="gray", label="upscale in memory: input + output pixels alone")
    mp = sorted({r["megapixels"] for r in rows})
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(mp)
    ax.set_xticklabels([f"{m} MP" for m in mp])
    ax.set_xlabel("input size (x2 upscale, or inpaint, to a tiled BigTIFF)")
    ax.set_ylabel("memory (MiB)")
    ax.set_title("Peak memory of streamed jobs (2 CPU cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(child(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))))
        return 0
    if len(sys.argv) > 2 and sys.argv[1] == "--command":
        print(json.dumps(command(sys.argv[2:])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 16, 64, 256], help="megapixels")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--max-ram", default="512M", help="the commands' --max-ram: every size streams")
    parser.add_argument("--workdir", type=Path, default=None, help="where the TIFFs go (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated inputs")
    parser.add_argument("--name", default="bigimage", help="result files: bench/results/NAME.json and .png")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tessera-bigimage-"))
    workdir.mkdir(parents=True, exist_ok=True)
    weights = save_network(workdir / f"compact-f8c2-x{args.scale}.pth", args.scale)
    rows = []
    print(f"{'way':>18} {'size':>7} {'side':>6} {'time':>8} {'MP/s':>6} {'peak RSS':>10} {'in-memory floor':>16}")
    for megapixels in args.sizes:
        for row in run_size(megapixels, workdir, args.scale, weights, args.max_ram):
            rows.append(row)
            print(f"{row['way']:>18} {megapixels:>5}MP {row['side']:>6} {row['seconds']:>7.1f}s "
                  f"{row['megapixels_per_second']:>6.2f} {row['peak_rss'] / 2**20:>8.0f}MiB "
                  f"{row['in_memory_floor'] / 2**20:>14.0f}MiB", flush=True)
        if not args.keep:
            for name in (f"scan_{megapixels}mp.tif", f"scan_{megapixels}mp_mask.tif"):
                (workdir / name).unlink()
    verdict = {}
    sizes = sorted({r["megapixels"] for r in rows})
    if len(sizes) >= 2 and sizes[-1] >= 4 * sizes[1]:
        small, large = sizes[1], sizes[-1]  # the smallest size is left out: its run is too short to settle
        for way in WAYS:
            by_size = {r["megapixels"]: r for r in rows if r["way"] == way}
            growth = by_size[large]["peak_rss"] / by_size[small]["peak_rss"] - 1
            verdict[way] = {"from": small, "to": large, "growth": growth, "limit": GROWTH_LIMIT,
                            "ok": growth < GROWTH_LIMIT}
            print(f"{way}: peak RSS growth {small} -> {large} MP: {growth:+.1%} (limit {GROWTH_LIMIT:.0%}): "
                  f"{'ok' if growth < GROWTH_LIMIT else 'FAILED'}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "bigimage", "command": " ".join(["bench/bigimage.py", *sys.argv[1:]]),
              "network": "SRVGGNetCompact num_feat=8 num_conv=2 (random weights); inpaint: telea",
              "scale": args.scale, "max_ram": args.max_ram,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()},
              "rows": rows, "verdict": verdict}
    (RESULTS / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(rows, RESULTS / f"{args.name}.png")
    print(f"wrote {RESULTS / (args.name + '.json')} and {RESULTS / (args.name + '.png')}")
    return 0 if all(v["ok"] for v in verdict.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
