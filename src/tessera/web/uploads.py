"""Which server files a job may read: files Gradio received, and the masks this app made for the same session.

Gradio moves every file of a request into its upload folder, except files under a static path, which it passes
through untouched (the output folder is one, so that results download without a copy). A client may therefore
name any result in the output folder as its "photo" or "mask". The gate closes that: a job reads a file only
when its real path (symlinks resolved) lies in Gradio's upload folder, or when it is a mask the page's own
stroke-to-mask step wrote for this session. Anything else gets one message that does not depend on the path.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from ..errors import InputError

_ISSUED_LIMIT = 4096  # masks remembered at most (oldest forgotten first): one per inpaint run


def gradio_upload_folder() -> Path:
    """Where Gradio keeps what clients upload (``GRADIO_TEMP_DIR``, default ``<tmp>/gradio``), resolved."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def inside(path: Path, folder: Path) -> bool:
    """Whether the resolved ``path`` is ``folder`` (resolved too) or lies under it."""
    return path == folder or folder in path.parents


class UploadGate:
    """Admits upload paths that Gradio received, or files issued by this app to the same session."""

    def __init__(self, upload_folder: str | os.PathLike[str] | None = None):
        self._upload_folder = Path(upload_folder).resolve() if upload_folder is not None else None
        self._lock = threading.Lock()
        self._issued: dict[Path, str] = {}

    @property
    def upload_folder(self) -> Path:
        return self._upload_folder if self._upload_folder is not None else gradio_upload_folder()

    def issue(self, path: str | os.PathLike[str], session: str | None) -> None:
        """Allow ``session`` to hand ``path`` (a file this app wrote) back as a job's input."""
        real = Path(path).resolve()
        with self._lock:
            self._issued[real] = session or ""
            while len(self._issued) > _ISSUED_LIMIT:
                del self._issued[next(iter(self._issued))]

    def admit(self, path: str | os.PathLike[str] | None, session: str | None, what: str = "photo") -> Path | None:
        """``path`` resolved when a job may read it; None stays None (the caller says "upload one").

        Raises InputError for any other file, whether it exists or not, with a message naming only the file name.
        """
        if not path:
            return None
        given = Path(path)
        try:
            real = given.resolve()
        except (OSError, RuntimeError):  # a symlink loop
            raise _refused(given, what) from None
        if inside(real, self.upload_folder):
            return real  # a file Gradio has since deleted is reported by the byte-limit check ("upload it again")
        with self._lock:
            owner = self._issued.get(real)
        if owner is not None and owner == (session or ""):
            return real
        raise _refused(given, what)


def _refused(path: Path, what: str) -> InputError:
    return InputError(f"{path.name}: the {what} was not uploaded to this server: upload it through the page or "
                      f"gradio_client's handle_file")
