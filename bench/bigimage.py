"""Peak memory and time of a streamed (out-of-core) upscale against the image size.

For each size (megapixels, square images) a TIFF is generated tile by tile (smooth colours plus noise, tiled,
zlib), then a fresh child process upscales it with ``tessera.bigimage.stream_upscale`` and a small random-weight
network (spandrel's Compact, num_feat=8, num_conv=2, x2: the smallest real super-resolution architecture, so that
256 MP runs in minutes on two CPU cores), writing a tiled BigTIFF. The child reads its own peak resident memory
(``ru_maxrss``) at the end, so every figure is the whole process's peak: interpreter, torch, model and the
streaming itself. The claim under test: the peak does not grow with the image (less than 10 % from 16 to 256 MP),
while the in-memory flow would need the input plus the output (5x the input's bytes at x2) and more.

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

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GROWTH_LIMIT = 0.10
TILE = 256


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


def child(source: Path, output: Path, scale: int) -> dict:
    """Runs in a fresh process: stream the upscale, return timings and this process's peak RSS."""
    import torch
    from spandrel.architectures.Compact.__arch.SRVGG import SRVGGNetCompact

    from tessera.bigimage import stream_upscale
    from tessera.models.descriptor import Model

    torch.manual_seed(0)
    net = SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale).eval()
    model = Model(net, "compact-f8c2", scale=scale)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    reports: list = []
    started = time.perf_counter()
    stream_upscale(source, output, model=model, tile=TILE, tile_pad="auto", report=reports)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    report = reports[0]
    return {"seconds": seconds, "peak_rss": peak, "rss_before_streaming": before, "block": report.block,
            "context": report.context, "blocks": report.blocks, "output_shape": list(report.output_shape),
            "output_file_bytes": output.stat().st_size, "threads": torch.get_num_threads()}


def run_size(megapixels: int, workdir: Path, scale: int) -> dict:
    side = round(math.sqrt(megapixels * 1e6) / TILE) * TILE
    source = workdir / f"scan_{megapixels}mp.tif"
    output = workdir / f"scan_{megapixels}mp_x{scale}.tif"
    started = time.perf_counter()
    if not source.exists():
        generate(source, side)
    generated = time.perf_counter() - started
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, __file__, "--child", str(source), str(output), str(scale)],
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child failed for {megapixels} MP:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    output.unlink()
    input_bytes = side * side * 3
    result.update(megapixels=megapixels, side=side, input_file_bytes=source.stat().st_size,
                  in_memory_floor=input_bytes * (1 + scale * scale), generate_seconds=generated,
                  megapixels_per_second=side * side / 1e6 / result["seconds"])
    return result


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mp = [r["megapixels"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.plot(mp, [r["peak_rss"] / 2**20 for r in rows], "o-", label="tessera streaming: peak RSS (whole process)")
    ax.plot(mp, [r["in_memory_floor"] / 2**20 for r in rows], "s--", color="gray",
            label="in memory: input + output pixels alone")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(mp)
    ax.set_xticklabels([f"{m} MP" for m in mp])
    ax.set_xlabel("input size (x2 upscale to a tiled BigTIFF)")
    ax.set_ylabel("memory (MiB)")
    ax.set_title("Peak memory of a streamed upscale (2 CPU cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(child(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 16, 64, 256], help="megapixels")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None, help="where the TIFFs go (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated inputs")
    parser.add_argument("--name", default="bigimage", help="result files: bench/results/NAME.json and .png")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tessera-bigimage-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'size':>7} {'side':>6} {'time':>8} {'MP/s':>6} {'peak RSS':>10} {'in-memory floor':>16}")
    for megapixels in args.sizes:
        row = run_size(megapixels, workdir, args.scale)
        rows.append(row)
        if not args.keep:
            (workdir / f"scan_{megapixels}mp.tif").unlink()
        print(f"{megapixels:>5}MP {row['side']:>6} {row['seconds']:>7.1f}s {row['megapixels_per_second']:>6.2f} "
              f"{row['peak_rss'] / 2**20:>8.0f}MiB {row['in_memory_floor'] / 2**20:>14.0f}MiB", flush=True)
    verdict = {}
    by_size = {r["megapixels"]: r for r in rows}
    if 16 in by_size and 256 in by_size:
        growth = by_size[256]["peak_rss"] / by_size[16]["peak_rss"] - 1
        verdict = {"growth_16_to_256": growth, "limit": GROWTH_LIMIT, "ok": growth < GROWTH_LIMIT}
        print(f"peak RSS growth 16 -> 256 MP: {growth:+.1%} (limit {GROWTH_LIMIT:.0%}): "
              f"{'ok' if verdict['ok'] else 'FAILED'}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "bigimage", "command": " ".join(["bench/bigimage.py", *sys.argv[1:]]),
              "network": "SRVGGNetCompact num_feat=8 num_conv=2 (random weights)", "scale": args.scale,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()},
              "rows": rows, "verdict": verdict}
    (RESULTS / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(rows, RESULTS / f"{args.name}.png")
    print(f"wrote {RESULTS / (args.name + '.json')} and {RESULTS / (args.name + '.png')}")
    return 0 if verdict.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
