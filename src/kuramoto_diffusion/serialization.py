"""Frozen-dataclass configuration with strict JSON round trips.

Every configurable piece of the project (process, network, data, training) is a
frozen dataclass. ``config_to_dict``/``config_from_dict`` convert them to and from
plain JSON values; unknown keys and values of the wrong type are errors, never
silently ignored. A key absent from the file takes the field's default, except where a class lists
it in ``ABSENT_KEY_VALUES``: a default that changed after files were written without the key, so
those files keep the value they were written with.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from .errors import UserError

T = TypeVar("T")


def config_to_dict(config: Any) -> dict[str, Any]:
    """Convert a (nested) config dataclass to JSON-compatible values."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        out[field.name] = _to_json_value(getattr(config, field.name))
    return out


def _to_json_value(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, (tuple, list)):
        return [_to_json_value(v) for v in value]
    return value


def config_from_dict(cls: type[T], data: Any, *, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and ill-typed values.

    ``where`` names the source (a file, a key path) in error messages.
    """
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  # cls: type[T] for any dataclass T; mypy cannot bound T to dataclasses
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(unknown)} for {cls.__name__}; "
            f"valid keys are {', '.join(sorted(fields))}"
        )
    kwargs = {name: value for name, value in getattr(cls, "ABSENT_KEY_VALUES", {}).items() if name not in data}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except (UserError, TypeError, ValueError) as error:  # the config's own checks: say which file and key
        raise UserError(f"{where}: {error}") from None


def _coerce(annotation: Any, value: Any, where: str) -> Any:
    """Check ``value`` against ``annotation`` and convert JSON lists to tuples / nested dataclasses."""
    origin = get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        tagged = _tagged_dataclass(get_args(annotation), value, where)
        if tagged is not None:
            return config_from_dict(tagged, value, where=where)
        classes = [
            option for option in get_args(annotation) if isinstance(option, type) and dataclasses.is_dataclass(option)
        ]
        if isinstance(value, dict) and len(classes) == 1:
            # An optional section (``training: TrainConfig | None``): its own error names the one bad key.
            return config_from_dict(classes[0], value, where=where)
        errors = []
        for option in get_args(annotation):
            try:
                return _coerce(option, value, where)
            except UserError as error:
                errors.append(str(error))
        shown = repr(value) if len(repr(value)) <= 60 else f"a {type(value).__name__}"
        raise UserError(f"{where}: {shown} does not match {_type_name(annotation)}")
    if annotation is type(None):
        if value is None:
            return None
        raise UserError(f"{where}: expected null, got {value!r}")
    if origin is typing.Literal:
        if value in get_args(annotation):
            return value
        choices = ", ".join(repr(a) for a in get_args(annotation))
        raise UserError(f"{where}: {value!r} is not one of {choices}")
    if origin is tuple:
        args = get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise UserError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        return config_from_dict(annotation, value, where=where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"{where}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise UserError(f"{where}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise UserError(f"{where}: expected a string, got {value!r}")
    raise TypeError(f"unsupported annotation {annotation!r} at {where}")


def _tagged_dataclass(options: tuple[Any, ...], value: Any, where: str) -> type | None:
    """For a union of dataclasses told apart by their ``kind`` default, the one ``value["kind"]`` names."""
    classes = [o for o in options if isinstance(o, type) and dataclasses.is_dataclass(o)]
    if not classes or not isinstance(value, dict):
        return None
    kinds = {}
    for cls in classes:
        kind_field = {f.name: f for f in dataclasses.fields(cls)}.get("kind")
        if kind_field is None or kind_field.default is dataclasses.MISSING:
            return None
        kinds[kind_field.default] = cls
    if value.get("kind") not in kinds:
        raise UserError(f"{where}.kind: {value.get('kind')!r} is not one of {', '.join(map(repr, kinds))}")
    return kinds[value["kind"]]


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A hidden temporary path beside ``path`` (``.NAME.tmp-PID``) to write into; renamed onto ``path`` when the
    block ends, removed when it fails. An OSError of the temporary file is raised again naming ``path`` (the
    user's file, not ``.NAME.tmp-PID``), so that a full disk or a missing permission reads as the user's path."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as error:
        if error.filename is None or os.fspath(error.filename) == os.fspath(temporary) or error.filename2 is not None:
            raise OSError(error.errno, error.strerror or " ".join(str(error).split()), str(path)) from error
        raise
    finally:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass  # the folder itself is gone or unwritable: there is nothing to clean


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as pretty JSON via a temporary file and an atomic rename."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, turning missing files and syntax errors into one-line UserErrors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(
            f"{path}: not valid JSON ({error.msg} at line {error.lineno}); restore or re-create it"
        ) from None


def save_config(config: Any, path: str | os.PathLike[str]) -> None:
    write_json_atomic(path, config_to_dict(config))


def load_config(cls: type[T], path: str | os.PathLike[str]) -> T:
    return config_from_dict(cls, read_json(path), where=str(path))


def field_choices(cls: type, name: str) -> tuple[Any, ...]:
    """The values a ``Literal[...]`` field ``name`` of dataclass ``cls`` may take (an optional one's without None):
    the one list of a setting's choices, which the command line offers and ``check_choices`` enforces."""
    annotation = get_type_hints(cls)[name]
    if get_origin(annotation) in (Union, types.UnionType):
        literals = [option for option in get_args(annotation) if get_origin(option) is typing.Literal]
        annotation = literals[0] if len(literals) == 1 else annotation
    if get_origin(annotation) is not typing.Literal:
        raise TypeError(f"{cls.__name__}.{name} is not a Literal field")
    return get_args(annotation)


def check_choices(config: Any) -> None:
    """Raise ``choice_check``'s one-line UserError for the first ``Literal[...]`` field of dataclass ``config`` whose
    value is not one of its choices (what a Python caller passed the constructor; files are checked on load)."""
    config_class: type = type(config)
    for name, choices in _literal_fields(config_class):
        choice_check(name, getattr(config, name), choices)


@functools.cache
def _literal_fields(cls: type) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """(name, choices) of each ``Literal[...]`` field of ``cls``, in field order (read once per class)."""
    hints = get_type_hints(cls)
    return tuple(
        (f.name, get_args(hints[f.name]))
        for f in dataclasses.fields(cls)
        if get_origin(hints[f.name]) is typing.Literal
    )


def choice_check(name: str, value: str, choices: typing.Iterable[str]) -> None:
    """Raise a UserError listing the valid choices when ``value`` is not one of them."""
    choices = tuple(choices)
    if value not in choices:
        raise UserError(f"unknown {name} {value!r}; valid values are {', '.join(choices)}")
