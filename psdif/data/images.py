"""Image files and arrays: the one reader and one atomic PNG writer of the project, resizing, normalisation.

Every image the pipeline reads (KITTI frames, Make3D photos, a user's photos for ``psdif predict``,
pseudo-label and boundary PNGs, depth PNGs) goes through :func:`open_image`, which decodes the whole file
(a truncated file fails here, not later) and raises :class:`ImageError` naming the file and saying what
to do. Every PNG the pipeline writes goes through :func:`write_png` (temporary file, then rename).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from psdif.io import atomic_write_bytes

class ImageError(ValueError):
    """An image file is unreadable or not what was expected; the message names it."""


class MissingImageError(ImageError, FileNotFoundError):
    """An image file is not there; the message names it and says which stage writes it."""


def open_image(path: str | Path, what: str = "image", hint: str = "re-extract or re-download it",
               max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode ``path`` with PIL; returns the loaded image (caller converts it).

    what: words for the message ("label PNG"); hint: what the user should do about a bad file;
    max_pixels: refuse larger images (PIL's decompression-bomb guard becomes an :class:`ImageError`).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingImageError(f"{path}: {what} {'is not a file' if path.exists() else 'not found'}; {hint}")
    im = None
    try:
        im = Image.open(path)
        if max_pixels is not None and im.width * im.height > max_pixels:
            raise ImageError(f"{path}: {im.width} x {im.height} pixels is more than the {max_pixels} allowed; "
                             f"{hint}")
        im.load()  # decodes fully: a truncated file raises here
        return im
    except BaseException as exc:
        if im is not None:
            im.close()
        if isinstance(exc, ImageError):
            raise
        if isinstance(exc, Image.DecompressionBombError):
            raise ImageError(f"{path}: {what} too large to decode safely ({exc}); {hint}") from None
        if isinstance(exc, (OSError, SyntaxError, ValueError)):
            raise ImageError(f"{path}: unreadable or truncated {what} ({exc}); {hint}") from None
        raise


# PIL modes read_image takes, by what PIL's own conversion to RGB does right (8-bit data, palettes, alpha
# dropped); 16-bit data is scaled here (PIL's conversion would clip every value above 255 to white)
_CONVERTIBLE = {"1", "L", "P", "RGB", "RGBA", "RGBX", "RGBa", "LA", "La", "PA", "CMYK", "YCbCr"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_bit_depth(path: Path) -> int | None:
    """The bit depth in a PNG's IHDR chunk (None for another format)."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) == 26 and head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR":
        return head[24]
    return None


def sixteen_to_eight(values: np.ndarray) -> np.ndarray:
    """16-bit values (0..65535) -> uint8 ``round(v / 257)`` (65535 -> 255, 257 k -> k; no ties exist)."""
    v = np.asarray(values).astype(np.uint32)
    return ((v + 128) // 257).astype(np.uint8)


def _as_rgb(im: Image.Image, path: Path, hint: str) -> np.ndarray:
    """The decoded image ``im`` as uint8 [H, W, 3] RGB from its values (see :func:`read_image`)."""
    mode = im.mode
    if mode in _SIXTEEN_BIT or (mode == "I" and im.format == "PNG"):  # 16-bit greyscale (PNG "I" is 16-bit)
        grey = np.asarray(im)
        if grey.min(initial=0) < 0 or grey.max(initial=0) > 65535:
            raise ImageError(f"{path}: greyscale values outside 0..65535 in a 16-bit image; {hint}")
        return np.repeat(sixteen_to_eight(grey)[..., None], 3, axis=2)
    if mode in ("RGB", "RGBA") and im.format == "PNG" and _png_bit_depth(path) == 16:
        # PIL keeps only the high byte of 16-bit colour samples: decode the full values with OpenCV
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.dtype != np.uint16 or raw.ndim != 3 or raw.shape[2] not in (3, 4):
            raise ImageError(f"{path}: 16-bit colour PNG that OpenCV does not decode as 16-bit RGB(A); {hint}")
        return np.ascontiguousarray(sixteen_to_eight(raw[..., 2::-1]))  # BGR(A) -> RGB, alpha dropped
    if mode in _CONVERTIBLE:
        if mode in ("P", "PA") and "transparency" in im.info:
            im = im.convert("RGBA")  # palette transparency: through RGBA, then the alpha is dropped
        return np.asarray(im.convert("RGB"))
    names = {"I": "32-bit integer", "F": "32-bit float", "LAB": "CIE Lab", "HSV": "HSV"}
    raise ImageError(f"{path}: image mode {mode!r}{f' ({names[mode]})' if mode in names else ''} is not read "
                     "as an RGB image; supported: 8-bit RGB / RGBA / greyscale / palette, 16-bit greyscale or "
                     f"RGB(A) PNG, CMYK, YCbCr; convert it to an 8- or 16-bit PNG or a JPEG ({hint})")


_EXIF_ORIENTATION = 0x0112


def _orient(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation tag (2..8) to an [H, W, 3] array, as ``ImageOps.exif_transpose`` does."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: np.swapaxes(a, 0, 1), 6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],
           7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1], 8: lambda a: np.swapaxes(a, 0, 1)[::-1]}
    return np.ascontiguousarray(ops[orientation](rgb)) if orientation in ops else rgb


def read_image(path: str | Path, exif: bool = False, max_pixels: int | None = None,
               hint: str = "re-extract or re-download it") -> np.ndarray:
    """RGB image as ``uint8 [H, W, 3]`` from its values; ``exif``: apply the EXIF orientation (phone photos).

    8-bit RGB is returned as stored; greyscale (8- or 16-bit) is replicated to 3 channels; 16-bit samples
    become ``round(v / 257)``; palettes are looked up; alpha is dropped. Any other mode (32-bit int or
    float, Lab, ...) is an :class:`ImageError` naming the file and the mode.
    """
    path = Path(path)
    im = open_image(path, "image", hint, max_pixels)
    with im:
        rgb = _as_rgb(im, path, hint)
        if exif:
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
            rgb = _orient(rgb, orientation)
        return rgb


def write_png(path: str | Path, image: np.ndarray, bilevel: bool = False) -> None:
    """Write ``image`` as PNG atomically (a killed write leaves the previous file or none).

    image: ``uint8 [H, W, 3]`` RGB, ``uint8`` or ``uint16 [H, W]`` grey, or ``bool [H, W]`` with
    ``bilevel=True`` (a 1-bit PNG, mode ``"1"`` when read back).
    """
    image = np.asarray(image)
    if image.ndim == 3:
        if image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{path}: expected uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
        image = np.ascontiguousarray(image[..., ::-1])  # OpenCV encodes BGR
    elif image.ndim != 2:
        raise ValueError(f"{path}: expected an [H, W] or [H, W, 3] image, got shape {image.shape}")
    flags = []
    if bilevel:
        image = image.astype(bool).astype(np.uint8) * 255
        flags = [cv2.IMWRITE_PNG_BILEVEL, 1]
    ok, buf = cv2.imencode(".png", image, flags)
    if not ok:
        raise ImageError(f"{path}: PNG encoding failed ({image.dtype} {image.shape})")
    atomic_write_bytes(path, buf.tobytes())


@contextmanager
def opencv_single_threaded():
    """Fork worker processes inside this block: OpenCV's thread pool does not survive a fork (a child that
    resizes its pool waits forever for threads that exist only in the parent), so the parent drops to one
    OpenCV thread while forking; the children keep one, the parent gets its own count back."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [h, w, 3] -> uint8 [height, width, 3]; INTER_AREA (anti-aliased) when shrinking."""
    if image.shape[:2] == (height, width):
        return image
    shrink = height <= image.shape[0] and width <= image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Labels / masks [h, w] -> [height, width] by nearest neighbour (never mixes classes)."""
    if mask.shape[:2] == (height, width):
        return mask
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
