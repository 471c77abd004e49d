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


def main(*argv: str) -> int:
    """The whole `tessera` command line, as a user runs it (typed errors become one line and an exit code)."""
    from tessera import cli

    return cli.main(["models", *argv])


def test_pull_without_published_checksum_waits_for_trust(server, monkeypatch, tmp_path, capsys):  # noqa: F811
    body = payload()
    digest = hashlib.sha256(body).hexdigest()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),))
    assert main("pull", "test-model", "--model-dir", str(tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and digest in err[0] and "--trust" in err[0]
    assert not (tmp_path / "models" / "test-model.pth").exists()

    assert main("pull", "test-model", "--model-dir", str(tmp_path), "--trust") == 0
    out = capsys.readouterr().out
    assert digest in out and "unverified" in out
    assert (tmp_path / "models" / "test-model.pth").read_bytes() == body
    assert len(server.requests) == 1  # the confirming pull used the kept download


@pytest.mark.parametrize("answer, code", [("y", 0), ("n", 2)])
def test_pull_on_a_terminal_asks_before_installing(server, monkeypatch, tmp_path, capsys, answer, code):  # noqa: F811
    body = payload()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),))
    monkeypatch.setattr(models_cli, "_can_ask", lambda: True)
    asked: list[str] = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or answer)
    assert main("pull", "test-model", "--model-dir", str(tmp_path)) == code
    assert asked == ["Install it? [y/N] "]
    assert hashlib.sha256(body).hexdigest() in capsys.readouterr().err
    assert (tmp_path / "models" / "test-model.pth").exists() == (answer == "y")
    assert len(server.requests) == 1


def test_pull_sha256_pins_the_download(server, monkeypatch, tmp_path, capsys):  # noqa: F811
    body = payload()
    add_entry(monkeypatch, urls=(serve(server, "w.pth", body),))
    assert main("pull", "test-model", "--model-dir", str(tmp_path), "--sha256", "0" * 64) == 2
    assert "not the expected sha256" in capsys.readouterr().err
    assert main("pull", "test-model", "--model-dir", str(tmp_path),
                "--sha256", hashlib.sha256(body).hexdigest()) == 0


def test_pull_from_a_mirror(server, monkeypatch, tmp_path, capsys):  # noqa: F811
    body = payload()
    add_entry(monkeypatch, urls=("http://127.0.0.1:9/never",), sha256=hashlib.sha256(body).hexdigest())
    mirror = serve(server, "w.pth", body)
    assert main("pull", "test-model", "--model-dir", str(tmp_path), "--url", server.url("/gone.pth"),
                "--url", mirror) == 0
    assert (tmp_path / "models" / "test-model.pth").read_bytes() == body
    assert [path for path, _ in server.requests] == ["/gone.pth", "/w.pth"]
    capsys.readouterr()
    assert main("pull", "test-model", "test-model", "--url", mirror, "--model-dir", str(tmp_path)) == 2
    assert "one model" in capsys.readouterr().err


def test_pull_max_download_bounds_an_endless_response(server, monkeypatch, tmp_path, capsys):  # noqa: F811
    server.endless["/endless.pth"] = None
    add_entry(monkeypatch, urls=(server.url("/endless.pth"),))
    assert main("pull", "test-model", "--model-dir", str(tmp_path), "--trust", "--max-download", "1M") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "more than 1,048,576 bytes" in err[0]
    assert list((tmp_path / "models").iterdir()) == []


def test_pull_trust_records_a_file_copied_in_by_hand(monkeypatch, tmp_path, capsys):
    add_entry(monkeypatch)
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "test-model.pth").write_bytes(payload())
    assert run("pull", "test-model", "--model-dir", str(tmp_path)) == 0
    assert f"will not load until you run `tessera models pull test-model --model-dir {tmp_path} --trust`" \
        in capsys.readouterr().out
    assert run("verify", "--model-dir", str(tmp_path)) == models_cli.EXIT_MISMATCH
    assert capsys.readouterr().out.startswith("unchecked")
    assert run("pull", "test-model", "--model-dir", str(tmp_path), "--trust") == 0
    assert "the sha256 you trusted" in capsys.readouterr().out
    assert run("verify", "--model-dir", str(tmp_path)) == 0
    assert capsys.readouterr().out.startswith("unverified")


def test_list_and_verify_show_unverified_files(server, monkeypatch, tmp_path, capsys):  # noqa: F811
    add_entry(monkeypatch, urls=(serve(server, "w.pth", payload()),))
    assert run("list", "--model-dir", str(tmp_path)) == 0
    assert "none (confirm at pull)" in capsys.readouterr().out
    assert run("pull", "test-model", "--model-dir", str(tmp_path), "--trust") == 0
    capsys.readouterr()
    assert run("list", "--model-dir", str(tmp_path)) == 0
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("test-model")]
    assert "unverified" in line
    assert run("verify", "test-model", "--model-dir", str(tmp_path)) == 0
    assert capsys.readouterr().out.startswith("unverified test-model")


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
