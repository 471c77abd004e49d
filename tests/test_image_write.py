"""The write side of tessera.image: checks before work (check_output, check_output_folder) and temporary files
that never outlive their writer (removed on any exception; stale ones of killed writers swept by a later write)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tessera.errors import OptionError, OutputError
from tessera.image import atomic
from tessera.image.atomic import remove_stale_temporaries, write_atomically
from tessera.image.write import check_output, check_output_folder, check_output_size, save_image

PIXELS = np.zeros((8, 8, 3), np.uint8)


def _dead_pid() -> int:
    """The id of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _temporary(folder: Path, target: str, pid: int, host: str | None = None) -> Path:
    """A file named the way tessera names its temporary files, as a writer of ``pid`` would have left it."""
    path = folder / f".{target}.{host or atomic._host_tag()}-{pid}-0123abcd.tessera-tmp"
    path.write_bytes(b"half an image")
    return path


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))

# ----------------------------------------------------------------------------------------------- temporary files


def test_the_temporary_file_names_its_writer_and_is_gone_after_the_write(tmp_path):
    seen = []

    def write(file):
        seen.extend(p.name for p in tmp_path.iterdir())
        file.write(b"data")

    write_atomically(tmp_path / "out.bin", write)
    assert len(seen) == 1
    match = re.fullmatch(r"\.out\.bin\.([0-9a-f]{8})-([0-9]+)-[0-9a-f]{8}\.tessera-tmp", seen[0])
    assert match and int(match[2]) == os.getpid()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


@pytest.mark.parametrize("failure", [RuntimeError("encoder crashed"), KeyboardInterrupt()])
def test_any_exception_during_the_write_removes_the_temporary_file(tmp_path, failure):
    (tmp_path / "out.bin").write_bytes(b"previous")

    def write(file):
        file.write(b"partial")
        raise failure

    with pytest.raises(type(failure)):
        write_atomically(tmp_path / "out.bin", write)
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    assert (tmp_path / "out.bin").read_bytes() == b"previous"


def test_a_later_write_removes_what_a_dead_writer_left_and_nothing_else(tmp_path):
    dead = _temporary(tmp_path, "photo.png", _dead_pid())
    live = _temporary(tmp_path, "other.png", os.getpid())
    other_machine = _temporary(tmp_path, "shared.png", _dead_pid(), host="ffffffff" if atomic._host_tag() != "ffffffff"
                               else "00000000")
    foreign = tmp_path / ".photo.1234abcd.tmp.png"  # not tessera's naming: never ours to delete
    foreign.write_bytes(b"x")
    save_image(PIXELS, tmp_path / "photo.png")
    left = {p.name for p in tmp_path.iterdir()}
    assert dead.name not in left
    assert {live.name, other_machine.name, foreign.name, "photo.png"} <= left


def test_an_old_temporary_file_is_stale_whoever_wrote_it(tmp_path):
    old = _temporary(tmp_path, "photo.png", os.getpid())  # a live pid, but reused long after its writer died
    _age(old, atomic.STALE_TEMPORARY_SECONDS + 60)
    recent = _temporary(tmp_path, "photo2.png", os.getpid())
    assert remove_stale_temporaries(tmp_path) == [old]
    assert recent.exists()


def test_a_live_writer_in_another_process_keeps_its_temporary_file(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        theirs = _temporary(tmp_path, "photo.png", sleeper.pid)
        assert remove_stale_temporaries(tmp_path) == []
        assert theirs.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert remove_stale_temporaries(tmp_path) == [theirs]


def test_only_regular_files_of_our_naming_are_swept(tmp_path):
    folder = tmp_path / f".x.png.{atomic._host_tag()}-{_dead_pid()}-0123abcd.tessera-tmp"
    folder.mkdir()
    assert remove_stale_temporaries(tmp_path) == [] and folder.is_dir()

# ----------------------------------------------------------------------------------------------- checks before work


def test_check_output_refuses_what_save_image_could_not_write(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        check_output(tmp_path / "missing" / "dir" / "out.png")
    with pytest.raises(OptionError, match=r"out\.xyz: unknown image file suffix '\.xyz'"):
        check_output(tmp_path / "out.xyz")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(OutputError, match="it is a folder"):
        check_output(tmp_path / "folder.png")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OutputError, match="not a folder"):
        check_output(tmp_path / "file" / "out.png")
    with pytest.raises(OptionError, match="quality"):
        check_output(tmp_path / "out.jpg", quality=0)
    source = tmp_path / "in.png"
    save_image(PIXELS, source)
    with pytest.raises(OutputError, match="overwrite"):
        check_output(source, source=source)
    assert check_output(source, source=source, overwrite_input=True) == "PNG"
    assert check_output(tmp_path / "out.tif") == "TIFF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder.png", "in.png"]  # the probe is gone


def test_check_output_tries_a_real_write(tmp_path, monkeypatch):
    """A folder that refuses new files (read-only file system, no permission) is caught by creating one."""
    def refuse(path, mode="r", *args, **kwargs):
        if "x" in mode:
            raise OSError(30, "Read-only file system")
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(atomic, "open", refuse, raising=False)
    with pytest.raises(OutputError, match="Read-only file system"):
        check_output(tmp_path / "out.png")


def test_check_output_size_knows_each_format_s_largest_side(tmp_path):
    check_output_size(tmp_path / "big.png", 70_000, 10)
    with pytest.raises(OutputError, match="WEBP cannot hold 20000x10"):
        check_output_size(tmp_path / "big.webp", 20_000, 10)


def test_check_output_folder_accepts_a_folder_to_create_and_refuses_a_file_in_the_way(tmp_path):
    check_output_folder(tmp_path / "new" / "deeper")
    assert list(tmp_path.iterdir()) == []  # nothing created, no probe left
    (tmp_path / "file").write_bytes(b"")
    for folder in (tmp_path / "file", tmp_path / "file" / "below"):
        with pytest.raises(OutputError, match="is not a folder"):
            check_output_folder(folder)


def test_a_long_name_gives_a_temporary_name_the_file_system_takes(tmp_path):
    name = "é" * 120 + ".png"  # 244 bytes: with the writer's tag the temporary's name would pass 255
    save_image(PIXELS, tmp_path / name)
    assert [p.name for p in tmp_path.iterdir()] == [name]
