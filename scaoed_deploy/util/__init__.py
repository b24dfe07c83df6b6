"""Utilities every pipeline step shares, apart from the steps themselves: ``files`` (atomic writes, JSON objects,
digests, the cache folder), ``optional`` (optional imports with one line where missing), ``device`` (the torch
device). They import nothing of the package but ``errors``."""
