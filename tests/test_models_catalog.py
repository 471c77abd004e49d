"""The model catalog: consistent entries, names users type, the cache location."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tessera.errors import ModelError
from tessera.models import catalog
from tessera.models.catalog import CATALOG, cache_dir, find_entry, get_entry, model_path, models_dir

MODELS_MD = Path("/work/shared/MODELS.md")


def test_names_and_lookup_keys_are_unique():
    names = [entry.name for entry in CATALOG]
    assert len(names) == len(set(names))
    owners: dict[str, str] = {}
    for entry in CATALOG:
        for key in {catalog._key(k) for k in (entry.name, *entry.aliases, entry.filename,
                                              Path(entry.filename).stem)}:
            assert owners.setdefault(key, entry.name) == entry.name, f"{key!r} names two models"
    assert len({entry.filename for entry in CATALOG}) == len(CATALOG)


@pytest.mark.parametrize("entry", CATALOG, ids=lambda entry: entry.name)
def test_entry_is_consistent(entry):
    assert entry.name == entry.name.lower() and " " not in entry.name
    assert entry.task in ("upscale", "restore", "inpaint", "face", "parse")
    if entry.bundled is None:
        assert entry.urls and all(url.startswith("https://") for url in entry.urls)
    else:  # inside a package: never downloaded, its files pinned by sha256
        assert not entry.urls and entry.filename.endswith(".safetensors")
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in (entry.bundled.param_sha256, entry.bundled.bin_sha256))
    assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
    assert entry.md5 is None or re.fullmatch(r"[0-9a-f]{32}", entry.md5)
    assert entry.license
    assert entry.scale >= 1
    assert (entry.archive is None) == (entry.archive_member is None)
    if entry.task == "face" and not entry.auxiliary:
        assert entry.input_range == (-1.0, 1.0)
        assert entry.face_size in (256, 512, 1024, 2048)
        assert entry.face_template == ("gpen" if entry.architecture == "GPEN" else "facexlib")
    else:
        assert entry.input_range == (0.0, 1.0) and entry.face_size is None


@pytest.mark.skipif(not MODELS_MD.is_file(), reason="the shared facts file is not on this machine")
@pytest.mark.parametrize("entry", CATALOG, ids=lambda entry: entry.name)
def test_published_facts_match_models_md(entry):
    facts = MODELS_MD.read_text(encoding="utf-8")
    for checksum in (entry.sha256, entry.md5):
        if checksum:
            assert checksum in facts
    if entry.urls and "modelscope" not in entry.urls[0]:
        assert entry.urls[0] in facts
    if entry.size_bytes:
        assert f"{entry.size_bytes:,}" in facts


def test_required_models_are_listed():
    required = {"big-lama", "big-lama-original", "realesrgan-x4plus", "realesrgan-x2plus", "realesr-general-x4v3",
                "gfpgan-1.4", "restoreformer", "codeformer", "gpen-bfr-256", "gpen-bfr-512", "gpen-bfr-1024",
                "gpen-bfr-2048"}
    assert required <= set(catalog.model_names())


@pytest.mark.parametrize("typed, name", [
    ("lama", "big-lama"), ("big-lama", "big-lama"), ("Big-LaMa", "big-lama"), ("big-lama.pt", "big-lama"),
    ("realesrgan-x4plus", "realesrgan-x4plus"), ("RealESRGAN_x4plus", "realesrgan-x4plus"),
    ("RealESRGAN_x4plus.pth", "realesrgan-x4plus"), ("gpen-bfr-512", "gpen-bfr-512"), ("GPEN-BFR-512", "gpen-bfr-512"),
    ("gfpgan-1.4", "gfpgan-1.4"), ("GFPGANv1.4", "gfpgan-1.4"), ("codeformer", "codeformer"),
    ("restoreformer", "restoreformer"), ("lama-original", "big-lama-original"),
])
def test_names_users_type(typed, name):
    assert get_entry(typed).name == name


def test_unknown_name_suggests_the_nearest():
    assert find_entry("realesrgan-x3plus") is None
    with pytest.raises(ModelError, match="did you mean 'realesrgan-x4plus'"):
        get_entry("realesrgan-x3plus")


def test_original_lama_is_extracted_from_its_zip():
    entry = get_entry("big-lama-original")
    assert (entry.archive, entry.archive_member) == ("big-lama.zip", "big-lama/models/best.ckpt")
    assert entry.download_name == "big-lama.zip" and entry.checksum_kind == "none"


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("TESSERA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "tessera"
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "th"))
    assert cache_dir() == tmp_path / "th"
    assert cache_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert models_dir(tmp_path / "explicit") == tmp_path / "explicit" / "models"
    entry = get_entry("gpen-bfr-512")
    assert model_path(entry, tmp_path) == tmp_path / "models" / "GPEN-BFR-512.pth"
    assert catalog.digests_path(entry, tmp_path) == tmp_path / "models" / "GPEN-BFR-512.pth.digests.json"
    assert not (tmp_path / "th").exists()  # looking things up creates nothing
