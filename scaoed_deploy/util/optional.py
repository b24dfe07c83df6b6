"""Optional imports: a heavy or optional library (OpenVINO, TensorRT, tritonclient, Ray) imported where it is first
needed, or one line that says what needed it and how to install it."""

from __future__ import annotations

import sys

from ..errors import ScaoedError, first_line


def optional_import(module: str, message: str, error: type[ScaoedError] = ScaoedError, detail: bool = True):
    """``module``, imported; where it is missing, ``error(message)``, with the import's own first line appended in
    parentheses when ``detail``."""
    try:
        __import__(module)  # as an import statement does (through builtins.__import__)
        return sys.modules[module]
    except ImportError as e:
        raise error(f"{message} ({first_line(e)})" if detail else message) from e
