"""scaoed-deploy: ScaoedNet from PyTorch checkpoint to verified inference artifacts.

The Python API that the ``scaoed-deploy`` CLI is a thin shell over::

    from scaoed_deploy import ScaoedNet, read_checkpoint, build_model, model_cost, Denoiser
"""

from importlib import import_module

__version__ = "0.1.0"

# Heavy modules (torch, onnx) load on first use, so `scaoed-deploy --help` stays fast.
_LAZY = {
    "ScaoedNet": "scaoed_deploy.model",
    "read_checkpoint": "scaoed_deploy.checkpoint",
    "random_weights": "scaoed_deploy.checkpoint",
    "build_model": "scaoed_deploy.checkpoint",
    "model_cost": "scaoed_deploy.cost",
    "Denoiser": "scaoed_deploy.runtime",
    "TorchRunner": "scaoed_deploy.runtime",
}
__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'scaoed_deploy' has no attribute {name!r}")
