"""dsp.config: the one config mechanism, on small structs (no files, no processes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

import msgspec
import pytest

from dsp.config import ByteSize, InvalidConfigError, convert, json_schema, load


class Part(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    __config_shorthand__: ClassVar[str] = "name"

    name: Annotated[str, msgspec.Meta(min_length=1)]
    size: ByteSize = 1024
    count: Annotated[int, msgspec.Meta(ge=3)] = 3

    def problems(self) -> list[str]:
        return [f"size={self.size} must be >= count={self.count}"] if self.size < self.count \
            else []


class Box(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    parts: Annotated[list[str | Part], msgspec.Meta(min_length=1)]


class Doc(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    boxes: list[Box] = []
    limit: int = 10
    extra: Part | None = None


def _limit(ok: Mapping[str, Any]) -> list[str]:
    boxes, limit = ok.get("boxes"), ok.get("limit")
    if isinstance(boxes, list) and isinstance(limit, int) and len(boxes) > limit:
        return [f"boxes: {len(boxes)} boxes, more than limit={limit}"]
    return []


def test_every_problem_of_every_section_with_its_path() -> None:
    data = {
        "boxes": [
            {"id": "b1", "parts": ["a", {"name": "b", "count": 1, "size": "2 KiB"}]},
            {"id": "b2", "parts": []},
            {"id": "b3", "parts": [{"name": "c", "size": 2, "count": 5}], "colour": "red"},
        ],
        "limit": "ten",
        "extra": {"name": "", "size": "lots"},
    }
    cfg, problems = convert(data, Doc, checks=_limit)
    assert cfg is None
    assert problems == [
        "[boxes.b1.parts.1] count must be >= 3, got 1",
        "[boxes.b2] parts needs at least 1 item(s), got 0",
        "[boxes.b3] colour: unknown key (known: id, parts)",
        "[boxes.b3.parts.0] size=2 must be >= count=5",
        "limit must be int, got 'ten'",
        "[extra] name must be of length >= 1, got ''",
        "[extra] size must be a size (bytes, or e.g. '512 MiB'), got 'lots'",
    ]


def test_a_check_across_sections_runs_when_its_sections_are_valid() -> None:
    boxes = [{"id": f"b{i}", "parts": ["p"]} for i in range(3)]
    # `extra` is wrong, but the boxes and the limit are valid: their check still runs
    _cfg, problems = convert({"boxes": boxes, "limit": 2, "extra": {"name": ""}}, Doc,
                             checks=_limit)
    assert problems == ["[extra] name must be of length >= 1, got ''",
                        "boxes: 3 boxes, more than limit=2"]
    # and with the default limit (not given) too
    many = [{"id": f"b{i}", "parts": ["p"]} for i in range(11)]
    assert convert({"boxes": many}, Doc, checks=_limit)[1] == [
        "boxes: 11 boxes, more than limit=10"]


def test_a_valid_document_converts_with_shorthands_and_sizes() -> None:
    cfg = load({"boxes": [{"id": "b", "parts": ["a", {"name": "b", "size": "1 MiB"}]}]}, Doc,
               source="doc.toml")
    (box,) = cfg.boxes
    assert box.parts == [Part(name="a"), Part(name="b", size=1 << 20)]
    with pytest.raises(InvalidConfigError) as err:
        load({"limit": None}, Doc, source="doc.toml")
    assert err.value.report() == "doc.toml: 1 problem\ndoc.toml: limit must be int, got None"


def test_json_schema_lets_a_size_be_a_string() -> None:
    schema = json_schema(Doc)
    size = schema["$defs"]["Part"]["properties"]["size"]
    assert size["default"] == 1024
    assert {a["type"] for a in size["anyOf"]} == {"integer", "string"}
