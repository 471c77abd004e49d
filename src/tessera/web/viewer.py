"""The photo viewer and mask painter of the page, server side: tile pyramids, the viewer's value, strokes to masks.

The page shows photos at full resolution without ever sending one whole: each photo the viewer shows (the upload,
every result) is cut into a pyramid of JPEG tiles (:func:`build_pyramid`): level 0 at full size, each further
level half the one before, down to one tile. The browser fetches only the tiles in view, at the level that
matches its zoom (``static/viewer.js``), from the output folder, which the server already serves to logged-in
users. A 40-megapixel photo at "fit" costs a handful of tiles; at 100 % the tiles of the window.

The viewer's value is one JSON text (:func:`viewer_value`): the photo's pyramid, optionally a "before" pyramid
(compare mode: a split line between before and after), optionally a mask overlay (an uploaded mask, shown at
reduced size), and the strokes painted since the photo was shown, in photo pixels. The server sets the photo;
the browser sets the strokes, and sends them only with a job (nothing polls). :func:`strokes_mask` draws the
strokes at the photo's full resolution, in the order painted (the eraser removes), as the canvas draws them.
"""
from __future__ import annotations

import json
import math
from urllib.parse import quote
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import InputError
from .results import preview

TILE = 512                        # px per side of a pyramid tile
TILE_QUALITY = 90                 # JPEG quality of the tiles: photo pixels at 100 %, small files
FULL_LEVEL_PIXELS = 120_000_000   # larger results start their pyramid at half size (or less)
OVERLAY_SIDE = 2048               # longest side of an uploaded mask's overlay image
MAX_STROKES = 5_000               # strokes and points a page may send with one job
MAX_POINTS = 100_000
DOC_FILE = "pyramid.json"         # the pyramid's description, beside its levels
MAX_PAINT_WORK = 20               # a painting may visit this many times the photo's pixels (wide strokes overlap)
MAX_BRUSH = 2_000                 # px, the largest brush the viewer offers is far below


@dataclass(frozen=True)
class Pyramid:
    """A photo's tile pyramid on disk: its full size, and the folder of ``L<level>/<row>-<col>.jpg`` tiles.

    ``first_scale`` is the downscale factor of level 0 (1 unless the photo is over :data:`FULL_LEVEL_PIXELS`).
    """

    folder: Path
    width: int
    height: int
    levels: tuple[tuple[int, int], ...]   # (width, height) of each level
    first_scale: int = 1

    def doc(self) -> dict[str, Any]:
        """What the viewer needs to draw it: sizes, the tile size and the URL of each level's tiles."""
        return {
            "width": self.width, "height": self.height, "tile": TILE, "first_scale": self.first_scale,
            "levels": [{"width": w, "height": h, "cols": math.ceil(w / TILE), "rows": math.ceil(h / TILE)}
                       for w, h in self.levels],
            "url": f"gradio_api/file={quote(self.folder.as_posix())}/",
            "id": f"{self.folder.parent.name}/{self.folder.name}",
        }


def build_pyramid(pixels: np.ndarray, folder: Path) -> Pyramid:
    """Cut ``pixels`` (HxWx3, any dtype :func:`.results.preview` takes) into a JPEG tile pyramid under ``folder``."""
    height, width = pixels.shape[:2]
    first = 1
    while (width // first) * (height // first) > FULL_LEVEL_PIXELS:
        first *= 2
    level = preview(pixels, size=(max(1, width // first), max(1, height // first))) if (
        first > 1 or pixels.dtype != np.uint8) else pixels
    sizes = []
    index = 0
    while True:
        _write_level(level, folder / f"L{index}")
        sizes.append((level.shape[1], level.shape[0]))
        if max(level.shape[:2]) <= TILE:
            break
        size = (max(1, level.shape[1] // 2), max(1, level.shape[0] // 2))
        level = cv2.resize(level, size, interpolation=cv2.INTER_AREA)
        index += 1
    pyramid = Pyramid(folder, width, height, tuple(sizes), first)
    (folder / DOC_FILE).write_text(json.dumps(pyramid.doc()), encoding="utf-8")
    return pyramid


def load_pyramid(folder: Path) -> Pyramid:
    """The pyramid :func:`build_pyramid` wrote under ``folder`` (a folder of this server's output directory)."""
    try:
        doc = json.loads((folder / DOC_FILE).read_text(encoding="utf-8"))
        levels = tuple((int(level["width"]), int(level["height"])) for level in doc["levels"])
        return Pyramid(folder, int(doc["width"]), int(doc["height"]), levels, int(doc["first_scale"]))
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError("the photo's preview is gone (the page was open too long?): upload the photo again") from None


def _write_level(level: np.ndarray, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rgb = level[:, :, :3] if level.ndim == 3 else np.dstack([level] * 3)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    for top in range(0, bgr.shape[0], TILE):
        for left in range(0, bgr.shape[1], TILE):
            ok, data = cv2.imencode(".jpg", bgr[top:top + TILE, left:left + TILE],
                                    [cv2.IMWRITE_JPEG_QUALITY, TILE_QUALITY])
            if not ok:
                raise InputError("could not encode a preview tile")
            (folder / f"{top // TILE}-{left // TILE}.jpg").write_bytes(data.tobytes())


def write_overlay(mask: np.ndarray, folder: Path) -> dict[str, Any]:
    """A see-through overlay of a full-size boolean ``mask`` for the viewer (no larger than :data:`OVERLAY_SIDE`)."""
    height, width = mask.shape
    factor = min(1.0, OVERLAY_SIDE / max(height, width))
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = cv2.resize(mask.astype(np.uint8) * np.uint8(255), size, interpolation=cv2.INTER_AREA)
    rgba = np.zeros((size[1], size[0], 4), np.uint8)
    rgba[:, :, 0], rgba[:, :, 1], rgba[:, :, 2], rgba[:, :, 3] = 140, 60, 255, small  # BGRA: the brush's pink
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mask-overlay.png"
    if not cv2.imwrite(str(path), rgba):
        raise InputError("could not write the mask overlay")
    return {"url": f"gradio_api/file={quote(path.as_posix())}", "width": width, "height": height}


def viewer_value(photo: Pyramid | None, *, before: Pyramid | None = None, overlay: dict[str, Any] | None = None,
                 editable: bool = True, version: int = 0, note: str = "") -> str:
    """The viewer's value: what to show; strokes start empty (a new photo, or one the last job used)."""
    if photo is None:
        return json.dumps({"photo": None, "strokes": []})
    return json.dumps({"photo": photo.doc(), "before": before.doc() if before else None, "overlay": overlay,
                       "editable": editable, "version": version, "note": note, "strokes": []})


@dataclass(frozen=True)
class Stroke:
    """One brush or eraser stroke in photo pixels: its width and the points it passed through (x, y)."""

    erase: bool
    size: float
    points: np.ndarray  # Nx2 float64


def parse_strokes(value: str | None) -> list[Stroke]:
    """The strokes of a viewer value the browser sent, checked: numbers, bounded counts, a sane brush size."""
    if not value:
        return []
    try:
        data = json.loads(value)
    except (TypeError, ValueError):
        raise InputError("the page sent a malformed painting: reload the page") from None
    raw = data.get("strokes") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        return []
    if len(raw) > MAX_STROKES:
        raise InputError(f"too many strokes ({len(raw):,}, at most {MAX_STROKES:,}): upload a mask instead")
    strokes, points_seen = [], 0
    for item in raw:
        try:
            size = float(item["size"])
            points = np.asarray(item["points"], dtype=np.float64).reshape(-1, 2)
        except (KeyError, TypeError, ValueError):
            raise InputError("the page sent a malformed stroke: reload the page") from None
        points_seen += len(points)
        if points_seen > MAX_POINTS:
            raise InputError(f"the painting has over {MAX_POINTS:,} points: upload a mask instead")
        if not (0 < size <= MAX_BRUSH) or not np.isfinite(points).all() or len(points) == 0:
            raise InputError("the page sent a stroke with an impossible size or position: reload the page")
        strokes.append(Stroke(bool(item.get("erase", False)), size, points))
    return strokes


_ROW_BLOCK = 4_000_000  # pixels whose distance to a segment is computed at once


def strokes_mask(strokes: list[Stroke], width: int, height: int, base: np.ndarray | None = None) -> np.ndarray:
    """The boolean mask the strokes paint on a ``width`` x ``height`` photo (over ``base``, e.g. an uploaded mask).

    A stroke covers the pixels whose centre lies within ``size / 2`` of its path (the canvas puts photo pixel
    (i, j) on the square [i, i+1) x [j, j+1), so its centre is (i + 0.5, j + 0.5)): a round-capped line exactly
    as wide as the brush the page showed, a disc for a single point. Strokes apply in the order painted, the
    eraser's clearing what was painted before it.
    """
    work = sum(_box_pixels(stroke, width, height) for stroke in strokes)
    if work > MAX_PAINT_WORK * width * height:
        raise InputError("the painting is too large to draw (wide brushes across the whole photo): upload a mask "
                         "instead, or paint with fewer strokes")
    mask = np.zeros((height, width), bool) if base is None else base.astype(bool).copy()
    for stroke in strokes:
        _paint(mask, stroke.points, stroke.size / 2, not stroke.erase)
    return mask


def _box_pixels(stroke: Stroke, width: int, height: int) -> int:
    """The pixels :func:`_paint` visits for ``stroke``: the sum of its segments' boxes, cut to the photo."""
    points = stroke.points if len(stroke.points) > 1 else np.vstack([stroke.points, stroke.points])
    radius = stroke.size / 2
    low = np.clip(np.minimum(points[:-1], points[1:]) - radius, 0, (width, height))
    high = np.clip(np.maximum(points[:-1], points[1:]) + radius + 1, 0, (width, height))
    return int(np.prod(high - low, axis=1).sum())


def _paint(mask: np.ndarray, points: np.ndarray, radius: float, value: bool) -> None:
    """Set the pixels within ``radius`` of the polyline ``points`` to ``value``, segment by segment, each within
    its own box (a wide brush's box is mostly its caps: a box per segment is less work than one for them all)."""
    height, width = mask.shape
    if len(points) == 1:
        points = np.vstack([points, points])
    for a, b in zip(points[:-1], points[1:]):
        low, high = np.minimum(a, b) - radius, np.maximum(a, b) + radius
        x0, x1 = max(0, int(np.floor(low[0]))), min(width, int(np.ceil(high[0])) + 1)
        y0, y1 = max(0, int(np.floor(low[1]))), min(height, int(np.ceil(high[1])) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        direction = b - a
        length2 = float(direction @ direction) or 1.0  # a point: t is 0, the distance is to the point
        rows = max(1, _ROW_BLOCK // (x1 - x0))
        xs = np.arange(x0, x1) + 0.5 - a[0]
        for top in range(y0, y1, rows):
            ys = (np.arange(top, min(y1, top + rows)) + 0.5 - a[1])[:, None]
            t = np.clip((xs * direction[0] + ys * direction[1]) / length2, 0.0, 1.0)
            hit = (xs - t * direction[0]) ** 2 + (ys - t * direction[1]) ** 2 <= radius * radius
            mask[top:top + hit.shape[0], x0:x1][hit] = value


# ----------------------------------------------------------------------------------------------- the component

VIEWER_TEXTS: dict[str, tuple[str, str]] = {
    "brush": ("Brush", "画笔"), "brush.tip": ("Paint what to remove (B)", "涂抹要去除的部分（B）"),
    "eraser": ("Eraser", "橡皮擦"), "eraser.tip": ("Erase paint (E)", "擦除涂抹（E）"),
    "pan": ("Pan", "平移"), "pan.tip": ("Drag to move the photo (H, or hold Space)", "拖动以移动照片（H，或按住空格）"),
    "size": ("Brush px", "笔刷像素"),
    "undo": ("Undo", "撤销"), "undo.tip": ("Undo the last stroke (Ctrl+Z)", "撤销上一笔（Ctrl+Z）"),
    "redo": ("Redo", "重做"), "redo.tip": ("Redo the stroke (Ctrl+Shift+Z)", "重做这一笔（Ctrl+Shift+Z）"),
    "clear": ("Clear", "清除"), "clear.tip": ("Remove all strokes", "清除全部笔画"),
    "fit": ("Fit", "适应"), "fit.tip": ("The whole photo in view (0)", "显示整张照片（0）"),
    "actual.tip": ("Photo pixels at 100 % (1)", "按 100% 显示照片像素（1）"),
    "out.tip": ("Zoom out (mouse wheel)", "缩小（鼠标滚轮）"), "in.tip": ("Zoom in (mouse wheel)", "放大（鼠标滚轮）"),
    "compare": ("Compare", "对比"), "compare.tip": ("Before / after with a split line you drag",
                                                   "处理前 / 处理后，拖动分割线对比"),
    "before": ("before", "处理前"), "after": ("after", "处理后"),
    "strokes": ("stroke(s)", "笔"), "empty": ("Upload a photo", "请上传照片"),
}

VIEWER_CSS = (
    ".tv { display: flex; flex-direction: column; gap: 4px; outline: none; }"
    ".tv-bar { display: flex; flex-wrap: wrap; gap: 4px; align-items: center; }"
    ".tv-btn { padding: 2px 8px; border: 1px solid var(--border-color-primary); border-radius: 4px;"
    " background: var(--button-secondary-background-fill); color: var(--body-text-color); cursor: pointer; }"
    ".tv-btn.tv-on { background: var(--button-primary-background-fill); color: var(--button-primary-text-color); }"
    ".tv-btn:disabled { opacity: 0.4; cursor: default; }"
    ".tv-size-input { width: 4.5em; }"
    ".tv-zoom { margin-left: 6px; font-variant-numeric: tabular-nums; }"
    ".tv-wrap { position: relative; width: 100%; overflow: hidden; border-radius: 6px; touch-action: none; }"
    ".tv-canvas { display: block; cursor: crosshair; }"
    ".tv-info { font-size: 0.85em; opacity: 0.75; }"
)


def viewer_script() -> str:
    """The browser side of the viewer (``static/viewer.js``), run by Gradio when the component loads."""
    return (Path(__file__).with_name("static") / "viewer.js").read_text(encoding="utf-8")


def viewer_component(elem_id: str, *, height: int, paints: bool = False, brush: int = 40, label: Any = None) -> Any:
    """The viewer as a Gradio component (a ``gr.HTML`` whose markup never changes; its script draws the value).

    ``paints``: the painting tools stay on its toolbar (disabled while the value allows no painting: no photo
    yet, a job's before/after); otherwise they show only when the value allows painting."""
    import gradio as gr

    texts = {"en": {key: pair[0] for key, pair in VIEWER_TEXTS.items()},
             "zh": {key: pair[1] for key, pair in VIEWER_TEXTS.items()}}
    return gr.HTML(value=viewer_value(None), html_template="<div class='tv'></div>", css_template=VIEWER_CSS,
                   js_on_load=viewer_script(), elem_id=elem_id, label=label, texts=texts, height=height,
                   brush=brush, paints=paints, viewer_id=elem_id)


def compare_value(before: np.ndarray, after: np.ndarray, folder: Path) -> str:
    """A viewer value comparing a job's input and result (pyramids written under ``folder``), not for painting."""
    return viewer_value(build_pyramid(after, folder / "view-after"), before=build_pyramid(before, folder / "view-before"),
                        editable=False)
