"""The typing engine of the settings: a params mapping (read from YAML) made into frozen dataclasses, every error
naming its key, and each field's one-line help for ``mdpo params --help-fields``.

Each part declares its own section as dataclasses (the core's configs and ``core/eval/settings.py``,
``shapeworld/config.py``, ``pipeline/settings.py`` composing them into params.yaml) and this module types them all
the same way: types (Literals, tuples, mappings, unions, nested dataclasses), bounds from a field's metadata
(``meta(help, ge=…, gt=…, le=…)``), unknown keys refused with the closest known one. Pure Python.

    params.yaml:raw_silkie.max_quarantine_share: must be a number in [0, 1], got '0.05'
"""

from __future__ import annotations

import ast
import difflib
import inspect
import io
import math
import re
import textwrap
import tokenize
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, Field, fields, is_dataclass
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any, Literal

from mdpo_pipeline.core.errors import SHOWN_CHARS, ConfigError, clip, shown


def meta(help: str, **bounds: Any) -> dict[str, Any]:
    """Field metadata: its one-line help and optional bounds ge / gt / le."""
    return {"help": help, **bounds}


def build(cls: type, data: Any, where: str):
    """An instance of dataclass ``cls`` from ``data`` (a params mapping): unknown keys, wrong types and values out
    of range are ConfigErrors naming ``where``.<key>; keys it lacks take the dataclass's defaults."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: must be a mapping of keys to values, got {shown(data)}")
    if hasattr(cls, "from_params"):  # a section with its own shape (e.g. pipeline.settings.TrainingSettings)
        return cls.from_params(data, where)
    own = {f.name: f for f in fields(cls) if f.init}
    flat = {name: f for name, f in own.items() if f.metadata.get("flatten")}
    known = {name for name in own if name not in flat}
    for f in flat.values():
        known |= set(field_names(type_hints(cls)[f.name]))
    _refuse_unknown(data, known, where)
    hints = type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, f in own.items():
        if f.metadata.get("flatten"):
            part = hints[name]
            sub = {k: v for k, v in data.items() if k in field_names(part)}
            kwargs[name] = build(part, {**f.metadata.get("defaults", {}), **sub}, where)
        elif name in data:
            tp = hints[name]
            kwargs[name] = (build(tp, data[name], key(where, name)) if is_dataclass(tp)
                            else check(data[name], tp, f.metadata, key(where, name)))
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        # A section's own check may quote a whole value: the message is cut, as every other error here is bounded.
        raise ConfigError(f"{where}: {clip(str(e))}") from e


def _refuse_unknown(data: Mapping[str, Any], known: set[str], where: str) -> None:
    for name in data:
        if name in known:
            continue
        here = key(where, str(name))
        what = "section" if where == "params.yaml" else "key"
        raise ConfigError(f"{here}: unknown {what}{did_you_mean(str(name), known)}; known: {sorted(known)}")


def key(where: str, name: str) -> str:
    """The dotted place of ``name`` under ``where``: params.yaml:section, params.yaml:section.key."""
    name = clip(name, SHOWN_CHARS)  # a key is a name: a pasted blob in its place is named by its prefix
    return f"{where}:{name}" if where == "params.yaml" else f"{where}.{name}"


def did_you_mean(name: str, known) -> str:
    """' (did you mean X?)' for the known name closest to ``name``, or ''."""
    close = difflib.get_close_matches(name[: 2 * SHOWN_CHARS], sorted(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def field_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.init]


@cache
def type_hints(cls: type) -> dict[str, Any]:
    """The resolved field types of dataclass ``cls``."""
    return typing.get_type_hints(cls)


def check(value: Any, tp: Any, meta: Mapping[str, Any], where: str) -> Any:
    """``value`` if it has type ``tp`` and lies within ``meta``'s bounds (ge / gt / le), else a ConfigError
    naming ``where``; YAML lists become tuples where ``tp`` says tuple."""
    ok, converted = _conforms(value, tp)
    if ok and _in_bounds(converted, meta):
        return converted
    hint = ""
    if isinstance(value, str) and len(value) < SHOWN_CHARS and re.fullmatch(r"[+-]?\d+[eE][+-]?\d+", value.strip()):
        hint = f" (YAML reads {value} as text: write {value.lower().replace('e', '.0e', 1)})"
    raise ConfigError(f"{where}: must be {describe(tp, meta)}, got {shown(value)}{hint}")


def _in_bounds(value: Any, meta: Mapping[str, Any]) -> bool:
    if isinstance(value, Mapping):
        return all(_in_bounds(v, meta) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_in_bounds(v, meta) for v in value)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return True
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return (("ge" not in meta or value >= meta["ge"]) and ("gt" not in meta or value > meta["gt"])
            and ("le" not in meta or value <= meta["le"]))


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _conforms(value: Any, tp: Any) -> tuple[bool, Any]:
    """(whether ``value`` is a ``tp``, the value with YAML lists made tuples where ``tp`` wants one)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return True, value
    if _is_union(tp):
        for member in args:
            ok, converted = _conforms(value, member)
            if ok:
                return True, converted
        return False, value
    if tp is type(None):
        return value is None, value
    if origin is Literal:
        return (not isinstance(value, bool) and value in args), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool), value
    if tp is str:
        return isinstance(value, str), value
    if tp is Path:
        return isinstance(value, str | Path), value
    if isinstance(tp, type) and issubclass(tp, Enum):
        return isinstance(value, tp) or value in {m.value for m in tp}, value
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, list | tuple):
            return False, value
        item = args[0] if args else Any
        converted = []
        for v in value:
            ok, c = _conforms(v, item)
            if not ok:
                return False, value
            converted.append(c)
        return True, tuple(converted) if (origin or tp) is tuple else converted
    if origin in (dict, Mapping) or tp in (dict, Mapping) or origin is typing.Mapping:
        if not isinstance(value, Mapping):
            return False, value
        key_tp, value_tp = args if len(args) == 2 else (Any, Any)
        out = {}
        for k, v in value.items():
            ok_k, _ = _conforms(k, key_tp)
            ok_v, c = _conforms(v, value_tp)
            if not (ok_k and ok_v):
                return False, value
            out[k] = c
        return True, out
    if is_dataclass(tp):
        return isinstance(value, tp), value
    return True, value  # a type the checks here do not know (callables, classes): the dataclass checks it


_NOUNS = {Any: "any value", bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path",
          type(None): "null"}


def describe(tp: Any, meta: Mapping[str, Any] | None = None) -> str:
    """What ``tp`` (within ``meta``'s bounds) reads as in an error: "a number in [0, 1]", "an integer or null"."""
    meta = meta or {}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        parts = [describe(a, meta) for a in args if a is not type(None)]
        return " or ".join(parts + (["null"] if type(None) in args else []))
    if origin is Literal:
        return f"one of {list(args)}"
    if isinstance(tp, type) and issubclass(tp, Enum):
        return f"one of {[m.value for m in tp]}"
    if origin in (tuple, list):
        return f"a list of {_plural(args[0]) if args else 'values'}"
    if origin in (dict, Mapping) or origin is typing.Mapping:
        return f"a mapping of {_plural(args[0])} to {_plural(args[1], meta)}" if len(args) == 2 else "a mapping"
    noun = _NOUNS.get(tp) or getattr(tp, "__name__", str(tp))
    if tp in (int, float):
        lo, hi = meta.get("ge", meta.get("gt")), meta.get("le")
        lo_bracket = "[" if "ge" in meta else "("
        if lo is not None and hi is not None:
            return f"{noun} in {lo_bracket}{lo}, {hi}]"
        if lo is not None:
            return f"{noun} {'>=' if 'ge' in meta else '>'} {lo}"
        if hi is not None:
            return f"{noun} <= {hi}"
    return noun


def _plural(tp: Any, meta: Mapping[str, Any] | None = None) -> str:
    if typing.get_origin(tp) is Literal:
        return f"{list(typing.get_args(tp))}"
    text = describe(tp, meta)
    for singular, plural in (("an integer", "integers"), ("a number", "numbers"), ("a string", "strings"),
                             ("a path", "paths")):
        if text.startswith(singular):
            return plural + text[len(singular):]
    return text


# --- help -------------------------------------------------------------------------------------------


@cache
def _source_comments(cls: type) -> dict[str, str]:
    """field -> the comment beside it (or the comment lines right above it) in ``cls``'s source."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not is_dataclass(klass):
            continue
        try:
            src = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        lines = src.splitlines()
        comments = {tok.start[0]: tok.string for tok in tokenize.generate_tokens(io.StringIO(src).readline)
                    if tok.type == tokenize.COMMENT}
        body = ast.parse(src).body[0].body
        for node in body:
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            parts = [comments[node.end_lineno]] if node.end_lineno in comments else []
            line = node.lineno - 1
            while not parts[-1:] and line >= 1 and lines[line - 1].lstrip().startswith("#"):
                above = []
                while line >= 1 and lines[line - 1].lstrip().startswith("#"):
                    above.insert(0, comments.get(line, ""))
                    line -= 1
                parts = above
            text = " ".join(p.lstrip("#:").strip() for p in parts).strip()
            if text:
                out[node.target.id] = text
    return out


def field_help(cls: type, f: Field) -> str:
    """A field's one-line help: its ``help`` metadata, else its source comment."""
    text = f.metadata.get("help") or _source_comments(cls).get(f.name, "")
    return " ".join(text.split())


def field_docs(cls: type, where: str = "params.yaml",
               defaults: Mapping[str, Any] | None = None) -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) of every field of ``cls``, nested sections and flat parts expanded."""
    out = []
    hints = type_hints(cls)
    for f in fields(cls):
        if not f.init:
            continue
        tp, here = hints[f.name], key(where, f.name)
        if f.metadata.get("flatten") and is_dataclass(tp):
            out += field_docs(tp, where, f.metadata.get("defaults"))
            continue
        if is_dataclass(tp):
            out += field_docs(tp, here)
            continue
        if defaults and f.name in defaults:
            default = defaults[f.name]
        elif f.default is not MISSING:
            default = f.default
        else:
            default = f.default_factory() if f.default_factory is not MISSING else "(required)"
        out.append((here, describe(tp, f.metadata), plain(default), field_help(cls, f)))
    return out


def layout(obj: Any) -> Any:
    """A dataclass as params.yaml lays it out: nested sections as mappings, flat parts and ``common`` merged."""
    if not is_dataclass(obj):
        return obj
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = layout(getattr(obj, f.name))
        if f.metadata.get("flatten"):
            out |= value if isinstance(value, Mapping) else {}
        else:
            out[f.name] = value
    return out


def plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value
