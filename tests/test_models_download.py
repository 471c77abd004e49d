"""Pulls and checks against a local HTTP server (127.0.0.1, in a thread) serving generated files.

The catalog entries used here are test entries pointing at that server; a guard fails any request to another host,
so the real URLs are never touched.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import threading
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest

from tessera.errors import ChecksumError, ModelError
from tessera.models import catalog, download
from tessera.models.catalog import CatalogEntry


# ---------------------------------------------------------------------------------------------------- server
class FileServer:
    """Serves ``files`` (path -> bytes) with Range support; records each request's path and Range header.

    ``cut_next`` makes the next response promise the whole body but stop after that many bytes;
    ``ignore_range`` makes the server answer every request with the full file (200).
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut_next: int | None = None
        self.ignore_range = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
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
    """Deterministic pseudo-random bytes, larger than one download chunk is not needed."""
    out = bytearray()
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
    monkeypatch.setattr(download, "CATALOG", (entry,))
    monkeypatch.setattr(catalog, "_INDEX", {catalog._key(entry.name): entry})
    return entry


def serve(server: FileServer, name: str, body: bytes) -> str:
    server.files[f"/{name}"] = body
    return server.url(f"/{name}")


# ---------------------------------------------------------------------------------------------------- pull
def test_full_download_checks_sha256_and_records_it(server, monkeypatch, tmp_path):
    body = payload()
    url = serve(server, "w.pth", body)
    add_entry(monkeypatch, urls=(url,), sha256=hashlib.sha256(body).hexdigest(), size_bytes=len(body))
    seen: list[tuple[int, int | None]] = []

    path = download.pull("TEST-MODEL", model_dir=tmp_path, progress=lambda done, total: seen.append((done, total)))

    assert path == tmp_path / "models" / "test-model.pth"
    assert path.read_bytes() == body
    assert not list(path.parent.glob("*.part"))
    record = json.loads((path.parent / "test-model.pth.json").read_text())
    assert record["sha256"] == hashlib.sha256(body).hexdigest()
    assert record["url"] == url and "published sha256" in record["checked_against"]
    assert seen[-1] == (len(body), len(body))
    assert server.requests == [("/w.pth", None)]


def test_existing_file_is_not_downloaded_again(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),))
    first = download.pull("test-model", model_dir=tmp_path)
    second = download.pull("test-model", model_dir=tmp_path)
    assert first == second and len(server.requests) == 1
    download.pull("test-model", model_dir=tmp_path, force=True)
    assert len(server.requests) == 2


def test_resume_continues_a_partial_file_with_a_range_request(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),), sha256=hashlib.sha256(body).hexdigest())
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "test-model.pth.part").write_bytes(body[:123_456])

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
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),), sha256=hashlib.sha256(body).hexdigest())
    server.ignore_range = True
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "test-model.pth.part").write_bytes(b"x" * 5000)

    assert download.pull("test-model", model_dir=tmp_path).read_bytes() == body


def test_complete_part_answered_416_is_used(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),), sha256=hashlib.sha256(body).hexdigest())
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "test-model.pth.part").write_bytes(body)

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
        download.pull("test-model", model_dir=tmp_path)


def test_trust_on_first_use_records_sha256_and_verify_uses_it(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),))
    path = download.pull("test-model", model_dir=tmp_path)
    record = json.loads(path.with_name("test-model.pth.json").read_text())
    assert record["sha256"] == hashlib.sha256(body).hexdigest()
    assert "trust on first use" in record["checked_against"]

    [result] = download.verify("test-model", model_dir=tmp_path)
    assert result.status == "ok" and result.kind == "recorded sha256"

    path.write_bytes(body[:-1] + b"!")
    [result] = download.verify(model_dir=tmp_path)
    assert result.status == "mismatch" and not result.ok
    assert result.expected == record["sha256"] and result.actual != result.expected


def test_next_url_is_tried_when_one_fails(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=(server.url("/missing.pth"), serve(server, "w.pth", body)))
    assert download.pull("test-model", model_dir=tmp_path).read_bytes() == body
    assert [path for path, _ in server.requests] == ["/missing.pth", "/w.pth"]


def test_all_urls_failing_is_a_model_error(server, monkeypatch, tmp_path):
    add_entry(monkeypatch, urls=(server.url("/missing.pth"),))
    with pytest.raises(ModelError, match="could not download test-model.*404"):
        download.pull("test-model", model_dir=tmp_path)
    assert not (tmp_path / "models" / "test-model.pth").exists()


def test_urls_argument_overrides_the_catalog(server, monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, urls=("http://127.0.0.1:9/never",))
    path = download.pull("test-model", model_dir=tmp_path, urls=[serve(server, "w.pth", body)])
    assert path.read_bytes() == body


def test_archive_member_is_extracted_and_the_archive_dropped(server, monkeypatch, tmp_path):
    weights = payload(50_000, seed=7)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("big/config.yaml", "run_title: test\n")
        archive.writestr("big/models/best.ckpt", weights)
    body = buffer.getvalue()
    add_entry(monkeypatch, filename="big-best.ckpt", archive="big.zip", archive_member="big/models/best.ckpt",
              urls=(serve(server, "big.zip", body),))

    path = download.pull("test-model", model_dir=tmp_path)

    assert path.name == "big-best.ckpt" and path.read_bytes() == weights
    assert sorted(p.name for p in path.parent.iterdir()) == ["big-best.ckpt", "big-best.ckpt.json"]
    record = json.loads(path.with_name("big-best.ckpt.json").read_text())
    assert record["sha256"] == hashlib.sha256(weights).hexdigest()
    assert record["download"]["sha256"] == hashlib.sha256(body).hexdigest()
    [result] = download.verify("test-model", model_dir=tmp_path)
    assert result.status == "ok"


def test_archive_without_the_member_is_a_model_error(server, monkeypatch, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("other.txt", "x")
    add_entry(monkeypatch, filename="big-best.ckpt", archive="big.zip", archive_member="big/models/best.ckpt",
              urls=(serve(server, "big.zip", buffer.getvalue()),))
    with pytest.raises(ModelError, match="best.ckpt"):
        download.pull("test-model", model_dir=tmp_path)
    assert not (tmp_path / "models" / "big-best.ckpt").exists()


# ---------------------------------------------------------------------------------------------------- verify
def test_verify_against_published_checksum(monkeypatch, tmp_path):
    body = payload()
    add_entry(monkeypatch, sha256=hashlib.sha256(body).hexdigest())
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "test-model.pth").write_bytes(body)
    [result] = download.verify("test-model", model_dir=tmp_path)
    assert (result.status, result.kind) == ("ok", "published sha256")

    (folder / "test-model.pth").write_bytes(body + b"\0")
    [result] = download.verify("test-model", model_dir=tmp_path)
    assert result.status == "mismatch"


def test_verify_without_reference_is_unchecked(monkeypatch, tmp_path):
    add_entry(monkeypatch)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "test-model.pth").write_bytes(b"abc")
    [result] = download.verify(model_dir=tmp_path)
    assert result.status == "unchecked" and result.ok


def test_verify_of_a_model_not_in_the_cache_names_pull(monkeypatch, tmp_path):
    add_entry(monkeypatch)
    with pytest.raises(ModelError, match="tessera models pull test-model"):
        download.verify("test-model", model_dir=tmp_path)
    assert download.verify(model_dir=tmp_path) == []


def test_pull_of_an_unknown_name_suggests_one(monkeypatch, tmp_path):
    add_entry(monkeypatch)
    with pytest.raises(ModelError, match="did you mean 'test-model'"):
        download.pull("test-modle", model_dir=tmp_path)


def test_tessera_home_is_the_default_cache(server, monkeypatch, tmp_path):
    body = payload(1000)
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),))
    monkeypatch.setenv("TESSERA_HOME", os.fspath(tmp_path / "home"))
    assert download.pull("test-model") == tmp_path / "home" / "models" / "test-model.pth"


def test_entries_are_frozen():
    entry = catalog.get_entry("codeformer")
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.sha256 = "0"  # type: ignore[misc]
