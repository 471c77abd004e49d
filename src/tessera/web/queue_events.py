"""Whether the client of a running job is still there, read from Gradio's queue.

Gradio runs a job's function on a worker thread and cannot stop it. When the client's event stream closes (tab
closed, connection dropped) the queue marks the job's event as no longer ``alive``; when the event is cancelled
(Gradio's ``/cancel`` route: the page's Cancel, ``gradio_client``'s ``Job.cancel()``) the queue finishes the
event and forgets it. In both cases the function runs on. :func:`client_gone_probe`, called inside a handler,
returns a cheap check of those two signs, which the job board polls to cancel the job at its next batch
(:meth:`.jobs.JobBoard.run`).

This reads parts of Gradio's queue that are not a public API (``Queue.event_ids_to_events`` and
``Event.alive``, as of Gradio 6); tests/test_web_security.py checks both cases end to end, so an upgrade that
moves them shows up there.
"""
from __future__ import annotations

from collections.abc import Callable


def client_gone_probe() -> Callable[[], bool] | None:
    """For the queued event the calling handler serves: a function telling whether its client went away.

    None outside a queued event (a direct call, a test, an event with ``queue=False``): nothing to watch.
    """
    from gradio.context import LocalContext

    event_id = LocalContext.event_id.get(None)
    blocks = LocalContext.blocks.get(None)
    events = getattr(getattr(blocks, "_queue", None), "event_ids_to_events", None)
    if not event_id or events is None or events.get(event_id) is None:
        return None

    def gone() -> bool:
        event = events.get(event_id)
        return event is None or not getattr(event, "alive", True)

    return gone
