"""JSON for reports and ``--json``: non-finite floats become strings ("inf") or null (NaN), never invalid JSON."""

from __future__ import annotations

import json
import math


def json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj) -> str:
    return json.dumps(json_safe(obj), indent=2, allow_nan=False)
