"""The JSON Schema of the config file, made from the section classes of :mod:`uns.config`
(committed as ``schemas/config.schema.json``; a test checks that it is current)."""

from __future__ import annotations

from typing import Any

import uns.config_options as opts
from uns.config import _KEYS, _SCALARS, SECTIONS

__all__ = ["config_json_schema"]


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file (committed as schemas/config.schema.json)."""

    def prop(kind: tuple[type, bool], default: Any) -> dict[str, Any]:
        base, optional = kind
        if base is tuple:
            return {"type": "array", "items": {"type": "string"}, "default": list(default)}
        out: dict[str, Any] = {"type": [_SCALARS[base], "null"] if optional else _SCALARS[base]}
        if default is not None:
            out["default"] = default
        return out

    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        defaults = cls()
        props = {key: prop(kind, getattr(defaults, key)) for key, kind in _KEYS[name].items()}
        props.update({key: opts.options_schema(cls, key) for key in opts.option_tables(cls)})
        sections[name] = {"type": "object", "additionalProperties": False, "properties": props}
    # written ``protocol = 5`` as often as ``protocol = "5"``: both are taken
    sections["broker"]["properties"]["protocol"] = {
        "type": ["string", "integer"],
        "enum": ["3.1.1", "5", 5],
        "default": "3.1.1",
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://uns.invalid/schemas/config.schema.json",
        "title": "uns engine configuration (TOML)",
        "type": "object",
        "additionalProperties": False,
        "properties": sections,
    }
