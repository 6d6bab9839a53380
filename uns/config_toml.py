"""The effective configuration as a TOML file (``uns run --print-config``).

What it prints reads back as a config file: the keys that are set, section by section
in the file's order, secrets masked; a key without a value (TOML has no null) is named
in a comment at the top of its section instead.
"""

from __future__ import annotations

from typing import Any

import tomli_w

from uns.config import Config

__all__ = ["config_toml"]


def config_toml(config: Config, *, masked: bool = True) -> str:
    """``config`` as TOML text that :func:`uns.config.load_config` reads back."""
    parts = []
    for section, values in config.to_dict(masked=masked).items():
        unset = [key for key, value in values.items() if value is None]
        body: dict[str, Any] = {key: value for key, value in values.items() if value is not None}
        text = tomli_w.dumps({section: body})
        if unset:
            header = f"[{section}]\n"
            note = f"# not set: {', '.join(unset)}\n"
            text = text.replace(header, header + note, 1) if text.startswith(header) else header + note + text
        parts.append(text.rstrip("\n"))
    return "\n\n".join(parts) + "\n"
