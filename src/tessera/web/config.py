"""What one web app is set up with: a plain record, read by the handlers, the page and the launcher alike.

It lives apart from :mod:`.app` so that :mod:`.handlers` and :mod:`.layout` can read it without importing the
module that builds and launches them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .limits import Limits
from .results import DEFAULT_PREVIEW_SIDE


@dataclass(frozen=True)
class WebConfig:
    """What the app needs to know: where results go, how long they stay, the limits, the preview size.

    ``model_dir`` is the model cache (catalog models); ``model_folders`` are the folders whose weight files are
    offered too (``tessera serve --models-from DIR``). ``login_free_tries`` failed logins per client address are
    allowed before it must wait ``login_first_delay`` seconds, doubling with each further failure.
    """

    output_dir: Path
    keep_days: float = 7.0
    limits: Limits = field(default_factory=Limits)
    preview_side: int = DEFAULT_PREVIEW_SIDE
    model_dir: Path | None = None
    model_folders: tuple[Path, ...] = ()
    queue_size: int = 64
    editor_height: int = 540  # px of the viewers on the page (Inpaint's editor, the other tabs' before/after)
    login_free_tries: int = 5
    login_first_delay: float = 2.0
