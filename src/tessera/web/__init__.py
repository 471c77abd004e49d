"""The local web UI (Gradio): Inpaint, Faces and Upscale tabs over the same task registry as the CLI.

``tessera serve`` starts it (:mod:`tessera.cli.serve`); :func:`tessera.web.app.build_app` builds it for tests or
embedding. Modules: ``app`` (builds and launches the app), ``config`` (what an app is set up with), ``layout``
(the page: tabs, controls, events), ``handlers`` (the jobs over the task registry, the page helpers), ``jobs``
(job board, cancel, progress, errors), ``limits`` (upload and result limits), ``results`` (previews, saved
results), ``retention`` (output folder and sweeps), ``controls`` (controls from the option schema), ``i18n``
(English and Simplified Chinese), ``access`` (host and password rules, login throttle), ``models`` (the model
choices a client may send), ``uploads`` (which server files a job may read), ``editor`` (the mask editor's images
decoded by tessera, its strokes made a mask), ``queue_events`` (whether a job's client is still there),
``wording`` (messages with control labels instead of CLI flags). Importing this package imports nothing heavy;
``app`` imports gradio.
"""
