"""Regions for hand editing on the web page: "Save regions for hand editing" and "Re-stitch edited regions".

The CLI's ``tessera inpaint --save-regions DIR`` writes each region's input crop, paste mask and result with a
manifest, and ``tessera stitch`` puts the (hand-edited) results back. The page does the same in two steps:

1. An Inpaint job with "Save regions for hand editing" on writes the region files into a job folder of its own
   in the output directory (:class:`JobRegions`, :func:`job_regions`) and offers them as one .zip
   (:func:`zip_regions`, written atomically). The manifest in the .zip names no server path.
2. "Re-stitch edited regions" takes that .zip back (or its manifest.json and region files, uploaded loose),
   extracts it into a fresh scratch folder (:func:`extract_archive`, :func:`gather_files`), runs the library's
   ``stitch`` on the tab's current photo and saves the result like any other job's (:func:`restitch`). The
   manifest in the .zip records the digests of the photo the job read and of its result: the status line says
   when the current photo is neither, or is the result while a feather band blends with it
   (:func:`provenance_note`).

An uploaded archive is untrusted. Before a byte is written: its central directory is bounded (read from the end
record, before Python's zipfile parses it), and so are the member count (:data:`MAX_MEMBERS`), each member's
and the total uncompressed size (:data:`MAX_MEMBER_BYTES`, :data:`MAX_TOTAL_BYTES`) and the compression ratio
of large members (:data:`MAX_RATIO`: zip bombs); names must be relative, without ``..``, drive letters or control
characters, and unique; members must be regular files or folders (no symbolic links, devices), unencrypted,
and either the one manifest.json or image files whose first bytes are an image format's (PNG, JPEG, WEBP, TIFF,
BMP). Bytes are counted while they are written, whatever the archive declared. Then the library's own manifest
checks run (:func:`tessera.tasks.inpaint_paste.read_manifest`: region files confined to the manifest's folder,
crops inside the photo, headers of the crop's size), and two more of the web's: at most
:data:`MAX_WEB_REGIONS` regions, each file listed once, and crops that cover at most :data:`MAX_CROP_COVER`
times the photo (each listed file is decoded once). Each refusal is one typed line (InputError; ResourceError
for a full disk) naming the archive, never a server path. The scratch folder is removed when the re-stitch ends.

The page's parts are built by :func:`regions_panel` (checkbox, .zip download, the "Re-stitch edited regions"
accordion) with labels from :data:`.regions_text.TEXT` (English, Simplified Chinese): keys of :mod:`.i18n` where
it has them, the English of that table otherwise. Messages are English sentences that quote the page's controls;
:data:`.regions_text.MESSAGES_ZH` has their Chinese for :mod:`.wording`.
"""
from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import gradio as gr

from ..errors import InputError, OutputError, TesseraError
from .regions_archive import (CHUNK, IMAGE_SUFFIXES, LOOSE, MANIFEST_NAME, MAX_WEB_REGIONS, check_cancel,
                              extract_archive, gather_files)
from .regions_text import RESTITCH, SAVE, text
from .retention import new_job_folder

CHECKBOX_INPUT = "keep_regions"      # the job's keyword for the checkbox (not an option: the schema's is a folder)
MAX_CROP_COVER = 8                   # the regions' crops together cover at most this many photos


def label(key: str) -> Any:
    """What a component shows for ``key``: the i18n key where :mod:`.i18n` registers it (both languages in the
    browser), else the English text."""
    from .i18n import has_key, t

    return t(key) if has_key(key) else text(key)

# ----------------------------------------------------------------------------------------------- saving


@dataclass
class JobRegions:
    """The region files of one Inpaint job, when the user asked for them (``folder`` is None otherwise).

    ``options`` goes into the task's options (``save_regions``: the folder the task writes); :meth:`zip` turns
    the written folder into the one .zip the page offers."""

    folder: Path | None
    zip_path: Path | None = field(default=None)

    @property
    def options(self) -> dict[str, Any]:
        return {} if self.folder is None else {"save_regions": self.folder}

    def zip(self, upload: str | None = None, source: str | os.PathLike[str] | None = None,
            result: str | os.PathLike[str] | None = None) -> Path | None:
        """Write the .zip of the saved regions (None when none were asked for); the loose files are then removed.
        ``upload``: the photo's name for the user; ``source`` and ``result``: the files the job read and wrote
        (see :func:`zip_regions`)."""
        if self.folder is None:
            return None
        self.zip_path = zip_regions(self.folder, upload=upload, source=source, result=result)
        shutil.rmtree(self.folder, ignore_errors=True)
        return self.zip_path


@contextlib.contextmanager
def job_regions(output_dir: Path, wanted: Any) -> Iterator[JobRegions]:
    """The regions folder of one Inpaint job: a new job folder of ``output_dir`` when ``wanted``, else nothing.

    A job that fails or is cancelled leaves no files: its job folder (loose files and any .zip) is removed."""
    if not wanted:
        yield JobRegions(None)
        return
    job = new_job_folder(Path(output_dir), "regions")
    try:
        yield JobRegions(job / "regions")
    except BaseException:
        shutil.rmtree(job, ignore_errors=True)
        raise


def zip_name(upload: str | None) -> str:
    """``<upload stem>-regions``: the .zip's name (without ``.zip``) and its top folder."""
    stem = Path(upload).stem if upload else "photo"
    stem = re.sub(r"[^\w.-]+", "_", stem).strip("._") or "photo"
    return f"{stem[:80]}-regions"


def file_digest(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes (hex): which photo a set of regions was saved from."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def zip_regions(folder: str | os.PathLike[str], *, upload: str | None = None,
                source: str | os.PathLike[str] | None = None,
                result: str | os.PathLike[str] | None = None) -> Path:
    """Zip the region files and manifest that ``save_regions`` wrote into ``folder``; return the .zip's path.

    The .zip lies beside ``folder`` (in its job folder), is written atomically, and holds one top folder
    ``<photo>-regions/`` with the manifest and the image files. The manifest's ``input`` (a server path) becomes
    null, ``photo`` names the upload, ``photo_sha256`` and ``result_sha256`` are the digests of ``source`` (the
    file the job read) and ``result`` (the file it wrote), so that a re-stitch can tell what it pastes into.
    Images are stored as they are (PNG is compressed already), the manifest deflated. OutputError for more regions than a re-stitch takes (:data:`MAX_WEB_REGIONS`)."""
    from ..image.atomic import write_atomically

    folder = Path(folder)
    manifest_file = folder / MANIFEST_NAME
    try:
        data = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise OutputError(f"the saved regions have no readable {MANIFEST_NAME} ({error})") from None
    count = len(data.get("regions") or ())
    if count > MAX_WEB_REGIONS:
        raise OutputError(f"{count:,} regions are over the {MAX_WEB_REGIONS:,} that {RESTITCH} takes: "
                          f"turn off {SAVE}, or inpaint a part of the mask at a time")
    data["input"] = None
    data["photo"] = Path(upload).name if upload else None
    data["photo_sha256"] = file_digest(source) if source is not None else None
    data["result_sha256"] = file_digest(result) if result is not None else None
    images = sorted(p for p in folder.iterdir()
                    if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.is_symlink())
    top = zip_name(upload)
    target = folder.parent / f"{top}.zip"

    def write(file: BinaryIO) -> None:
        with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            archive.writestr(f"{top}/{MANIFEST_NAME}", json.dumps(data, indent=1), compress_type=zipfile.ZIP_DEFLATED)
            for image in images:
                archive.write(image, f"{top}/{image.name}")

    write_atomically(target, write, "zip")
    return target

# ----------------------------------------------------------------------------------------------- stitching


def check_web_manifest(manifest: Any, width: int, height: int) -> None:
    """The web's bounds on a checked manifest: regions, each file listed once, crops' total cover."""
    regions = manifest.regions
    if len(regions) > MAX_WEB_REGIONS:
        raise InputError(f"the manifest lists {len(regions):,} regions, over the {MAX_WEB_REGIONS:,} that "
                         f"{RESTITCH} takes")
    seen: set[Path] = set()
    cover = 0
    for region in regions:
        for file in (region.mask, region.result):
            if file in seen:
                raise InputError(f"the manifest lists {file.name} for two regions: each region has files of its own")
            seen.add(file)
        cover += region.crop.width * region.crop.height
    if cover > MAX_CROP_COVER * width * height:
        raise InputError(f"the manifest's regions cover the photo {cover / (width * height):.0f} times, over "
                         f"the {MAX_CROP_COVER} a saved set of regions could")


@dataclass(frozen=True)
class Stitched:
    """A re-stitch's outcome: the photo it pasted into, the result, how many regions."""

    before: Any
    result: Any
    regions: int


def stitch_edited(manifest_path: Path, photo: Path, limits: Any) -> Stitched:
    """Stitch the regions of the extracted manifest into the photo file ``photo``.

    Everything that can be checked from headers is checked before the photo is decoded (within ``limits``, the
    web's :class:`~.limits.Limits`): the manifest, the web's bounds, the photo's size, the region files' sizes,
    and that the photo and its stitched copy fit in memory (:func:`~.limits.check_result_fits`)."""
    from ..image.read import read_image_size
    from ..tasks.inpaint import stitch
    from ..tasks.inpaint_paste import check_photo, check_region_files, read_manifest
    from .limits import check_result_fits, open_upload

    manifest = read_manifest(manifest_path)
    width, height = read_image_size(photo)
    check_web_manifest(manifest, width, height)
    check_photo(manifest, width, height)
    check_region_files(manifest)
    check_result_fits(photo, 1.0, control=None)  # the photo and its stitched copy, predicted from the header
    before = open_upload(str(photo), limits)
    return Stitched(before, stitch(manifest, before), len(manifest.regions))


def saved_from(manifest_path: Path) -> tuple[str | None, str | None, bool]:
    """What an (already checked) manifest records of where it came from: the digests of the photo and of the
    job's result (None where it has none) and whether it has a feather band."""
    from ..tasks.manifest_checks import read_json

    data = read_json(manifest_path, SAVE)

    def digest(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) else None

    return digest("photo_sha256"), digest("result_sha256"), bool(data.get("feather"))


def provenance_note(manifest_path: Path, photo: Path, language: str) -> str | None:
    """A note for the status when the photo re-stitched into is not the one the regions were saved from: the
    job's result (exact unless there is a feather band, which then blends with the result), or another file."""
    source, result, feathered = saved_from(manifest_path)
    if source is None:
        return None  # regions from elsewhere (the CLI): nothing to compare with
    current = file_digest(photo)
    if current == source or (current == result and not feathered):
        return None
    return text("regions.on_result" if current == result else "regions.other_photo", language)


def _hide_scratch(error: TesseraError, scratch: Path, shown: str) -> TesseraError:
    """``error`` with the scratch folder's path replaced by the archive's name (no server path on the page)."""
    message = str(error).replace("`tessera inpaint --save-regions`", SAVE).replace("--save-regions", SAVE)
    for prefix in {str(Path(os.path.realpath(scratch))), str(scratch)}:
        message = message.replace(prefix + os.sep, f"{shown}:").replace(prefix, shown)
    if message == str(error):
        return error
    try:
        return type(error)(message)
    except TypeError:
        return InputError(message)


def _uploads(files: Any) -> list[str]:
    """The upload component's value as a list of paths (one file, a list, or Gradio's file dicts)."""
    if not files:
        return []
    items = files if isinstance(files, (list, tuple)) else [files]
    return [str(item.get("path") if isinstance(item, dict) else getattr(item, "path", item)) for item in items]


def is_zip(path: Path) -> bool:
    """Whether the file starts as a .zip archive does (by content: an upload's name may say anything)."""
    try:
        with open(path, "rb") as file:
            return file.read(4) in (b"PK\x03\x04", b"PK\x05\x06")
    except OSError:
        return False


def restitch(app: Any, photo: str | None, files: Any, request: Any = None, *, fmt: str = "PNG",
             quality: Any = 95, progress: Any = None, compare: bool = False) -> tuple[str, ...]:
    """Re-stitch edited regions into the tab's current photo; return (the result file, the status line), or
    with ``compare`` (the result file, the viewer's before/after value, the status line) as a job returns them
    (the before/after pyramids are written into the result's folder, :func:`.viewer.compare_value`).

    ``files``: the upload's value: one .zip, or the manifest.json and region files. The photo and the uploads go
    through the app's upload gate (files Gradio received for this session only); the work runs as a job of the
    app's board, one at a time with the device's jobs, and its errors become one line on the page."""
    from .handlers import _language
    from .limits import check_quality, check_upload
    from .results import check_format, save_result

    paths = _uploads(files)
    language = _language(request)
    with app._job("stitch", request, photo, *paths) as job:
        started = time.perf_counter()
        check_format(fmt)
        check_quality(quality)
        image = check_upload(app._upload(photo, request), app.config.limits)
        if not paths:
            raise InputError(f"no edited regions: upload the .zip of {SAVE} first")
        admitted = [check_upload(app._upload(path, request, "edited regions file"), app.config.limits,
                                 "edited regions file") for path in paths]
        zips = [path for path in admitted if is_zip(path)]
        if zips and len(admitted) > 1:
            raise InputError("upload either the one .zip of the edited regions or its files, not both")
        shown = Path(paths[0]).name if zips else LOOSE
        _report(progress, 0.05, text("regions.progress.read", language))
        scratch = new_job_folder(app.config.output_dir, "restitch-scratch")
        try:
            try:
                manifest = (extract_archive(zips[0], scratch, name=shown, cancel=job.cancel) if zips
                            else gather_files(admitted, scratch, cancel=job.cancel))
                _report(progress, 0.3, text("regions.progress.paste", language))
                stitched = stitch_edited(manifest, image, app.config.limits)
                note = provenance_note(manifest, image, language)
            except TesseraError as error:
                raise _hide_scratch(error, scratch, shown) from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        check_cancel(job.cancel)
        _report(progress, 0.8, text("regions.progress.save", language))
        result = stitched.result
        path = save_result(result, app.config.output_dir, upload=Path(photo).name, task="restitched", fmt=fmt,
                           quality=int(quality), cancel=job.cancel)
        app.gate.issue(path, job.session)  # the page may go on working on the result, as on a job's
        seconds = f"{time.perf_counter() - started:.1f} " + ("秒" if language.startswith("zh") else "s")
        status = text("regions.done", language).format(
            size=f"{result.width}×{result.height}", count=stitched.regions,
            archive=shown if zips else text("regions.loose", language), seconds=seconds,
            file=path.name)
        if note:
            status += " · " + note
        if not compare:
            return str(path), html.escape(status)
        from .viewer import compare_value

        return str(path), compare_value(stitched.before.pixels, result.pixels, path.parent), html.escape(status)


def _report(progress: Any, fraction: float, words: str) -> None:
    if progress is not None:
        progress(fraction, desc=words)

# ----------------------------------------------------------------------------------------------- the page


def regions_panel(app: Any, photo: Any = None, *, output_format: Any = None, quality: Any = None,
                  outputs: Sequence[Any] | None = None, own_outputs: bool = True,
                  wire: bool = True) -> dict[str, Any]:
    """Build, where it is called (inside the Inpaint tab), the checkbox "Save regions for hand editing", the
    .zip download and the "Re-stitch edited regions" accordion (upload, button and, unless ``outputs`` are
    given, a result file and a status of its own); with ``wire``, join the button to :func:`restitch`
    (:func:`wire_restitch`, with ``photo``, ``output_format``, ``quality``, ``outputs``). Returns
    ``{name: component}``: ``keep`` (the checkbox: the Inpaint job's :data:`CHECKBOX_INPUT` input), ``zip``
    (the job's .zip output), ``upload``, ``run``, ``result`` and ``status`` (when the panel has its own) and,
    when wired, ``event``. With ``wire=False`` the caller wires it later, once its outputs exist
    (``own_outputs=False``: the panel makes no result and status, the caller passes the tab's)."""
    parts: dict[str, Any] = {
        "keep": gr.Checkbox(value=False, label=label("regions.save"), info=label("regions.save.info"),
                            elem_id="inpaint-save-regions"),
        "zip": gr.File(label=label("regions.zip"), interactive=False, elem_id="inpaint-regions-zip"),
    }
    with gr.Accordion(label("regions.restitch"), open=False, elem_id="inpaint-restitch"):
        gr.Markdown(label("regions.restitch.hint"), elem_classes=["hint"])
        parts["upload"] = gr.File(label=label("regions.upload"), file_count="multiple", type="filepath",
                                  file_types=[".zip", ".json", *IMAGE_SUFFIXES], elem_id="inpaint-restitch-upload")
        parts["run"] = gr.Button(label("regions.run"), variant="primary", elem_id="inpaint-restitch-run")
        if outputs is None and own_outputs:
            parts["result"] = gr.File(label=label("regions.result"), interactive=False,
                                      elem_id="inpaint-restitch-result")
            parts["status"] = gr.Markdown(elem_id="inpaint-restitch-status")
    if wire:
        parts["event"] = wire_restitch(app, parts, photo, output_format=output_format, quality=quality,
                                       outputs=outputs)
    return parts


def wire_restitch(app: Any, parts: dict[str, Any], photo: Any, *, output_format: Any = None,
                  quality: Any = None, outputs: Sequence[Any] | None = None) -> Any:
    """Join ``parts["run"]`` to :func:`restitch`: a queued event of the device's concurrency group (one at a
    time with the jobs), public as ``/restitch``; returns the event (for a Cancel's ``cancels``, or to chain
    what follows a result). Its inputs: ``photo`` (the tab's current photo), the upload, the tab's format and
    quality controls (PNG at 95 when None). Its outputs: the panel's result and status, or ``outputs``: a job's
    three (result file, before/after viewer, status)."""
    from .layout import DEVICE_GROUP

    fmt = output_format if output_format is not None else gr.State("PNG")
    level = quality if quality is not None else gr.State(95)
    targets = list(outputs) if outputs is not None else [parts["result"], parts["status"]]
    if len(targets) not in (2, 3):
        raise ValueError("outputs: (result file, before/after viewer, status)")
    compare = len(targets) == 3

    def restitch_event(image: str | None, files: Any, chosen_format: str, chosen_quality: Any,
                       request: gr.Request, progress: Any = gr.Progress()) -> tuple[str, ...]:
        return restitch(app, image, files, request, fmt=chosen_format, quality=chosen_quality, progress=progress,
                        compare=compare)

    return parts["run"].click(
        restitch_event, inputs=[photo, parts["upload"], fmt, level], outputs=targets,
        api_name="restitch", concurrency_id=DEVICE_GROUP, concurrency_limit=1, show_progress="full")
