"""Route table: wws file-tree patterns, [param] and [...catch-all] segments, and wws's precedence."""

from __future__ import annotations

import pytest

from wasminfer_runtime.routing import RouteError, RouteTable


def _table(*patterns: str) -> RouteTable:
    return RouteTable((p, p) for p in patterns)


def test_fixed_routes_beat_dynamic_ones() -> None:
    table = _table("/[id]", "/fixed", "/[id]/fixed", "/sub/[id]")
    cases = {
        "/a": ("/[id]", {"id": "a"}),
        "/fixed": ("/fixed", {}),
        "/a/fixed": ("/[id]/fixed", {"id": "a"}),
        "/sub/b": ("/sub/[id]", {"id": "b"}),
    }
    for path, (pattern, params) in cases.items():
        m = table.match(path)
        assert m is not None, path
        assert (m.pattern, m.params) == (pattern, params), path
        assert m.dynamic == bool(params)
    assert table.match("/does/not/exist") is None


def test_wws_router_cases() -> None:
    """wws's own router test (crates/router, `retrieve_best_route`, tests/data/params), path for path."""
    table = _table("/[id]", "/[id]/fixed", "/[id]/sub", "/fixed", "/sub/[...all]", "/sub/[id]", "/sub/sub/[...all]")
    cases = {
        "/any": "/[id]",
        "/fixed": "/fixed",
        "/any/fixed": "/[id]/fixed",
        "/any/sub": "/[id]/sub",
        "/sub/any": "/sub/[id]",
        "/sub/any/catch/all/routes": "/sub/[...all]",
        "/sub/sub/any/catch/all/routes": "/sub/sub/[...all]",
        "/donot/exist": None,
    }
    for path, pattern in cases.items():
        m = table.match(path)
        assert (m.pattern if m else None) == pattern, path
    m = table.match("/sub/sub/any/catch/all/routes")
    assert m is not None and m.params == {"all": "any/catch/all/routes"} and m.dynamic


def test_a_fixed_segment_wins_over_a_dynamic_one_at_the_same_place() -> None:
    # wws compares dynamic routes segment by segment, a fixed segment first: `/a/[id]` wins `/a/b`.
    table = _table("/a/[id]", "/[id]/b")
    for path, pattern in {"/a/b": "/a/[id]", "/a/c": "/a/[id]", "/z/b": "/[id]/b"}.items():
        m = table.match(path)
        assert m is not None and m.pattern == pattern, path


def test_catch_all_routes() -> None:
    table = _table("/", "/docs", "/docs/[...path]", "/docs/[id]/edit", "/[...rest]")
    cases = {
        "/": ("/", {}),
        "/docs": ("/docs", {}),
        "/docs/a": ("/docs/[...path]", {"path": "a"}),  # one segment: no dynamic route of length 2
        "/docs/a/edit": ("/docs/[id]/edit", {"id": "a"}),  # a dynamic route before any catch-all
        "/docs/a/b/c": ("/docs/[...path]", {"path": "a/b/c"}),  # the longest catch-all first
        "/other/x": ("/[...rest]", {"rest": "other/x"}),
    }
    for path, (pattern, params) in cases.items():
        m = table.match(path)
        assert m is not None and (m.pattern, m.params) == (pattern, params), path
    root_only = _table("/[...all]")
    m = root_only.match("/")
    assert m is not None and m.params == {"all": ""}  # at the root, a catch-all also takes `/`


def test_root_index_trailing_and_double_slashes() -> None:
    table = _table("/", "/api", "/api/items/[id]")
    assert table.match("/") is not None and table.match("/")
    assert table.match("")
    assert table.match("/api/")
    m = table.match("//api//items/7/")
    assert m is not None and m.params == {"id": "7"}
    assert table.match("/api/items") is None


def test_multiple_params_and_targets() -> None:
    table = RouteTable([("/users/[user]/posts/[post]", "posts"), ("/users/[user]", "user")])
    m = table.match("/users/ann/posts/42")
    assert m is not None and m.target == "posts" and m.params == {"user": "ann", "post": "42"}
    m = table.match("/users/ann")
    assert m is not None and m.target == "user"


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        (["/a/[id]", "/a/[name]"], "collides with"),
        (["/x", "/x/"], "collides with"),
        (["/item-[id]"], "is not a parameter"),
        (["/[id]/[id]"], "appears twice"),
        (["/[i-d]"], "is not a parameter"),
        (["/a/[...x]", "/a/[...y]"], "collides with"),
        (["/[...x]/edit"], "must be the last one"),
        (["/[id]/[...id]"], "appears twice"),
        (["relative"], "must start with '/'"),
    ],
)
def test_bad_patterns_are_refused(patterns: list[str], message: str) -> None:
    with pytest.raises(RouteError, match=message) as err:
        _table(*patterns)
    assert patterns[-1] in str(err.value)
