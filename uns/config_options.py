"""Tables of text options inside a config section (``[lake.storage]``), for :mod:`uns.config`;
and how a value written in the file or the environment becomes its key's type (:func:`coerce_value`).

A section field made with :func:`option_table` is not a key of its own: the file gives it
as a TOML table of ``name = value`` (text, numbers and booleans become text, names lower
case), it has no environment variable (the store's own, such as ``AWS_REGION``, are read
by the library that uses the options), the JSON schema has it as an object, and no repr
shows it.  Values whose name says they are secret (:func:`secret_option`) are masked
wherever they are shown (``uns run --print-config``, logs, the status document).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import field
from typing import Any, Final

from uns.errors import ConfigError

__all__ = [
    "FILE_KEY",
    "MASK",
    "OPTIONS_SCHEMA",
    "coerce_value",
    "line_of",
    "masked_options",
    "nested_table",
    "option_table",
    "option_tables",
    "options_schema",
    "parse_options",
    "require",
    "secret_option",
]

#: field metadata: False for a section field that is not a config-file key
FILE_KEY: Final = "uns.config.file_key"
#: what a secret shows as
MASK: Final = "***"
_OPTIONS: Final = "uns.config.options"
#: words in an option's name that make its value a secret
_SECRET_WORDS: Final = ("secret", "token", "password", "account_key", "sas", "private", "credential")
#: the JSON schema of an option table
OPTIONS_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "object",
    "additionalProperties": {"type": ["string", "boolean", "integer", "number"]},
}
_NESTED: Final = "uns.config.nested"


def option_table(*, nested: bool = False) -> Any:
    """A section field given as a table of text options: name -> value pairs, sorted;
    ``nested``: it may hold tables of options too (``[web.ldap.roles]``)."""
    return field(default=(), repr=False, metadata={FILE_KEY: False, _OPTIONS: True, _NESTED: nested})


def options_schema(section: type, name: str) -> dict[str, Any]:
    """The JSON schema of the option table ``name`` of a section class."""
    nested = next(f for f in dataclasses.fields(section) if f.name == name).metadata.get(_NESTED)
    if not nested:
        return dict(OPTIONS_SCHEMA)
    scalars = OPTIONS_SCHEMA["additionalProperties"]
    inner = {"type": "object", "additionalProperties": scalars}
    return {"type": "object", "additionalProperties": {"anyOf": [scalars, inner]}}


def option_tables(section: type) -> tuple[str, ...]:
    """The option-table fields of a section class."""
    return tuple(f.name for f in dataclasses.fields(section) if f.metadata.get(_OPTIONS))


def secret_option(name: str) -> bool:
    return any(word in name.lower() for word in _SECRET_WORDS)


def masked_options(options: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """The options as a dict, secrets masked."""
    return {k: MASK if secret_option(k) else v for k, v in options}


def nested_table(section: type, name: str) -> bool:
    """Whether the option table ``name`` of a section class may hold tables."""
    return any(f.name == name and f.metadata.get(_NESTED) for f in dataclasses.fields(section))


def _flat(table: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A table's pairs, those of a table inside it as ``inner.name`` (``[web.ldap.roles]``)."""
    out: list[tuple[str, Any]] = []
    for name, value in table.items():
        if isinstance(value, Mapping):
            out.extend((f"{name}.{inner}", v) for inner, v in value.items())
        else:
            out.append((name, value))
    return out


def parse_options(
    dotted: str, table: Mapping[str, Any], origin: str, *, nested: bool = False
) -> tuple[tuple[str, str], ...]:
    """A TOML table as option pairs (``nested``: a table inside it as ``inner.name`` pairs);
    ConfigError for a value that is not a scalar."""
    out: dict[str, str] = {}
    for name, value in _flat(table) if nested else table.items():
        if not isinstance(value, str | bool | int | float):
            raise ConfigError(f"{origin}: {dotted}.{name} must be text, a number or true/false", key=dotted)
        out[str(name).lower()] = str(value).lower() if isinstance(value, bool) else str(value)
    return tuple(sorted(out.items()))


def require(key: str, value: object, ok: bool, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {rule}, got {value!r}", key=key)


def coerce_value(key: str, value: Any, kind: tuple[type, bool], origin: str) -> Any:
    """``value`` (from ``origin``: a file line, a variable, a flag) as the ``(type, optional)``
    ``kind`` of config key ``key``; ConfigError naming both otherwise."""
    base, optional = kind
    if base is tuple:  # a TOML array of text; from the environment, comma-separated
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{origin}: {key} must be a list of text, got {value!r}", key=key)
    if value is None or (optional and value == ""):
        if optional:
            return None
        raise ConfigError(f"{origin}: {key} must not be empty", key=key)
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{origin}: {key} must be true or false, got {value!r}", key=key)
    if base is int or base is float:
        # an integer is also a number; a bool is neither (TOML ``true`` is not 1)
        if isinstance(value, int if base is int else int | float) and not isinstance(value, bool):
            return base(value)
        if isinstance(value, str):
            try:
                return base(value)
            except ValueError:
                pass
        what = "an integer" if base is int else "a number"
        raise ConfigError(f"{origin}: {key} must be {what}, got {value!r}", key=key)
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):  # e.g. broker.protocol = 5
        return str(value)
    raise ConfigError(f"{origin}: {key} must be text, got {value!r}", key=key)


def line_of(text: str, section: str, key: str) -> int | None:
    """The 1-based line of ``key = ...`` inside ``[section]`` of a TOML text, if it can be found."""
    current = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("["):
            current = line.strip("[] \t").split("#")[0].strip().strip("\"'")
        elif current == section and line.partition("=")[0].strip().strip("\"'") == key:
            return number
    return None
