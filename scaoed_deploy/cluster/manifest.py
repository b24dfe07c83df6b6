"""The record of a cluster run beside its outputs: ``scaoed-denoise.jsonl``, one line per image as it finishes
(input, output, status: done, failed or exists, seconds, worker, node, error), appended as rows arrive, so that
it survives a driver killed mid-run. A rerun reads it: the images it lists as failed are retried (their outputs
do not exist) and said to be. In object storage the file is one object, put again whole every ``FLUSH_S`` seconds
and at the end."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from ..storage import ObjectError, is_url, join, read_text, write_bytes
from ..util.files import atomic_path

NAME = "scaoed-denoise.jsonl"
FIELDS = ("input", "output", "status", "seconds", "worker", "node", "error")
FLUSH_S = 30.0


class Manifest:
    """``add(row)`` for each finished image, ``failed_before`` from an earlier run, ``close()`` at the end."""

    def __init__(self, folder):
        self.remote = is_url(str(folder))
        self.location = join(str(folder), NAME) if self.remote else Path(folder) / NAME
        self.lines = self._read()
        self.failed_before, self.known = self._last(self.lines)
        self._file = None
        self._flushed = time.monotonic()

    def _read(self) -> list[str]:
        try:
            text = read_text(self.location) if self.remote else self.location.read_text(encoding="utf-8")
        except (OSError, ObjectError, UnicodeDecodeError):
            return []
        return [ln for ln in text.splitlines() if ln.strip()]

    @staticmethod
    def _last(lines: list[str]) -> tuple[dict[str, str], set[str]]:
        """(input -> error of the images whose last line says failed, every input listed); a torn line is ignored."""
        last: dict[str, dict] = {}
        for ln in lines:
            with contextlib.suppress(ValueError, TypeError, KeyError):
                entry = json.loads(ln)
                last[entry["input"]] = entry
        return {k: v.get("error", "") for k, v in last.items() if v.get("status") == "failed"}, set(last)

    def add_existing(self, inputs: list[str], outputs: list[str]) -> None:
        """A line for each output that exists but that no line names (written by a run whose driver ended before its
        result came back): status "exists", so that the manifest names every image of the folder."""
        for src, dst in zip(inputs, outputs):
            if src not in self.known:
                self.add({"input": src, "output": dst, "status": "exists", "error": ""})

    def add(self, row: dict) -> None:
        self.known.add(row["input"])
        line = json.dumps({k: row.get(k) for k in FIELDS}, sort_keys=False)
        if self.remote:
            self.lines.append(line)
            if time.monotonic() - self._flushed > FLUSH_S:
                self.flush()
            return
        if self._file is None:
            self.location.parent.mkdir(parents=True, exist_ok=True)
            if not self.location.exists():  # a new file appears whole: written aside, then renamed
                with atomic_path(self.location) as tmp:
                    tmp.write_text("")
            self._file = open(self.location, "a+", encoding="utf-8")  # noqa: SIM115 - held for the run
            if self._file.tell():  # a line an earlier driver was killed in the middle of: never joined to the next
                self._file.seek(self._file.tell() - 1)
                if self._file.read(1) != "\n":
                    self._file.write("\n")
        self._file.write(line + "\n")
        self._file.flush()

    def flush(self) -> None:
        if self.remote and self.lines:
            write_bytes(self.location, ("\n".join(self.lines) + "\n").encode())
        self._flushed = time.monotonic()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.flush()
