"""The Denoiser: image in, image out, through one runner.

A runner is anything callable on a float32 NCHW batch in [0, 1] (H and W even)
that returns the model's float32 NCHW output: ``TorchRunner`` (eager model),
``OnnxRuntimeRunner`` (ONNX files); the TensorRT runner shares the same call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..images import Image, psnr_ssim, read_image, to_uint8, write_image


def pad_even(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad H and W on the bottom/right up to even sizes (the model needs even)."""
    h, w = x.shape[-2:]
    ph, pw = h % 2, w % 2
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


class Denoiser:
    """Denoise images of any size with a runner; odd sizes are padded and cropped back."""

    def __init__(self, runner):
        self.runner = runner

    def denoise_array(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) float in [0, 1] -> (H, W, 3) float, unclamped model output."""
        x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32))[None]
        x, (h, w) = pad_even(x)
        y = self.runner(x.numpy())
        return y[0, :, :h, :w].transpose(1, 2, 0)

    def denoise_image(self, image: Image) -> Image:
        return image.with_rgb(np.clip(self.denoise_array(image.rgb), 0.0, 1.0))


def denoise_file(denoiser: Denoiser, src: str | Path, dst: str | Path, reference: str | Path | None = None) -> dict:
    """Denoise one file; with ``reference``, also PSNR/SSIM of input and output against it."""
    image = read_image(src)
    out = denoiser.denoise_image(image)
    result = {"input": str(src), "height": image.height, "width": image.width, "bit_depth_in": image.bit_depth}
    written = write_image(dst, out)
    result.update(output=written["path"], bit_depth_out=written["bit_depth"], channels_out=written["channels"])
    if reference is not None:
        ref_image = read_image(reference)
        # Compare what is written: grayscale images as their one gray channel.
        gray = image.gray and ref_image.gray
        pixels = lambda im: to_uint8(im.rgb.mean(axis=2) if gray else im.rgb)  # noqa: E731
        ref = pixels(ref_image)
        psnr_in, ssim_in = psnr_ssim(pixels(image), ref)
        psnr_out, ssim_out = psnr_ssim(pixels(out), ref)
        result.update(reference=str(reference), psnr_in=psnr_in, ssim_in=ssim_in, psnr=psnr_out, ssim=ssim_out)
    return result
