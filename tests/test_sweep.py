"""The architecture sweep (bench/sweep.py): tiled at auto settings against spandrel's untiled call.

A representative subset runs in ``make test``: a plain convolution network, a U-Net with a size multiple, window
attention (SwinIR: the far-border bands that were 187 levels off), patch attention on a lattice (DITN), and two
networks with a whole-image path (RCAN's pooled channel attention, RealCUGAN's squeeze-and-excitation) that must
be found non-local and feathered. The whole sweep is marked long (``make test-all``); its table is committed
in bench/results/sweep.json and the README.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import sweep  # noqa: E402
from architectures import ARCHITECTURES  # noqa: E402

SUBSET = {"SPAN": True, "DRUNet": True, "SwinIR": True, "DITN": True, "RCAN": False, "RealCUGAN_fast": False}
NON_LOCAL_BOUND = 2  # uint8 levels the non-local subset stays within at a 96 px window (measured: 1)


@pytest.mark.slow
@pytest.mark.parametrize("name,local", SUBSET.items())
def test_tiled_at_auto_settings_matches_untiled(name, local):
    row = sweep.sweep_one(name)
    assert row["tiles"] > 1  # cut, or the comparison proves nothing
    assert row["local"] is local
    assert sweep.check(row) is None
    assert row["max_levels"] <= (sweep.LOCAL_BOUND if local else NON_LOCAL_BOUND)


@pytest.mark.long
def test_the_whole_sweep_holds_its_bounds():
    problems = [problem for name in ARCHITECTURES if (problem := sweep.check(sweep.sweep_one(name)))]
    assert not problems
