"""The local web UI: three tabs (Inpaint, Faces, Upscale) over the same task registry as the CLI.

Each tab: upload a photo (the original file is used, untouched, at full resolution; the page draws it from a
tile pyramid, :mod:`.viewer`), set a few options (more under "Advanced settings", built from the shared option
schema), run, compare before and after at full resolution, download the full-resolution result. The jobs are the public Gradio API ``/inpaint``, ``/enhance`` and
``/upscale``: their first inputs are the photo (and, for ``/inpaint``, a mask of the same size), all other inputs
have defaults, so ``gradio_client`` can call them with the photo alone. The page calls the same endpoints; for
inpainting it first turns the brush strokes of the viewer, recorded in photo pixels, into a full-resolution mask
(:mod:`.editing`).

Jobs run on Gradio's queue, one at a time per device (one concurrency group), with live progress of every phase
and a Cancel button that stops a job between two batches or during its save; a job whose client went away is
cancelled the same way.

What a client sends is checked here, whatever the page allows: models are choices of one menu (the catalog and
the folders named at start, :mod:`.models`), never paths; photos and masks are files Gradio received
(:mod:`.uploads`); the strokes the page sends are checked numbers (:mod:`.viewer`); logins are throttled
(:mod:`.access`). The page is :mod:`.layout`, what its events do :mod:`.handlers`; this module builds the two
together (:func:`build_app`) and starts the server (:func:`launch`). See also :mod:`.jobs`, :mod:`.limits`,
:mod:`.retention`.
"""
from __future__ import annotations

from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from .access import LoginAttempts, LoginThrottle, PasswordCheck, check_exposure
from .config import WebConfig
from .handlers import WebApp
from .i18n import make_i18n
from .language import SWITCH_CSS, HeadScript
from .layout import build_page

CSS = (".hint { opacity: 0.7; font-size: 0.85em; } #memory-warning { color: #c2410c; font-weight: 600; } "
       + SWITCH_CSS)


def build_app(config: WebConfig) -> tuple[gr.Blocks, WebApp]:
    """The Gradio Blocks (queue configured) and the handlers behind it."""
    app = WebApp(config)
    blocks = build_page(app)
    blocks.queue(default_concurrency_limit=1, max_size=config.queue_size)
    return blocks, app


def theme() -> Any:
    """Gradio's default look with system fonts: the page loads nothing from the internet."""
    system = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"])


def launch(blocks: gr.Blocks, config: WebConfig, *, host: str = "127.0.0.1", port: int | None = 7860,
           auth: tuple[str, str] | None = None, insecure: bool = False, prevent_thread_lock: bool = False,
           quiet: bool = False) -> Any:
    """Start the server (blocking unless ``prevent_thread_lock``); results may be downloaded from the output dir.

    A non-loopback ``host`` needs ``auth`` or ``insecure`` (see :mod:`.access`). Every HTML page gets the script
    that keeps the page's language across reloads (:class:`.language.HeadScript`).
    """
    check_exposure(host, auth, insecure)
    # Results are served from the output folder as they are, not copied into Gradio's cache (a second copy of
    # every full-resolution result on disk). Like allowed_paths, this lets a logged-in user fetch them; jobs
    # still refuse them as inputs (see .uploads).
    gr.set_static_paths([str(config.output_dir)])
    app_kwargs: dict[str, Any] = {"middleware": [Middleware(HeadScript)]}
    password = None
    if auth is not None:
        password = PasswordCheck(*auth)
        attempts = LoginAttempts(free_tries=config.login_free_tries, first_delay=config.login_first_delay)
        app_kwargs["middleware"].append(Middleware(LoginThrottle, attempts=attempts))
    return blocks.launch(
        server_name=host, server_port=port, auth=password, share=False, inbrowser=False, show_error=True,
        max_file_size=config.limits.max_upload_bytes, allowed_paths=[str(config.output_dir)],
        prevent_thread_lock=prevent_thread_lock, quiet=quiet, i18n=make_i18n(), theme=theme(), css=CSS,
        footer_links=["api", "settings"], app_kwargs=app_kwargs)
