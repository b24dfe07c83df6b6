"""Utilities every pipeline step shares, apart from the steps themselves: ``files`` (atomic writes, JSON objects,
digests, the cache folder), ``optional`` (optional imports with one line where missing), ``device`` (the torch
device), ``eta`` (a long step's progress with the time left), ``jsonio`` (JSON without NaN). They import nothing of
the package but ``errors``."""
