"""Denoising past one machine: the same ``denoise`` job spread over a Ray cluster.

``denoise_on_ray`` (``denoise IN OUT --ray ADDRESS``) plans the run as local ``denoise`` does
(``runtime/jobs.py``), connects (``connect.py``: a wrong address is one line in seconds), then
hands blocks of paths to Ray Data: ``map_batches`` over a pool of actors (``worker.py``), each
opening the runner once and denoising whole images with the same ``Denoiser`` and ``denoise_file``
as a local run. Rows carry paths or ``s3://`` URLs, never pixels: every worker reads its inputs and
writes its outputs itself (atomically), so local paths must be visible to every node. Results
stream back as images finish, into the caller's progress and the run's manifest (``manifest.py``).
"""

from .ray_run import denoise_on_ray

__all__ = ["denoise_on_ray"]
