"""Reading and writing images for denoising, and the paper's quality metrics.

Behaviour (also in the README):
- PNG, JPEG, TIFF (and anything else Pillow reads: BMP, WebP); 8- and 16-bit.
  16-bit PNG goes through pypng and TIFF through tifffile, because Pillow cannot
  hold 16-bit colour.
- Grayscale is denoised as an RGB image with three equal channels and written
  back as grayscale (the mean of the three outputs).
- Alpha (RGBA, grayscale + alpha) is carried through untouched; only colour is denoised.
- Palette and other modes are converted to RGB (or RGBA when they carry transparency);
  CMYK (JPEG, and 8-bit TIFF) by Pillow's conversion, without colour management.
- Animated or multi-page images (APNG, animated WebP, multi-page TIFF) are refused:
  only still images are denoised, never their first frame alone.
- Output keeps the input's bit depth where the format allows (JPEG is 8-bit only)
  and the input's channels (JPEG drops alpha).
- Writes are atomic: a temporary file beside the target, renamed on success.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ImageError, atomic_path, first_line

READ_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
WRITE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


@dataclass
class Image:
    """Colour as float32 (H, W, 3) in [0, 1], plus what is needed to write it back alike."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None  # (H, W) float32 in [0, 1]
    gray: bool = False
    bit_depth: int = 8
    icc_profile: bytes | None = None  # colour profile, written back where the format allows
    exif: bytes | None = None  # raw EXIF (orientation included), written back where the format allows

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    def with_rgb(self, rgb: np.ndarray) -> Image:
        return Image(rgb=rgb, alpha=self.alpha, gray=self.gray, bit_depth=self.bit_depth,
                     icc_profile=self.icc_profile, exif=self.exif)


def _from_integer_array(arr: np.ndarray, path: Path) -> Image:
    if arr.dtype == np.uint8:
        depth, scale = 8, 255.0
    elif arr.dtype == np.uint16:
        depth, scale = 16, 65535.0
    elif arr.dtype.kind == "f":
        depth, scale = 16, 1.0  # float TIFF: taken as [0, 1]; written back as 16-bit
    else:
        raise ImageError(f"{path}: unsupported sample type {arr.dtype} (use 8- or 16-bit images)")
    x = arr.astype(np.float32) / scale
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"{path}: unsupported image shape {arr.shape} (expected H x W x 1-4 channels)")
    c = x.shape[2]
    gray = c in (1, 2)
    colour = np.repeat(x[:, :, :1], 3, axis=2) if gray else x[:, :, :3]
    alpha = x[:, :, c - 1] if c in (2, 4) else None
    return Image(rgb=np.ascontiguousarray(colour), alpha=alpha, gray=gray, bit_depth=depth)


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ImageError(f"{path}: not a PNG file")
    return head[24]


def _read_png16(path: Path) -> np.ndarray:
    import png

    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    arr = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows])
    return arr.reshape(height, width, info["planes"])


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            raise ImageError(f"{path}: holds {frames} frames (an animation): only still images are denoised")
        im.load()
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
            return np.asarray(im, dtype=np.uint16)
        if mode == "I":
            arr = np.asarray(im)
            if arr.min() < 0 or arr.max() > 65535:
                raise ImageError(f"{path}: 32-bit integer samples outside the 16-bit range")
            return arr.astype(np.uint16)
        if mode in ("1", "L"):
            return np.asarray(im.convert("L"))
        if mode == "LA":
            return np.asarray(im)
        if mode in ("RGB", "RGBA"):
            return np.asarray(im)
        has_alpha = "A" in mode or "transparency" in im.info
        return np.asarray(im.convert("RGBA" if has_alpha else "RGB"))


def read_image(path: str | Path) -> Image:
    """Read an image file into an ``Image`` (see the module doc for the rules)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            arr = _read_tiff(path)
        elif suffix == ".png" and _png_bit_depth(path) == 16:
            arr = _read_png16(path)
        else:
            arr = _read_pillow(path)
    except ImageError:
        raise
    except Exception as e:  # every decoder has its own exception types
        first = first_line(e)
        raise ImageError(f"{path}: cannot read image ({first})") from e
    image = _from_integer_array(arr, path)
    image.icc_profile, image.exif = _read_metadata(path)
    return image


def _read_tiff(path: Path) -> np.ndarray:
    """A single-page TIFF's samples, interleaved; CMYK converted to RGB (8-bit), multi-page refused."""
    import tifffile
    from PIL import Image as PILImage

    with tifffile.TiffFile(path) as tif:
        if len(tif.pages) > 1:
            raise ImageError(f"{path}: holds {len(tif.pages)} pages: only single-page (still) images are denoised")
        page = tif.pages[0]
        arr = page.asarray()
        separated = page.photometric == tifffile.PHOTOMETRIC.SEPARATED
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, 2)  # planar (C, H, W) TIFF
    if separated:  # C, M, Y, K inks, not R, G, B and alpha
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 4:
            raise ImageError(f"{path}: a {arr.dtype} CMYK TIFF with {arr.shape[-1]} channels is not supported "
                             "(8-bit CMYK is converted to RGB); convert it to RGB first")
        arr = np.asarray(PILImage.fromarray(arr, "CMYK").convert("RGB"))
    return arr


def _read_metadata(path: Path) -> tuple[bytes | None, bytes | None]:
    """ICC profile and raw EXIF, read lazily through Pillow's header parser (any format it opens)."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as im:
            icc = im.info.get("icc_profile") or None
            exif = im.info.get("exif") or None
            if exif is None and hasattr(im, "getexif"):
                data = im.getexif()
                exif = data.tobytes() if len(data) else None
    except Exception:  # noqa: BLE001 - metadata is best effort; the pixels were read already
        return None, None
    if isinstance(exif, bytes) and exif.startswith(b"Exif\x00\x00"):
        exif = exif[6:]
    return icc, exif


def _png_with_chunks(path: Path, icc: bytes | None, exif: bytes | None) -> None:
    """Insert iCCP and eXIf chunks before the image data of a PNG pypng wrote."""
    import zlib

    import png

    chunks = list(png.Reader(filename=str(path)).chunks())
    extra = []
    if icc:
        extra.append((b"iCCP", b"icc\x00\x00" + zlib.compress(icc)))
    if exif:
        extra.append((b"eXIf", exif))
    at = next(i for i, (kind, _) in enumerate(chunks) if kind == b"IDAT")
    with open(path, "wb") as f:
        png.write_chunks(f, chunks[:at] + extra + chunks[at:])


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] float to 8-bit as the paper's evaluation does (clamp, then skimage's img_as_ubyte)."""
    from skimage import img_as_ubyte

    return img_as_ubyte(np.clip(x, 0.0, 1.0).astype(np.float32))


def to_uint16(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 65535.0).astype(np.uint16)


def _output_array(image: Image, bit_depth: int, keep_alpha: bool) -> np.ndarray:
    colour = image.rgb.mean(axis=2, keepdims=True) if image.gray else image.rgb
    if image.alpha is not None and keep_alpha:
        colour = np.concatenate([colour, image.alpha[:, :, None]], axis=2)
    arr = to_uint16(colour) if bit_depth == 16 else to_uint8(colour)
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def write_image(path: str | Path, image: Image, bit_depth: int | None = None) -> dict:
    """Write ``image`` atomically; returns what was written (format, bit depth, channels)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise ImageError(f"{path}: cannot write {suffix or 'files without an extension'}; use .png, .jpg or .tif")
    jpeg = suffix in (".jpg", ".jpeg")
    depth = 8 if jpeg else (bit_depth or image.bit_depth)
    arr = _output_array(image, depth, keep_alpha=not jpeg)
    icc, exif = image.icc_profile, image.exif
    kept = [name for name, value in (("icc_profile", icc), ("exif", exif)) if value]
    with atomic_path(path) as tmp:
        if suffix in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(tmp, arr, photometric="minisblack" if arr.ndim == 2 else "rgb",
                             **({"iccprofile": icc} if icc else {}))
            kept = ["icc_profile"] if icc else []  # tifffile writes no EXIF
        elif suffix == ".png" and depth == 16:
            import png

            planes = 1 if arr.ndim == 2 else arr.shape[2]
            mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[planes] + ";16"
            png.from_array(arr.reshape(arr.shape[0], -1), mode).save(str(tmp))
            if icc or exif:
                _png_with_chunks(tmp, icc, exif)
        else:
            from PIL import Image as PILImage

            options = {"quality": 95} if jpeg else {}
            if icc:
                options["icc_profile"] = icc
            if exif:
                options["exif"] = (b"Exif\x00\x00" + exif) if jpeg else exif
            PILImage.fromarray(arr).save(tmp, format="JPEG" if jpeg else "PNG", **options)
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    return {"path": str(path), "bit_depth": depth, "channels": channels, "metadata": kept}


def psnr_ssim(output: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and SSIM of 8-bit ``output`` against 8-bit ``reference``, as the paper evaluates.

    scikit-image PSNR with data_range 255; SSIM with Gaussian weights (sigma 1.5) and
    population covariance, over the colour channels.
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if output.shape != reference.shape:
        raise ImageError(f"reference size {reference.shape[:2]} differs from output size {output.shape[:2]}")
    with np.errstate(divide="ignore"):  # identical images: PSNR is +inf, not a warning
        psnr = peak_signal_noise_ratio(reference, output, data_range=255)
    ssim = structural_similarity(
        reference,
        output,
        data_range=255,
        gaussian_weights=True,
        use_sample_covariance=False,
        channel_axis=-1 if output.ndim == 3 else None,
    )
    return float(psnr), float(ssim)


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in READ_SUFFIXES)
