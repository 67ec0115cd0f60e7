"""The one (de)serialiser of the benchmark's records: frozen dataclasses <-> the JSON of results.json.

A record's fields, in order, are the keys of its JSON object. What is special about a field is said
once, in its metadata (`json_field`):

- ``load``: how to read the value back when it is not None (a nested record's ``from_json``, or
  `list_of`, `dict_of`, `either` around one);
- ``flatten``: the nested record's keys sit in this object itself (a `Stats` inside a timed record);
- ``omit_when_none``: the key is left out while that field (this one when ``True``) is None: keys that
  only some records have (``passed`` only where there is a target, ``plan`` only when plans were taken);
- ``key``: the JSON key, when it cannot be the field's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, TypeVar

__all__ = ["Record", "dict_of", "either", "json_field", "list_of"]

R = TypeVar("R", bound="Record")
Load = Callable[[Any], Any]


def json_field(*, default: Any = MISSING, load: Load | None = None, flatten: bool = False,
               omit_when_none: bool | str = False, key: str | None = None) -> Any:
    """A dataclass field with its JSON handling (see the module's docstring)."""
    metadata: dict[str, Any] = {"flatten": flatten, "omit_when_none": omit_when_none}
    if load is not None:
        metadata["load"] = load
    if key is not None:
        metadata["key"] = key
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Record:
    """Base of every record: `to_json` and `from_json`, both driven by the fields' metadata."""

    def to_json(self) -> dict[str, Any]:
        """The record as results.json holds it (nested records as objects, in field order)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            omit = f.metadata.get("omit_when_none")
            if omit and getattr(self, f.name if omit is True else omit) is None:
                continue
            if f.metadata.get("flatten"):
                out.update(value.to_json())
            else:
                out[f.metadata.get("key", f.name)] = _dump(value)
        return out

    @classmethod
    def from_json(cls: type[R], data: Mapping[str, Any]) -> R:
        """The record of a JSON object that `to_json` wrote (a key left out reads as the field's default)."""
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            load = f.metadata.get("load")
            if f.metadata.get("flatten"):
                kwargs[f.name] = load(data)  # type: ignore[misc]  # a flattened field always has a loader
                continue
            key = f.metadata.get("key", f.name)
            if key in data:
                value = data[key]
                kwargs[f.name] = load(value) if load is not None and value is not None else value
        return cls(**kwargs)


def _dump(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


def list_of(load: Load) -> Load:
    """A loader of a JSON list whose items ``load`` reads."""
    return lambda items: [load(item) for item in items]


def dict_of(load: Load) -> Load:
    """A loader of a JSON object whose values ``load`` reads."""
    return lambda mapping: {k: load(v) for k, v in mapping.items()}


def either(marker: str, if_present: Load, otherwise: Load) -> Load:
    """A loader for two record kinds in one place: ``if_present`` when the object has key ``marker``."""
    return lambda data: if_present(data) if marker in data else otherwise(data)
