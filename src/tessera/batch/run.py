""":func:`run_batch`: one task over a folder, its options checked before any image, then planned, resumed, run.

The order: the task (from the registry) and its options, the output and report folders, the device; then the
plan (:mod:`.plan`), the model names resolved to files and the settings that change pixels (:mod:`.recipe`),
the jobs a previous run finished with those settings recorded as skipped, and the rest run in this process or on local workers (:mod:`.local`) or on Ray actors (:mod:`.ray`, imported only
then). Every outcome goes to the report as it arrives.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import OptionError, look_up_option
from ..progress import ProgressCallback
from ..tasks.registry import TASKS
from .local import run_locally
from .plan import Job, finished_output, plan_jobs
from .recipe import Recipe, batch_recipe, changes, recorded_recipes
from .report import REPORT_NAME, BatchSummary, Outcome, Report
from .worker import Settings

BatchProgress = Callable[[Outcome, int, int], None]


def run_batch(task: str, input_dir: str | Path, output_dir: str | Path, *, masks: str | Path | None = None,
              recursive: bool = False, pattern: str | None = None, format: str = "same",
              workers: int | None = None, ray: str | None = None, max_ram: int | str | None = None,
              quality: int = 95, model_dir: str | None = None, report: str | Path | None = None,
              redo: bool = False, skip_existing: bool = False, on_outcome: BatchProgress | None = None,
              progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
              **options: Any) -> BatchSummary:
    """Run ``task`` (a name of :data:`tessera.tasks.registry.TASKS`) on every image of ``input_dir`` into
    ``output_dir``.

    ``masks``: a mask file for all images, or a folder of masks matched by stem (tasks that take a mask).
    ``format``: same, png, jpg, webp or tif. ``workers``: local processes (default: one per GPU, else 1 = this
    process). ``ray``: a Ray address (``auto`` for a running cluster) to run on Ray actors instead; an already
    initialised Ray is used as it is. ``max_ram``: bytes (or "8G") one image may take in memory before it is
    streamed; default half the machine's memory shared among the workers. ``redo``: process every image again.
    An output a previous run finished is kept when the report says it was made with the same settings
    (:mod:`.recipe`: the options that change pixels, the models and their hashes) and made again otherwise;
    ``skip_existing`` keeps every finished output whatever its settings. ``on_outcome(outcome, finished,
    total)`` is called after each image; ``progress`` receives the per-image events (this process only). Task
    options (``model``, ``scale``, ``device``...) are validated up front.
    """
    from ..image.write import check_quality
    from ..options import parse_options, parse_size

    name = look_up_option(task, TASKS, "batch task")
    chosen = TASKS[name]
    named = {k: v for k, v in options.items()  # loaded models (not names) are checked by the task itself
             if not (k in chosen.weight_fields and v is not None and not isinstance(v, str))}
    checked = parse_options(chosen.schema, named)
    if not chosen.takes_mask and masks is not None:
        raise OptionError(f"--masks applies to {', '.join(n for n, t in TASKS.items() if t.takes_mask)}, "
                          f"not to {name}")
    if chosen.takes_mask and masks is None:
        raise OptionError(f"batch {name} needs --masks (a mask file for all images, or a folder of masks)")
    check_quality(quality)
    try:
        ram = parse_size(max_ram)
    except ValueError as error:
        raise OptionError(f"option max_ram: {error}") from None
    if redo and skip_existing:
        raise OptionError("--redo processes every image again and --skip-existing keeps every output: give one")
    started = time.monotonic()
    out = Path(output_dir)
    device = checked.device if ray is None else "auto"
    _check_before_work(out, Path(report) if report else None, device)
    jobs = plan_jobs(input_dir, out, masks=masks, recursive=recursive, pattern=pattern, format=format)
    folder = str(model_dir) if model_dir else None
    recipe = batch_recipe(chosen, checked, options, quality=int(quality), model_dir=folder,
                          device_type=_device_type(device, ray))
    summary = BatchSummary(report=Path(report) if report else out / REPORT_NAME)
    made_with, recipes = recorded_recipes(summary.report)
    log = Report(summary.report)
    log.add_recipe(recipe)
    total = len(jobs)

    def record(outcome: Outcome) -> None:
        if outcome.status == "done":
            outcome.settings = recipe.digest
        summary.outcomes.append(outcome)
        log.add(outcome)
        if on_outcome is not None:
            on_outcome(outcome, len(summary.outcomes), total)

    try:
        resumed = Resume(recipe, made_with, recipes, skip_existing)
        pending = [job for job in jobs if redo or not resumed.keeps(job, record)]
        summary.notices.extend(resumed.notices())
        if pending:  # every model file was resolved (and checked) by batch_recipe
            settings = Settings(name, dict(options), folder, int(quality), ram,
                                device=checked.device if checked.device != "auto" else None)
            if ray is not None:
                from .ray import run_on_ray

                run_on_ray(pending, settings, address=ray, workers=workers, record=record, summary=summary)
            else:
                run_locally(pending, settings, workers=workers, record=record, summary=summary,
                            progress=progress, cancel=cancel)
    finally:
        summary.seconds = time.monotonic() - started
        log.add_summary(summary)
        log.close()
    return summary


class Resume:
    """Which finished outputs of a previous run a rerun keeps: those the report says were made with the same
    recipe (or any, with ``skip_existing``); outputs it has no record of are kept too, and counted."""

    def __init__(self, recipe: Recipe, made_with: dict[str, str | None], recipes: dict[str, dict[str, Any]],
                 skip_existing: bool):
        self.recipe, self.made_with, self.recipes, self.skip_existing = recipe, made_with, recipes, skip_existing
        self.unrecorded = 0
        self.changed: dict[str | None, int] = {}  # the old digest -> outputs redone because they were made with it

    def keeps(self, job: Job, record: Callable[[Outcome], None]) -> bool:
        """Whether ``job``'s output is there and kept (then recorded as skipped) or must be made (again)."""
        previous = finished_output(job)
        if previous is None:
            return False
        digest = self.made_with.get(job.name)
        if digest is None:
            self.unrecorded += 1
        elif digest != self.recipe.digest and not self.skip_existing:
            self.changed[digest] = self.changed.get(digest, 0) + 1
            return False
        record(Outcome(job.name, "skipped", 0.0, None, str(previous), settings=digest))
        return True

    def notices(self) -> list[str]:
        said = [f"{count} output(s) made with other settings ({changes(self.recipes.get(digest), self.recipe.values)})"
                f" are made again; --skip-existing keeps them" for digest, count in self.changed.items()]
        if self.unrecorded:
            said.append(f"{self.unrecorded} existing output(s) with no recorded settings were kept; --redo makes "
                        f"them again")
        return said


def _device_type(device: str, ray: str | None) -> str:
    """"cpu", "cuda" or "mps": what ``auto`` choices are made for (on Ray, the actors': GPUs if it has any)."""
    if ray is not None:
        from .ray import connect

        return "cuda" if connect(ray).cluster_resources().get("GPU") else "cpu"
    if device == "auto":
        from ..engine import resolve_device

        return resolve_device("auto").type
    return device.split(":")[0].lower()


def _check_before_work(output_dir: Path, report: Path | None, device: str) -> None:
    """The output folder (and the report's) can be created and written, and a named device exists here (on Ray
    the actors' machines decide), before an image is read."""
    from ..image.write import check_output_folder

    check_output_folder(output_dir)
    if report is not None:
        check_output_folder(report.parent)
    if device != "auto":
        from ..engine import resolve_device

        resolve_device(device)
