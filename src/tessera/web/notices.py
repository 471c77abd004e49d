"""The warnings of a job shown on the page: each warning tessera gives during a job becomes a Gradio toast.

The library warns with :func:`warnings.warn` (a mask over 30 % of the photo, :class:`tessera.masks.LargeMaskWarning`;
the first frame of an animated image, :class:`tessera.image.decode.FirstFrameWarning`; an unusable ICC profile;
unreadable EXIF...). Until now those reached only the server's log. :func:`job_notices` wraps a job: every such
warning is still logged as before (Python's own ``warnings.showwarning`` prints it on the server's stderr), and
each different one is shown once on the page with ``gr.Warning`` (title and text in the page's language, server
paths replaced by file names, see :func:`.jobs.public_message`).

The hook is process-wide and installed once (:func:`warnings.catch_warnings` per job would swap it for the whole
process, and a decode on another thread doing the same would restore the two in the wrong order); a job only
registers itself while it runs. The web UI runs one job at a time (every job holds the app's device lock,
:meth:`.handlers.WebApp._job`), so a warning given by another thread meanwhile (the engine's worker threads of
the same job, and, rarely, a page helper of another session such as a photo being opened) reaches the running
job: it is logged as always, and shown on that job's page only when it comes from tessera's own code.

The toast is sent from the job's Gradio context (copied when the block starts), so a warning given on any thread
reaches the page of the job that was running; outside Gradio (tests, embedding) nothing is shown, only logged.
"""
from __future__ import annotations

import contextlib
import contextvars
import html
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_TESSERA = Path(__file__).resolve().parents[1]  # the tessera package: whose warnings the page shows
TOAST_SECONDS = 15                              # how long a warning stays on the page


def from_tessera(filename: str) -> bool:
    """Whether a warning attributed to ``filename`` comes from tessera's code (not torch's, not Gradio's)."""
    try:
        return _TESSERA in Path(filename).resolve().parents
    except (OSError, RuntimeError, ValueError):
        return False


def show_on_page(message: str, language: str) -> None:
    """A Gradio warning toast with ``message``, when called inside a Gradio event; else nothing (it is logged)."""
    from gradio.context import LocalContext
    from gradio.helpers import log_message

    from .i18n import text

    if LocalContext.blocks.get(None) is None or LocalContext.event_id.get(None) is None:
        return  # gr.Warning would fall back to warnings.warn: back into this hook
    log_message(html.escape(message), title=text("msg.warning", language), level="warning", duration=TOAST_SECONDS)


_hook_lock = threading.Lock()
_job_sink: list[Callable[[Warning | str, str], None]] = []  # the running job's (at most one: jobs take turns)


def _install_hook() -> None:
    """Put, once per process, a ``warnings.showwarning`` that logs as before and hands each warning to the running
    job's sink; and let tessera's warnings through every time (the default "once per place" would hide the
    second job's)."""
    with _hook_lock:
        if getattr(warnings.showwarning, "_tessera_jobs", False):
            return
        log = warnings.showwarning

        def showwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                        file: Any = None, line: str | None = None) -> None:
            log(message, category, filename, lineno, file, line)
            with _hook_lock:
                sinks = list(_job_sink)
            for sink in sinks:
                sink(message, filename)

        showwarning._tessera_jobs = True  # type: ignore[attr-defined]
        warnings.showwarning = showwarning
        warnings.filterwarnings("always", module=r"tessera(\.|$)")


@contextlib.contextmanager
def job_notices(language: str = "en", names: dict[str, str] | None = None,
                show: Callable[[str, str], None] = show_on_page) -> Iterator[list[str]]:
    """During the block, show each different tessera warning once on the page, worded for it in ``language``.

    ``names``: server paths -> names for messages (as :func:`.jobs.public_message` takes them); ``show``: what
    puts a worded message on the page (``show(message, language)``). Yields the list of the messages shown, in
    order. Every warning is also logged as before. The hook is installed once for the process and never swapped
    per job (another thread's ``catch_warnings`` restores it as it found it); the block only registers the job.
    """
    from .jobs import public_message

    _install_hook()
    context = contextvars.copy_context()  # the job's Gradio event, for warnings given on other threads
    entered = threading.Lock()           # a Context is entered by one thread at a time
    shown: list[str] = []

    def sink(message: Warning | str, filename: str) -> None:
        if not (from_tessera(filename) or isinstance(message, _tessera_warnings())):
            return
        worded = public_message(message if isinstance(message, Warning) else Warning(message), names, language)
        with entered:
            if worded in shown:
                return
            shown.append(worded)
            context.run(show, worded, language)

    with _hook_lock:
        _job_sink.append(sink)
    try:
        yield shown
    finally:
        with _hook_lock:
            _job_sink.remove(sink)


def _tessera_warnings() -> tuple[type[Warning], ...]:
    """tessera's own warning classes (whatever code their ``stacklevel`` points at)."""
    from ..image.decode import FirstFrameWarning
    from ..masks import LargeMaskWarning

    return FirstFrameWarning, LargeMaskWarning

