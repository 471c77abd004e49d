"""Progress events: what every task reports as it works, kept free of heavy imports so front ends can use them."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """A step of a job: ``done`` of ``total`` units of ``stage`` (tiles, regions, faces, passes)."""

    stage: str
    done: int
    total: int
    elapsed: float
    eta: float | None
    message: str = ""


ProgressCallback = Callable[[ProgressEvent], None]
