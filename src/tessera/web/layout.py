"""The page: a header with the device memory, three tabs (Inpaint, Faces, Upscale), the Advanced settings, and
the events that join them to the handlers of :mod:`.handlers`.

Each tab has a photo, the task's model menus (:data:`.handlers.JOBS`), the few options the tab shows itself
(:data:`TABS`), the output format and quality, Run and Cancel, and a result column (before/after slider,
download, status). Every other option of the task is a control of the one Advanced accordion, built from the
shared schemas (:func:`advanced_fields`): the engine's fields once, then each task's own. A job's inputs are the
tab's controls and the Advanced controls of its schema, in the schema's order, the engine's last.

Public event names: /upscale, /enhance, /inpaint (the jobs; their first inputs are the photo and, for /inpaint,
the mask, every other input has a default) and /cancel. Element ids (``<tab>-photo``, ``<tab>-run``,
``<tab>-status``, ``opt-<field>``...) are what the browser tests find the page by.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from ..options import EngineOptions, FaceOptions, InpaintOptions, Options
from ..tasks.registry import get_task
from .controls import option_control
from .editing import EditorHandlers, new_history
from .handlers import JOBS, WebApp
from .i18n import choice_labels, t
from .language import language_switch
from .regions import CHECKBOX_INPUT, regions_panel, wire_restitch
from .results import AUTO_FORMAT, FORMAT_CHOICES
from .viewer import viewer_component
from .wording import NOT_ON_PAGE

DEVICE_GROUP = "device"   # the concurrency group of jobs that use the device: one at a time
SCALES = ["auto", "1", "1.5", "2", "3", "4", "6", "8"]
BRUSH = ("#ff3c8c", 0.6)  # see-through, so the photo shows under the strokes; any paint counts as mask
ENGINE_FIRST_ROW = 3      # engine fields on the Advanced accordion's first row (where: device, precision, memory)


@dataclass(frozen=True)
class Tab:
    """One tab: the job it runs (a key of :data:`.handlers.JOBS`), its element-id prefix, the i18n key of its
    Run button, the options it shows itself (besides the model menus) and overrides of their controls."""

    job: str
    prefix: str
    run_key: str
    options: tuple[str, ...] = ()
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def schema(self) -> type[Options]:
        return get_task(JOBS[self.job].task).schema


TABS: dict[str, Tab] = {
    "inpaint": Tab("inpaint", "inpaint", "run.inpaint"),
    "enhance": Tab("enhance", "faces", "run.enhance", ("upscale", "strength", "faces")),
    "upscale": Tab("upscale", "upscale", "run.upscale", ("scale", "sharpen"), {
        # any factor up to 8 may be typed; the job checks it
        "scale": {"choices": SCALES, "value": "auto", "allow_custom_value": True}}),
}


def advanced_fields(tab: Tab) -> list[str]:
    """The fields of the tab's schema on the Advanced accordion, in schema order: all but the engine's (shown
    once for every tab), the tab's own controls and the ones the page has no control for."""
    engine = set(EngineOptions.model_fields)
    on_tab = {*JOBS[tab.job].menus, *tab.options}
    return [name for name in tab.schema.model_fields if name not in engine and name not in on_tab
            and name not in NOT_ON_PAGE]


def build_page(app: WebApp) -> gr.Blocks:
    """The page and its events, with ``app``'s handlers behind them."""
    keep = max(3600, int(app.config.keep_days * 86400))
    with gr.Blocks(title="tessera", analytics_enabled=False, delete_cache=(3600, min(keep, 86400))) as blocks:
        with gr.Row(equal_height=False):
            with gr.Column(scale=4):
                gr.Markdown(t("app.title"), elem_id="app-title")
                gr.Markdown(t("app.intro"))
            with gr.Column(scale=1, min_width=200):
                language_switch()
                gr.Markdown(t("app.language_hint"), elem_classes=["hint"])
        with gr.Tabs():
            with gr.Tab(t("tab.inpaint"), id="inpaint", elem_id="tab-inpaint"):
                inpaint = inpaint_tab(app)
            with gr.Tab(t("tab.faces"), id="faces", elem_id="tab-faces"):
                faces = faces_tab(app)
            with gr.Tab(t("tab.upscale"), id="upscale", elem_id="tab-upscale"):
                upscale = upscale_tab(app)
        advanced = advanced_controls()
        _wire(app, inpaint, faces, upscale, advanced)
    return blocks

# ----------------------------------------------------------------------------------------------- tabs


def inpaint_tab(app: WebApp) -> dict[str, Any]:
    """The Inpaint tab: the viewer to paint on at full resolution, mask upload and download, result versions.

    Hidden files carry the current version and the mask made from the strokes to the /inpaint job; the history
    of versions lives in the session's state (see :mod:`.editing`).
    """
    def editor(parts: dict[str, Any]) -> None:
        parts["viewer"] = viewer_component("inpaint-viewer", height=app.config.editor_height, paints=True)

    def masks(parts: dict[str, Any]) -> None:
        with gr.Row():
            parts["mask_upload"] = gr.File(label=t("mask.upload"), file_types=["image"], type="filepath",
                                           elem_id="inpaint-mask-upload", height=90)
            parts["mask_download"] = gr.File(label=t("mask.download"), interactive=False,
                                             elem_id="inpaint-mask-download", height=90)
        parts["current"] = gr.File(visible=False, elem_id="inpaint-current")
        parts["mask"] = gr.File(visible=False, elem_id="inpaint-mask")
        parts["history"] = gr.State(new_history())

    def versions(parts: dict[str, Any]) -> None:
        with gr.Row():
            parts["rerun"] = gr.Button(t("rerun"), elem_id="inpaint-rerun")
            parts["undo"] = gr.Button(t("undo.result"), elem_id="inpaint-undo")
            parts["redo"] = gr.Button(t("redo.result"), elem_id="inpaint-redo")
        parts["regions"] = regions_panel(app, own_outputs=False, wire=False)

    return _tab(app, TABS["inpaint"], masks, versions, wide=editor)


def faces_tab(app: WebApp) -> dict[str, Any]:
    """The Faces tab: the detected faces drawn under the photo (a click chooses one), and their count."""
    def detected(parts: dict[str, Any]) -> None:
        parts["detected"] = gr.Image(label=t("detected"), interactive=False, type="numpy",
                                     elem_id="faces-detected", height=360)
        parts["count"] = gr.Textbox(label=t("faces_found"), interactive=False, elem_id="faces-count")
        parts["found"] = gr.State(None)

    return _tab(app, TABS["enhance"], detected)


def upscale_tab(app: WebApp) -> dict[str, Any]:
    """The Upscale tab: the photo, the model, the scale and the weight-free method's sharpening."""
    return _tab(app, TABS["upscale"])


def _tab(app: WebApp, tab: Tab, under_photo: Callable[[dict[str, Any]], None] | None = None,
         under_run: Callable[[dict[str, Any]], None] | None = None,
         wide: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The controls every tab has: ``{name: component}``.

    The photo, then what ``wide`` adds across the page (Inpaint: its editor, which also compares before and
    after), then two columns: the options and Run (``under_photo`` above the options, ``under_run`` below Run),
    and the result: a viewer of its own comparing before and after (when there is no ``wide`` editor), the
    download and the status.
    """
    parts: dict[str, Any] = {}
    parts["photo"] = gr.File(label=t("photo"), file_types=["image"], type="filepath",
                             elem_id=f"{tab.prefix}-photo", height=120)
    if wide is not None:
        wide(parts)
    with gr.Row():
        with gr.Column():
            if under_photo is not None:
                under_photo(parts)
            for name, menu in JOBS[tab.job].menus.items():
                parts[name] = option_control(tab.schema, name, value=menu.default,
                                             choices=choice_labels(app.menu.choices(menu.slot)))
            for name in tab.options:
                parts[name] = option_control(tab.schema, name, **tab.overrides.get(name, {}))
            with gr.Row():
                parts["format"] = gr.Dropdown(list(FORMAT_CHOICES), value=AUTO_FORMAT, label=t("format"),
                                              info=t("format.info"), elem_id=f"{tab.prefix}-format")
                parts["quality"] = gr.Slider(1, 100, value=95, step=1, label=t("quality"),
                                             elem_id=f"{tab.prefix}-quality")
            with gr.Row():
                parts["run"] = gr.Button(t(tab.run_key), variant="primary", elem_id=f"{tab.prefix}-run")
                parts["cancel"] = gr.Button(t("cancel"), variant="stop", elem_id=f"{tab.prefix}-cancel")
            if under_run is not None:
                under_run(parts)
        with gr.Column():
            parts["compare"] = parts.get("viewer") or viewer_component(f"{tab.prefix}-compare",
                                                                       height=app.config.editor_height)
            parts["result"] = gr.File(label=t("result"), interactive=False, elem_id=f"{tab.prefix}-result")
            parts["status"] = gr.Markdown(elem_id=f"{tab.prefix}-status")
    return parts


def advanced_controls() -> dict[str, Any]:
    """One collapsed accordion with the engine, inpainting and face options (defaults: auto)."""
    controls: dict[str, Any] = {}
    devices = ["auto", "cpu"]
    try:
        import torch

        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        devices += ["mps"] if torch.backends.mps.is_available() else []
    except (ImportError, RuntimeError):
        pass
    engine = list(EngineOptions.model_fields)
    with gr.Accordion(t("advanced"), open=False, elem_id="advanced"):
        gr.Markdown(t("advanced.engine"))
        for row in (engine[:ENGINE_FIRST_ROW], engine[ENGINE_FIRST_ROW:]):
            with gr.Row():
                for name in row:
                    extra = {"choices": devices} if name == "device" else {}
                    controls[name] = option_control(EngineOptions, name, **extra)
        gr.Markdown(t("advanced.inpaint"))
        with gr.Row():
            for name in advanced_fields(TABS["inpaint"]):
                controls[name] = option_control(InpaintOptions, name)
        gr.Markdown(t("advanced.faces"))
        fields = advanced_fields(TABS["enhance"])
        switches = [name for name in fields if FaceOptions.model_fields[name].annotation is bool]
        for row in ([name for name in fields if name not in switches], switches):
            with gr.Row():
                for name in row:
                    controls[name] = option_control(FaceOptions, name)
    return controls

# ----------------------------------------------------------------------------------------------- events


def job_inputs(tab: Tab, parts: dict[str, Any], advanced: dict[str, Any]) -> dict[str, Any]:
    """The keyword inputs of the tab's job: the tab's controls, then its schema's Advanced ones, engine last."""
    own = [*JOBS[tab.job].menus, *tab.options, "format", "quality"]
    return {**{name: parts[name] for name in own}, **{name: advanced[name] for name in advanced_fields(tab)},
            **{name: advanced[name] for name in EngineOptions.model_fields}}


def _wire(app: WebApp, inpaint: dict[str, Any], faces: dict[str, Any], upscale: dict[str, Any],
          advanced: dict[str, Any]) -> None:
    job = {"concurrency_id": DEVICE_GROUP, "concurrency_limit": 1, "show_progress": "full"}

    def outputs(parts: dict[str, Any]) -> list[Any]:
        return [parts["result"], parts["compare"], parts["status"]]

    # Upscale: its Cancel is the public /cancel (any Cancel stops all of the session's jobs)
    upscale_event = upscale["run"].click(
        app.upscale_job, inputs=[upscale["photo"]], inputs_kwargs=job_inputs(TABS["upscale"], upscale, advanced),
        outputs=outputs(upscale), api_name="upscale", **job)
    upscale["cancel"].click(app.cancel, outputs=[upscale["status"]], cancels=[upscale_event], queue=False,
                            api_name="cancel")

    # Faces: detect on upload (with the Advanced detection options), click a face to choose it
    detection = {name: advanced[name] for name in advanced_fields(TABS["enhance"])}
    faces["photo"].change(app.detect, inputs=[faces["photo"]], inputs_kwargs=detection,
                          outputs=[faces["detected"], faces["count"], faces["found"]], api_visibility="private",
                          concurrency_id="detect", concurrency_limit=1)
    faces["detected"].select(app.toggle_face, inputs=[faces["found"], faces["faces"]],
                             outputs=[faces["faces"], faces["detected"]], api_visibility="private", queue=False)
    enhance_event = faces["run"].click(
        app.enhance_job, inputs=[faces["photo"]], inputs_kwargs=job_inputs(TABS["enhance"], faces, advanced),
        outputs=outputs(faces), api_name="enhance", **job)
    faces["cancel"].click(app.cancel, outputs=[faces["status"]], cancels=[enhance_event], queue=False,
                          api_visibility="private")

    # Inpaint: strokes -> full-resolution mask file -> the /inpaint job -> the result as the next version
    editing = EditorHandlers(app)
    private = {"api_visibility": "private"}
    history, viewer = inpaint["history"], inpaint["viewer"]
    # the events that change a session's versions take turns (one group), so none works on a stale history
    versions = {"concurrency_id": "versions", "concurrency_limit": 1, **private}
    inpaint["photo"].change(editing.open_photo, inputs=[inpaint["photo"]],
                            outputs=[viewer, history, inpaint["current"]], **versions)
    inpaint["mask_upload"].change(editing.upload_mask, inputs=[inpaint["mask_upload"], history],
                                  outputs=[viewer, history], **versions)
    pushed = [viewer, history, inpaint["mask_download"], inpaint["mask_upload"]]
    panel = inpaint["regions"]
    run_on = {"inputs": [inpaint["current"], inpaint["mask"]],
              "inputs_kwargs": {**job_inputs(TABS["inpaint"], inpaint, advanced), CHECKBOX_INPUT: panel["keep"]},
              "outputs": [*outputs(inpaint), panel["zip"]]}
    events = []
    for button, prepare, inputs, name in (
            (inpaint["run"], editing.prepare_mask, [viewer, history], {"api_name": "inpaint"}),
            (inpaint["rerun"], editing.rerun_mask, [history], private)):
        prepared = button.click(prepare, inputs=inputs, outputs=[inpaint["current"], inpaint["mask"]],
                                show_progress="minimal", **versions)
        event = prepared.success(app.inpaint_job, **name, **run_on, **job)
        event.success(editing.push_result, inputs=[inpaint["result"], history], outputs=pushed, **versions)
        events += [prepared, event]  # Cancel stops the run while its mask is being made, too
    restitched = wire_restitch(app, panel, inpaint["current"], output_format=inpaint["format"],
                               quality=inpaint["quality"], outputs=outputs(inpaint))
    restitched.success(editing.push_result, inputs=[inpaint["result"], history], outputs=pushed, **versions)
    events.append(restitched)
    for button, step in ((inpaint["undo"], editing.undo_result), (inpaint["redo"], editing.redo_result)):
        button.click(step, inputs=[history], outputs=[viewer, history, inpaint["mask_upload"]], **versions)
    inpaint["cancel"].click(app.cancel, outputs=[inpaint["status"]], cancels=events, queue=False,
                            api_visibility="private")
