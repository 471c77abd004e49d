"""How a command shows progress: a tqdm bar per stage on a terminal, plain lines in logs and pipes, or nothing.

A job run by cron, Slurm, systemd or ``2> log`` has no terminal, and a tqdm bar there is either absent or a stream
of carriage returns. :class:`ProgressLines` writes one readable line per stage every few seconds instead
(``tiles 12/48, 0:34 left``), and a last one when a stage it has reported finishes.
"""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ..progress import ProgressEvent

# Seconds between two lines of one stage: often enough to see a job move, rare enough for a log.
LINE_INTERVAL = 10.0


def progress_display(quiet: bool, stream: TextIO | None = None) -> ProgressBar | ProgressLines:
    """The progress display for a command: nothing with ``--quiet``, a bar on a terminal, plain lines elsewhere."""
    stream = stream or sys.stderr
    if quiet:
        return ProgressBar(enabled=False)
    isatty = getattr(stream, "isatty", None)
    return ProgressBar(stream=stream) if isatty is not None and isatty() else ProgressLines(stream)


def clock(seconds: float) -> str:
    """``seconds`` as ``M:SS`` or ``H:MM:SS``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressLines:
    """Progress as plain lines, at most one per stage every ``interval`` seconds, plus one when a stage ends.

    The time left is the event's own estimate, or one made from when this display first saw the stage.
    """

    def __init__(self, stream: TextIO, interval: float | None = None, now: Any = time.monotonic):
        self.stream = stream
        self.interval = LINE_INTERVAL if interval is None else interval
        self._now = now
        self._first: dict[str, tuple[float, int]] = {}   # stage -> (time first seen, done then)
        self._last_line: dict[str, float] = {}
        self._unfinished: set[str] = set()

    def __call__(self, event: ProgressEvent) -> None:
        now = self._now()
        start = self._first.setdefault(event.stage, (now, event.done))
        if event.done < event.total:
            self._unfinished.add(event.stage)
        finished = event.total > 0 and event.done >= event.total
        if finished:  # a last line only for a stage that was shown moving
            shown = event.stage in self._unfinished and self._last_line.pop(event.stage, None) is not None
            self._unfinished.discard(event.stage)
            self._first.pop(event.stage, None)
            if not shown:
                return
        elif now - self._last_line.get(event.stage, start[0]) < self.interval:
            return
        else:
            self._last_line[event.stage] = now
        self.stream.write(self.line(event, now - start[0], event.done - start[1]) + "\n")
        self.stream.flush()

    @staticmethod
    def line(event: ProgressEvent, watched: float, progressed: int) -> str:
        """``stage done/total, M:SS left`` (or ``done`` at the end), then the event's message if any."""
        text = f"{event.stage} {event.done}/{event.total}"
        eta = event.eta
        if eta is None and progressed > 0 and event.total > event.done:
            eta = watched / progressed * (event.total - event.done)
        if event.total > 0 and event.done >= event.total:
            text += ", done"
        elif eta is not None:
            text += f", {clock(eta)} left"
        return text + (f" · {event.message}" if event.message else "")

    def close(self) -> None:
        self._first.clear()
        self._last_line.clear()
        self._unfinished.clear()


class ProgressBar:
    """Shows the engine's progress events with tqdm, one bar per stage, on a terminal."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._bars: dict[str, Any] = {}

    def __call__(self, event: ProgressEvent) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self._bars.get(event.stage)
        if bar is None or bar.total != event.total and event.done == 0:
            if bar is not None:
                bar.close()
            bar = self._bars[event.stage] = tqdm(total=event.total, desc=event.stage, unit=event.stage.rstrip("s"),
                                                 leave=False, file=self.stream, dynamic_ncols=True)
        bar.total = event.total
        bar.n = event.done
        if event.message:
            bar.set_postfix_str(event.message, refresh=False)
        bar.refresh()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

