"""Route table: which worker answers a URL path.

Routes are wws-style patterns: `/api/hello` is fixed, `/api/[id]` has a dynamic segment whose
value reaches the worker in `params`. When several routes match, the one whose dynamic segments
sit deepest wins, as in wws: every dynamic segment costs its 1-based depth, lowest total wins,
so `/a/fixed` beats `/a/[id]`, which beats `/[id]/b`. The server also puts static files between
fixed and dynamic routes (see server.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_PARAM = re.compile(r"^\[(\w+)\]$")
_BRACKETS = re.compile(r"[\[\]]")


class RouteError(ValueError):
    """A route pattern that cannot be served; the message names the pattern."""


def split_path(path: str) -> tuple[str, ...]:
    """URL path -> segments; empty segments and trailing slashes do not count (`/a//b/` is `/a/b`)."""
    return tuple(s for s in path.split("/") if s)


@dataclass(frozen=True)
class Route:
    pattern: str
    target: str
    segments: tuple[str, ...] = field(init=False)
    params: tuple[tuple[int, str], ...] = field(init=False)  # (index, name) of dynamic segments

    def __post_init__(self) -> None:
        if not self.pattern.startswith("/"):
            raise RouteError(f"route {self.pattern!r}: must start with '/'")
        segments = split_path(self.pattern)
        params: list[tuple[int, str]] = []
        for i, seg in enumerate(segments):
            m = _PARAM.match(seg)
            if m:
                if m.group(1) in {name for _, name in params}:
                    raise RouteError(f"route {self.pattern!r}: parameter [{m.group(1)}] appears twice")
                params.append((i, m.group(1)))
            elif _BRACKETS.search(seg):
                raise RouteError(
                    f"route {self.pattern!r}: segment {seg!r} is not a parameter; "
                    "a parameter is a whole segment like [id] (letters, digits, _)"
                )
        object.__setattr__(self, "segments", segments)
        object.__setattr__(self, "params", tuple(params))

    @property
    def dynamic(self) -> bool:
        return bool(self.params)

    @property
    def score(self) -> int:
        """Lower is more specific: the sum of the 1-based depths of the dynamic segments."""
        return sum(i + 1 for i, _ in self.params)

    @property
    def shape(self) -> tuple[str | None, ...]:
        """The pattern with parameter names erased: two routes with one shape always collide."""
        dynamic = {i for i, _ in self.params}
        return tuple(None if i in dynamic else s for i, s in enumerate(self.segments))

    def match(self, parts: tuple[str, ...]) -> dict[str, str] | None:
        if len(parts) != len(self.segments):
            return None
        dynamic = dict(self.params)
        for i, (want, got) in enumerate(zip(self.segments, parts)):
            if i not in dynamic and want != got:
                return None
        return {name: parts[i] for i, name in self.params}


@dataclass(frozen=True)
class RouteMatch:
    target: str
    pattern: str
    params: dict[str, str]
    dynamic: bool


class RouteTable:
    """Routes ordered by precedence; building it rejects patterns that would collide."""

    def __init__(self, routes: Iterable[tuple[str, str]]) -> None:
        built: dict[tuple[str | None, ...], Route] = {}
        for pattern, target in routes:
            route = Route(pattern, target)
            other = built.get(route.shape)
            if other is not None:
                raise RouteError(
                    f"route {route.pattern!r} of {route.target!r} collides with {other.pattern!r} of {other.target!r}"
                )
            built[route.shape] = route
        # Precedence: score, then fewer parameters, then the pattern text (stable across runs).
        self.routes: list[Route] = sorted(built.values(), key=lambda r: (r.score, len(r.params), r.pattern))

    def match(self, path: str) -> RouteMatch | None:
        parts = split_path(path)
        for route in self.routes:
            params = route.match(parts)
            if params is not None:
                return RouteMatch(route.target, route.pattern, params, route.dynamic)
        return None

    def __len__(self) -> int:
        return len(self.routes)
