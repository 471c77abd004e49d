"""Every GPU measurement of tessera in one run of at most 8 minutes (driver of ``bench/gpu.sh``: read its header).

Sections (a function each, each under its own time cap, each writing ``<out>/gpu-<section>.json``): ``tests``
(pytest -m gpu), ``tiling`` (tessera vs MONAI and Real-ESRGAN tiling, one random Compact x4, fp32/fp16/bf16),
``upscale`` (real x4plus and animevideov3, output MP/s), ``lama`` (crops/s, bf16, Fourier units fp32), ``gpen``
(GPEN-512 faces/s by batch), ``oom`` (back-off under a capped CUDA allocator), ``memory`` (peaks vs --max-memory).
Every row: device, torch, CUDA, settings, seconds, MP/s, peak bytes. ``--dry-run``: the CPU, tiny sizes, checked.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE, ROOT = Path(__file__).resolve().parent, Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))  # bench/tiling.py: its network, photo and Real-ESRGAN import are reused

import tiling  # noqa: E402
from tessera.engine import HostPeak, Runtime, apply_tiles, run_model  # noqa: E402
from tessera.models.loader import as_model, load_model  # noqa: E402

SECTIONS = ("tests", "tiling", "upscale", "lama", "gpen", "oom", "memory")
ROW_KEYS = ("device", "torch", "cuda", "settings", "seconds", "mp_s", "peak_bytes")
FILE_KEYS = ("section", "environment", "status", "seconds", "cap_s", "rows")
CAPS_S = {"tests": 60, "tiling": 100, "upscale": 110, "lama": 60, "gpen": 60, "oom": 40, "memory": 5}
# Sizes: (full run on an H100/H200, dry run on the CPU).
SIZES = {"tiling": (2048, 48), "x4plus": (1024, 16), "animevideov3": (2048, 32), "oom": (1024, 48)}
LAMA_COUNT = ({512: 16, 1024: 8, 2048: 2}, {32: 1, 64: 1})  # crops per size: full run, dry run
GPEN_CONFIGS = ({"size": 512, "style_dim": 512, "n_mlp": 8, "channel_multiplier": 2, "narrow": 1},  # GPEN-BFR-512
        {"size": 64, "style_dim": 32, "n_mlp": 2, "channel_multiplier": 2, "narrow": 0.125})
GPEN_BATCHES = ((1, 2, 4, 8, 16), (1, 2))


class OutOfTime(Exception):
    """A section's cap was reached: its file keeps the rows done so far, with a 'partial' status."""


@dataclasses.dataclass
class Context:
    """What every section needs: device, sizes, limits, the clock, and the rows' common fields."""

    device: torch.device
    dry: bool
    max_memory: int
    deadline: float
    environment: dict[str, Any]
    section_end: float = 0.0
    peaks: dict[str, int] = dataclasses.field(default_factory=dict)

    def size(self, key: str) -> int:
        return SIZES[key][self.dry]

    repeats = property(lambda self: 1 if self.dry else 3)

    def check_time(self, needed: float = 0.0) -> None:
        """Raise OutOfTime when a step expected to take ``needed`` seconds would end past the section's cap."""
        if time.monotonic() + needed > self.section_end:
            raise OutOfTime(f"section time cap reached (next step ~{needed:.0f}s)")

    def row(self, settings: dict[str, Any], seconds: float | None, peak: int | None, *,
            megapixels: float | None = None, **extra: Any) -> dict[str, Any]:
        """A result row: the common fields (ROW_KEYS) first, then the section's own."""
        return {**{k: self.environment[k] for k in ("device", "torch", "cuda")}, "settings": settings,
                "seconds": seconds, "mp_s": megapixels / seconds if megapixels and seconds else None,
                "peak_bytes": peak, **extra}


def environment(device: torch.device) -> dict[str, Any]:
    """Device name, library versions and the backend switches that change timings."""
    cuda = device.type == "cuda"
    return {"device": torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.machine()})",
            "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
            "cudnn": torch.backends.cudnn.version() if cuda else None, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "total_memory": torch.cuda.get_device_properties(device).total_memory if cuda else None}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def peak(device: torch.device):
    """Peak bytes while the block runs: CUDA ``max_memory_allocated``; on the CPU the RSS peak above the start."""
    box = {"bytes": None}
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield box
        sync(device)
        box["bytes"] = int(torch.cuda.max_memory_allocated(device))
        return
    with HostPeak() as host:
        yield box
    box["bytes"] = int(host.used)


def timed(ctx: Context, fn: Callable[[], Any], repeats: int | None = None) -> tuple[Any, float, int]:
    """One warm-up call (kernels, probes, autotuning; none in a dry run), then the best of ``repeats`` timed calls
    and their peak; each call starts only if one more (as long as the last) ends within the section's cap."""
    ctx.check_time()
    start = time.perf_counter()
    value, last = (None, 0.0) if ctx.dry else (fn(), time.perf_counter() - start)
    best = float("inf")
    with peak(ctx.device) as box:
        for _ in range(repeats or ctx.repeats):
            ctx.check_time(last)
            sync(ctx.device)
            start = time.perf_counter()
            value = fn()
            sync(ctx.device)
            last = time.perf_counter() - start
            best = min(best, last)
    return value, best, box["bytes"]


def plan_fields(plan: Any) -> dict[str, Any]:
    """Every field of a TilePlan, new optional ones included (read generically, so engine changes show up)."""
    return {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)} if plan is not None else {}


def compact(device: torch.device, dtype: torch.dtype) -> Any:
    """bench/tiling.py's random Compact x4 as a spandrel descriptor (which declares fp16/bf16), on the device."""
    from spandrel import ModelLoader

    descriptor = ModelLoader().load_from_state_dict(tiling.network().state_dict())
    descriptor.model.to(device, dtype).eval()
    return descriptor


def to_device_uint8(y: torch.Tensor) -> np.ndarray:
    return tiling.to_uint8(y.float().cpu())


def image_tensor(image: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return (torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255).to(device, dtype)


# ---------------------------------------------------------------------------------------------------- sections
def section_tests(ctx: Context, rows: list[dict]) -> None:
    """``pytest -m gpu`` over the test files that hold a gpu mark (collecting only those keeps it quick)."""
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                   if "mark.gpu" in p.read_text(encoding="utf-8"))
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              timeout=max(5.0, ctx.section_end - time.monotonic()))
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        output, code = f"{exc.stdout or ''}\ntimed out", None
    seconds = time.perf_counter() - start
    lines = [line for line in output.splitlines() if re.search(r"\d+ \w+.* in [\d.]+s", line)]
    summary = lines[-1] if lines else ""
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|x\w+)", summary)}
    ok = code == 0 and not counts.get("failed") and not counts.get("error") and not counts.get("errors")
    rows.append(ctx.row({"command": " ".join(command[1:])}, seconds, None, returncode=code, counts=counts, ok=ok,
                        summary=summary, output_tail=output[-3000:]))


def _monai(net: torch.nn.Module, image: np.ndarray, device: torch.device, dtype: torch.dtype, window: int,
           batch: int) -> Callable[[], np.ndarray]:
    """MONAI's ``sliding_window_inference`` on ``net`` (input and output on the device), gaussian, overlap 0.25."""
    from monai.inferers import sliding_window_inference

    def run() -> np.ndarray:
        with torch.inference_mode():
            y = sliding_window_inference(image_tensor(image, device, dtype), roi_size=(window, window),
                                         sw_batch_size=batch, predictor=net, overlap=0.25, mode="gaussian")
        return to_device_uint8(y)

    return run


def _realesrgan(net: torch.nn.Module, image: np.ndarray, device: torch.device, dtype: torch.dtype, tile: int,
                pad: int) -> Callable[[], np.ndarray]:
    """Real-ESRGAN's ``tile_process`` on ``net`` (its image and its output canvas both on the device)."""
    RealESRGANer = tiling._import_realesrgan()
    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / "compact.pth"
        torch.save({"params": {k: v.float().cpu() for k, v in net.state_dict().items()}}, weights)
        upsampler = RealESRGANer(scale=4, model_path=str(weights), model=tiling.network(), tile=tile,
                                 tile_pad=pad, pre_pad=0, half=dtype == torch.float16, device=device)
    upsampler.model.to(dtype)

    def run() -> np.ndarray:
        upsampler.img = image_tensor(image, device, dtype)
        with torch.inference_mode(), contextlib.redirect_stdout(io.StringIO()):  # it prints a line per tile
            upsampler.tile_process()
        return to_device_uint8(upsampler.output)

    return run


def section_tiling(ctx: Context, rows: list[dict]) -> None:
    """tessera auto vs MONAI and Real-ESRGAN on the same random Compact x4, each precision, error vs untiled."""
    size = ctx.size("tiling")
    image, megapixels = tiling.photo(size), (4 * size) ** 2 / 1e6
    for precision, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        descriptor = compact(ctx.device, dtype)
        net = descriptor.model  # the bare module, for the untiled run and the two other tilers
        base = {"precision": precision, "image": f"{size}x{size}", "network": "Compact x4 32/8 random"}
        with torch.inference_mode():
            untiled = lambda: to_device_uint8(net(image_tensor(image, ctx.device, dtype)))  # noqa: E731
            reference, seconds, used = timed(ctx, untiled, 1)
        rows.append(ctx.row({**base, "method": "untiled"}, seconds, used, megapixels=megapixels, max_error=0))
        tiled, seconds, used = timed(ctx, lambda: apply_tiles(descriptor, image, device=ctx.device,
                                                               precision=precision, max_memory=ctx.max_memory))
        plan, error = tiled.plan, int(np.abs(tiled.output.astype(int) - reference).max())
        rows.append(ctx.row({**base, "method": "tessera auto"}, seconds, used, megapixels=megapixels,
                            max_error=error, plan=plan_fields(plan), budgeted=True))
        window = plan.tile + 2 * plan.pad
        others = (("MONAI sliding_window_inference (gaussian, overlap 0.25)", _monai, (window, plan.batch),
                   {"window": window, "sw_batch_size": plan.batch}),
                  ("Real-ESRGAN RealESRGANer.tile_process", _realesrgan, (plan.tile, plan.pad),
                   {"tile": plan.tile, "tile_pad": plan.pad}))
        for method, make, arguments, settings in others:
            settings = {**base, "method": method, **settings}
            try:
                out, seconds, used = timed(ctx, make(net, image, ctx.device, dtype, *arguments))
                rows.append(ctx.row(settings, seconds, used, megapixels=megapixels,
                                    max_error=int(np.abs(out.astype(int) - reference).max())))
            except ImportError as exc:
                rows.append(ctx.row(settings, None, None, status=f"not installed: {exc}"))
            except OutOfTime:
                raise
            except Exception as exc:  # noqa: BLE001 - a baseline's failure is a result, recorded
                rows.append(ctx.row(settings, None, None, status=f"failed: {type(exc).__name__}: {exc}"[:500]))


def section_upscale(ctx: Context, rows: list[dict]) -> None:
    """The real networks through ``tessera.upscale`` at auto settings: output MP/s per precision."""
    import tessera

    for key, name in (("x4plus", "realesrgan-x4plus-ncnn"), ("animevideov3", "realesr-animevideov3")):
        model, size = load_model(name), ctx.size(key)
        image = tiling.photo(size)
        # Dry run: x4plus at auto only, one whole-image tile (CPU fp16/bf16 and memory probes take minutes).
        tile = size if ctx.dry else "auto"
        for precision in ("auto",) if ctx.dry and key == "x4plus" else ("auto", "fp16", "bf16"):
            def run():
                return tessera.upscale(image, model=model, device=str(ctx.device), precision=precision,
                                       max_memory=ctx.max_memory, tile=tile)

            done, seconds, used = timed(ctx, run)
            plan = next(iter(getattr(done.report, "passes", [])), None)
            settings = {"model": name, "precision": precision, "image": f"{size}x{size}", "tile": tile}
            rows.append(ctx.row(settings, seconds, used, megapixels=done.image.shape[0] * done.image.shape[1] / 1e6,
                                resolved_precision=getattr(plan, "precision", None), plan=plan_fields(plan),
                                budgeted=True))
        model.to("cpu")  # its device memory back before the next network


def section_lama(ctx: Context, rows: list[dict]) -> None:
    """LaMa crops/s by crop size in bf16 through ``run_model``, the Fourier units in float32: spandrel's LaMa with
    random weights, wrapped by tessera's loader as a checkpoint is (which puts the Fourier units in float32)."""
    from spandrel import ModelLoader
    from spandrel.architectures.LaMa import LaMa

    torch.manual_seed(0)
    model = as_model(ModelLoader().load_from_state_dict(LaMa(in_nc=4, out_nc=3).state_dict()), name="lama-random")
    fourier = [m for m in model.network.modules() if type(m).__name__ == "FourierUnit"]
    wrapped = all(m.__dict__.get("_tessera_spectral_fp32") for m in fourier)
    runtime = Runtime.create(ctx.device, "bf16", ctx.max_memory, model=model)
    rng = np.random.default_rng(0)
    for size, count in LAMA_COUNT[ctx.dry].items():
        crops = [rng.random((size, size, 3), dtype=np.float32) for _ in range(count)]
        mask = np.zeros((size, size), np.float32)
        mask[size // 4: size // 2, size // 3: 2 * size // 3] = 1  # a hole an eighth of the crop
        masks = [mask] * count
        outs, seconds, used = timed(ctx, lambda: run_model(model, crops, runtime, masks=masks), 2 if not ctx.dry else 1)
        rows.append(ctx.row({"crop": size, "crops": count, "precision": runtime.precision,
                             "fourier_units_fp32": wrapped, "fourier_units": len(fourier)}, seconds, used,
                            megapixels=count * size * size / 1e6, crops_s=count / seconds,
                            finite=bool(all(np.isfinite(o).all() for o in outs)), budgeted=True))


def section_gpen(ctx: Context, rows: list[dict]) -> None:
    """GPEN-512 (random weights) faces/s by batch size through ``run_model``, precision auto."""
    from tessera.models.gpen import GPEN, GPENArch

    config = GPEN_CONFIGS[ctx.dry]
    torch.manual_seed(0)
    model = as_model(GPENArch().load(GPEN(**config).state_dict()), name="gpen-random")
    runtime = Runtime.create(ctx.device, "auto", ctx.max_memory, model=model)
    size, batches = config["size"], GPEN_BATCHES[ctx.dry]
    faces = [np.random.default_rng(i).random((size, size, 3), dtype=np.float32) for i in range(max(batches))]
    for batch in batches:
        outs, seconds, used = timed(ctx, lambda: run_model(model, faces, runtime, batch=batch))
        rows.append(ctx.row({"config": config, "batch": batch, "faces": len(faces), "precision": runtime.precision},
                            seconds, used, megapixels=len(faces) * size * size / 1e6, faces_s=len(faces) / seconds,
                            finite=bool(all(np.isfinite(o).all() for o in outs)), budgeted=True))


def section_oom(ctx: Context, rows: list[dict]) -> None:
    """A too-large fixed tile under a capped CUDA allocator: the plan must record back-offs and the output must
    equal the uncapped run's. On the CPU only the uncapped run is made (no allocator cap to set)."""
    size = ctx.size("oom")
    image, model = tiling.photo(size), compact(ctx.device, torch.float32)
    settings = {"image": f"{size}x{size}", "tile": size, "precision": "fp32", "network": "Compact x4 32/8 random"}
    run = lambda: apply_tiles(model, image, tile=size, device=ctx.device, precision="fp32",  # noqa: E731
                              max_memory=ctx.max_memory)
    reference, seconds, used = timed(ctx, run, 1)
    rows.append(ctx.row({**settings, "cap": None}, seconds, used, megapixels=(4 * size) ** 2 / 1e6,
                        plan=plan_fields(reference.plan)))
    if ctx.device.type != "cuda":
        skipped = "skipped: torch.cuda.set_per_process_memory_fraction caps the CUDA allocator only"
        return rows.append(ctx.row({**settings, "cap": "skipped"}, None, None, status=skipped))
    total = torch.cuda.get_device_properties(ctx.device).total_memory
    torch.cuda.empty_cache()
    limit = torch.cuda.memory_allocated(ctx.device) + int(0.35 * used)
    torch.cuda.set_per_process_memory_fraction(limit / total, ctx.device)
    try:
        start = time.perf_counter()
        with peak(ctx.device) as box:
            capped = run()
        seconds = time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001 - a failure to back off is the result this section looks for
        failed = f"failed: {type(exc).__name__}: {exc}"[:500]
        return rows.append(ctx.row({**settings, "cap": limit}, None, None, ok=False, status=failed))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, ctx.device)
        torch.cuda.empty_cache()
    error = int(np.abs(capped.output.astype(int) - reference.output.astype(int)).max())
    backoffs = list(capped.plan.backoffs)
    rows.append(ctx.row({**settings, "cap": limit}, seconds, box["bytes"], megapixels=(4 * size) ** 2 / 1e6,
                        plan=plan_fields(capped.plan), backoffs=backoffs, identical=error == 0, max_error=error,
                        under_cap=box["bytes"] <= limit, ok=bool(backoffs) and error == 0))


def section_memory(ctx: Context, rows: list[dict]) -> None:
    """Each section's peak, and every budgeted tessera row's peak against ``--max-memory``."""
    for name, data in sorted(ctx.peaks.items()):
        budgeted = [r["peak_bytes"] for r in data if r.get("budgeted") and r.get("peak_bytes") is not None]
        top = max((r["peak_bytes"] for r in data if r.get("peak_bytes") is not None), default=None)
        rows.append(ctx.row({"section": name, "max_memory": ctx.max_memory}, None, top,
                            budgeted_peak=max(budgeted, default=None),
                            within_max_memory=all(b <= ctx.max_memory for b in budgeted),
                            kind="cuda max_memory_allocated" if ctx.device.type == "cuda" else "host RSS above start"))


FUNCTIONS = {"tests": section_tests, "tiling": section_tiling, "upscale": section_upscale, "lama": section_lama,
             "gpen": section_gpen, "oom": section_oom, "memory": section_memory}


# ---------------------------------------------------------------------------------------------------- driver
def run_section(ctx: Context, name: str, out: Path) -> dict:
    """Run one section under its cap; write and return its file (partial rows kept on a cap or an error)."""
    cap = CAPS_S[name] * (0.5 if ctx.dry else 1.0)
    ctx.section_end = min(time.monotonic() + cap, ctx.deadline)
    start, rows, status = time.perf_counter(), [], "ok"
    try:
        if time.monotonic() >= ctx.deadline:
            raise OutOfTime("whole-run budget spent before this section")
        FUNCTIONS[name](ctx, rows)
    except OutOfTime as exc:
        status = f"partial: {exc}"
    except Exception as exc:  # noqa: BLE001 - one section's failure must not lose the others' results
        status = f"failed: {type(exc).__name__}: {exc}"[:500]
    finally:
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    if name != "memory":
        ctx.peaks[name] = rows
    data = {"section": name, "environment": ctx.environment, "status": status,
            "seconds": time.perf_counter() - start, "cap_s": cap, "rows": rows}
    path = out / f"gpu-{name}.json"
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    print(f"[{name}] {status} in {data['seconds']:.1f}s, {len(rows)} rows -> {path}", flush=True)
    for row in rows:
        rate = f"{row['mp_s']:8.2f} MP/s" if row.get("mp_s") else ""
        secs = f"{row['seconds']:.3f}s" if row.get("seconds") is not None else "-"
        used = f"{row['peak_bytes'] / 2**20:9.1f} MiB" if row.get("peak_bytes") is not None else ""
        print(f"  {json.dumps(row['settings'], default=str)[:100]:100s} {secs:>9s} {rate} {used} "
              f"{row.get('status', '')}", flush=True)
    return data


def verify(out: Path, sections: tuple[str, ...]) -> list[str]:
    """Problems with the written files: missing, unreadable, keys missing, a section that did not finish, or a
    row whose check failed (tests, back-off, a peak over ``--max-memory``, non-finite output)."""
    problems = []
    for name in sections:
        path = out / f"gpu-{name}.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        problems += [f"{path}: no key {k!r}" for k in FILE_KEYS if k not in data]
        if not data.get("rows"):
            problems.append(f"{path}: no rows ({data.get('status')})")
        problems += [f"{path} row {i}: no key {k!r}" for i, r in enumerate(data.get("rows", []))
                     for k in ROW_KEYS if k not in r]
        if data.get("status") != "ok":
            problems.append(f"{path}: status {data.get('status')}")
        problems += [f"{path} row {i}: check failed ({json.dumps(r['settings'], default=str)})"
                     for i, r in enumerate(data.get("rows", []))
                     if r.get("ok") is False or r.get("within_max_memory") is False or r.get("finite") is False]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes; check the files (needs --out)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--max-memory", default="40GiB", help="device memory budget given to tessera")
    parser.add_argument("--budget-s", type=float, default=470.0, help="whole-run time limit")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    args = parser.parse_args(argv)
    from tessera.options import parse_size

    if args.dry_run and args.out.resolve() == (HERE / "results").resolve():
        parser.error("a dry run never writes bench/results/: give --out")
    sections = tuple(s for s in args.sections.split(",") if s)
    if set(sections) - set(SECTIONS):
        parser.error(f"unknown sections {sorted(set(sections) - set(SECTIONS))} (choose from {', '.join(SECTIONS)})")
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device here: use --dry-run on the CPU")
    device = torch.device("cpu" if args.dry_run else "cuda")
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = Context(device, args.dry_run, parse_size(args.max_memory), time.monotonic() + args.budget_s,
                  environment(device))
    print(f"gpu bench: {ctx.environment}", flush=True)
    for name in sections:
        run_section(ctx, name, args.out)
    problems = verify(args.out, sections)
    print("\n".join(["file check:"] + problems) if problems else f"file check: {len(sections)} files complete")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
