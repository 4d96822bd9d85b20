"""Which device profile a worker's pods use: derived from its models, or set, with timed fallbacks.

Pure: the decision depends only on the spec, the models, the configuration, the profile recorded in
status and the pods' scheduling conditions (whose timestamps live in the API, so a restarted
operator reaches the same decision at the same moment). Moving back from a fallback also depends on
what the capacity checks (`capacity`) found, and since when.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from wasminfer_operator.api import Placement
from wasminfer_operator.observe import PodView
from wasminfer_operator.profiles import OperatorConfig
from wasminfer_operator.render import NamedModel
from wasminfer_runtime.formats import needs_no_profile


@dataclass(frozen=True)
class Decision:
    profile: str | None  # None when it cannot be decided; `failure` says why
    chain: tuple[str, ...] = ()
    failure: tuple[str, str] | None = None  # (reason, message)
    switched_from: str | None = None  # set when this decision moved to the next profile
    unschedulable: tuple[str, str] | None = None  # (since, message) for pods of the current profile
    retry_after: float | None = None  # seconds until the pending fallback is due
    fallback_due: str | None = None  # when it is due (RFC 3339): stable across reconciles, unlike retry_after
    moved_back_from: str | None = None  # set when this decision returned from a fallback profile
    room: str | None = None  # with moved_back_from: where the capacity check found room
    move_back_check: float | None = None  # seconds until the preferred profiles are checked again

    @property
    def primary(self) -> str | None:
        return self.chain[0] if self.chain else None

    @property
    def fell_back(self) -> bool:
        return self.profile is not None and self.profile != self.primary


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def derived_profile(models: list[NamedModel], cfg: OperatorConfig) -> tuple[str | None, tuple[str, str] | None]:
    """The profile the models need; (None, failure) when no profile serves one or two disagree."""
    needs: dict[str, list[str]] = {}
    for m in models:
        if needs_no_profile(m.spec.device) or m.spec.served:  # served elsewhere: called, not loaded
            continue
        backend = m.spec.resolved_backend
        name = cfg.profile_for_model(m.spec.device, backend)
        if name is None:
            return None, (
                "NoDeviceProfile",
                f"model {m.name} needs device {m.spec.device.value} with backend {backend.value}, and no device profile provides it",
            )
        needs.setdefault(name, []).append(m.name)
    if len(needs) > 1:
        detail = "; ".join(f"{p}: {', '.join(ms)}" for p, ms in sorted(needs.items()))
        return None, ("ConflictingModels", f"the models need different device profiles ({detail}); set spec.placement.profile")
    if needs:
        return next(iter(needs)), None
    return cfg.default_profile, None


class Placed(Protocol):
    """A spec with a placement: a WasmWorker's, or an InferenceModel's serving."""

    @property
    def placement(self) -> Placement: ...


def decide(
    spec: Placed,
    models: list[NamedModel],
    cfg: OperatorConfig,
    current: str | None,
    pods: list[PodView],
    now: datetime,
) -> Decision:
    primary = spec.placement.profile
    if primary is None:
        primary, failure = derived_profile(models, cfg)
        if failure is not None:
            return Decision(profile=None, failure=failure)
    assert primary is not None
    chain = (primary, *(p for p in spec.placement.fallbacks if p != primary))
    unknown = [p for p in chain if p not in cfg.profiles]
    if unknown:
        known = ", ".join(sorted(cfg.profiles))
        return Decision(profile=None, chain=chain, failure=("UnknownProfile", f"profile(s) {', '.join(unknown)} not configured (known: {known})"))

    profile = current if current in chain else primary
    assert profile is not None
    mine = [p for p in pods if p.profile == profile and not p.terminating]
    # Pods of the profile that cannot be placed count even while others run: a scale-up or a new
    # revision stuck past the deadline moves the worker on (the running pods stay until the
    # fallback's pods are ready, as a rollout does). A pod waiting a moment for a device its
    # predecessor frees is not stuck for fallbackAfterSeconds.
    stuck = [p for p in mine if p.unschedulable_since is not None]
    if not stuck:
        return Decision(profile=profile, chain=chain)
    first = min(stuck, key=lambda p: p.unschedulable_since or "")
    since = first.unschedulable_since or ""
    unschedulable = (since, first.unschedulable_message)
    position = chain.index(profile)
    if position + 1 >= len(chain):
        return Decision(profile=profile, chain=chain, unschedulable=unschedulable)
    after = spec.placement.fallback_after_seconds or cfg.fallback_after_seconds
    waited = (now - parse_time(since)).total_seconds()
    if waited >= after:
        return Decision(profile=chain[position + 1], chain=chain, switched_from=profile, unschedulable=unschedulable)
    due = (parse_time(since) + timedelta(seconds=after)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Decision(
        profile=profile, chain=chain, unschedulable=unschedulable, retry_after=max(after - waited, 0.5), fallback_due=due
    )


@dataclass(frozen=True)
class Seen:
    """A profile the capacity check found room under, continuously since `since`."""

    since: datetime
    detail: str


def move_back_candidates(decision: Decision, fell_back_at: datetime, now: datetime, cfg: OperatorConfig) -> tuple[str, ...]:
    """The profiles, most preferred first, whose capacity is worth checking now: those before the
    current one in the chain, once moveBackAfterSeconds have passed since the fallback."""
    if not cfg.move_back or decision.profile is None or not decision.fell_back or decision.switched_from is not None:
        return ()
    if (now - fell_back_at).total_seconds() < cfg.move_back_after_seconds:
        return ()
    return decision.chain[: decision.chain.index(decision.profile)]


def move_back(decision: Decision, room: Mapping[str, Seen], fell_back_at: datetime, now: datetime, cfg: OperatorConfig) -> Decision:
    """After a fallback, the most preferred earlier profile of the chain once it has had room for
    moveBackStableSeconds, no sooner than moveBackAfterSeconds after the fallback. `room`: the
    profiles the capacity check finds room under, and since when."""
    if not cfg.move_back or decision.profile is None or not decision.fell_back or decision.switched_from is not None:
        return decision
    hold = cfg.move_back_after_seconds - (now - fell_back_at).total_seconds()
    if hold > 0:
        return replace(decision, move_back_check=hold)
    for p in move_back_candidates(decision, fell_back_at, now, cfg):
        seen = room.get(p)
        if seen is None:
            continue
        wait = cfg.move_back_stable_seconds - (now - seen.since).total_seconds()
        if wait > 0:  # the most preferred profile with room, not yet for long enough: wait for it
            return replace(decision, move_back_check=max(min(wait, cfg.move_back_check_seconds), 0.5))
        return replace(
            decision, profile=p, moved_back_from=decision.profile, room=seen.detail,
            unschedulable=None, retry_after=None, fallback_due=None, move_back_check=None,
        )  # fmt: skip
    return replace(decision, move_back_check=cfg.move_back_check_seconds)
