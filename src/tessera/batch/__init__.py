"""Folders of photos: one task over every image, resumable, a bad file failing alone, on local processes or Ray.

:func:`run_batch` lists the images of a folder (optionally recursively, filtered by a glob), plans one job per
image (its output mirrors the input tree; its mask matched by file stem, or one mask for all), skips the jobs
whose output already exists and decodes (a previous run finished them: outputs are written atomically, so a file
at the final path is complete), and runs the rest:

- in this process (one worker), on ``workers`` local processes, or as Ray actors (``ray``); every worker loads
  the task's models once and writes its outputs itself;
- an image larger than the RAM budget is streamed (:func:`tessera.tasks.files.process_file` decides, as for a
  single file) into a tiled BigTIFF next to where the in-memory output would have gone (same stem, ``.tif``);
- each finished, skipped or failed image is one JSON line of the report (file, status, seconds, error, output),
  flushed at once, so a killed run leaves an exact record of what it finished.

The modules: :mod:`.plan` (jobs, output names, resume checks), :mod:`.worker` (the per-worker
:class:`~tessera.batch.worker.Processor`), :mod:`.report` (outcomes, the JSON-lines report, the summary),
:mod:`.local` (this process or a process pool), :mod:`.ray` (Ray actors), :mod:`.run` (:func:`run_batch`) and
:mod:`.resize` (``tessera resize``, which shares the image listing and the outcomes).
"""
from .plan import FORMATS
from .report import REPORT_NAME, BatchSummary, Outcome, read_report
from .run import run_batch
from .worker import check_models

__all__ = ["FORMATS", "REPORT_NAME", "BatchSummary", "Outcome", "check_models", "read_report", "run_batch"]
