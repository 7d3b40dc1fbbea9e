"""docs/limits.md names, for every limit, the test that proves it: each named test
must exist (and not be expected to fail), and every Config field that bounds
something must be on the page."""

from __future__ import annotations

import ast
import dataclasses
import re

import trio_gws as gws

import realproc

PAGE = realproc.REPO / "docs" / "limits.md"
TESTS = realproc.REPO / "tests"

#: Config fields that bound a wait or a buffer (the page must cover each).
BOUNDS = {
    "handshake_timeout", "close_timeout", "max_content_length", "max_request_line",
    "max_header_bytes", "max_header_count", "write_queue_size", "write_buffer_limit",
    "max_connections", "max_connections_per_ip", "parallel_limit", "ping_interval",
    "ping_timeout", "read_buffer_size",
}


def test_every_named_test_exists() -> None:
    named = re.findall(r"`((?:hostile/)?test_\w+\.py)(?:::(\w+))?`", PAGE.read_text())
    assert len(named) > 40
    for path, function in named:
        source = TESTS / path
        assert source.is_file(), f"{path} does not exist"
        if function:
            tree = ast.parse(source.read_text())
            defined = {node.name: node for node in ast.walk(tree)
                       if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
            assert function in defined, f"{path} has no {function}"
            # A test expected to fail (or skipped) proves nothing.
            marks = " ".join(ast.unparse(d) for d in defined[function].decorator_list)
            assert "xfail" not in marks and "skip" not in marks, f"{path}::{function}"


def test_every_bounding_config_field_is_covered() -> None:
    text = PAGE.read_text()
    fields = {field.name for field in dataclasses.fields(gws.Config)}
    assert BOUNDS <= fields  # a renamed field must be renamed here and on the page
    missing = sorted(name for name in BOUNDS if f"`{name}`" not in text)
    assert not missing, f"docs/limits.md does not cover {missing}"
