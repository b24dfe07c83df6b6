"""Reading and writing images for denoising (the paper's metrics are in ``quality``). Behaviour (also in the README):
- PNG, JPEG, TIFF (and anything else Pillow reads: BMP, WebP); 8- and 16-bit.
  16-bit PNG goes through pypng and TIFF through tifffile, because Pillow cannot
  hold 16-bit colour.
- Grayscale is denoised as an RGB image with three equal channels and written
  back as grayscale (the mean of the three outputs).
- Alpha (RGBA, grayscale + alpha) is carried through untouched; only colour is denoised.
- Palette and other modes are converted to RGB (or RGBA when they carry transparency);
  CMYK (JPEG, and 8-bit TIFF) by Pillow's conversion, without colour management. An ICC profile
  of another colour space than the output's (a CMYK profile on the RGB output) is dropped, with a
  warning. TIFF: MinIsWhite is inverted, Palette looked up in its colour map, planar (separate)
  samples interleaved from the file's own layout; other photometrics (YCbCr, CIELab, ...) are refused.
- Every reader checks the size the header declares against one pixel limit (Pillow's
  ``MAX_IMAGE_PIXELS``) before decoding anything: no decompression bomb is decoded.
- 16-bit PNG samples are taken as stored (an ``sBIT`` chunk only says how many bits are significant);
  float TIFF samples outside [0, 1] are clipped with a warning, NaN/Inf ones refused.
- Animated or multi-page images (APNG, animated WebP, multi-page TIFF) are refused:
  only still images are denoised, never their first frame alone.
- Output keeps the input's bit depth where the format allows (JPEG, WebP and BMP are 8-bit only)
  and the input's channels (JPEG drops alpha). Every format read is written (WebP losslessly). A
  TIFF written from an image whose EXIF says it is rotated keeps that orientation as its TIFF tag.
- Writes are atomic: a temporary file beside the target, renamed on success.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ImageError, first_line
from .util.files import atomic_path, is_temporary

READ_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
WRITE_SUFFIXES = set(READ_SUFFIXES)  # a folder of any readable format can be written back
EIGHT_BIT_ONLY = {".jpg", ".jpeg", ".bmp", ".webp"}
PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP"}


@dataclass
class Image:
    """Colour as float32 (H, W, 3) in [0, 1], plus what is needed to write it back alike."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None  # (H, W) float32 in [0, 1]
    gray: bool = False
    bit_depth: int = 8
    icc_profile: bytes | None = None  # colour profile, written back where the format allows
    exif: bytes | None = None  # raw EXIF (orientation included), written back where the format allows
    warnings: list[str] = field(default_factory=list)  # what reading changed that the user should know

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    def with_rgb(self, rgb: np.ndarray) -> Image:
        return Image(
            rgb=rgb,
            alpha=self.alpha,
            gray=self.gray,
            bit_depth=self.bit_depth,
            icc_profile=self.icc_profile,
            exif=self.exif,
            warnings=list(self.warnings),
        )


def _from_integer_array(arr: np.ndarray, path: Path) -> Image:
    notes = []
    if arr.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise ImageError(
                f"{path}: the input image holds {bad} NaN/Inf sample(s) of {arr.size}; it cannot be denoised"
            )
        out = np.count_nonzero((arr < 0) | (arr > 1))
        if out:
            notes.append(
                f"{path}: {100 * out / arr.size:.1f} % of its float samples are outside [0, 1] (an HDR "
                "image?) and were clipped to it"
            )
            arr = np.clip(arr, 0, 1)
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
    return Image(rgb=np.ascontiguousarray(colour), alpha=alpha, gray=gray, bit_depth=depth, warnings=notes)


def pixel_limit() -> int:
    """The most pixels an image may declare: Pillow's decompression-bomb limit, for every format and reader."""
    from PIL import Image as PILImage

    return int(PILImage.MAX_IMAGE_PIXELS or 0) or (1 << 62)


def check_declared_size(path: Path, width: int, height: int) -> None:
    """Refuse, from the header alone, an image declaring more pixels than the limit (before any decoding)."""
    limit = pixel_limit()
    if width * height > limit:
        raise ImageError(
            f"{path}: cannot read image (it declares {width}x{height} = {width * height} pixels, which "
            f"exceeds limit of {limit} pixels: a decompression bomb?)"
        )


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ImageError(f"{path}: not a PNG file")
    return head[24]


def _read_png16(path: Path) -> np.ndarray:
    import png

    reader = png.Reader(filename=str(path))
    reader.preamble()  # the header chunks only
    check_declared_size(path, reader.width, reader.height)
    reader.sbit = None  # samples as stored: sBIT says which bits are significant, not how to scale them
    width, height, rows, info = reader.asDirect()
    arr = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows])
    return arr.reshape(height, width, info["planes"])


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image as PILImage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)  # the size is checked below
        im = PILImage.open(path)
    with im:
        check_declared_size(path, *im.size)
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
    space = icc_colour_space(image.icc_profile)
    if space is not None and space != ("GRAY" if image.gray else "RGB"):
        image.warnings.append(
            f"{path}: its {space} ICC profile was dropped: the output is "
            f"{'grayscale' if image.gray else 'RGB'} (converted without colour management)"
        )
        image.icc_profile = None
    return image


def icc_colour_space(icc: bytes | None) -> str | None:
    """The data colour space an ICC profile's header names ('RGB', 'CMYK', 'GRAY', ...), or None."""
    if not icc or len(icc) < 20:
        return None
    return icc[16:20].decode("ascii", "replace").strip()


def exif_orientation(exif: bytes | None) -> int | None:
    """The EXIF Orientation (1-8) of raw EXIF bytes, or None where there is none."""
    if not exif:
        return None
    from PIL import Image as PILImage

    data = PILImage.Exif()
    try:
        data.load(exif)
    except Exception:  # noqa: BLE001 - unreadable EXIF: no orientation to keep
        return None
    value = data.get(274)
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else None


def _read_tiff(path: Path) -> np.ndarray:
    """A single-page TIFF's samples, interleaved (H, W, C) by the file's own planar configuration; MinIsWhite
    inverted, Palette looked up, CMYK converted to RGB (8-bit); other photometrics and multi-page refused."""
    import tifffile
    from PIL import Image as PILImage

    ph = tifffile.PHOTOMETRIC
    with tifffile.TiffFile(path) as tif:
        if len(tif.pages) > 1:
            raise ImageError(f"{path}: holds {len(tif.pages)} pages: only single-page (still) images are denoised")
        page = tif.pages[0]
        check_declared_size(path, page.imagewidth, page.imagelength)
        photometric = page.photometric
        if photometric not in (ph.MINISBLACK, ph.MINISWHITE, ph.RGB, ph.PALETTE, ph.SEPARATED):
            raise ImageError(
                f"{path}: a {ph(photometric).name} TIFF is not supported (RGB, grayscale, palette and "
                "8-bit CMYK are); convert it to RGB first"
            )
        arr = page.asarray()
        planar = page.planarconfig == tifffile.PLANARCONFIG.SEPARATE and page.samplesperpixel > 1
        bits = page.bitspersample
        colormap = page.colormap if photometric == ph.PALETTE else None
    if arr.dtype == np.bool_:  # bilevel
        arr, bits = arr.astype(np.uint8), 1
    if planar:
        arr = np.moveaxis(arr, 0, -1)  # (C, H, W) as stored to (H, W, C)
    if arr.dtype.kind in "ui" and bits not in (8, 16, 32) and arr.dtype.itemsize <= 2 and photometric != ph.PALETTE:
        full = 255 if arr.dtype.itemsize == 1 else 65535  # e.g. 1-, 4- or 12-bit samples: to the full range
        arr = np.round(arr.astype(np.float64) * (full / (2**bits - 1))).astype(arr.dtype)
        bits = 8 * arr.dtype.itemsize
    if photometric == ph.MINISWHITE:
        arr = (1.0 - arr) if arr.dtype.kind == "f" else (np.iinfo(arr.dtype).max - arr)
    elif photometric == ph.PALETTE:
        if colormap is None or arr.ndim != 2:
            raise ImageError(f"{path}: a palette TIFF without a usable colour map")
        rgb = np.moveaxis(np.asarray(colormap, dtype=np.uint16), 0, -1)[arr]  # TIFF colour maps are 16-bit
        arr = (rgb // 257).astype(np.uint8) if not np.any(rgb % 257) else rgb
    elif photometric == ph.SEPARATED:  # C, M, Y, K inks, not R, G, B and alpha
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 4:
            raise ImageError(
                f"{path}: a {arr.dtype} CMYK TIFF with {arr.shape[-1]} channels is not supported "
                "(8-bit CMYK is converted to RGB); convert it to RGB first"
            )
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
    """Write ``image`` atomically; returns what was written (format, bit depth, channels, metadata kept)."""
    path = Path(path)
    suffix = path.suffix.lower()
    check_writable_suffix(path)
    depth = 8 if suffix in EIGHT_BIT_ONLY else (bit_depth or image.bit_depth)
    arr = _output_array(image, depth, keep_alpha=suffix not in (".jpg", ".jpeg"))
    if suffix in (".bmp", ".webp") and arr.ndim == 3 and arr.shape[2] == 2:  # neither writes gray + alpha
        arr = np.concatenate([np.repeat(arr[:, :, :1], 3, axis=2), arr[:, :, 1:]], axis=2)
    icc, exif = image.icc_profile, image.exif
    kept = [name for name, value in (("icc_profile", icc), ("exif", exif)) if value]
    with atomic_path(path) as tmp:
        if suffix in (".tif", ".tiff"):
            import tifffile

            orientation = exif_orientation(exif)
            tags = [(274, "H", 1, orientation, True)] if orientation else []
            tifffile.imwrite(
                tmp,
                arr,
                photometric="minisblack" if arr.ndim == 2 else "rgb",
                extratags=tags,
                **({"iccprofile": icc} if icc else {}),
            )
            # tifffile writes no EXIF block: the orientation is kept as the TIFF's own tag
            kept = (["icc_profile"] if icc else []) + (["orientation"] if orientation else [])
        elif suffix == ".png" and depth == 16:
            import png

            planes = 1 if arr.ndim == 2 else arr.shape[2]
            mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[planes] + ";16"
            png.from_array(arr.reshape(arr.shape[0], -1), mode).save(str(tmp))
            if icc or exif:
                _png_with_chunks(tmp, icc, exif)
        else:
            from PIL import Image as PILImage

            fmt = PIL_FORMATS[suffix]
            options = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}.get(fmt, {})
            if fmt == "BMP":
                kept = []  # BMP holds neither
            else:
                if icc:
                    options["icc_profile"] = icc
                if exif:
                    options["exif"] = (b"Exif\x00\x00" + exif) if fmt in ("JPEG", "WEBP") else exif
            PILImage.fromarray(arr).save(tmp, format=fmt, **options)
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    return {"path": str(path), "bit_depth": depth, "channels": channels, "metadata": kept}


def check_writable_suffix(path: str | Path) -> None:
    """One line, before any work, for an output whose format cannot be written."""
    suffix = Path(path).suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise ImageError(
            f"{path}: cannot write {suffix or 'files without an extension'}; use one of "
            f"{' '.join(sorted(WRITE_SUFFIXES))}"
        )


def list_images(folder: str | Path) -> list[Path]:
    """The images of a folder (not recursively), never a temporary file an interrupted write left."""
    folder = Path(folder)
    with os.scandir(folder) as entries:  # the listing's own file types: no look-up per entry
        return sorted(
            folder / e.name
            for e in entries
            if e.is_file() and Path(e.name).suffix.lower() in READ_SUFFIXES and not is_temporary(e.name)
        )
