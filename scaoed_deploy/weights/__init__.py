"""The demo weights shipped with scaoed-deploy.

No public ScaoedNet weights can be fetched here, so the toolkit trains its own:
``scaoed-deploy train`` on clean CBSD68 + McMaster images with synthetic camera
noise (see the JSON config beside the file for data, noise model, steps and
measured figures). They are used when no ``--checkpoint`` is given, always with
a one-line notice: they are demo weights trained here, not the paper's.
"""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import read_checkpoint
from ..errors import CheckpointError

DEMO_PATH = Path(__file__).with_name("scaoednet_demo_t16.safetensors")
DEMO_NOTICE = "note: using scaoed-deploy's demo weights (trained here on synthetic noise, not the paper's weights)"


def has_demo_weights() -> bool:
    return DEMO_PATH.is_file()


def demo_weights():
    """The demo weights as ``Weights`` (float32), or a ScaoedError when this installation lacks them."""
    if not has_demo_weights():
        raise CheckpointError(
            "no --checkpoint given and this installation has no demo weights: pass --checkpoint PATH "
            "(the authors' .pth or a scaoed-deploy .safetensors)"
        )
    return read_checkpoint(DEMO_PATH)
