"""The model server's connection guard as a state machine (time passed in)."""

from __future__ import annotations

import pytest

from models.serving.guard import Deadlines, Limits


def test_deadlines_by_phase() -> None:
    d = Deadlines(Limits(header_s=10, body_s=30, idle_s=60, max_connections=2))
    assert d.opened("a", 0.0) and d.opened("b", 0.0)
    assert not d.opened("c", 0.0) and d.refused == 1  # the cap
    d.head_done("a", 5.0)  # body due at 35
    assert d.expired(10.0) == ["b"]  # b never sent a head
    assert d.expired(34.9) == []
    d.body_done("a")  # handled: no deadline
    assert d.expired(1000.0) == []
    d.idle("a", 1000.0)  # next head due after idle + header
    assert d.expired(1069.9) == [] and d.expired(1070.0) == ["a"]
    assert d.timed_out == {"header": 2, "body": 0} and len(d) == 0
    assert d.opened("c", 1070.0)  # room again


def test_trickling_bytes_do_not_extend_the_header_deadline_and_closed_is_forgotten() -> None:
    d = Deadlines(Limits(header_s=2))
    d.opened("a", 0.0)
    d.head_done("a", 1.0)
    assert d.expired(31.0) == ["a"] and d.timed_out["body"] == 1
    d.opened("b", 0.0)
    d.closed("b")
    assert d.expired(100.0) == []


@pytest.mark.parametrize("bad", [{"header_s": 0}, {"body_s": -1}, {"max_connections": 0}])
def test_limits_are_checked(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Limits(**bad)  # type: ignore[arg-type]
