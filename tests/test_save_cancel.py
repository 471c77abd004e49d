"""Saving that can be cancelled and watched: ``save_image(..., cancel=, progress=)`` and ``write_atomically``.

A cancel during the encoding (at any write, or right before the rename) raises CancelledError and leaves no
file, not even the temporary one, and an existing target untouched; progress reports the bytes written; a
watched save writes the same bytes as an unwatched one.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from tessera.errors import CancelledError
from tessera.image.atomic import WatchedFile, write_atomically
from tessera.image.write import save_image


def _noise(height: int = 300, width: int = 400, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (height, width, channels), dtype=np.uint8)


def _names(folder) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif", ".bmp"])
def test_a_watched_save_writes_the_same_file_and_reports_its_bytes(tmp_path, suffix):
    pixels = _noise()
    plain = save_image(pixels, tmp_path / f"plain{suffix}")
    reports: list[int] = []
    watched = save_image(pixels, tmp_path / f"watched{suffix}", cancel=threading.Event(), progress=reports.append)
    assert watched.read_bytes() == plain.read_bytes()
    assert reports and reports == sorted(reports) and reports[-1] == watched.stat().st_size
    assert _names(tmp_path) == sorted([plain.name, watched.name])


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_a_cancel_during_the_encoding_leaves_no_file_and_the_old_target_untouched(tmp_path, suffix):
    target = tmp_path / f"out{suffix}"
    target.write_bytes(b"previous")
    cancel = threading.Event()
    reports: list[int] = []

    def progress(written: int) -> None:
        reports.append(written)
        cancel.set()  # the user presses Cancel after the first piece is on disk

    with pytest.raises(CancelledError):
        save_image(_noise(900, 1200), target, quality=90, cancel=cancel, progress=progress)
    assert len(reports) == 1, "the encoder stopped at its next write"
    assert _names(tmp_path) == [target.name] and target.read_bytes() == b"previous"


def test_a_cancel_before_the_save_creates_nothing(tmp_path):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        save_image(_noise(), tmp_path / "out.png", cancel=cancel)
    assert _names(tmp_path) == []


def test_one_big_buffer_is_written_in_pieces_that_each_check_the_cancel(tmp_path):
    """An encoder that hands its whole output in one write (OpenCV) can still be stopped half-way."""
    cancel = threading.Event()
    reports: list[int] = []

    def progress(written: int) -> None:
        reports.append(written)
        if written >= 2 * WatchedFile.PIECE:
            cancel.set()

    def encoder(file) -> None:
        file.write(np.zeros(10 * WatchedFile.PIECE, np.uint8))

    with pytest.raises(CancelledError):
        write_atomically(tmp_path / "big.bin", encoder, cancel=cancel, progress=progress)
    assert reports == [WatchedFile.PIECE, 2 * WatchedFile.PIECE]
    assert _names(tmp_path) == []


def test_a_cancel_after_the_last_write_still_keeps_the_target_untouched(tmp_path):
    """The encoder finished (the cancel came during its last computation): nothing is renamed."""
    cancel = threading.Event()

    def encoder(file) -> None:
        file.write(b"complete file")
        cancel.set()

    with pytest.raises(CancelledError):
        write_atomically(tmp_path / "out.bin", encoder, cancel=cancel)
    assert _names(tmp_path) == []


def test_an_unwatched_write_gets_the_plain_file(tmp_path):
    """The CLI's path is unchanged: without cancel or progress the encoder gets the real file (with fileno)."""
    seen = []
    write_atomically(tmp_path / "out.bin", lambda file: (seen.append(file.fileno()), file.write(b"x")))
    assert isinstance(seen[0], int)
    watched = []
    write_atomically(tmp_path / "w.bin", lambda file: (watched.append(file), file.write(b"y")),
                     progress=lambda written: None)
    assert isinstance(watched[0], WatchedFile)
    with pytest.raises(OSError):
        watched[0].fileno()
    assert (tmp_path / "w.bin").read_bytes() == b"y"


def test_a_cancel_from_another_thread_stops_a_long_png_save(tmp_path):
    """The Cancel button runs on another thread than the save: the event reaches the encoder's next write."""
    cancel = threading.Event()
    started = threading.Event()
    errors: list[BaseException] = []

    def progress(written: int) -> None:
        started.set()
        cancel.wait(10)  # hold the encoder until the other thread has pressed Cancel

    def save() -> None:
        try:
            save_image(_noise(2000, 2000), tmp_path / "out.png", cancel=cancel, progress=progress)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            errors.append(error)

    thread = threading.Thread(target=save)
    thread.start()
    assert started.wait(30)
    cancel.set()
    thread.join(30)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], CancelledError)
    assert _names(tmp_path) == []


def test_an_uncompressed_tiff_is_watched_too(tmp_path, monkeypatch):
    """Without imagecodecs tifffile writes the strips with numpy's tofile, which needs a real file: through a
    watched file it falls back to write(), which still checks the cancel and reports progress."""
    from tessera.image import write

    monkeypatch.setattr(write, "_tiff_compression", lambda dtype: {"compression": None})
    pixels = _noise(600, 800)
    plain = save_image(pixels, tmp_path / "plain.tif")
    reports: list[int] = []
    watched = save_image(pixels, tmp_path / "watched.tif", progress=reports.append)
    assert watched.read_bytes() == plain.read_bytes() and reports[-1] == watched.stat().st_size
    assert len(reports) > 1  # the strips arrive in pieces
    cancel = threading.Event()
    with pytest.raises(CancelledError):
        save_image(pixels, tmp_path / "cancelled.tif", cancel=cancel, progress=lambda written: cancel.set())
    assert _names(tmp_path) == ["plain.tif", "watched.tif"]
