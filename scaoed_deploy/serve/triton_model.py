"""A Triton python-backend model that runs one artifact through scaoed-deploy's runner registry.

``scaoed-deploy triton-repo --python-backend`` copies this file into each model's version folder
as ``model.py``, beside the artifact; the model's ``parameters`` name the artifact file, the
registry backend, the CPU threads and the largest image side it takes (``max_side``). Triton's
python backend stub imports it with the interpreter that ``scaoed-deploy serve`` puts first on
``PATH``, so the project must be installed there.

Every request is checked before any batch is made (``request_error``): N x 3 x H x W with H and W
even, positive and at most ``max_side``, and finite values; one that is not gets its own error
response (INVALID_ARG: HTTP 400) and the others in the batch run. The dynamic batcher hands
``execute`` several requests at once: requests of the same spatial size are stacked into one batch,
run once, and split back.

Tensors cross the stub boundary through DLPack, not ``Tensor.as_numpy()``/``Tensor(name, array)``:
with NumPy 2 the bundled stub's NumPy path reads wrong input values and sends empty outputs. The
stub takes an output's capsule but renames it ``used_dlpack`` where the DLPack protocol says
``used_dltensor``, and NumPy's capsule destructor then failed on the unknown name
("PyCapsule_GetPointer called with incorrect name" in the log). The capsule is made here and given
the protocol's name after the stub took it: the stub's tensor owns the memory and frees it.
"""

import ctypes
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from scaoed_deploy.runtime.base import RunOptions
from scaoed_deploy.runtime.registry import open_runner

_USED = b"used_dltensor"  # lives as long as the module: PyCapsule_SetName keeps the pointer
_set_capsule_name = ctypes.pythonapi.PyCapsule_SetName
_set_capsule_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_set_capsule_name.restype = ctypes.c_int


def output_tensor(name: str, array: np.ndarray):
    """A stub tensor over ``array`` through a DLPack capsule, renamed to the protocol's 'consumed' name."""
    capsule = np.ascontiguousarray(array, dtype=np.float32).__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _set_capsule_name(capsule, _USED)
    return tensor


def request_error(x: np.ndarray, max_side: int | None) -> str | None:
    """Why a request's input cannot be denoised, or None."""
    if x.ndim != 4 or x.shape[1] != 3:
        return f"input must be N x 3 x H x W, got {'x'.join(map(str, x.shape))}"
    h, w = x.shape[2:]
    if h <= 0 or w <= 0 or h % 2 or w % 2:
        return f"height and width must be even and positive, got {h}x{w} (pad the image, as local denoise does)"
    if max_side and max(h, w) > max_side:
        return f"height and width must be at most {max_side} on this model, got {h}x{w} (send tiles)"
    if not np.isfinite(x).all():
        return "the input holds NaN or Inf values: send finite values in [0, 1]"
    return None


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        path = Path(args["model_repository"]) / args["model_version"] / params["artifact"]
        threads = int(params["threads"]) if params.get("threads") else None
        self.max_side = int(params["max_side"]) if params.get("max_side") else None
        self.runner = open_runner(  # a package (artifact "."): the entry of this server's CPU class
            path,
            params.get("backend") or None,
            RunOptions(threads=threads, allow_unverified=params.get("allow_unverified") == "yes"),
        )
        if self.runner.package_pick:
            print(self.runner.package_pick.line(), flush=True)  # into the server's log
        self.runner.activate()
        self.input_name = config["input"][0]["name"]
        self.output_names = [o["name"] for o in config["output"]]

    def execute(self, requests):
        responses = [None] * len(requests)
        arrays, groups = {}, {}
        for i, r in enumerate(requests):
            x = np.array(np.from_dlpack(pb_utils.get_input_tensor_by_name(r, self.input_name)), copy=True)
            why = request_error(x, self.max_side)
            if why:  # this request alone is refused, as a bad request; the rest of the batch runs
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(why, pb_utils.TritonError.INVALID_ARG)
                )
                continue
            arrays[i] = x
            groups.setdefault(x.shape[1:], []).append(i)
        for members in groups.values():
            batch = np.concatenate([arrays[i] for i in members])
            try:
                outs = self.runner.run(batch)
            except Exception as e:  # noqa: BLE001 - any failure becomes this batch's error responses, not a dead model
                error = pb_utils.TritonError(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=error)
                continue
            start = 0
            for i in members:
                n = arrays[i].shape[0]
                tensors = [output_tensor(name, o[start : start + n]) for name, o in zip(self.output_names, outs)]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start += n
        return responses

    def finalize(self):
        self.runner.close()
