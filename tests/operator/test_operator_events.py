"""The reconciler's events reach kopf's poster although the reconciler runs in tasks of its own:
kopf.event looks its queue up in context variables that kopf sets only in its per-object tasks.

kopf's side is played as kopf plays it (processing.py sets the two posting variables in each
object's task, running.py sets the settings for the whole operator); the queue is kopf's own
event queue type, read here instead of being drained by kopf's poster."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest
from kopf._core.engines import posting

from wasminfer_operator.handlers import KopfEvents, kopf_event

# What ObjectView.reference() gives: a body stub, which kopf turns into the event's involvedObject.
STUB = {"apiVersion": "wasminfer.dev/v1alpha1", "kind": "WasmWorker", "metadata": {"namespace": "ns", "name": "w", "uid": "uid-w"}}


async def kopf_object_task(queue: posting.K8sEventQueue, handler: Any) -> None:
    """What kopf does around a watch handler: the posting variables, set in the object's task."""
    posting.event_queue_loop_var.set(asyncio.get_running_loop())
    posting.event_queue_var.set(queue)
    handler()


async def test_events_posted_from_a_reconciler_task_reach_kopfs_queue() -> None:
    posting.settings_var.set(kopf.OperatorSettings())
    queue: posting.K8sEventQueue = asyncio.Queue()
    events = KopfEvents()
    await asyncio.create_task(kopf_object_task(queue, events.capture))  # a worker or model event

    async def reconcile() -> None:  # a reconciler task: started outside kopf's object tasks
        events(dict(STUB), "Warning", "InUse", "deletion waits")

    await asyncio.create_task(reconcile())
    posted = queue.get_nowait()
    assert (posted.ref["name"], posted.type, posted.reason, posted.message) == ("w", "Warning", "InUse", "deletion waits")


async def test_kopf_event_alone_cannot_post_from_a_reconciler_task() -> None:
    """Why the context is captured: the same call without it fails inside kopf."""
    posting.settings_var.set(kopf.OperatorSettings())
    queue: posting.K8sEventQueue = asyncio.Queue()
    await asyncio.create_task(kopf_object_task(queue, lambda: None))

    async def reconcile() -> None:
        kopf_event(dict(STUB), "Normal", "Available", "ready")

    with pytest.raises(LookupError):
        await asyncio.create_task(reconcile())
    assert queue.empty()
