"""New namespaces that match the watched patterns are noticed however they arrive.

With namespace patterns (`--namespace 'team-*'`) kopf lists the namespaces once, then keeps a watch
on them; each (re)connection of that watch opens with a fresh listing, and kopf 1.45 skips that
listing. A namespace created between the first listing and the watch (the operator's first second)
or while the watch reconnects (every server timeout, every `410 Gone`) is in no event kopf reads:
its WasmWorkers and InferenceModels go unserved until the namespace itself next changes, which for
most namespaces is when it is deleted. Here the listing counts like any other event: adding a
namespace kopf already watches changes nothing, so only the missed ones start watchers.
"""

from __future__ import annotations

from typing import Any

from kopf._cogs.structs import bodies, references
from kopf._core.reactor import observation

KOPFS_OWN = observation.process_discovered_namespace_event  # which skips the listings


async def process_namespace_event(
    *,
    raw_event: bodies.RawEvent,
    namespaces: Any,
    insights: references.Insights,
    **_: Any,  # kopf's watcher passes its stream toggles, which namespaces do not use
) -> None:
    async with insights.revised:
        observation.revise_namespaces(raw_events=[raw_event], insights=insights, namespaces=namespaces)
        insights.revised.notify_all()


def install() -> None:
    """Makes kopf's namespace observer use `process_namespace_event` (it looks it up per watch)."""
    observation.process_discovered_namespace_event = process_namespace_event
