"""What a batch did, image by image: the :class:`Outcome` of each job, the JSON-lines :class:`Report` that records
each as soon as it is known (a killed run leaves an exact record of what it finished), and the
:class:`BatchSummary` the caller gets back. ``tessera resize`` reports its files with the same :class:`Outcome`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .recipe import Recipe

REPORT_NAME = "tessera-batch.jsonl"
STATUSES = ("done", "skipped", "failed")


@dataclass
class Outcome:
    """One line of the report: a file, its status ("done", "skipped" or "failed"), and what came of it."""

    file: str
    status: str
    seconds: float = 0.0
    error: str | None = None
    output: str | None = None
    streamed: bool = False
    worker: str | None = None
    settings: str | None = None  # the digest of the recipe the output was made with (:mod:`.recipe`)

    def line(self) -> str:
        """The JSON line: the fields that say something (no nulls, no false flags) and the time it was written."""
        data = {k: v for k, v in asdict(self).items() if v is not None and v is not False}
        data["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return json.dumps(data, ensure_ascii=False)


@dataclass
class BatchSummary:
    """What a batch did: every outcome, the report's path, and notices for the user."""

    outcomes: list[Outcome] = field(default_factory=list)
    report: Path | None = None
    seconds: float = 0.0
    notices: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def counts(self) -> dict[str, int]:
        return {s: self.count(s) for s in STATUSES}

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def describe(self) -> str:
        c = self.counts()
        return (f"{c['done']} done, {c['skipped']} skipped (already there), {c['failed']} failed "
                f"in {self.seconds:.1f}s")


class Report:
    """The JSON-lines report: one line per image, flushed as soon as the image is finished (appended to a
    previous run's lines, so a resumed batch keeps the whole history)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def add(self, outcome: Outcome) -> None:
        self._file.write(outcome.line() + "\n")
        self._file.flush()

    def add_recipe(self, recipe: Recipe) -> None:
        """The line that says what a digest on the lines after it stands for."""
        line = {"settings": recipe.digest, "recipe": recipe.values,
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._file.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._file.flush()

    def add_summary(self, summary: BatchSummary) -> None:
        self._file.write(json.dumps({"summary": summary.counts(), "seconds": round(summary.seconds, 3)}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_lines(path: str | Path) -> list[dict[str, Any]]:
    """Every line of a report as a mapping (a line cut short by a killed run, or not JSON, is ignored)."""
    lines = []
    with open(path, encoding="utf-8", errors="replace") as file:
        for text in file:
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict):
                lines.append(data)
    return lines


def read_report(path: str | Path) -> list[dict[str, Any]]:
    """The image lines of a report."""
    return [line for line in read_lines(path) if "file" in line]
