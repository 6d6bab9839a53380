"""The plant model file, read for the engine (the model itself is pure: :mod:`uns.core.model`)."""

from __future__ import annotations

from pathlib import Path

from uns.core.model import PlantModel, model_from_toml
from uns.errors import ModelError

__all__ = ["load_model"]


def load_model(path: str | Path) -> PlantModel:
    """Read, validate and build a plant model from a TOML file.

    Raises :class:`~uns.errors.ModelError` (file, key path, line) for any
    problem; nothing of a bad file is used."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"cannot read the model file: {exc.strerror or exc}", file=file) from exc
    except UnicodeDecodeError as exc:
        raise ModelError(f"the model file is not UTF-8: {exc.reason}", file=file) from exc
    return model_from_toml(text, file=file)
