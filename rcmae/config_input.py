"""What a configuration is made of and read from: `Section`, the validated dataclass every config section (and
every augmenter's options) is; YAML (refusing alias bombs); values (from YAML, a --set flag or a Tune sample)
coerced to their fields' types: bool, int, float, str, a `Literal` of choices, list, dict, or a union of these
with None."""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import types
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from rcmae.errors import ConfigError, bounded


def check(condition: bool, message: str) -> None:
    """A ConfigError with `message` unless `condition` holds."""
    if not condition:
        raise ConfigError(message)


def doc_field(text: str, default: Any, runtime: bool = False) -> Any:
    """A field with its meaning; `runtime`: it changes where or how fast something is made, not what is made."""
    metadata = {"doc": text, "runtime": runtime}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class Section:
    """A config section: one named part of the config, whose `Literal` fields hold one of their choices however
    the section was built (from a file, a --set flag or Python)."""

    section: ClassVar[str]

    def __post_init__(self) -> None:
        for name, kind in field_types(type(self)).items():
            allowed = choices(kind)
            value = getattr(self, name)
            check(allowed is None or value in allowed or (value is None and allows_none(kind)),
                  f"{self.section}.{name} must be one of {', '.join(map(repr, allowed or ()))}, got {bounded(value)}")

    def items(self) -> list[tuple[dataclasses.Field, Any]]:
        """Each field with its value, as YAML and `--set` lay the section out."""
        return [(f, getattr(self, f.name)) for f in dataclasses.fields(self)]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: copy.deepcopy(value) for f, value in self.items()}

    def outcome(self) -> dict[str, Any]:
        """The fields that change what is made (runtime fields left out)."""
        return {f.name: copy.deepcopy(value) for f, value in self.items() if not f.metadata.get("runtime")}


YAML_NODES_MAX = 100_000  # a config, --set value or search space holds far fewer values, counted with aliases expanded


def load_yaml(text: str, source: str) -> Any:
    """`yaml.safe_load`, refusing a document whose aliases expand past YAML_NODES_MAX values (an "alias bomb":
    a few hundred bytes that repr, copy or validation would expand to gigabytes)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML ({' '.join(str(error).split())[:200]})") from None
    pending, count = [data], 0
    while pending:
        value = pending.pop()
        count += 1
        check(count <= YAML_NODES_MAX, f"{source}: refused: its aliases expand to more than {YAML_NODES_MAX:,} "
                                        f"values")
        if isinstance(value, dict):
            pending += [*value.keys(), *value.values()]
        elif isinstance(value, list):
            pending += value
    return data


@functools.cache
def field_types(section_cls: type) -> dict[str, Any]:
    """Each dataclass field's type, as objects (the annotations are strings under `from __future__ import
    annotations`)."""
    hints = get_type_hints(section_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(section_cls)}


def choices(kind: Any) -> tuple | None:
    """The values a `Literal[...]` (or `Literal[...] | None`) field may hold; None for any other type."""
    if get_origin(kind) is Literal:
        return get_args(kind)
    if get_origin(kind) in (Union, types.UnionType):
        found = [c for option in get_args(kind) if (c := choices(option)) is not None]
        return tuple(value for c in found for value in c) if found else None
    return None


def allows_none(kind: Any) -> bool:
    return get_origin(kind) in (Union, types.UnionType) and type(None) in get_args(kind)


def _type_name(kind: Any) -> str:
    if get_origin(kind) in (Union, types.UnionType):
        return " | ".join(_type_name(option) for option in get_args(kind))
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(map(repr, get_args(kind)))
    return "None" if kind is type(None) else getattr(kind, "__name__", str(kind))


def _is_none(value: Any, kind: Any) -> bool:
    """None, or (from a --set flag or YAML string) 'none'/'null' where the field cannot hold that string."""
    return value is None or (isinstance(value, str) and value.lower() in ("none", "null")
                             and not _holds(kind, lambda option: option is str or value in (choices(option) or ())))


def _holds(kind: Any, test) -> bool:
    options = get_args(kind) if get_origin(kind) in (Union, types.UnionType) else (kind,)
    return any(test(option) for option in options)


def coerce(key: str, value: Any, kind: Any) -> Any:
    """`value` (from YAML, a --set flag or a Tune sample) as a field of type `kind`: bool, int, float, str, a
    `Literal` of choices, list, dict, or a union of these with None. Anything else is a ConfigError naming the
    key, the value and the type expected."""
    if _is_none(value, kind):
        check(_holds(kind, lambda option: option is type(None)), f"{key}: got no value, expected {_type_name(kind)}")
        return None
    options = get_args(kind) if get_origin(kind) in (Union, types.UnionType) else (kind,)
    for option in options:
        converted = _coerce_one(key, value, option)
        if converted is not _NOT_THIS:
            return converted
    allowed = choices(kind)
    if allowed is not None:
        raise ConfigError(f"{key}: {bounded(value)} is not one of {', '.join(map(repr, allowed))}")
    raise ConfigError(f"{key}: {bounded(value)} is not a valid {_type_name(kind)}")


_NOT_THIS = object()


def _coerce_one(key: str, value: Any, kind: Any) -> Any:
    if get_origin(kind) is Literal:
        return value if value in get_args(kind) else _NOT_THIS
    if kind is bool:
        if isinstance(value, bool):
            return value
        return value.lower() == "true" if isinstance(value, str) and value.lower() in ("true", "false") else _NOT_THIS
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return int(value) if isinstance(value, str) and value.strip().lstrip("+-").isdigit() else _NOT_THIS
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return _NOT_THIS
        try:
            number = float(value)
        except (ValueError, OverflowError):
            return _NOT_THIS
        check(math.isfinite(number), f"{key}: {bounded(value)} is not a finite number")
        return number
    if kind is str:
        return value if isinstance(value, str) else _NOT_THIS
    if (get_origin(kind) or kind) in (list, dict):
        return value if isinstance(value, get_origin(kind) or kind) else _NOT_THIS
    return _NOT_THIS
