"""Results kept for a while, then deleted: the web UI's output folder and its retention sweep.

The web UI writes each job's files into a folder of its own under the output directory, which carries a marker
file (``.tessera-results``). A sweep deletes files older than the retention age in those job folders, then the
folders left empty. It runs when ``tessera serve`` starts and every hour after, and from the CLI as
``tessera clean --older-than 7d``. A folder without the marker is refused: a mistyped ``--output-dir ~`` must not
delete a home directory's old files.
"""
from __future__ import annotations

import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import OptionError, OutputError, TesseraError

MARKER = ".tessera-results"
SWEEP_INTERVAL = 3600.0  # seconds between two sweeps of a running server

_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def default_output_dir() -> Path:
    """Where the web UI keeps results unless told otherwise: ``$TESSERA_HOME/results`` (``~/.cache/tessera``)."""
    from ..models.catalog import cache_dir

    return cache_dir() / "results"


def parse_age(text: str | float) -> float:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"90s"``, ``"2w"`` or a bare number of days -> seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text) * 86400
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhdw]?)\s*", str(text).lower())
        if not match:
            raise OptionError(f"not an age: {text!r} (examples: 7d, 12h, 30m, 2w; a bare number counts days)")
        seconds = float(match.group(1)) * _AGE_UNITS[match.group(2) or "d"]
    if seconds < 0:
        raise OptionError(f"an age cannot be negative, got {text!r}")
    return seconds


def prepare_output_dir(path: str | os.PathLike[str]) -> Path:
    """Create the output folder if needed and mark it as tessera's (so sweeps may delete old files in it)."""
    folder = Path(path).expanduser().resolve()
    marker = folder / MARKER
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: output folder is a file")
    if folder.is_dir() and not marker.exists() and any(folder.iterdir()):
        raise OutputError(f"{folder}: output folder is not empty and was not made by tessera serve "
                          f"(no {MARKER} file); choose an empty or new folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not marker.exists():
            marker.write_text("Results of `tessera serve`; `tessera clean` and the server's retention sweep delete "
                              "old files in the job folders here.\n", encoding="utf-8")
    except OSError as error:
        raise OutputError(f"{folder}: cannot create the output folder ({error.strerror or error})") from None
    return folder


def new_job_folder(output_dir: Path, task: str) -> Path:
    """A new, unique folder for one job's files: ``<output_dir>/<YYYYmmdd-HHMMSS>-<task>-<random>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = output_dir / f"{stamp}-{task}-{secrets.token_hex(3)}"
    folder.mkdir(parents=True, exist_ok=False)
    return folder


@dataclass
class SweepReport:
    """What a sweep deleted (or would delete, on a dry run)."""

    folder: Path
    cutoff: float
    dry_run: bool
    files: list[Path] = field(default_factory=list)
    bytes: int = 0
    folders: list[Path] = field(default_factory=list)
    kept: int = 0

    def describe(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (f"{verb} {len(self.files)} file(s), {self.bytes / (1 << 20):.1f} MiB, in {self.folder}; "
                f"kept {self.kept} newer file(s)")


def sweep(output_dir: str | os.PathLike[str], older_than: float, *, dry_run: bool = False,
          now: float | None = None) -> SweepReport:
    """Delete files older than ``older_than`` seconds in the job folders of ``output_dir``, then empty folders.

    Only folders below a marked output directory are touched; symbolic links are neither followed nor deleted
    through. Raises OutputError for a folder that does not exist or is not tessera's.
    """
    root = Path(output_dir).expanduser()
    if not root.is_dir():
        raise OutputError(f"{root}: no such output folder")
    if not (root / MARKER).is_file():
        raise OutputError(f"{root}: not a tessera results folder (no {MARKER} file); refusing to delete files there")
    cutoff = (time.time() if now is None else now) - older_than
    report = SweepReport(root, cutoff, dry_run)
    for job in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        _sweep_folder(job, report)
    return report


def _sweep_folder(folder: Path, report: SweepReport) -> bool:
    """Sweep one folder depth-first; return whether it ended up (or would end up) empty and removed."""
    emptied = True
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            emptied &= _sweep_folder(entry, report)
            continue
        try:
            info = entry.lstat()
        except FileNotFoundError:  # a concurrent sweep or job removed it
            continue
        if info.st_mtime >= report.cutoff:
            report.kept += 1
            emptied = False
            continue
        report.files.append(entry)
        report.bytes += info.st_size
        if not report.dry_run:
            try:
                entry.unlink()
            except FileNotFoundError:
                pass
    if emptied:
        report.folders.append(folder)
        if not report.dry_run:
            try:
                folder.rmdir()
            except OSError:  # a job wrote into it meanwhile: keep it
                return False
    return emptied


class RetentionSweeper:
    """Sweeps an output folder now and then every ``interval`` seconds on a daemon thread, until stopped."""

    def __init__(self, output_dir: Path, keep_seconds: float, *, interval: float = SWEEP_INTERVAL,
                 log: Callable[[str], None] | None = None):
        self.output_dir = output_dir
        self.keep_seconds = keep_seconds
        self.interval = interval
        self.log = log or (lambda message: print(f"tessera: {message}", file=sys.stderr))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep_now(self) -> SweepReport:
        report = sweep(self.output_dir, self.keep_seconds)
        if report.files:
            self.log(f"retention: {report.describe()}")
        return report

    def start(self) -> RetentionSweeper:
        """Sweep once now (in this thread, so a failure is seen at start), then hourly in the background."""
        self.sweep_now()
        self._thread = threading.Thread(target=self._loop, name="tessera-retention", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep_now()
            except (OSError, TesseraError) as error:  # a file-system error must not end the sweeps
                self.log(f"retention: sweep of {self.output_dir} failed: {error}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
