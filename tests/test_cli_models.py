"""`tessera models list | pull | verify`, driven through the command's own parser."""
from __future__ import annotations

import argparse
import hashlib

import pytest
from test_models_download import add_entry, local_network_only, payload, serve, server  # noqa: F401 - fixtures

from tessera.cli import models as models_cli
from tessera.errors import ModelError
from tessera.models import catalog


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="tessera")
    models_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", *argv])
    return args.func(args)


def test_list_shows_every_known_model_and_the_cache(tmp_path, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "codeformer.pth").write_bytes(b"x" * 2048)
    assert run("list", "--model-dir", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert str(folder) in out
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert set(lines) == set(catalog.model_names())
    assert "yes" in lines["codeformer"].split() and "2.0 KiB" in lines["codeformer"]
    assert "no" in lines["gpen-bfr-512"].split()
    assert "S-Lab License 1.0" in lines["codeformer"]


def test_pull_downloads_and_reports_the_checksum(server, monkeypatch, tmp_path, capsys):  # noqa: F811
    body = payload()
    digest = hashlib.sha256(body).hexdigest()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),), sha256=digest)
    assert run("pull", "test-model", "--model-dir", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert digest in out and "published sha256" in out
    assert (tmp_path / "models" / "test-model.pth").read_bytes() == body
    assert run("pull", "test-model", "--model-dir", str(tmp_path)) == 0
    assert "already in the cache" in capsys.readouterr().out
    assert len(server.requests) == 1


def test_pull_without_published_checksum_shows_what_it_recorded(server, monkeypatch, tmp_path, capsys):  # noqa: F811
    body = payload()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),))
    assert run("pull", "test-model", "--model-dir", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert hashlib.sha256(body).hexdigest() in out and "trust on first use" in out


def test_pull_of_an_unknown_name_downloads_nothing(server, monkeypatch, tmp_path):  # noqa: F811
    add_entry(monkeypatch, urls=(serve(server, "w.pth", payload()),))
    with pytest.raises(ModelError, match="did you mean"):
        run("pull", "test-model", "tset-modle", "--model-dir", str(tmp_path))
    assert server.requests == []


def test_verify_exit_codes(monkeypatch, tmp_path, capsys):
    body = payload(1000)
    add_entry(monkeypatch, sha256=hashlib.sha256(body).hexdigest())
    assert run("verify", "--model-dir", str(tmp_path)) == 0
    assert "no known models" in capsys.readouterr().out
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "test-model.pth").write_bytes(body)
    assert run("verify", "--model-dir", str(tmp_path)) == 0
    assert capsys.readouterr().out.startswith("ok")
    (folder / "test-model.pth").write_bytes(body[::-1])
    assert run("verify", "test-model", "--model-dir", str(tmp_path)) == models_cli.EXIT_MISMATCH == 2
    assert "MISMATCH" in capsys.readouterr().out


def test_models_needs_a_subcommand():
    with pytest.raises(SystemExit):
        run()
