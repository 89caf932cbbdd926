"""The Grafana dashboard queries only series that exist: every metric name in every
panel's PromQL is one docs/metrics.md lists (and the scrape tests hold the services
to that list); every service has panels."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra.scrape import documented

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "pumpwatch.json"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_CALL = re.compile(r"\b[a-z_]+\s*\(")
_IDENT = re.compile(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b")
KEYWORDS = {"and", "or", "unless", "bool", "offset"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, strings removed)."""
    e = _STRING.sub(" ", expr)
    e = _MATCHERS.sub(" ", e)
    e = _RANGE.sub(" ", e)
    e = _GROUPING.sub(" ", e)
    e = _CALL.sub("(", e)
    e = _NUMBER.sub(" ", e)
    return {m for m in _IDENT.findall(e) if m not in KEYWORDS}


def series(name: str, docs: dict[str, str]) -> str | None:
    """The documented series ``name`` reads (histogram parts map to their histogram)."""
    if name in docs:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and docs.get(base) == "histogram":
            return base
    return None


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def test_metric_names_are_parsed_out_of_promql() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (le, route) (rate(a_seconds_bucket{code=~"5.."}[5m])))'
        ' / on (job) b_total offset 5m'
    ) == {"a_seconds_bucket", "b_total"}


def test_every_panel_query_names_documented_series() -> None:
    docs = documented()
    dash = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    graphs = [p for p in panels(dash["panels"]) if p["type"] != "row"]
    assert graphs
    for p in graphs:
        exprs = [t["expr"] for t in p.get("targets", [])]
        assert exprs, f"panel {p['title']!r} has no query"
        for expr in exprs:
            names = metric_names(expr)
            assert names, f"panel {p['title']!r}: no metric in {expr!r}"
            unknown = sorted(n for n in names if series(n, docs) is None)
            assert not unknown, f"panel {p['title']!r} queries {unknown}, not in docs/metrics.md"
            used |= {s for n in names if (s := series(n, docs)) is not None}
    for prefix in ("pumpwatch_consumer_", "pumpwatch_server_", "pumpwatch_dashboard_",
                   "pumpwatch_edge_"):
        assert any(u.startswith(prefix) for u in used), f"no panel for {prefix}*"


@pytest.mark.parametrize("name", ["pumpwatch_consumer_nonesuch_total", "process_cpu"])
def test_an_unknown_name_is_caught(name: str) -> None:
    assert series(name, documented()) is None
