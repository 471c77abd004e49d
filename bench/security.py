"""Security benchmark: hostile files are refused cleanly, and decoding stays within its memory bound.

Each section is a function that returns its rows and whether every row met its expectation:

- ``images``: a corpus of malformed images built from scikit-image's photos in every format tessera reads
  (PNG, JPEG, WEBP, TIFF, BMP, GIF; 8- and 16-bit, gray, palette, alpha, progressive, tiled, animated):
  truncations at five points, flipped header bits, lying and huge declared sizes, zero-length and random files,
  EPS/PDF/PSD/text renamed as images, a folder, a pipe and a device given as the input. Each case runs as
  ``tessera upscale CASE -o OUT --quiet`` in its own process, with a fake ``gs`` first on PATH. A malformed case
  must exit 2 with exactly one line on stderr, leave no output and no temporary file, and never start ``gs``; a
  case that is in fact a valid image (every base photo as written, and renamed to a wrong suffix) must exit 0
  and write a valid output of twice its size. Each case is a new process of the console script (each imports
  torch: minutes in all on two cores); ``--fork`` runs the same entry point in children forked from one process
  that imported it once (seconds in all).
- ``image_memory``: the peak resident memory of loading a flat 20000x20000 RGB PNG (1.1 MiB on disk) in a fresh
  process, against its decoded bytes: at most 1.5 times, over the process's baseline after its imports.
- ``weights``: every hostile weight file of bench/hostile_weights.py (TorchScript whose ``__setstate__`` writes a
  file, pickles calling ``os.system``, a Lightning checkpoint with a payload, a 6 GB deflated zip bomb of ~6 MB,
  storages and views that declare more than the file holds, pickle memo and zero-block bombs, a numpy state that
  crashes numpy, lying safetensors headers, text, empty, random and truncated files) as ``--model`` of
  ``tessera upscale``, each in a fresh process: exit 2, one line, no output, payload unrun, the child's peak
  memory within 64 MiB of a refused text file's, and the reader's refusal within a second.

    .venv/bin/python bench/security.py                         # every section
    .venv/bin/python bench/security.py --section images        # one section (repeatable)
    .venv/bin/python bench/security.py --jobs 4 --keep /tmp/c  # 4 processes at a time; keep the corpus
    .venv/bin/python bench/security.py --fork                  # cases in forked children (fast)

Prints a table per section, writes bench/results/security.json (each section under its own key: a section not
run keeps its previous result) and exits 1 if any row fails its expectation. The corpus is also used, in part
and in-process, by tests/test_image_safety.py (:func:`image_cases`).
"""
from __future__ import annotations

import argparse
import functools
import io
import json
import os
import platform
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "security.json"
ROOT = HERE.parent

REFUSED = "refused"  # exit 2, one line on stderr, no output
READ = "read"  # exit 0, a valid output
TRUNCATIONS = (0.10, 0.35, 0.60, 0.85, 0.99)  # share of the file kept
MEMORY_BOUND = 1.5  # peak growth of loading, in decoded bytes
CASE_TIMEOUT = 600  # seconds a case may run (a hang is a failure)
MEMORY_SIDE = 20_000


@dataclass(frozen=True)
class Case:
    """One input file of the corpus: its name as written (the suffix may lie), its bytes and what must happen."""

    name: str
    data: bytes
    expect: str
    kind: str
    special: str | None = None  # "folder", "fifo", "device" or "missing": not a file with ``data``


@dataclass
class Section:
    """What a section hands to the writer: a title, its table columns, one dict per row, and a verdict."""

    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    ok: bool
    summary: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ the corpus


def _photos() -> dict[str, np.ndarray]:
    from skimage import data

    coffee = data.coffee()
    ramp = np.linspace(0, 255, coffee.shape[1], dtype=np.float32)[None, :].repeat(coffee.shape[0], 0)
    chelsea = data.chelsea()
    return {
        "astronaut": data.astronaut(),
        "coffee_rgba": np.dstack([coffee, ramp.astype(np.uint8)]),
        "camera": data.camera(),
        "chelsea": chelsea,
        "chelsea16": chelsea.astype(np.uint16) * 257 + np.arange(chelsea.size, dtype=np.uint16).reshape(
            chelsea.shape) % 7,
        "coffee16_rgba": np.dstack([coffee, ramp.astype(np.uint8)]).astype(np.uint16) * 257,
    }


def _pillow_bytes(array: np.ndarray, fmt: str, **options: Any) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def _tiff_bytes(array: np.ndarray, **options: Any) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    photometric = "minisblack" if array.ndim == 2 else "rgb"
    extras = ["unassalpha"] if array.ndim == 3 and array.shape[2] == 4 else None
    tifffile.imwrite(buffer, array, photometric=photometric, extrasamples=extras, metadata=None, **options)
    return buffer.getvalue()


def _png16_bytes(array: np.ndarray) -> bytes:
    import cv2

    order = [2, 1, 0, 3][: array.shape[2]]
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(array[:, :, order]))
    assert ok
    return encoded.tobytes()


def _animated_gif(photo: np.ndarray) -> bytes:
    from PIL import Image

    frames = [Image.fromarray(np.roll(photo, shift * 40, axis=1)).quantize(64) for shift in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    return buffer.getvalue()


def base_images() -> dict[str, tuple[str, bytes]]:
    """The valid files every mutation starts from: ``{name: (suffix, bytes)}`` (encoded once per process)."""
    return dict(_encoded_bases())


@functools.lru_cache(maxsize=1)
def _encoded_bases() -> tuple[tuple[str, tuple[str, bytes]], ...]:
    return tuple(_encode_bases().items())


def _encode_bases() -> dict[str, tuple[str, bytes]]:
    photo = _photos()
    from PIL import Image

    palette = np.asarray(Image.fromarray(photo["chelsea"]).quantize(96).convert("RGB"))
    return {
        "png_rgb": (".png", _pillow_bytes(photo["astronaut"], "PNG")),
        "png_rgba": (".png", _pillow_bytes(photo["coffee_rgba"], "PNG")),
        "png_gray": (".png", _pillow_bytes(photo["camera"], "PNG")),
        "png_palette": (".png", _pillow_bytes(palette, "PNG", optimize=True)),
        "png16_rgb": (".png", _png16_bytes(photo["chelsea16"])),
        "png16_rgba": (".png", _png16_bytes(photo["coffee16_rgba"])),
        "jpeg_rgb": (".jpg", _pillow_bytes(photo["astronaut"], "JPEG", quality=90)),
        "jpeg_progressive": (".jpg", _pillow_bytes(photo["coffee_rgba"][:, :, :3], "JPEG", progressive=True)),
        "jpeg_gray": (".jpg", _pillow_bytes(photo["camera"], "JPEG")),
        "webp_lossy": (".webp", _pillow_bytes(photo["astronaut"], "WEBP", quality=80)),
        "webp_lossless_rgba": (".webp", _pillow_bytes(photo["coffee_rgba"], "WEBP", lossless=True)),
        "tiff_rgb_deflate": (".tif", _tiff_bytes(photo["astronaut"], compression="zlib")),
        "tiff16_rgba": (".tif", _tiff_bytes(photo["coffee16_rgba"])),
        "tiff_gray_tiled": (".tif", _tiff_bytes(photo["camera"], tile=(64, 64), compression="zlib")),
        "bmp_rgb": (".bmp", _pillow_bytes(photo["chelsea"], "BMP")),
        "bmp_gray": (".bmp", _pillow_bytes(photo["camera"], "BMP")),
        "gif": (".gif", _pillow_bytes(photo["astronaut"], "GIF")),
        "gif_animated": (".gif", _animated_gif(photo["chelsea"])),
    }


def _flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    changed = bytearray(data)
    changed[offset] ^= 1 << bit
    return bytes(changed)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_with_size(data: bytes, width: int, height: int) -> bytes:
    header = bytearray(data[16:29])
    header[0:8] = struct.pack(">II", width, height)
    return data[:8] + _png_chunk(b"IHDR", bytes(header)) + data[33:]


def _jpeg_frame_offset(data: bytes) -> int:
    """Where a JPEG's start-of-frame segment starts (its 0xFF)."""
    at = 2
    while data[at + 1] not in range(0xC0, 0xD0) or data[at + 1] in (0xC4, 0xC8, 0xCC):
        at += 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
    return at


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    at = _jpeg_frame_offset(data)
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def _webp_with_size(data: bytes, width: int, height: int) -> bytes:
    changed = bytearray(data)
    kind = bytes(changed[12:16])
    if kind == b"VP8X":
        changed[24:30] = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    elif kind == b"VP8 ":
        changed[26:30] = struct.pack("<HH", width & 0x3FFF, height & 0x3FFF)
    else:  # VP8L: 14 bits of width - 1 and of height - 1 after the signature byte
        bits = struct.unpack("<I", changed[21:25])[0]
        bits = (bits & ~0x0FFFFFFF) | ((width - 1) & 0x3FFF) | (((height - 1) & 0x3FFF) << 14)
        changed[21:25] = struct.pack("<I", bits)
    return bytes(changed)


def _tiff_with_size(data: bytes, width: int | None, height: int) -> bytes:
    import tifffile

    changed = bytearray(data)
    with tifffile.TiffFile(io.BytesIO(data)) as tiff:
        tags = tiff.pages.first.tags
        for name, value in (("ImageWidth", width), ("ImageLength", height)):
            if value is not None:
                tag = tags[name]
                if tag.dtype == 3:  # a SHORT holds at most 65535
                    struct.pack_into("<H", changed, tag.valueoffset, min(value, 65535))
                else:
                    struct.pack_into("<I", changed, tag.valueoffset, value)
    return bytes(changed)


def _bmp_with_size(data: bytes, width: int, height: int) -> bytes:
    return data[:18] + struct.pack("<ii", width, height) + data[26:]


def _gif_with_size(data: bytes, width: int, height: int) -> bytes:
    changed = bytearray(data)
    flags = changed[10]
    at = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    while changed[at] == 0x21:  # extension blocks before the first image
        at += 2
        while changed[at]:
            at += changed[at] + 1
        at += 1
    changed[6:10] = struct.pack("<HH", width, height)
    changed[at + 5 : at + 9] = struct.pack("<HH", width, height)
    return bytes(changed)


def _resized(name: str, data: bytes, width: int, height: int) -> bytes:
    """``data`` with a header that claims ``width`` x ``height`` pixels."""
    if name.startswith("png"):
        return png_with_size(data, width, height)
    if name.startswith("jpeg"):
        return jpeg_with_size(data, min(width, 65535), min(height, 65535))
    if name.startswith("webp"):
        return _webp_with_size(data, min(width, 16383), min(height, 16383))
    if name.startswith("tiff"):
        return _tiff_with_size(data, width, height)
    if name.startswith("bmp"):
        return _bmp_with_size(data, width, height)
    return _gif_with_size(data, min(width, 65535), min(height, 65535))


def lying(name: str, data: bytes) -> bytes:
    """A header claiming 40 times the rows its data holds (PNG, TIFF, BMP, GIF) or 20000x20000 pixels (JPEG; WEBP:
    its largest side), the rest of the file untouched."""
    if name.startswith(("jpeg", "webp")):
        return _resized(name, data, 20_000, 20_000)
    if name.startswith("tiff"):
        import tifffile

        with tifffile.TiffFile(io.BytesIO(data)) as tiff:
            rows = int(tiff.pages.first.imagelength)
        return _tiff_with_size(data, None, rows * 40)
    width, height = _declared_size(name, data)
    return _resized(name, data, width, height * 40)


def _declared_size(name: str, data: bytes) -> tuple[int, int]:
    if name.startswith("png"):
        return struct.unpack(">II", data[16:24])
    if name.startswith("bmp"):
        return struct.unpack("<ii", data[18:26])
    return struct.unpack("<HH", data[6:10])


# The second bit flip of each format hits a field its readers must check: PNG's header checksum (IHDR), JPEG's
# second marker byte, WEBP's form type, TIFF's version number (42 becomes 43: BigTIFF), BMP's bit depth, GIF's
# version.
_CRITICAL_BYTE = {"png": 18, "jpeg": 2, "webp": 8, "tiff": 2, "bmp": 28, "gif": 4}

EPS = textwrap.dedent("""\
    %!PS-Adobe-3.0 EPSF-3.0
    %%BoundingBox: 0 0 64 64
    %%EndComments
    newpath 0 0 moveto 64 64 lineto stroke
    (tessera-was-here) print
    showpage
    %%EOF
    """).encode()
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] /Count 0 >> " \
      b"endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
PSD = b"8BPS\x00\x01" + bytes(6) + struct.pack(">HIIHH", 3, 64, 64, 8, 3) + bytes(64)
SIGNATURES = {".png": b"\x89PNG\r\n\x1a\n", ".jpg": b"\xff\xd8\xff\xe0", ".webp": b"RIFF\x00\x10\x00\x00WEBPVP8 ",
              ".tif": b"II*\x00\x08\x00\x00\x00", ".bmp": b"BM", ".gif": b"GIF89a"}  # fmt: skip


def image_cases() -> list[Case]:
    """The whole corpus, deterministic: every base valid as written, and every mutation of it."""
    rng = np.random.default_rng(9)
    cases: list[Case] = []
    bases = base_images()
    for name, (suffix, data) in bases.items():
        family = name.split("_")[0].rstrip("16")
        cases.append(Case(f"{name}{suffix}", data, READ, "valid"))
        if name != "gif_animated":  # its first frame survives a cut in a later one: truncation is not an error
            for share in TRUNCATIONS:
                cases.append(Case(f"{name}-cut{round(share * 100):02d}{suffix}", data[: int(len(data) * share)],
                                  REFUSED, "truncated"))
        cases.append(Case(f"{name}-flip-signature{suffix}", _flip(data, 1), REFUSED, "header bit flip"))
        cases.append(Case(f"{name}-flip-critical{suffix}", _flip(data, _CRITICAL_BYTE[family], 0), REFUSED,
                          "header bit flip"))
        cases.append(Case(f"{name}-lying{suffix}", lying(name, data), REFUSED, "lying size"))
    for name, wrong in (("png_rgb", ".jpg"), ("jpeg_rgb", ".png"), ("webp_lossy", ".png"),
                        ("tiff_rgb_deflate", ".png"), ("bmp_rgb", ".jpg"), ("gif", ".tif")):
        cases.append(Case(f"{name}-renamed{wrong}", bases[name][1], READ, "wrong suffix, valid"))
    for name in ("png_rgb", "jpeg_rgb", "tiff_rgb_deflate", "bmp_rgb", "gif"):
        suffix, data = bases[name]
        cases.append(Case(f"{name}-huge{suffix}", _resized(name, data, 100_000, 100_000), REFUSED, "huge size"))
    for suffix, signature in SIGNATURES.items():
        cases.append(Case(f"empty{suffix}", b"", REFUSED, "zero length"))
        cases.append(Case(f"random{suffix}", rng.bytes(4096), REFUSED, "random bytes"))
        cases.append(Case(f"random-signed{suffix}", signature + rng.bytes(4096), REFUSED, "random bytes"))
    for suffix in (".png", ".jpg", ".tif"):
        cases.append(Case(f"eps-renamed{suffix}", EPS, REFUSED, "EPS/PDF renamed"))
    dos_eps = b"\xc5\xd0\xd3\xc6" + struct.pack("<IIIIII", 30, len(EPS), 0, 0, 0, 0) + b"\xff\xff" + EPS
    cases.append(Case("eps-binary-renamed.png", dos_eps, REFUSED, "EPS/PDF renamed"))
    for suffix in (".png", ".jpg"):
        cases.append(Case(f"pdf-renamed{suffix}", PDF, REFUSED, "EPS/PDF renamed"))
    cases.append(Case("psd-renamed.png", PSD, REFUSED, "other format renamed"))
    cases.append(Case("svg-renamed.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', REFUSED,
                      "other format renamed"))
    cases.append(Case("text-renamed.jpg", b"these are notes, not pixels\n" * 40, REFUSED, "other format renamed"))
    for special in ("folder", "fifo", "device", "missing"):
        cases.append(Case(f"{special}.png", b"", REFUSED, "not a regular file", special))
    return cases


def write_case(case: Case, folder: Path) -> Path:
    """Put ``case`` in ``folder`` (a file, or the folder, pipe, device link or nothing it stands for)."""
    path = folder / case.name
    if case.special == "folder":
        path.mkdir()
    elif case.special == "fifo":
        os.mkfifo(path)
    elif case.special == "device":
        path.symlink_to("/dev/zero")
    elif case.special is None:
        path.write_bytes(case.data)
    return path


# -------------------------------------------------------------------------------------------- running cases


def fake_ghostscript(folder: Path) -> tuple[Path, Path]:
    """A ``gs`` that only leaves a marker file behind: a folder for PATH, and the marker's path."""
    bin_folder = folder / "fake-bin"
    bin_folder.mkdir(exist_ok=True)
    marker = folder / "ghostscript-ran"
    for name in ("gs", "gsc", "gswin64c"):
        script = bin_folder / name
        script.write_text(f"#!/bin/sh\ntouch '{marker}'\nexit 1\n")
        script.chmod(0o755)
    return bin_folder, marker


def upscale_arguments(source: Path, output: Path) -> list[str]:
    """The command line every case runs, after ``tessera``."""
    return ["upscale", "--model", "lanczos", str(source), "-o", str(output), "--quiet", "--scale", "2"]


@dataclass
class Run:
    """One finished run of the CLI: its exit status, what it wrote on stderr, and how long it took."""

    code: int
    stderr: str
    seconds: float


def run_console_script(arguments: list[str], environment: dict[str, str]) -> Run:
    """``tessera ARGUMENTS`` as a new process of the installed console script (a fresh interpreter each time)."""
    started = time.perf_counter()
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "tessera"), *arguments], capture_output=True, text=True,
                          env=environment, timeout=CASE_TIMEOUT, check=False)
    return Run(done.returncode, done.stderr, time.perf_counter() - started)


def fork_console_script(arguments: list[str], environment: dict[str, str], stderr_path: Path) -> int:
    """Start ``tessera ARGUMENTS`` as a child forked from this process, which has imported the CLI already; the
    child runs the console script's entry point (``tessera.cli:main``) with stderr in ``stderr_path`` and ends
    with its exit status. Returns the child's pid. This skips the ~3 s import of torch per case; everything
    after the import is the console script's own run, in its own process."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the child: never returns into the parent's code
        signal.alarm(CASE_TIMEOUT)
        os.environ.clear()
        os.environ.update(environment)
        os.dup2(os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        from tessera.cli import main

        code = int(main(arguments) or 0)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # what the interpreter would do with an uncaught exception
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_cases(cases: list[Case], folder: Path, environment: dict[str, str], jobs: int, fork: bool) -> list[Run]:
    """Run every case, ``jobs`` at a time: forked children (``fork``) or new processes of the console script."""
    inputs, outputs = folder / "in", folder / "out"
    arguments = [upscale_arguments(write_case(case, inputs), outputs / f"{case.name}.out.png") for case in cases]
    if not fork:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            return list(pool.map(run_console_script, arguments, [environment] * len(cases)))
    errors = [folder / "err" / f"{index}.txt" for index in range(len(cases))]
    import tessera.cli
    import tessera.tasks.upscale  # noqa: F401  (what every valid case imports: loaded once, before forking)

    tessera.cli.build_parser()  # imports every command module, as the console script does at its start
    runs: list[Run | None] = [None] * len(cases)
    running: dict[int, tuple[int, float]] = {}
    waiting = iter(range(len(cases)))
    while True:
        while len(running) < max(1, jobs) and (index := next(waiting, None)) is not None:
            running[fork_console_script(arguments[index], environment, errors[index])] = (index, time.perf_counter())
        if not running:
            break
        pid, status = os.wait()
        index, started = running.pop(pid)
        runs[index] = Run(os.waitstatus_to_exitcode(status), errors[index].read_text(errors="replace"),
                          time.perf_counter() - started)
    return [run for run in runs if run is not None]


def judge_case(case: Case, run: Run, folder: Path) -> dict[str, Any]:
    """The row of one case: what it did, and what it did wrong."""
    source, output = folder / "in" / case.name, folder / "out" / f"{case.name}.out.png"
    lines = run.stderr.strip().splitlines()
    problems = _judge(case, run.code, lines, output, source)
    leftovers = [path.name for path in output.parent.iterdir() if path.name.startswith(f".{output.stem}")]
    if leftovers:
        problems.append(f"temporary files left: {leftovers}")
    return {
        "case": case.name,
        "kind": case.kind,
        "expect": case.expect,
        "exit": run.code,
        "stderr_lines": len(lines),
        "message": lines[-1].replace(f"{folder}{os.sep}", "")[:160] if lines else "",  # paths relative to it
        "seconds": round(run.seconds, 2),
        "ok": not problems,
        "problems": "; ".join(problems),
    }


def _judge(case: Case, code: int, lines: list[str], output: Path, source: Path) -> list[str]:
    problems = []
    if case.expect == REFUSED:
        if code != 2:
            problems.append(f"exit {code}, not 2")
        if len(lines) != 1 or not lines[0].startswith("tessera: error: "):
            problems.append(f"{len(lines)} lines on stderr, not one error line")
        if output.exists():
            problems.append("an output was written")
        return problems
    if code != 0:
        return [f"exit {code}, not 0 ({lines[-1] if lines else ''})"]
    from tessera.errors import TesseraError
    from tessera.image.read import load_image, read_image_size

    try:
        width, height = read_image_size(source)
        result = load_image(output)
    except TesseraError as error:
        return [f"the output is not a valid image ({error})"]
    if (result.width, result.height) != (2 * width, 2 * height):
        problems.append(f"output {result.width}x{result.height}, not {2 * width}x{2 * height}")
    return problems


def images_section(jobs: int, keep: Path | None = None, fork: bool = False) -> Section:
    """Every case of :func:`image_cases` through the CLI, ``jobs`` processes at a time (see :func:`run_cases`)."""
    cases = image_cases()
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="tessera-security-"))
    for sub in ("in", "out", "err", "home"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    bin_folder, marker = fake_ghostscript(folder)
    environment = {**os.environ, "PATH": f"{bin_folder}{os.pathsep}{os.environ.get('PATH', '')}",
                   "TESSERA_HOME": str(folder / "home")}
    try:
        runs = run_cases(cases, folder, environment, jobs, fork and hasattr(os, "fork"))
        rows = [judge_case(case, run, folder) for case, run in zip(cases, runs)]
        ghostscript = marker.exists()
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    refused = sum(row["expect"] == REFUSED for row in rows)
    summary = {
        "cases": len(rows),
        "expected_refused": refused,
        "expected_read": len(rows) - refused,
        "runner": "forked children of one process" if fork and hasattr(os, "fork") else "console script",
        "ghostscript_started": ghostscript,
        "failed": [row["case"] for row in rows if not row["ok"]],
        "seconds_median": float(np.median([row["seconds"] for row in rows])) if rows else 0.0,
    }
    columns = ["case", "kind", "expect", "exit", "stderr_lines", "seconds", "ok", "problems"]
    ok = not summary["failed"] and not ghostscript
    return Section("malformed images through `tessera upscale`", columns, rows, ok, summary)


# ------------------------------------------------------------------------------------------- decoding memory


def write_flat_png(path: Path, side: int, colour: tuple[int, int, int] = (40, 90, 160)) -> None:
    """A side x side RGB PNG of one colour, written row by row (the writer never holds the picture)."""
    row = b"\x00" + bytes(colour) * side
    deflate = zlib.compressobj(9)
    with open(path, "wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)))
        pending = b""
        for _ in range(side):
            pending += deflate.compress(row)
            if len(pending) > 1 << 20:
                file.write(_png_chunk(b"IDAT", pending))
                pending = b""
        file.write(_png_chunk(b"IDAT", pending + deflate.flush()) + _png_chunk(b"IEND", b""))


PEAK_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import psutil
    import tessera.image.read

    def peak():
        # the high-water mark of this process's own memory: ru_maxrss would start at the parent's size (Linux
        # keeps it across fork and exec); /proc's VmHWM, reset first, starts at what this process holds now
        try:
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)

    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        pass
    baseline, resident = peak(), psutil.Process().memory_info().rss
    started = time.perf_counter()
    picture = tessera.image.read.load_image(sys.argv[1], max_pixels=None)
    seconds = time.perf_counter() - started
    decoded = picture.pixels.nbytes + (0 if picture.alpha is None else picture.alpha.nbytes)
    print(json.dumps({"baseline": baseline, "peak": peak(), "kept": psutil.Process().memory_info().rss - resident,
                      "decoded": decoded, "seconds": seconds}))
""")
"""A child process's script: load the image named by its argument, print the peak memory of loading as JSON."""


def image_memory_section(side: int = MEMORY_SIDE) -> Section:
    """Peak RSS of loading a flat ``side`` x ``side`` PNG in a fresh process, against its decoded bytes."""
    with tempfile.TemporaryDirectory(prefix="tessera-memory-") as folder:
        path = Path(folder) / f"flat-{side}.png"
        write_flat_png(path, side)
        size = path.stat().st_size
        done = subprocess.run([sys.executable, "-c", PEAK_CHILD, str(path)], capture_output=True, text=True,
                              cwd=ROOT, timeout=600, check=False)
    if done.returncode != 0:
        row = {"image": f"{side}x{side} flat PNG", "ok": False, "problems": done.stderr.strip()[-300:]}
        return Section("memory of decoding", ["image", "ok", "problems"], [row], False)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    growth = (figures["peak"] - figures["baseline"]) / figures["decoded"]
    row = {
        "image": f"{side}x{side} flat RGB PNG",
        "file_MiB": round(size / 2**20, 2),
        "decoded_MiB": round(figures["decoded"] / 2**20, 1),
        "baseline_MiB": round(figures["baseline"] / 2**20, 1),
        "peak_MiB": round(figures["peak"] / 2**20, 1),
        "growth_x_decoded": round(growth, 3),
        "bound_x_decoded": MEMORY_BOUND,
        "seconds": round(figures["seconds"], 2),
        "ok": growth <= MEMORY_BOUND,
    }
    return Section("memory of decoding", list(row), [row], row["ok"], {"growth_x_decoded": row["growth_x_decoded"]})


# ---------------------------------------------------------------------------------------------- weight files


WEIGHT_MEMORY_SLACK = 64 << 20  # peak growth a refused weight file may cause, over the run of a refused text file
WEIGHT_SECONDS = 1.0  # time the reader may take to refuse one


def _run_measured(arguments: list[str], environment: dict[str, str]) -> tuple[int, str, int]:
    """``tessera ARGUMENTS`` as a new process: (exit status, stderr, the child's own peak RSS in bytes)."""
    with tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen([str(ROOT / ".venv" / "bin" / "tessera"), *arguments], stdout=subprocess.DEVNULL,
                                 stderr=stderr, env=environment)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        return child.returncode, stderr.read().decode(errors="replace"), usage.ru_maxrss * 1024


def _read_seconds(path: Path) -> tuple[float, str]:
    """How long the reader takes to refuse ``path`` in this process, and its message."""
    from tessera.errors import ModelError
    from tessera.models.loader import read_state_dict

    started = time.perf_counter()
    try:
        read_state_dict(path)
        message = "read"
    except ModelError as error:
        message = str(error)
    return time.perf_counter() - started, message


def weights_section(keep: Path | None = None) -> Section:
    """Every file of bench/hostile_weights.py as ``--model`` of ``tessera upscale``, each in a fresh process.

    A file must give exit 2, one line, no output, leave its payload's marker unwritten, raise the child's peak
    memory no more than WEIGHT_MEMORY_SLACK over a refused text file's, and be refused by the reader (timed in
    this process) within WEIGHT_SECONDS. The TorchScript payload file holds real weights and may load: its
    network is not an upscaler, so the run must still end in one line, its code unrun.
    """
    sys.path.insert(0, str(HERE))
    from hostile_weights import weight_cases

    folder = Path(keep) / "weights" if keep else Path(tempfile.mkdtemp(prefix="tessera-weights-"))
    try:
        cases = weight_cases(folder / "files")
        photo = folder / "photo.png"
        from PIL import Image

        Image.new("RGB", (16, 16), (90, 120, 200)).save(photo)
        environment = {**os.environ, "TESSERA_HOME": str(folder / "home")}
        runs = {}
        for case in sorted(cases, key=lambda case: case.path.name != "text.pth"):  # the baseline first
            output = folder / "out" / f"{case.path.name}.png"
            output.parent.mkdir(exist_ok=True)
            code, stderr, peak = _run_measured(
                ["upscale", str(photo), "-o", str(output), "--quiet", "--model", str(case.path)], environment)
            seconds, message = _read_seconds(case.path)
            runs[case.path.name] = (case, code, stderr.strip().splitlines(), peak, seconds, message, output)
        baseline = runs["text.pth"][3]
        rows = []
        for name, (case, code, lines, peak, seconds, message, output) in runs.items():
            problems = []
            if code != 2 or len(lines) != 1 or not lines[0].startswith("tessera: error: "):
                problems.append(f"exit {code} with {len(lines)} stderr lines")
            if output.exists():
                problems.append("an output was written")
            if case.marker is not None and case.marker.exists():
                problems.append("its payload ran")
            if peak - baseline > WEIGHT_MEMORY_SLACK:
                problems.append(f"peak memory {(peak - baseline) / 2**20:.1f} MiB over the baseline")
            if seconds > WEIGHT_SECONDS:
                problems.append(f"the reader took {seconds:.2f} s")
            rows.append({"file": name, "kind": case.kind, "size": case.path.stat().st_size, "exit": code,
                         "peak_over_baseline_MiB": round((peak - baseline) / 2**20, 1),
                         "read_seconds": round(seconds, 3),
                         "message": (lines[-1] if lines else "").replace(f"{folder}{os.sep}", "")[:150],
                         "ok": not problems, "problems": "; ".join(problems)})
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    summary = {"files": len(rows), "failed": [row["file"] for row in rows if not row["ok"]],
               "baseline_peak_MiB": round(baseline / 2**20, 1)}
    columns = ["file", "kind", "size", "exit", "peak_over_baseline_MiB", "read_seconds", "ok", "problems"]
    return Section("hostile weight files through `tessera upscale --model`", columns, rows, not summary["failed"],
                   summary)


# ------------------------------------------------------------------------------------------------- reporting


def print_table(section: Section, failures_only: bool = False) -> None:
    """The rows as a plain-text table (only the failing ones when ``failures_only``), then the verdict."""
    rows = [row for row in section.rows if not failures_only or not row.get("ok", True)]
    verdict = "ok" if section.ok else "FAILED"
    print(f"\n{section.title}: {verdict} {json.dumps(section.summary) if section.summary else ''}")
    if not rows:
        return
    widths = {name: max(len(name), *(len(str(row.get(name, ""))) for row in rows)) for name in section.columns}
    widths = {name: min(width, 60) for name, width in widths.items()}
    print("  ".join(name.ljust(widths[name]) for name in section.columns))
    for row in rows:
        print("  ".join(str(row.get(name, ""))[:60].ljust(widths[name]) for name in section.columns))


def write_results(sections: dict[str, Section], path: Path = RESULTS) -> None:
    """Merge ``sections`` into the JSON file at ``path``: each under its own key, other sections left as they are."""
    results: dict[str, Any] = {}
    if path.exists():
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError):
            results = {}
    results["machine"] = {"python": platform.python_version(), "platform": platform.platform(),
                          "cpus": os.cpu_count()}
    for name, section in sections.items():
        results[name] = {"title": section.title, "ok": section.ok, "summary": section.summary,
                         "rows": section.rows, "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")


SECTIONS: dict[str, Callable[[argparse.Namespace], Section]] = {
    "images": lambda args: images_section(args.jobs, args.keep, fork=args.fork),
    "image_memory": lambda args: image_memory_section(args.side),
    "weights": lambda args: weights_section(args.keep),
}


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", action="append", choices=sorted(SECTIONS), help="run only this section")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="cases run at a time")
    parser.add_argument("--keep", type=Path, default=None, help="build the corpus in this folder and keep it")
    parser.add_argument("--fork", action="store_true",
                        help="run each case in a child forked from a process that imported the CLI once (the "
                             "same entry point, without the ~3 s import of torch per case) instead of a new "
                             "process of the console script")
    parser.add_argument("--side", type=int, default=MEMORY_SIDE, help="side of the PNG of image_memory")
    parser.add_argument("--all-rows", action="store_true", help="print every row, not only the failing ones")
    args = parser.parse_args(list(argv) if argv is not None else None)
    sections = {}
    for name in args.section or list(SECTIONS):
        sections[name] = SECTIONS[name](args)
        print_table(sections[name], failures_only=not args.all_rows and name == "images")
    write_results(sections)
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    return 0 if all(section.ok for section in sections.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
