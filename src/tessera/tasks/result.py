"""What every task returns: the image (in the form it was given) and the task's report, in one object.

Tasks used to hand reports back through out-parameters (``report=[]``); a caller now reads ``result.image`` and
``result.report``. A job that streamed its result to disk returns the output path as ``image``.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

ReportT = TypeVar("ReportT")


@dataclass(frozen=True)
class Result(Generic[ReportT]):
    """A task's outcome: ``image`` (a :class:`~tessera.image.pixels.Picture` for a path or Picture input, an
    array for an array input, the written path for a streamed job) and ``report`` (the task's own report type).
    ``unchanged``: the task changed no pixel (a photo without faces), so a file can be copied rather than
    re-encoded."""

    image: Any
    report: ReportT
    unchanged: bool = False

    def __iter__(self) -> Iterator[Any]:
        """``image, report = tessera.upscale(...)`` unpacks a result."""
        return iter((self.image, self.report))


@dataclass
class StreamReport:
    """What a streamed job did: sizes, block plan and timing (``regions``: groups of holes, for inpainting)."""

    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]
    block: int
    context: int
    batch: int
    blocks: int
    model: str
    seconds: float = 0.0
    regions: int = 0
