"""Pulls and checks against a local HTTP server (127.0.0.1, in a thread) serving generated files, and the checksum
check every load of a cached catalog model goes through.

The catalog entries used here are test entries pointing at that server; a guard fails any request to another host,
so the real URLs are never touched.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import os
import pickle
import struct
import threading
import time
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import numpy as np
import pytest

from tessera.errors import ChecksumError, ModelError, OptionError, ResourceError
from tessera.models import archive, catalog, checksums, download, loader, transfer
from tessera.models.catalog import CatalogEntry
from tessera.models.formats import containers_for, weight_container

# What an endless response sends at most, so that a pull that does not stop ends the test instead of hanging it.
ENDLESS_SAFETY_CAP = 48 << 20


# ---------------------------------------------------------------------------------------------------- server
class FileServer:
    """Serves ``files`` (path -> bytes) with Range support; records each request's path and Range header.

    ``cut_next`` makes the next response promise the whole body but stop after that many bytes;
    ``ignore_range`` makes the server answer every request with the full file (200). ``endless`` maps a path to
    the Content-Length its response announces (None: no header); that response then sends bytes until the client
    hangs up (or ENDLESS_SAFETY_CAP), counting them in ``sent``.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.endless: dict[str, int | None] = {}
        self.sent: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut_next: int | None = None
        self.ignore_range = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                if self.path in server.endless:
                    self.send_endless(server.endless[self.path])
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start, status = 0, 200
                wanted = self.headers.get("Range")
                if wanted and not server.ignore_range:
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                payload = body[start:]
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                cut, server.cut_next = server.cut_next, None
                self.wfile.write(payload if cut is None else payload[:cut])
                self.wfile.flush()
                if cut is not None:
                    self.close_connection = True

            def send_endless(self, announced: int | None):
                self.send_response(200)
                if announced is not None:
                    self.send_header("Content-Length", str(announced))
                self.end_headers()
                block = b"PK\x03\x04" + bytes(64 * 1024 - 4)
                server.sent[self.path] = 0
                try:
                    while server.sent[self.path] < ENDLESS_SAFETY_CAP:
                        self.wfile.write(block)
                        server.sent[self.path] += len(block)
                except OSError:  # the client hung up: what a bounded pull does
                    pass
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"


@pytest.fixture
def server():
    files = FileServer()
    files.thread.start()
    yield files
    files.httpd.shutdown()
    files.httpd.server_close()


@pytest.fixture(autouse=True)
def local_network_only(monkeypatch):
    """Fail any request that would leave this machine."""
    real_urlopen = urllib.request.urlopen

    def guarded(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        assert urlparse(url).hostname == "127.0.0.1", f"test tried to reach {url}"
        return real_urlopen(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)


def payload(size: int = 300_000, seed: int = 1) -> bytes:
    """Deterministic pseudo-random bytes that start like a zip-based torch archive (so they pass the magic check)."""
    out = bytearray(b"PK\x03\x04")
    block = seed.to_bytes(4, "little")
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def add_entry(monkeypatch, **fields) -> CatalogEntry:
    """Put a test entry in the catalog (name "test-model" unless given), replacing the whole catalog."""
    values = {"name": "test-model", "filename": "test-model.pth", "urls": (), "architecture": "Compact",
              "task": "upscale", "license": "test"}
    values.update(fields)
    entry = CatalogEntry(**values)
    monkeypatch.setattr(catalog, "CATALOG", (entry,))
    monkeypatch.setattr(checksums, "CATALOG", (entry,))
    monkeypatch.setattr(catalog, "_INDEX", {catalog._key(entry.name): entry})
    return entry


def serve(server: FileServer, name: str, body: bytes) -> str:
    server.files[f"/{name}"] = body
    return server.url(f"/{name}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_file(tmp_path, name: str, body: bytes):
    """Put ``body`` into the cache under ``name``, as a user copying a file in by hand would."""
    folder = tmp_path / "models"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(body)
    return path


def zip_with(member: str, data: bytes, compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        archive.writestr("big/config.yaml", "run_title: test\n")
        archive.writestr(member, data)
    return buffer.getvalue()


ARCHIVE = {"filename": "big-best.ckpt", "archive": "big.zip", "archive_member": "big/models/best.ckpt"}


# ---------------------------------------------------------------------------------------------------- pull
def test_full_download_checks_sha256_and_records_it(server, monkeypatch, tmp_path):
    body = payload()
    url = serve(server, "w.pth", body)
    add_entry(monkeypatch, urls=(url,), sha256=sha256(body), size_bytes=len(body))
    seen: list[tuple[int, int | None]] = []

    path = download.pull("TEST-MODEL", model_dir=tmp_path, progress=lambda done, total: seen.append((done, total)))

    assert path == tmp_path / "models" / "test-model.pth"
    assert path.read_bytes() == body
    assert not list(path.parent.glob("*.part*"))
    record = json.loads((path.parent / "test-model.pth.json").read_text())
    assert record["sha256"] == sha256(body)
    assert record["url"] == url and "published sha256" in record["checked_against"]
    assert seen[-1] == (len(body), len(body))
    assert server.requests == [("/w.pth", None)]


def test_existing_file_is_not_downloaded_again(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),), sha256=sha256(body))
    first = download.pull("test-model", model_dir=tmp_path)
    second = download.pull("test-model", model_dir=tmp_path)
    assert first == second and len(server.requests) == 1
    download.pull("test-model", model_dir=tmp_path, force=True)
    assert len(server.requests) == 2


def test_resume_continues_a_partial_file_with_a_range_request(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),), sha256=sha256(body))
    cache_file(tmp_path, "test-model.pth.part", body[:123_456])

    path = download.pull("test-model", model_dir=tmp_path)

    assert path.read_bytes() == body
    assert server.requests == [("/w.pth", "bytes=123456-")]


def test_interrupted_transfer_keeps_the_part_and_the_next_pull_resumes(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),), md5=hashlib.md5(body).hexdigest())
    server.cut_next = 100_000

    with pytest.raises(ModelError, match="resume"):
        download.pull("test-model", model_dir=tmp_path)
    part = tmp_path / "models" / "test-model.pth.part"
    assert part.stat().st_size == 100_000
    assert not (tmp_path / "models" / "test-model.pth").exists()

    path = download.pull("test-model", model_dir=tmp_path)
    assert path.read_bytes() == body and not part.exists()
    assert server.requests[-1] == ("/w.pth", "bytes=100000-")


def test_server_ignoring_range_restarts_from_zero(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),), sha256=sha256(body))
    server.ignore_range = True
    cache_file(tmp_path, "test-model.pth.part", b"x" * 5000)

    assert download.pull("test-model", model_dir=tmp_path).read_bytes() == body


def test_complete_part_answered_416_is_used(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),), sha256=sha256(body))
    cache_file(tmp_path, "test-model.pth.part", body)

    assert download.pull("test-model", model_dir=tmp_path).read_bytes() == body


@pytest.mark.parametrize("kind", ["sha256", "md5"])
def test_checksum_mismatch_raises_and_keeps_nothing(server, monkeypatch, tmp_path, kind):
    body = payload()
    wrong = hashlib.new(kind, b"something else").hexdigest()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),), **{kind: wrong})

    with pytest.raises(ChecksumError, match=kind):
        download.pull("test-model", model_dir=tmp_path)
    assert list((tmp_path / "models").iterdir()) == []


def test_md5_is_checked_when_no_sha256_is_published(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),), md5=hashlib.md5(body).hexdigest())
    path = download.pull("test-model", model_dir=tmp_path)
    record = json.loads(path.with_name("test-model.pth.json").read_text())
    assert "published md5" in record["checked_against"]
    assert record["download"]["md5"] == hashlib.md5(body).hexdigest()


def test_wrong_size_is_a_checksum_error(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),), size_bytes=len(body) + 1)
    with pytest.raises(ChecksumError, match="bytes"):
        download.pull("test-model", model_dir=tmp_path, trust=True)


def test_next_url_is_tried_when_one_fails(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=(server.url("/missing.pth"), serve(server, "w.pth", body)), sha256=sha256(body))
    assert download.pull("test-model", model_dir=tmp_path).read_bytes() == body
    assert [path for path, _ in server.requests] == ["/missing.pth", "/w.pth"]


def test_all_urls_failing_is_a_model_error(server, monkeypatch, tmp_path):
    add_entry(monkeypatch, urls=(server.url("/missing.pth"),))
    with pytest.raises(ModelError, match="could not download test-model.*404"):
        download.pull("test-model", model_dir=tmp_path)
    assert not (tmp_path / "models" / "test-model.pth").exists()


def test_mirror_urls_replace_the_catalog_and_the_published_checksum_still_applies(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=("http://127.0.0.1:9/never",), sha256=sha256(body))
    with pytest.raises(ChecksumError, match="published"):
        download.pull("test-model", model_dir=tmp_path, urls=[serve(server, "evil.pth", payload(seed=2))])
    assert list((tmp_path / "models").iterdir()) == []
    mirror = serve(server, "w.pth", body)
    path = download.pull("test-model", model_dir=tmp_path, urls=[server.url("/down.pth"), mirror])
    assert path.read_bytes() == body
    assert json.loads(path.with_name("test-model.pth.json").read_text())["url"] == mirror


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/w.pth", "127.0.0.1/w.pth"])
def test_mirror_urls_must_be_http(monkeypatch, tmp_path, url):
    add_entry(monkeypatch)
    with pytest.raises(OptionError, match="http"):
        download.pull("test-model", model_dir=tmp_path, urls=[url])


def test_archive_member_is_extracted_and_the_archive_dropped(server, monkeypatch, tmp_path):
    weights = payload(50_000, seed=7)
    body = zip_with("big/models/best.ckpt", weights)
    add_entry(monkeypatch, **ARCHIVE, urls=(serve(server, "big.zip", body),))

    path = download.pull("test-model", model_dir=tmp_path, trust=True)

    assert path.name == "big-best.ckpt" and path.read_bytes() == weights
    assert sorted(p.name for p in path.parent.iterdir()) == ["big-best.ckpt", "big-best.ckpt.digests.json",
                                                             "big-best.ckpt.json"]
    record = json.loads(path.with_name("big-best.ckpt.json").read_text())
    assert record["sha256"] == sha256(weights)
    assert record["download"]["sha256"] == sha256(body)
    [result] = checksums.verify("test-model", model_dir=tmp_path)
    assert result.status == "unverified" and result.ok


def test_archive_without_the_member_is_a_model_error(server, monkeypatch, tmp_path):
    add_entry(monkeypatch, **ARCHIVE, urls=(serve(server, "big.zip", zip_with("other.txt", b"x")),))
    with pytest.raises(ModelError, match="best.ckpt"):
        download.pull("test-model", model_dir=tmp_path, trust=True)
    assert list((tmp_path / "models").iterdir()) == []


def test_tessera_home_is_the_default_cache(server, monkeypatch, tmp_path):
    body = payload(1000)
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),), sha256=sha256(body))
    monkeypatch.setenv("TESSERA_HOME", os.fspath(tmp_path / "home"))
    assert download.pull("test-model") == tmp_path / "home" / "models" / "test-model.pth"


def test_public_api_exports_pull_model():
    import tessera

    assert tessera.pull_model is download.pull


# ---------------------------------------------------------------------------------------------------- bounded pulls
def test_endless_response_stops_at_the_cap_and_deletes_its_part(server, monkeypatch, tmp_path):
    server.endless["/endless.pth"] = None
    add_entry(monkeypatch, urls=(server.url("/endless.pth"),))
    started = time.perf_counter()
    with pytest.raises(ModelError, match="more than 1,048,576 bytes.*cap.*deleted") as caught:
        download.pull("test-model", model_dir=tmp_path, trust=True, max_bytes="1M")
    assert "\n" not in str(caught.value)
    assert list((tmp_path / "models").iterdir()) == []
    assert time.perf_counter() - started < 10


def test_download_cap_comes_from_the_environment(server, monkeypatch, tmp_path):
    server.endless["/endless.pth"] = None
    add_entry(monkeypatch, urls=(server.url("/endless.pth"),))
    monkeypatch.setenv(transfer.MAX_DOWNLOAD_VARIABLE, "512K")
    with pytest.raises(ModelError, match="more than 524,288 bytes"):
        download.pull("test-model", model_dir=tmp_path, trust=True)
    assert list((tmp_path / "models").iterdir()) == []
    monkeypatch.setenv(transfer.MAX_DOWNLOAD_VARIABLE, "lots")
    with pytest.raises(OptionError, match="TESSERA_MAX_DOWNLOAD_BYTES 'lots'"):
        download.pull("test-model", model_dir=tmp_path, trust=True)


def test_download_cap_default():
    assert download.download_cap() == 4 << 30
    assert download.download_cap("8G") == 8 << 30


def test_endless_response_stops_just_past_the_published_size(server, monkeypatch, tmp_path):
    server.endless["/endless.pth"] = None
    add_entry(monkeypatch, urls=(server.url("/endless.pth"),), size_bytes=200_000, sha256="0" * 64)
    with pytest.raises(ModelError, match="more than 200,000 bytes, over the published size"):
        download.pull("test-model", model_dir=tmp_path)
    assert list((tmp_path / "models").iterdir()) == []


def test_content_length_over_the_published_size_is_refused_before_receiving(server, monkeypatch, tmp_path):
    server.endless["/liar.pth"] = 50 << 30  # announces 50 GiB for a model published at 200 kB
    add_entry(monkeypatch, urls=(server.url("/liar.pth"),), size_bytes=200_000, sha256="0" * 64)
    with pytest.raises(ModelError, match="announces 53,687,091,200 bytes, over the published size"):
        download.pull("test-model", model_dir=tmp_path)
    assert list((tmp_path / "models").iterdir()) == []


def test_content_length_under_what_is_sent_reads_only_what_it_announced(server, monkeypatch, tmp_path):
    server.endless["/liar.pth"] = 100_000
    add_entry(monkeypatch, urls=(server.url("/liar.pth"),))
    with pytest.raises(download.UntrustedModelError):
        download.pull("test-model", model_dir=tmp_path)
    assert (tmp_path / "models" / "test-model.pth.part").stat().st_size == 100_000


class _FillingDisk:
    """A binary file on a disk with ``room[0]`` bytes left: a write that does not fit fails with ENOSPC."""

    def __init__(self, file, room: list[int]) -> None:
        self.file, self.room = file, room

    def write(self, data):
        if len(data) > self.room[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room[0] -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def fill_disk_after(monkeypatch, room: int) -> None:
    """Make the files the download modules write share a disk that is full after ``room`` bytes."""
    real_open, left = open, [room]

    def opening(path, mode="r", *args, **kwargs):
        file = real_open(path, mode, *args, **kwargs)
        return _FillingDisk(file, left) if any(flag in mode for flag in "wa") else file

    for module in (transfer, archive):  # the transfer into the .part, and the extraction of an archive member
        monkeypatch.setattr(module, "open", opening, raising=False)


def test_full_disk_during_the_transfer_deletes_the_part(server, monkeypatch, tmp_path):
    body = payload(3 << 20)
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),), sha256=sha256(body))
    fill_disk_after(monkeypatch, 1 << 20)
    with pytest.raises(ResourceError, match="disk full.*deleted"):
        download.pull("test-model", model_dir=tmp_path)
    assert list((tmp_path / "models").iterdir()) == []


def test_full_disk_during_extraction_leaves_nothing(server, monkeypatch, tmp_path):
    weights = payload(3 << 20, seed=3)
    add_entry(monkeypatch, **ARCHIVE, urls=(serve(server, "big.zip", zip_with("big/models/best.ckpt", weights)),))
    fill_disk_after(monkeypatch, 4 << 20)  # the 3 MiB archive fits, its extracted copy does not
    with pytest.raises(ResourceError, match="disk full"):
        download.pull("test-model", model_dir=tmp_path, trust=True)
    assert list((tmp_path / "models").iterdir()) == []


@pytest.mark.parametrize("cap, reason", [("1M", "over the 1.0 MiB cap"), (None, "decompression bomb")])
def test_zip_bomb_member_is_refused_quickly_and_nothing_is_left(server, monkeypatch, tmp_path, cap, reason):
    bomb = zip_with("big/models/best.ckpt", b"PK\x03\x04" + bytes(16 << 20), zipfile.ZIP_DEFLATED)
    assert len(bomb) < 200_000
    add_entry(monkeypatch, **ARCHIVE, urls=(serve(server, "big.zip", bomb),))
    started = time.perf_counter()
    with pytest.raises(ModelError, match=reason):
        download.pull("test-model", model_dir=tmp_path, trust=True, max_bytes=cap)
    assert time.perf_counter() - started < 1.0
    assert list((tmp_path / "models").iterdir()) == []


def _declare_size(archive: bytes, member: str, declared: int) -> bytes:
    """``archive`` with ``member``'s uncompressed size rewritten to ``declared`` in both zip headers."""
    with zipfile.ZipFile(io.BytesIO(archive)) as reader:
        info = reader.getinfo(member)
    raw, name = bytearray(archive), member.encode()
    struct.pack_into("<I", raw, info.header_offset + 22, declared)  # local header: uncompressed size
    central = raw.find(b"PK\x01\x02")
    while raw[central + 46:central + 46 + len(name)] != name:
        central = raw.find(b"PK\x01\x02", central + 1)
    struct.pack_into("<I", raw, central + 24, declared)  # central directory: uncompressed size
    return bytes(raw)


@pytest.mark.parametrize("delta", [1000, -1000])
def test_member_whose_declared_size_lies_is_refused(server, monkeypatch, tmp_path, delta):
    weights = payload(100_000, seed=5)
    lying = _declare_size(zip_with("big/models/best.ckpt", weights, zipfile.ZIP_DEFLATED), "big/models/best.ckpt",
                          len(weights) + delta)
    add_entry(monkeypatch, **ARCHIVE, urls=(serve(server, "big.zip", lying),))
    with pytest.raises(ModelError, match="best.ckpt"):
        download.pull("test-model", model_dir=tmp_path, trust=True)
    assert list((tmp_path / "models").iterdir()) == []


# ---------------------------------------------------------------------------------------------------- trust
def test_unpublished_download_waits_for_trust_and_is_not_fetched_again(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),))
    with pytest.raises(download.UntrustedModelError, match=f"sha256 {sha256(body)}.*--trust") as caught:
        download.pull("test-model", model_dir=tmp_path)
    assert caught.value.sha256 == sha256(body) and caught.value.size == len(body)
    assert f"tessera models pull test-model --model-dir {tmp_path} --trust" in str(caught.value)
    assert not (tmp_path / "models" / "test-model.pth").exists()
    assert (tmp_path / "models" / "test-model.pth.part").read_bytes() == body

    path = download.pull("test-model", model_dir=tmp_path, trust=True)

    assert path.read_bytes() == body and len(server.requests) == 1
    assert not list(path.parent.glob("*.part*"))
    record = json.loads(path.with_name("test-model.pth.json").read_text())
    assert record["sha256"] == sha256(body) and "trust on first use" in record["checked_against"]
    [result] = checksums.verify("test-model", model_dir=tmp_path)
    assert (result.status, result.kind, result.ok) == ("unverified", "recorded sha256", True)

    path.write_bytes(body[:-1] + b"!")
    [result] = checksums.verify(model_dir=tmp_path)
    assert result.status == "mismatch" and not result.ok
    assert result.expected == record["sha256"] and result.actual != result.expected


def test_trust_confirms_only_the_sha256_that_was_shown(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),))
    with pytest.raises(download.UntrustedModelError):
        download.pull("test-model", model_dir=tmp_path)
    part = tmp_path / "models" / "test-model.pth.part"
    part.write_bytes(payload(seed=9))  # same size, other bytes
    with pytest.raises(ChecksumError, match="shown by the earlier pull"):
        download.pull("test-model", model_dir=tmp_path, trust=True)
    assert list((tmp_path / "models").iterdir()) == []


def test_expected_sha256_pins_the_download(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),))
    with pytest.raises(ChecksumError, match=f"has sha256 {sha256(body)}, not the expected sha256 {'ab' * 32}"):
        download.pull("test-model", model_dir=tmp_path, sha256="AB" * 32)
    assert list((tmp_path / "models").iterdir()) == []
    with pytest.raises(OptionError, match="64 hexadecimal"):
        download.pull("test-model", model_dir=tmp_path, sha256="abc")
    path = download.pull("test-model", model_dir=tmp_path, sha256=sha256(body).upper())
    assert path.read_bytes() == body
    assert "given by the user" in json.loads(path.with_name("test-model.pth.json").read_text())["checked_against"]


@pytest.mark.parametrize("archived", [False, True])
def test_a_download_that_is_no_weight_file_is_refused_whatever_the_trust(server, monkeypatch, tmp_path, archived):
    page = b"<!DOCTYPE html><html><body>" + b"Sorry, this file moved. " * 600 + b"</body></html>"
    if archived:
        add_entry(monkeypatch, **ARCHIVE, urls=(serve(server, "big.zip", zip_with("big/models/best.ckpt", page)),))
    else:
        add_entry(monkeypatch, urls=(serve(server, "w.pth", page),))
    with pytest.raises(ModelError, match=r"is not a weight file \(it starts with b'<!DOCTYPE html>"):
        download.pull("test-model", model_dir=tmp_path, trust=True)
    assert list((tmp_path / "models").iterdir()) == []


def test_weight_container_reads_the_magic_of_each_format(tmp_path):
    import torch
    from safetensors.torch import save_file

    tensors = {"w": torch.zeros(2, 2)}
    torch.save(tensors, tmp_path / "a.pth")
    torch.save(tensors, tmp_path / "b.pth", _use_new_zipfile_serialization=False)
    save_file(tensors, tmp_path / "c.safetensors")
    (tmp_path / "d.pth").write_bytes(b"Not Found")
    (tmp_path / "e.pth").write_bytes(b"")
    (tmp_path / "f.pth").write_bytes(pickle.dumps(tensors, protocol=0))
    assert [weight_container(tmp_path / name) for name in ("a.pth", "b.pth", "c.safetensors", "d.pth",
                                                            "e.pth", "f.pth")] == \
        ["zip", "pickle", "safetensors", None, None, None]
    assert containers_for("GPEN-BFR-512.pth") == ("zip", "pickle")  # a safetensors file is no .pth


def test_trust_records_a_file_copied_into_the_cache_by_hand(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),))
    path = cache_file(tmp_path, "test-model.pth", body)
    with pytest.raises(ChecksumError, match=f"was not pulled.*sha256 {sha256(body)}.*--trust"):
        loader.resolve_model_file("test-model", tmp_path)
    [result] = checksums.verify(model_dir=tmp_path)
    assert result.status == "unchecked" and not result.ok

    with pytest.raises(ChecksumError, match="not the expected"):
        download.pull("test-model", model_dir=tmp_path, sha256="0" * 64)
    assert download.pull("test-model", model_dir=tmp_path, trust=True) == path

    assert server.requests == []
    assert loader.resolve_model_file("test-model", tmp_path)[0] == path
    record = json.loads(path.with_name("test-model.pth.json").read_text())
    assert record["url"] is None and "found in the cache" in record["checked_against"]
    [result] = checksums.verify(model_dir=tmp_path)
    assert result.status == "unverified"


def test_trust_does_not_record_a_hand_copied_text_file(monkeypatch, tmp_path):
    add_entry(monkeypatch)
    cache_file(tmp_path, "test-model.pth", b"just some notes\n")
    with pytest.raises(ModelError, match="not a weight file"):
        download.pull("test-model", model_dir=tmp_path, trust=True)
    assert not (tmp_path / "models" / "test-model.pth.json").exists()


# ---------------------------------------------------------------------------------------------------- check on load
def test_load_refuses_a_cached_file_that_differs_from_the_published_sha256(monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, sha256=sha256(body))
    tampered = payload(seed=2)
    path = cache_file(tmp_path, "test-model.pth", tampered)
    with pytest.raises(ChecksumError) as caught:
        loader.load_model("test-model", model_dir=tmp_path)
    message = str(caught.value)
    assert str(path) in message and sha256(tampered) in message and sha256(body) in message
    assert f"tessera models pull test-model --model-dir {tmp_path} --force" in message
    assert "published sha256" in message and "\n" not in message
    assert caught.value.exit_code == 2


def test_load_refuses_a_file_that_differs_from_its_published_md5(monkeypatch, tmp_path):
    add_entry(monkeypatch, md5=hashlib.md5(b"the real one").hexdigest())
    cache_file(tmp_path, "test-model.pth", payload())
    with pytest.raises(ChecksumError, match="md5"):
        loader.resolve_model_file("test-model", tmp_path)


def test_load_refuses_a_file_that_differs_from_the_sha256_recorded_at_pull(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),))
    path = download.pull("test-model", model_dir=tmp_path, trust=True)
    assert loader.resolve_model_file("test-model", tmp_path)[0] == path
    path.write_bytes(payload(seed=3))
    with pytest.raises(ChecksumError, match=f"but the recorded sha256 is {sha256(body)}"):
        loader.resolve_model_file("test-model", tmp_path)


def test_load_by_path_is_not_checksum_checked(monkeypatch, tmp_path):
    add_entry(monkeypatch, sha256=sha256(b"the real one"))
    path = cache_file(tmp_path, "test-model.pth", payload())
    assert loader.resolve_model_file(path, tmp_path)[0] == path


def test_hashing_on_load_happens_once_per_version_of_the_file(monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, sha256=sha256(body))
    path = cache_file(tmp_path, "test-model.pth", body)
    hashed: list[str] = []
    real_digests = checksums.file_digests
    monkeypatch.setattr(checksums, "file_digests", lambda p: hashed.append(str(p)) or real_digests(p))

    for _ in range(3):
        loader.resolve_model_file("test-model", tmp_path)
    assert hashed == [str(path)]

    before = path.stat()
    time.sleep(0.05)  # past the file system's timestamp granularity
    path.write_bytes(payload(seed=4))  # same size, other bytes, and the old mtime put back
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(ChecksumError):
        loader.resolve_model_file("test-model", tmp_path)
    assert len(hashed) == 2


def test_a_pull_remembers_the_digests_so_the_first_load_does_not_hash(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),), sha256=sha256(body))
    download.pull("test-model", model_dir=tmp_path)
    monkeypatch.setattr(checksums, "file_digests", lambda p: pytest.fail(f"hashed {p} again"))
    loader.resolve_model_file("test-model", tmp_path)


def test_read_only_cache_still_checks(monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, sha256=sha256(body))
    cache_file(tmp_path, "test-model.pth", body)

    def read_only(path, *args, **kwargs):
        raise checksums.OutputError(f"{path}: cannot write (read-only file system)")

    monkeypatch.setattr(checksums, "write_atomically", read_only)
    assert loader.resolve_model_file("test-model", tmp_path)[1].name == "test-model"


def test_default_inpaint_with_a_tampered_cached_lama_is_refused(monkeypatch, tmp_path, capsys):
    """`tessera inpaint --model auto` picks the cached big-lama.pt by name, so it meets the check on load."""
    from tessera import cli
    from tessera.image.write import save_image

    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "cache"))
    cache_file(tmp_path / "cache", "big-lama.pt", payload())
    photo = np.full((64, 64, 3), 120, np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[20:30, 20:30] = 255
    save_image(photo, tmp_path / "photo.png")
    save_image(mask, tmp_path / "mask.png")
    output = tmp_path / "out.png"

    code = cli.main(["inpaint", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png"), "-o",
                     str(output), "--model", "auto", "--quiet"])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "big-lama.pt has sha256" in err[0] and catalog.get_entry("big-lama").sha256 in err[0]
    assert "tessera models pull big-lama --force" in err[0]
    assert not output.exists()


# ---------------------------------------------------------------------------------------------------- verify
def test_verify_against_published_checksum(monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, sha256=sha256(body))
    path = cache_file(tmp_path, "test-model.pth", body)
    [result] = checksums.verify("test-model", model_dir=tmp_path)
    assert (result.status, result.kind) == ("ok", "published sha256")

    path.write_bytes(body + b"\0")
    [result] = checksums.verify("test-model", model_dir=tmp_path)
    assert result.status == "mismatch"


def test_verify_rehashes_even_when_the_digests_are_remembered(monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, sha256=sha256(body))
    cache_file(tmp_path, "test-model.pth", body)
    checksums.verify(model_dir=tmp_path)
    hashed: list[str] = []
    real_digests = checksums.file_digests
    monkeypatch.setattr(checksums, "file_digests", lambda p: hashed.append(str(p)) or real_digests(p))
    checksums.verify(model_dir=tmp_path)
    assert len(hashed) == 1


def test_verify_without_reference_is_unchecked(monkeypatch, tmp_path):
    add_entry(monkeypatch)
    cache_file(tmp_path, "test-model.pth", b"abc")
    [result] = checksums.verify(model_dir=tmp_path)
    assert result.status == "unchecked" and not result.ok


def test_verify_of_a_model_not_in_the_cache_names_pull(monkeypatch, tmp_path):
    add_entry(monkeypatch)
    with pytest.raises(ModelError, match="tessera models pull test-model"):
        checksums.verify("test-model", model_dir=tmp_path)
    assert checksums.verify(model_dir=tmp_path) == []


def test_pull_of_an_unknown_name_suggests_one(monkeypatch, tmp_path):
    add_entry(monkeypatch)
    with pytest.raises(ModelError, match="did you mean 'test-model'"):
        download.pull("test-modle", model_dir=tmp_path)


def test_entries_are_frozen():
    entry = catalog.get_entry("codeformer")
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.sha256 = "0"  # type: ignore[misc]
