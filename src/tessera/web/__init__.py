"""The local web UI (Gradio): Inpaint, Faces and Upscale tabs over the same task registry as the CLI.

``tessera serve`` starts it (:mod:`tessera.cli.serve`); :func:`tessera.web.app.build_app` builds it for tests or
embedding. Modules: ``app`` (builds and launches the app), ``config`` (what an app is set up with), ``layout``
(the page: tabs, controls, events), ``handlers`` (the jobs over the task registry), ``viewer`` (tile pyramids
the page's full-resolution viewer draws, its strokes made a mask; its browser side is ``static/viewer.js``),
``editing`` (the Inpaint tab's versions: paint, run, continue, undo, redo, mask upload), ``regions`` and
``regions_text`` (regions saved for hand editing as a .zip, and re-stitched), ``jobs`` (job board, cancel,
phases and progress, job memory, errors), ``notices`` (warnings shown on the page), ``limits`` (upload limits,
the memory a job may take), ``results`` (output formats, saved results, previews), ``retention`` (output folder
and sweeps), ``controls`` (controls from the option schema), ``i18n`` (English and Simplified Chinese labels),
``language`` (the language switch kept across reloads), ``wording`` (server messages for the page: control
labels instead of CLI flags, whole messages in Chinese), ``access`` (host and password rules, login throttle),
``models`` (the model choices a client may send), ``uploads`` (which server files a job may read),
``queue_events`` (whether a job's client is still there). Importing this package imports nothing heavy;
``app`` imports gradio.
"""
