"""One config idiom for every config dataclass: dicts with an unknown-key check, TOML/YAML/JSON files.

A config is a dataclass that inherits :class:`ConfigMixin` and validates itself in
``__post_init__``; ``to_dict`` / ``from_dict`` round-trip it (nested dataclasses and tuples
included), ``load`` reads a file, ``replace`` makes a validated copy with typed changes.
"""
from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

C = TypeVar("C", bound="ConfigMixin")


def _toml_module(path: Path) -> Any:
    """``tomllib`` (Python 3.11+) or the ``tomli`` package (3.10), imported only when a TOML file is read."""
    try:
        import tomllib

        return tomllib
    except ModuleNotFoundError:
        try:
            import tomli

            return tomli
        except ModuleNotFoundError:
            raise ValueError(f"config file {path}: reading TOML needs Python 3.11+ or the 'tomli' package "
                             "(pip install tomli), or use a YAML/JSON config") from None


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a ``.toml``, ``.yaml``/``.yml`` or ``.json`` config file into a nested dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    suffix = path.suffix.lower()
    if suffix == ".toml":
        toml = _toml_module(path)
        try:
            data = toml.loads(text)
        except toml.TOMLDecodeError as e:
            raise ValueError(f"config file {path}: not valid TOML: {e}") from None
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"config file {path}: not valid YAML: {e}") from None
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"config file {path}: not valid JSON: {e}") from None
    else:
        raise ValueError(f"config file {path}: unknown extension {suffix!r}; expected .toml, .yaml, .yml or .json")
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (what JSON/TOML/YAML give back)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _members(tp: Any) -> tuple[Any, ...]:
    """The alternatives of a union type hint (``X | None``), else the hint itself."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def _coerce(value: Any, tp: Any, source: str) -> Any:
    """A dict into a nested config dataclass, a list into a tuple where the field is a tuple."""
    for member in _members(tp):
        if isinstance(value, Mapping) and isinstance(member, type) and issubclass(member, ConfigMixin):
            return member.from_dict(value, source)
        if isinstance(value, list) and typing.get_origin(member) is tuple:
            inner = typing.get_args(member)
            if inner and inner[-1] is not Ellipsis and len(inner) == len(value):
                return tuple(_coerce(v, t, source) for v, t in zip(value, inner))
            return tuple(_coerce(v, inner[0], source) if inner else v for v in value)
    return value


class ConfigMixin:
    """to/from dict with the unknown-key check, files, and validated copies (validation: ``__post_init__``)."""

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))  # type: ignore[call-overload]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any], source: str = "config") -> C:
        """Build from a (nested) dict; an unknown key is an error naming it, the source and the known keys."""
        if not isinstance(values, Mapping):
            raise ValueError(f"{source}: expected a mapping of {cls.__name__} keys, got {type(values).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"{source}: unknown {cls.__name__} key(s) {unknown}; expected some of {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _coerce(v, hints.get(k, Any), f"{source}.{k}") for k, v in values.items()})

    @classmethod
    def load(cls: type[C], path: str | os.PathLike) -> C:
        """Defaults overridden by a TOML/YAML/JSON file whose keys are this dataclass's fields."""
        return cls.from_dict(read_config_file(path), source=str(path))

    def replace(self: C, **changes: Any) -> C:
        """A copy with typed ``changes`` (validated again by ``__post_init__``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]
