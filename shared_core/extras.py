"""Optional extras (``pip install 'memorag-integrations[extra]'``), imported when first used."""

from __future__ import annotations

import importlib
from typing import Any

from shared_core.errors import InputError


def import_extra(module: str, *, feature: str, needs: str, extra: str) -> Any:
    """Import ``module``, or raise ``InputError`` saying that ``feature`` ``needs`` it and which
    pip extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InputError(
            f"{feature} needs {needs}: pip install 'memorag-integrations[{extra}]'"
        ) from exc
