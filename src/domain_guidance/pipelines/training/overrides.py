"""``--set key=value`` and nested overrides on config dataclasses: parse a value, type-check it, set a dotted key.

Generic over any nested dataclass (the training config uses it for presets, config files and ``--set``).
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any


def _field_types(obj: Any) -> dict[str, Any]:
    return typing.get_type_hints(type(obj))


def _is_str_type(tp: Any) -> bool:
    args = typing.get_args(tp)
    return tp is str or (isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union) and str in args


def parse_value(text: str, tp: Any = Any) -> Any:
    """A ``--set`` value: JSON first (``1e-4``, ``[1, 2]``, ``null``), then YAML (``{a: 1}``), then the string.

    For string fields (e.g. a path ``base=0123``) the text is kept as is, except ``null``/``none``.
    """
    if _is_str_type(tp):
        return None if text.strip().lower() in ("null", "none") else text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Light type check/coercion (int -> float; numbers for str fields become strings)."""
    if value is None or tp is Any:
        return value
    args = typing.get_args(tp)
    is_union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    options = [a for a in args if a is not type(None)] if args and is_union else [tp]
    for opt in options:
        base = typing.get_origin(opt) or opt
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base is bool and isinstance(value, bool):
            return value
        if base is str and isinstance(value, str):
            return value
        if base is list and isinstance(value, (list, tuple)):
            return list(value)
        if base is dict and isinstance(value, dict):
            squashed = [k for k, v in value.items() if v is None and isinstance(k, str) and ":" in k]
            if squashed:
                raise ValueError(f"config key {key!r}: {squashed[0]!r} looks like 'key:value' without a space; "
                                 "write {a: 1, b: 2} (YAML, space after ':') or JSON")
            return dict(value)
    if str in options and isinstance(value, (int, float)):
        return str(value)
    raise ValueError(f"config key {key!r}: value {value!r} is not of the expected type {tp}")


def set_key(cfg: Any, dotted: str, value: Any, source: str = "--set", raw: bool = False) -> None:
    """Set ``a.b.c`` on nested dataclasses (or a dict field). ``raw``: ``value`` is unparsed text."""
    parts = dotted.split(".")
    obj = cfg
    for i, name in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(obj, dict):
            if last:
                obj[name] = parse_value(value) if raw else value
                return
            obj = obj.setdefault(name, {})
            continue
        if not dataclasses.is_dataclass(obj):
            raise ValueError(f"{source}: {'.'.join(parts[:i])!r} is not a section; cannot set {dotted!r}")
        types_ = _field_types(obj)
        if name not in types_:
            raise ValueError(f"{source}: unknown config key {'.'.join(parts[:i + 1])!r}; "
                             f"expected one of {sorted(types_)}")
        if last:
            current = getattr(obj, name)
            tp = types_[name]
            val = parse_value(value, tp) if raw else value
            if dataclasses.is_dataclass(current) and isinstance(val, dict):
                apply_overrides(cfg, val, source, prefix=dotted + ".")
            else:
                setattr(obj, name, _coerce(val, tp, dotted))
            return
        obj = getattr(obj, name)


def apply_overrides(cfg: Any, overrides: dict[str, Any], source: str, prefix: str = "") -> None:
    """Recursively apply a nested dict of overrides (a preset or a parsed config file) to ``cfg``."""
    node = cfg
    for part in [p for p in prefix.split(".") if p]:
        node = getattr(node, part)
    for key, value in overrides.items():
        sub = getattr(node, key, None) if dataclasses.is_dataclass(node) else None
        if dataclasses.is_dataclass(sub) and isinstance(value, dict):
            apply_overrides(cfg, value, source, prefix=f"{prefix}{key}.")
        else:
            set_key(cfg, f"{prefix}{key}", value, source=source)
