"""Localisation: the first node of an ONNX artifact whose output leaves tolerance.

The reference is an fp32 export of the eager model made the way the artifact
was made (same K, shapes, outputs and simplification), so its tensors carry the
same names. Both graphs run with every tensor marked as an output (polygraphy's
``ModifyOutputs``) on the input that failed; the artifact's nodes are then walked
in topological order (the order ONNX requires of ``graph.node``), and the first
one whose output is non-finite where the reference's is finite, or differs by
more than ``rtol * max(1, max |reference|)``, is named with its module path.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..artifact import Artifact, all_tensors, module_paths
from ..checkpoint import Weights, build_model
from ..cost import model_footprint
from ..errors import ScaoedError
from ..export import ExportSpec, simplify, torch_export
from ..isolate.memory import check_fits
from ..precision.emulate import ROUND_SUFFIX, emulate, original_node

# The last few reference exports, serialized, by (weights, T, spec, simplified): a dynamo export takes
# seconds, and parity of several artifacts of one model (fp16, bf16, int8) localises against the same one.
_REFERENCES: OrderedDict[tuple, bytes] = OrderedDict()
_KEEP = 2


def reference_graph(artifact: Artifact, weights: Weights, stages: int):
    """An fp32 export of the eager model made as the artifact was (shape, outputs, simplification)."""
    import onnx

    spec = ExportSpec(
        stages=stages,
        static_hw=artifact.static_hw,
        batch=artifact.static_batch,
        noise_maps=bool(artifact.noise_map_outputs),
    )
    simplified = "onnxslim" in artifact.metadata.get("exporter", "+ onnxslim")
    key = (weights.identity, weights.blocks, repr(spec), simplified)
    if key not in _REFERENCES:
        raw = torch_export(build_model(weights, stages), spec)
        _REFERENCES[key] = (simplify(raw, "onnxslim") if simplified else raw).SerializeToString()
        while len(_REFERENCES) > _KEEP:
            _REFERENCES.popitem(last=False)
    _REFERENCES.move_to_end(key)
    return onnx.load_from_string(_REFERENCES[key])


def first_divergence(artifact_proto, reference_proto, x: np.ndarray, rtol: float) -> dict:
    got, ref = all_tensors(artifact_proto, x), all_tensors(reference_proto, x)
    op_types = {n.name: n.op_type for n in artifact_proto.graph.node}
    paths = module_paths(artifact_proto) or {}
    ref_paths = module_paths(reference_proto)
    compared = 0
    for index, node in enumerate(artifact_proto.graph.node):
        if ROUND_SUFFIX in node.name:
            continue
        for name in node.output:
            if name not in got or name not in ref or got[name].shape != ref[name].shape:
                continue
            compared += 1
            a, r = got[name].astype(np.float64), ref[name].astype(np.float64)
            scale = max(1.0, float(np.abs(r[np.isfinite(r)]).max(initial=0.0)))
            nonfinite = bool(np.isfinite(r).all() and not np.isfinite(a).all())
            err = float(np.abs(a - r).max()) if not nonfinite else float("inf")
            if nonfinite or err > rtol * scale:
                module = paths.get(name) or ref_paths.get(name) or "?"
                origin = original_node(node.name)  # an emulation cast reports the node it rounds for
                op_type = op_types.get(origin, node.op_type)
                return {
                    "found": True,
                    "node": origin,
                    "op_type": op_type,
                    "module": module,
                    "where": " / ".join([*module.split("."), op_type]),
                    "tensor": name,
                    "max_abs": err,
                    "reference_scale": scale,
                    "nonfinite": nonfinite,
                    "topological_index": index,
                    "compared_tensors": compared,
                }
    return {
        "found": False,
        "compared_tensors": compared,
        "detail": "no tensor shared with the reference leaves tolerance"
        if compared
        else "the artifact shares no tensor names with the reference export",
    }


def localise_failure(artifact: Artifact, weights: Weights, stages: int, x: np.ndarray, rtol: float) -> dict:
    """The first divergent node on ``x`` (see the module doc). It holds every tensor of two graphs on ``x`` at once:
    where that would not fit in the memory free now, it is not tried, and the result says why."""
    import onnx

    need = 2 * model_footprint(stages, weights.blocks, x.shape[2], x.shape[3], x.shape[0]).all_tensors_mb
    try:
        check_fits("localising the first divergent node", need, "the verdict stands without it")
    except ScaoedError as e:
        return {"skipped": str(e)}
    proto = onnx.load(str(artifact.path))
    if artifact.precision in ("fp16", "bf16"):  # as the harness ran it (see precision/emulate.py)
        proto = emulate(proto)
    return first_divergence(proto, reference_graph(artifact, weights, stages), x, rtol)
