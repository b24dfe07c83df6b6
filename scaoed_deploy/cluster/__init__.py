"""Denoising past one machine: the same ``denoise`` job spread over a Ray cluster.

``denoise_on_ray`` (``denoise IN OUT --ray ADDRESS``) plans the run as local ``denoise`` does
(``runtime/jobs.py``), then hands the paths to Ray Data: ``map_batches`` over a fixed pool of
actors, each opening the runner once and denoising whole images with the same ``Denoiser`` and
``denoise_file`` as a local run. Rows carry paths, never pixels: every worker reads its inputs
and writes its outputs itself (atomically), so the paths must be visible to every node.
"""

from .ray_run import denoise_on_ray

__all__ = ["denoise_on_ray"]
