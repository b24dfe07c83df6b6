"""Quieting the conversion tools (ModelOpt, NNCF), shared by ``convert.py`` and ``openvino.py``."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
from collections.abc import Iterator

from ..util.eta import TICKER_PREFIX


class _TickerOnly(io.TextIOBase):
    """sys.stderr while a tool runs: what a long step's ticker thread writes (the time spent and left) goes
    through; the tool's own output, from any other thread, is dropped. (Redirecting stderr whole swallowed the
    ticks too: AutoCast and NNCF were silent for minutes in a log.)"""

    def __init__(self, real):
        self.real = real

    def write(self, text: str) -> int:
        if threading.current_thread().name.startswith(TICKER_PREFIX):
            return self.real.write(text)
        return len(text)

    def flush(self) -> None:
        self.real.flush()

    def isatty(self) -> bool:
        return self.real.isatty()


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
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(_TickerOnly(sys.stderr)):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if tqdm is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = tqdm
