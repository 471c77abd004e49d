"""Progress on the command line: a bar on a terminal, plain lines in logs and pipes, nothing with --quiet."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from tessera.cli import display, main
from tessera.cli.display import ProgressBar, ProgressLines, clock, progress_display
from tessera.progress import ProgressEvent


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _event(stage: str, done: int, total: int, eta: float | None = None, message: str = "") -> ProgressEvent:
    return ProgressEvent(stage, done, total, 0.0, eta, message)


def test_lines_come_every_interval_with_the_time_left_and_once_at_the_end():
    stream, now = io.StringIO(), Clock()
    lines = ProgressLines(stream, interval=10, now=now)
    lines(_event("tiles", 0, 48))
    for done in range(1, 48):
        now.now += 1.0
        lines(_event("tiles", done, 48))
    now.now += 1.0
    lines(_event("tiles", 48, 48))
    printed = stream.getvalue().splitlines()
    # 48 s of work at one line per 10 s: lines at 10, 20, 30, 40 s, then the end
    assert printed[0] == "tiles 10/48, 0:38 left"
    assert [line.split(",")[0] for line in printed] == ["tiles 10/48", "tiles 20/48", "tiles 30/48", "tiles 40/48",
                                                        "tiles 48/48"]
    assert printed[-1] == "tiles 48/48, done"


def test_the_engine_estimate_and_message_are_shown():
    stream, now = io.StringIO(), Clock()
    lines = ProgressLines(stream, interval=0, now=now)
    lines(_event("faces", 3, 29, eta=75.0, message="restore"))
    assert stream.getvalue() == "faces 3/29, 1:15 left · restore\n"


def test_a_quick_stage_prints_nothing_and_counters_without_a_total_do_not_print_per_item():
    stream, now = io.StringIO(), Clock()
    lines = ProgressLines(stream, interval=10, now=now)
    for done in range(4):
        lines(_event("detect", done, 3))
    for done in range(1, 6):  # resize reports (n, n): only the interval lines, not one per file
        now.now += 3.0
        lines(_event("files", done, done))
    assert stream.getvalue() == ""


def test_clock_formats():
    assert (clock(0), clock(34.4), clock(61), clock(3 * 3600 + 62)) == ("0:00", "0:34", "1:01", "3:01:02")


def test_the_display_follows_the_stream():
    assert isinstance(progress_display(False, io.StringIO()), ProgressLines)
    assert isinstance(progress_display(False, Terminal()), ProgressBar)
    quiet = progress_display(True, Terminal())
    assert isinstance(quiet, ProgressBar) and not quiet.enabled


@pytest.mark.parametrize("quiet", [False, True])
def test_a_command_writes_progress_lines_to_a_pipe(tmp_path, photo_uint8, capsys, monkeypatch, quiet):
    monkeypatch.setattr(display, "LINE_INTERVAL", 0.0)
    source, out = tmp_path / "photo.png", tmp_path / "big.png"
    Image.fromarray(photo_uint8[:64, :96]).save(source)
    argv = ["upscale", "--model", "lanczos", str(source), "-o", str(out), "--device", "cpu", "--tile", "32"]
    assert main(argv + (["--quiet"] if quiet else [])) == 0
    progress = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tiles ")]
    if quiet:
        assert progress == []
    else:
        assert progress and progress[-1].startswith("tiles ") and progress[-1].endswith(", done")
