"""The public API: every name ``tessera.__all__`` lists resolves, ``from tessera import *`` works, and the surface
stays small (spandrel's ~17 names are the measure)."""
from __future__ import annotations

import subprocess
import sys

import pytest

import tessera

MAX_PUBLIC_NAMES = 30


@pytest.mark.parametrize("name", tessera.__all__)
def test_every_listed_name_resolves(name):
    assert getattr(tessera, name) is not None


def test_star_import_binds_every_listed_name():
    namespace: dict = {}
    exec("from tessera import *", namespace)
    assert set(tessera.__all__) <= set(namespace)


def test_dir_shows_the_public_names():
    assert set(tessera.__all__) <= set(dir(tessera))


def test_the_surface_stays_small():
    assert len(tessera.__all__) <= MAX_PUBLIC_NAMES, sorted(tessera.__all__)
    assert len(set(tessera.__all__)) == len(tessera.__all__)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        tessera.no_such_name  # noqa: B018


def test_results_and_errors_are_the_library_types():
    from tessera import errors
    from tessera.tasks.result import Result

    assert tessera.Result is Result
    for name in ("TesseraError", "InputError", "OptionError", "OutputError", "ModelError", "ResourceError",
                 "CancelledError"):
        assert getattr(tessera, name) is getattr(errors, name)
        assert issubclass(getattr(tessera, name), tessera.TesseraError)


def test_import_is_cheap():
    """``import tessera`` (what ``tessera --help`` pays first) loads no torch, numpy or decoder."""
    code = ("import sys, tessera; heavy = {'torch', 'numpy', 'PIL', 'cv2', 'tifffile'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
