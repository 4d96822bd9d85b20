"""Route table: wws file-tree patterns, [param] segments and precedence."""

from __future__ import annotations

import pytest

from wasminfer_runtime.routing import RouteError, RouteTable


def _table(*patterns: str) -> RouteTable:
    return RouteTable((p, p) for p in patterns)


def test_fixed_routes_beat_dynamic_ones_and_deeper_params_win() -> None:
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


def test_a_parameter_costs_its_depth() -> None:
    # As in wws: a parameter at depth 1 costs 1, at depth 2 costs 2, so `/[id]/b` wins `/a/b`.
    table = _table("/a/[id]", "/[id]/b")
    for path, pattern in {"/a/b": "/[id]/b", "/a/c": "/a/[id]", "/z/b": "/[id]/b"}.items():
        m = table.match(path)
        assert m is not None and m.pattern == pattern, path


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
        (["relative"], "must start with '/'"),
    ],
)
def test_bad_patterns_are_refused(patterns: list[str], message: str) -> None:
    with pytest.raises(RouteError, match=message) as err:
        _table(*patterns)
    assert patterns[-1] in str(err.value)
