"""Route table: which worker answers a URL path, chosen as wws's router chooses.

Routes are wws-style patterns: `/api/hello` is fixed, `/api/[id]` has a dynamic segment and
`/docs/[...path]` a catch-all one (the rest of the path, one segment or more); their values reach
the worker in `params`. Precedence is wws's (crates/router): every fixed route first; then the
dynamic routes, compared segment by segment (a fixed segment before a dynamic one, so `/a/[id]`
wins `/a/b` over `/[id]/b`); then the catch-all routes, the longest first. The server also puts
static files between fixed and dynamic routes (see server.py), as wws does.

Stricter than wws, on purpose: two routes of the same shape (`/a/[id]` and `/a/[name]`) are a
configuration error rather than the alphabetically first one winning, and a catch-all segment
must be the last of its route (wws matches one in the middle inconsistently).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

# The grammar, as data the operator's admission reuses (api.py puts ROUTE_RE in the CRD). Written in
# the common subset of Python's `re` and RE2 (Kubernetes reads `pattern` with Go's regexp): match it
# whole (re.fullmatch). A parameter name is ASCII letters, digits and '_'; any other segment is fixed
# text without '[' or ']'; a catch-all is the last segment. ROUTE_RE cannot say that a parameter
# name appears once (that needs a back-reference): Route checks it, and so does the operator.
PARAM_NAME = r"[A-Za-z0-9_]+"
_FIXED_SEGMENT = r"[^/\[\]]+"
ROUTE_RE = rf"^(/+({_FIXED_SEGMENT}|\[{PARAM_NAME}\]))*(/+\[\.\.\.{PARAM_NAME}\])?/*$"
# Paths the server answers itself; a worker route on one of them (trailing slashes aside) is refused.
RESERVED_PATHS = ("/healthz", "/readyz", "/metrics")
RESERVED_RE = "^(" + "|".join(RESERVED_PATHS) + ")/*$"

_PARAM = re.compile(rf"^\[(\.\.\.)?({PARAM_NAME})\]$")
_BRACKETS = re.compile(r"[\[\]]")
_FIXED, _DYNAMIC, _TAIL = 0, 1, 2  # kinds of segments and of routes, in wws's order


class RouteError(ValueError):
    """A route pattern that cannot be served; the message names the pattern."""


def split_path(path: str) -> tuple[str, ...]:
    """URL path -> segments; empty segments and trailing slashes do not count (`/a//b/` is `/a/b`)."""
    return tuple(s for s in path.split("/") if s)


def check_route(pattern: str) -> str:
    """The pattern, if a route can have it; RouteError with the reason otherwise."""
    Route(pattern, "")
    return pattern


@dataclass(frozen=True)
class Route:
    pattern: str
    target: str
    segments: tuple[str, ...] = field(init=False)
    params: tuple[tuple[int, str], ...] = field(init=False)  # (index, name) of dynamic segments
    tail: str | None = field(init=False)  # the catch-all parameter, always the last segment

    def __post_init__(self) -> None:
        if not self.pattern.startswith("/"):
            raise RouteError(f"route {self.pattern!r}: must start with '/'")
        segments = split_path(self.pattern)
        params: list[tuple[int, str]] = []
        tail = None
        for i, seg in enumerate(segments):
            m = _PARAM.match(seg)
            if m:
                name = m.group(2)
                if name in {n for _, n in params} or name == tail:
                    raise RouteError(f"route {self.pattern!r}: parameter [{name}] appears twice")
                if m.group(1):
                    if i != len(segments) - 1:
                        raise RouteError(f"route {self.pattern!r}: the catch-all segment [...{name}] must be "
                                         "the last one")
                    tail = name
                else:
                    params.append((i, name))
            elif _BRACKETS.search(seg):
                raise RouteError(
                    f"route {self.pattern!r}: segment {seg!r} is not a parameter; "
                    "a parameter is a whole segment like [id] or [...rest] (ASCII letters, digits, _)"
                )
        object.__setattr__(self, "segments", segments)
        object.__setattr__(self, "params", tuple(params))
        object.__setattr__(self, "tail", tail)

    @property
    def kind(self) -> int:
        return _TAIL if self.tail is not None else _DYNAMIC if self.params else _FIXED

    @property
    def dynamic(self) -> bool:
        return self.kind != _FIXED

    def _segment_key(self) -> tuple[tuple[int, str], ...]:
        dynamic = {i for i, _ in self.params}
        last = len(self.segments) - 1
        return tuple((_TAIL if self.tail is not None and i == last else _DYNAMIC if i in dynamic else _FIXED, s)
                     for i, s in enumerate(self.segments))

    @property
    def precedence(self) -> tuple[int, int, tuple[tuple[int, str], ...]]:
        """Sort key, lowest first: wws's order of routes (crates/router, `impl Ord for Route`)."""
        n = len(self.segments)
        if self.kind == _FIXED:
            return (_FIXED, n, ())
        if self.kind == _DYNAMIC:
            return (_DYNAMIC, n, self._segment_key())
        return (_TAIL, -n, self._segment_key())  # the longest catch-all first

    @property
    def shape(self) -> tuple[str | None, ...]:
        """The pattern with parameter names erased: two routes with one shape always collide."""
        dynamic = {i for i, _ in self.params}
        shape: list[str | None] = [None if i in dynamic else s for i, s in enumerate(self.segments)]
        if self.tail is not None:
            shape[-1] = "[...]"
        return tuple(shape)

    def match(self, parts: tuple[str, ...]) -> dict[str, str] | None:
        n = len(self.segments)
        if self.tail is None and len(parts) != n:
            return None
        if self.tail is not None and len(parts) < n:  # a catch-all takes one segment or more,
            if n == 1 and not parts:  # but at the root it also takes `/` (wws: the tail is "")
                return {self.tail: ""}
            return None
        dynamic = dict(self.params)
        for i, (want, got) in enumerate(zip(self.segments[:n - 1] if self.tail else self.segments, parts)):
            if i not in dynamic and want != got:
                return None
        params = {name: parts[i] for i, name in self.params}
        if self.tail is not None:
            params[self.tail] = "/".join(parts[n - 1:])
        return params


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
        self.routes: list[Route] = sorted(built.values(), key=lambda r: (r.precedence, r.pattern))

    def match(self, path: str) -> RouteMatch | None:
        parts = split_path(path)
        for route in self.routes:
            params = route.match(parts)
            if params is not None:
                return RouteMatch(route.target, route.pattern, params, route.dynamic)
        return None

    def __len__(self) -> int:
        return len(self.routes)
