"""Quieting the conversion tools (ModelOpt, NNCF), shared by ``convert.py`` and ``openvino.py``."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_tools(*logger_names: str) -> Iterator[None]:
    """The tools print progress bars, log every node at INFO and warn on their loggers: our steps say enough,
    and --json needs stdout clean. Their errors still reach us as exceptions."""
    loggers = [logging.getLogger(n) for n in logger_names]
    levels = [lg.level for lg in loggers]
    tqdm = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if tqdm is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = tqdm
