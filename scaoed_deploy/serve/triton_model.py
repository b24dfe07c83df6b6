"""A Triton python-backend model that runs one artifact through scaoed-deploy's runner registry.

``scaoed-deploy triton-repo --python-backend`` copies this file into each model's version folder
as ``model.py``, beside the artifact; the model's ``parameters`` name the artifact file, the
registry backend and the CPU threads. Triton's python backend stub imports it with the
interpreter that ``scaoed-deploy serve`` puts first on ``PATH``, so the project must be installed
there.

The dynamic batcher hands ``execute`` several requests at once: requests of the same spatial
size are stacked into one batch, run once, and split back. Tensors cross the stub boundary
through DLPack, not ``Tensor.as_numpy()``/``Tensor(name, array)``: with NumPy 2 the bundled stub's
NumPy path reads wrong input values and sends empty outputs.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from scaoed_deploy.runtime.base import RunOptions
from scaoed_deploy.runtime.registry import open_runner


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        path = Path(args["model_repository"]) / args["model_version"] / params["artifact"]
        threads = int(params["threads"]) if params.get("threads") else None
        self.runner = open_runner(path, params.get("backend") or None,
                                  RunOptions(threads=threads, allow_unverified=params.get("allow_unverified") == "yes"))
        self.runner.activate()
        self.input_name = config["input"][0]["name"]
        self.output_names = [o["name"] for o in config["output"]]

    def execute(self, requests):
        arrays = [np.array(np.from_dlpack(pb_utils.get_input_tensor_by_name(r, self.input_name)), copy=True)
                  for r in requests]
        responses = [None] * len(requests)
        groups = {}
        for i, x in enumerate(arrays):
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
                tensors = [pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(o[start:start + n], dtype=np.float32))
                           for name, o in zip(self.output_names, outs)]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start += n
        return responses

    def finalize(self):
        self.runner.close()
