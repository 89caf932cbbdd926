"""Config files as typed msgspec Structs, every mistake in a file reported at once.

:func:`convert` turns a parsed TOML document into a Struct section by section:
it walks the Struct's fields (and those of nested Structs, lists and tables of
Structs, and dataclasses such as :class:`dsp.ReportConfig`), converts each
value on its own, and collects every problem with its TOML path instead of
stopping at the first (``[pumps.p01.bearings.0] n_balls must be >= 3, got
1``). A section whose fields all convert is built, and its own ``problems()``
method, if it has one, runs the semantic checks that span fields (``hop`` >
``nfft``, ``segment_bytes`` > ``max_bytes``): they return a list of problems
rather than raising. A section with ``__config_shorthand__ = "field"`` may be
written as a bare string, meaning ``{field = "..."}`` (a bearing by its
designation, a channel by its name). Checks across sections get the sections that converted
(:func:`convert`'s ``checks``), so one section's mistake hides no other.

Why here: the edge, the cloud consumer and the simulator's pump files all
use it; ``dsp`` is the one package each of them may import, and this is pure
data conversion (no I/O, clocks or logging), as ``dsp`` must be. The shared
sections (TLS, the MQTT connection) are defined once here too.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import msgspec

T = TypeVar("T")
Path = tuple[str, ...]


class InvalidConfigError(ValueError):
    """An invalid config: ``problems`` lists every problem, each with its TOML path."""

    def __init__(self, problems: list[str], *, source: str = "config") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(f"{source}: {p}" for p in self.problems))

    def report(self) -> str:
        """One message: every problem on its own line, each prefixed by the file."""
        n = len(self.problems)
        head = f"{self.source}: {n} problem{'s' if n != 1 else ''}"
        return "\n".join([head, *(f"{self.source}: {p}" for p in self.problems)])


# --- byte sizes ("512 MiB") -------------------------------------------------------------------

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "KIB": 1024, "M": 10**6, "MB": 10**6,
          "MIB": 1024**2, "G": 10**9, "GB": 10**9, "GIB": 1024**3, "T": 10**12,
          "TB": 10**12, "TIB": 1024**4}


def parse_size(value: object) -> int:
    """``1073741824``, ``"1 GiB"``, ``"512MB"`` -> bytes (ValueError otherwise)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m and m.group(2).upper() in _UNITS:
            return int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    raise ValueError(f"must be a size (bytes, or e.g. '512 MiB'), got {value!r}")


_SIZE_FLAG = "pumpwatch_size"
#: Bytes, written as an integer or a string such as ``"512 MiB"`` (converted by :func:`convert`).
ByteSize = Annotated[int, msgspec.Meta(
    ge=0, extra={_SIZE_FLAG: True},
    extra_json_schema={"x-size": True})]


def _is_size(tp: Any) -> bool:
    while get_origin(tp) is Annotated:
        tp, *metas = get_args(tp)
        if any(isinstance(m, msgspec.Meta) and (m.extra or {}).get(_SIZE_FLAG) for m in metas):
            return True
    return False


def json_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema of config Struct ``cls`` (for editors; sizes as integer or string)."""

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            if node.pop("x-size", False):
                keep = {k: v for k, v in node.items() if k in ("default", "title")}
                return {**keep, "description": "bytes, or a size such as '512 MiB'",
                        "anyOf": [{"type": "integer", "minimum": 0},
                                  {"type": "string", "pattern": _SIZE_RE.pattern}]}
            if isinstance(node.get("pattern"), str) and node["pattern"].endswith("\\Z"):
                # Python's end-of-string anchor is ECMAScript's '$' (no multiline flag)
                node = {**node, "pattern": node["pattern"][:-2] + "$"}
            return {k: fix(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    out: dict[str, Any] = fix(msgspec.json.schema(cls))
    return out


# --- the walk -----------------------------------------------------------------------------------

_BAD = object()  # a value that did not convert (its problems are recorded)


def where(path: Path, key: str | None = None) -> str:
    """``[pumps.p01.bearings.0] n_balls``; a top-level key alone; a section alone."""
    section = f"[{'.'.join(path)}]" if path else ""
    if key is None:
        return section or "(top level)"
    return f"{section} {key}" if section else key


def _strip(tp: Any) -> Any:
    """``Annotated[X, ...]`` -> ``X``."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _is_section(tp: Any) -> bool:
    tp = _strip(tp)
    return isinstance(tp, type) and (issubclass(tp, msgspec.Struct)
                                     or dataclasses.is_dataclass(tp))


def _union_args(tp: Any) -> tuple[Any, ...]:
    """The members of a union (each as written, ``Annotated`` kept), or ``(tp,)``."""
    if get_origin(_strip(tp)) in (Union, types.UnionType):
        return get_args(_strip(tp))
    return (tp,)


def _explain(exc: msgspec.ValidationError, value: object) -> str:
    """msgspec's ``Expected `int` >= 3`` -> ``must be >= 3, got 1``."""
    msg = str(exc)
    at = ""
    if " - at `$" in msg:
        msg, _, at = msg.partition(" - at `$")
        at = at.rstrip("`")
    if not msg.startswith("Expected "):
        text = msg
    else:
        expected = msg.removeprefix("Expected ")
        expected = re.sub(r", got `[^`]*`$", "", expected)
        m = re.match(r"^`([^`]+)` (.+)$", expected)
        expected = m.group(2) if m else expected.replace("`", "")
        expected = expected.replace("null", "none").replace("matching regex", "matching")
        text = f"must be {expected}, got {value!r}"
    return f"{text} (at {at})" if at else text


class _Walk:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.top: dict[str, object] = {}  # the top-level fields that converted
        # top-level sections that converted but failed their own problems(): still
        # well-typed, so the checks across sections may look at them
        self.typed: dict[str, object] = {}

    def value(self, raw: object, tp: Any, path: Path, key: str) -> object:
        here = (*path, key)
        options = _union_args(tp)
        sections = [o for o in options if _is_section(o)]
        if sections and isinstance(raw, Mapping):
            return self.section(raw, _strip(sections[0]), here)
        short = getattr(_strip(sections[0]), "__config_shorthand__", None) if sections else None
        if isinstance(raw, str) and short:
            # the section written as a string: {shorthand field: string}, checked as a table
            return self.section({short: raw}, _strip(sections[0]), here)
        # the union member a list or table value is for (``list[X] | None``, ...)
        kind = (list, tuple) if isinstance(raw, list) else (dict,) if isinstance(
            raw, Mapping) else ()
        chosen = next((o for o in options if get_origin(_strip(o)) in kind), None)
        member = _strip(chosen)
        origin = get_origin(member) if chosen is not None else None
        if origin in (list, tuple) and isinstance(raw, list):
            (item, *rest) = get_args(member) or (Any,)
            if _needs_walk(item) and (origin is list or rest == [Ellipsis]):
                out = []
                bad = False
                for i, elem in enumerate(raw):
                    name = elem.get("id") if isinstance(elem, Mapping) else None
                    label = name if isinstance(name, str) and name else str(i)
                    got = self.value(elem, item, here, label)
                    bad |= got is _BAD
                    out.append(got)
                if (short := _length_problem(chosen, len(raw))) is not None:
                    self.problems.append(f"{where(path, key)} {short}")
                    return _BAD
                if bad:
                    return _BAD
                return out if origin is list else tuple(out)
        if origin is dict and isinstance(raw, Mapping):
            _k, item = get_args(member)
            if _needs_walk(item):
                d: dict[str, object] = {}
                for k, v in raw.items():
                    d[k] = self.value(v, item, here, str(k))
                return _BAD if any(v is _BAD for v in d.values()) else d
        if sections and len(options) == 1:
            self.problems.append(f"{where(path, key)} must be a table, got {raw!r}")
            return _BAD
        return self.scalar(raw, tp, path, key)

    def scalar(self, raw: object, tp: Any, path: Path, key: str) -> object:
        if isinstance(raw, str) and _is_size(tp):
            try:
                raw = parse_size(raw)
            except ValueError as exc:
                self.problems.append(f"{where(path, key)} {exc}")
                return _BAD
        try:
            return msgspec.convert(raw, tp)
        except msgspec.ValidationError as exc:
            choices = [a for o in _union_args(tp) if get_origin(_strip(o)) is Literal
                       for a in get_args(_strip(o))]
            text = (f"must be one of {', '.join(map(repr, choices))}, got {raw!r}"
                    if choices and str(exc).startswith("Invalid enum value")
                    else _explain(exc, raw))
            self.problems.append(f"{where(path, key)} {text}")
            return _BAD

    def section(self, raw: Mapping[str, Any], cls: type, path: Path) -> object:
        hints = typing.get_type_hints(cls, include_extras=True)
        if issubclass(cls, msgspec.Struct):
            names = list(cls.__struct_fields__)
            info = {f.name: f for f in msgspec.structs.fields(cls)}
            required = {n for n in names if info[n].required}
        else:
            fields = {f.name: f for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                      if f.init}
            names = list(fields)
            required = {n for n, f in fields.items()
                        if f.default is dataclasses.MISSING
                        and f.default_factory is dataclasses.MISSING}
        unknown = [k for k in raw if k not in names]
        for k in unknown:
            self.problems.append(f"{where(path, str(k))}: unknown key (known: {', '.join(names)})")
        values: dict[str, object] = {}
        for name in names:
            if name not in raw:
                if name in required:
                    self.problems.append(f"{where(path, name)} is required")
                    values[name] = _BAD
                continue
            values[name] = self.value(raw[name], hints[name], path, name)
        if not path:
            self.top = {k: v for k, v in values.items() if v is not _BAD} | self.typed
            for name in names:  # and the defaults of those not given
                if name not in raw and name not in required:
                    self.top[name] = _default(cls, name)
        if unknown or any(v is _BAD for v in values.values()):
            return _BAD
        try:
            obj = cls(**values)
        except InvalidConfigError as exc:
            self.problems += [f"{where(path)} {p}" if path else p for p in exc.problems]
            return _BAD
        except (ValueError, TypeError) as exc:
            self.problems.append(f"{where(path)} {exc}")
            return _BAD
        check: Callable[[], list[str]] | None = getattr(obj, "problems", None)
        if callable(check):
            found = check()
            self.problems += [f"{where(path)} {p}" if path else p for p in found]
            if found:
                if len(path) == 1:
                    self.typed[path[0]] = obj
                return _BAD
        return obj


def _length_problem(tp: Any, n: int) -> str | None:
    """The ``min_length`` / ``max_length`` of an ``Annotated`` list that ``n`` items break."""
    while get_origin(tp) is Annotated:
        tp, *metas = get_args(tp)
        for m in metas:
            if isinstance(m, msgspec.Meta):
                if m.min_length is not None and n < m.min_length:
                    return f"needs at least {m.min_length} item(s), got {n}"
                if m.max_length is not None and n > m.max_length:
                    return f"takes at most {m.max_length} item(s), got {n}"
    return None


def _default(cls: type, name: str) -> object:
    """The default of field ``name`` of Struct or dataclass ``cls``."""
    if issubclass(cls, msgspec.Struct):
        info = next(f for f in msgspec.structs.fields(cls) if f.name == name)
        if info.default_factory is not msgspec.NODEFAULT:
            return info.default_factory()
        return info.default
    dc = next(f for f in dataclasses.fields(cls) if f.name == name)  # type: ignore[arg-type]
    if dc.default_factory is not dataclasses.MISSING:
        return dc.default_factory()
    return dc.default


def _needs_walk(tp: Any) -> bool:
    """Whether values of ``tp`` contain sections (so they are walked, not converted whole)."""
    return any(_is_section(o) or (get_origin(_strip(o)) in (list, tuple, dict)
               and any(_needs_walk(a) for a in get_args(_strip(o)) if a is not Ellipsis))
               for o in _union_args(tp))


Checks = Callable[[Mapping[str, Any]], list[str]]


def convert(data: Mapping[str, Any], cls: type[T], *,
            checks: Checks | None = None) -> tuple[T | None, list[str]]:
    """``(config, [])``, or ``(None, every problem)``: ``data`` (parsed TOML) as ``cls``.

    ``checks`` are the problems across sections: it gets the top-level fields
    that converted (name -> value; one that did not is absent), so a check runs
    whenever the sections it needs are valid, whatever else is wrong, and
    returns its problems, each naming its path.
    """
    walk = _Walk()
    obj = walk.section(data, cls, ())
    found = checks(walk.top) if checks is not None else []
    problems = walk.problems + [p for p in found if p not in walk.problems]
    if obj is _BAD or problems:
        return None, problems
    return typing.cast(T, obj), []


def load(data: Mapping[str, Any], cls: type[T], *, source: str,
         checks: Checks | None = None) -> T:
    """:func:`convert`, raising :class:`InvalidConfigError` (naming ``source``) on any problem."""
    config, problems = convert(data, cls, checks=checks)
    if config is None:
        raise InvalidConfigError(problems, source=source)
    return config


# --- shared sections --------------------------------------------------------------------------

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
PositiveS = Annotated[float, msgspec.Meta(gt=0)]


class TlsSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[mqtt.tls]``: PEM files; ``cert`` and ``key`` together are the client's identity."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def problems(self) -> list[str]:
        if bool(self.cert) != bool(self.key):
            return ["give both cert and key (mutual TLS) or neither"]
        return []


class MqttSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[mqtt]``: the broker connection both the edge agent and the consumer make."""

    host: str = "localhost"
    port: Port = 1883
    username: str | None = None
    password: str | None = None
    tls: TlsSection | None = None
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=65535)] = 30
    session_expiry_s: Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)] = 7 * 86400
    reconnect_min_s: PositiveS = 1.0
    reconnect_max_s: PositiveS = 30.0

    def problems(self) -> list[str]:
        if self.reconnect_max_s < self.reconnect_min_s:
            return [f"reconnect_max_s={self.reconnect_max_s} must be >= "
                    f"reconnect_min_s={self.reconnect_min_s}"]
        return []
