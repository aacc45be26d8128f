"""Safe image access: path containment under a data root, validation that never decodes a bomb, and the
one pixel view every stage uses.

That view (``as_rgb``): EXIF orientation applied once (``ImageOps.exif_transpose`` removes the tag, so a second
pass is a no-op: ``datasets.Image`` decoding, which training uses, already applies it), then 8-bit RGB, with
16-bit samples scaled (65535 -> 255) rather than clipped and transparency composited over white, as
transformers' ``convert_to_rgb`` does. Ingest records the upright size; corruption crops the upright pixels.

PIL's process-wide knobs (``Image.MAX_IMAGE_PIXELS``, ``ImageFile.LOAD_TRUNCATED_IMAGES``) are never
touched: the pixel limit is checked here per call against the header size, before any pixel is decoded.
PIL's own hard limit (2 × ``Image.MAX_IMAGE_PIXELS``) still applies on top and reads as IMAGE_TOO_LARGE.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from mdpo_pipeline.core.schemas import QuarantineReason

#: PIL's default decompression-bomb threshold (about 0.25 GB of 24-bit pixels).
DEFAULT_MAX_PIXELS = 89_478_485

CheckMode = Literal["full", "header"]

#: Modes a file can open as that have one defined 8-bit RGB view. Float ("F") is not among them: the file
#: does not say whether its samples span 0-1, 0-255 or anything else.
SUPPORTED_MODES = frozenset(
    {"1", "L", "P", "RGB", "RGBA", "RGBX", "LA", "PA", "CMYK", "YCbCr", "LAB", "HSV", "I", "I;16", "I;16L", "I;16B",
     "I;16N"}
)
_SIXTEEN_BIT = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})  # "I": how older PIL opens 16-bit PNGs
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA"})
#: EXIF orientations that swap width and height (transpose and the two quarter turns).
_SWAPS_AXES = frozenset({5, 6, 7, 8})


class ImageError(Exception):
    """An image that cannot be used; ``reason`` is the quarantine reason it maps to."""

    def __init__(self, reason: QuarantineReason, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class PathEscapeError(ImageError):
    """An image path that is absolute or resolves outside the data root."""

    def __init__(self, detail: str):
        super().__init__(QuarantineReason.PATH_ESCAPE, detail)


@dataclass(frozen=True)
class ImageCheck:
    """Outcome of check_image: ok, or the reason and a human-readable detail."""

    ok: bool
    reason: QuarantineReason | None = None
    detail: str = ""
    width: int | None = None
    height: int | None = None
    format: str | None = None


def resolve_image_path(root: str | os.PathLike, rel: str) -> Path:
    """Resolve ``rel`` under ``root``; raise PathEscapeError if it is absolute or leaves the root."""
    # Backslashes are treated as separators so a Windows-authored "..\\x" cannot slip through as one name.
    posix = str(rel).replace("\\", "/")
    pure = PurePosixPath(posix)
    if not posix.strip() or "\x00" in posix:
        raise PathEscapeError(f"image path {rel!r} is empty or contains a NUL byte")
    if pure.is_absolute() or (len(posix) > 1 and posix[1] == ":"):
        raise PathEscapeError(f"image path {rel!r} is absolute")
    if ".." in pure.parts:
        raise PathEscapeError(f"image path {rel!r} contains '..'")
    root_resolved = Path(root).resolve()
    # resolve() follows symlinks, so a link inside the root that points outside is caught here too.
    resolved = (root_resolved / pure).resolve()
    if not resolved.is_relative_to(root_resolved):
        raise PathEscapeError(f"image path {rel!r} resolves to {resolved}, outside {root_resolved}")
    return resolved


def _open_checked(path: Path, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and enforce the pixel limit before anything is decoded."""
    try:
        st = path.stat()
    except OSError as e:  # ENOENT, but also e.g. a name too long for the file system
        raise ImageError(QuarantineReason.MISSING_IMAGE, f"image file {path} not found ({e.strerror})")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(QuarantineReason.MISSING_IMAGE, f"image path {path} is not a regular file")
    try:
        im = Image.open(path)
    except UnidentifiedImageError:
        detail = f"{path.name}: not a recognized image ({st.st_size} bytes)"
        raise ImageError(QuarantineReason.NOT_AN_IMAGE, detail)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # The Warning is only raised when a caller turned warnings into errors; same meaning.
        raise ImageError(QuarantineReason.IMAGE_TOO_LARGE, f"{path.name}: {e}")
    except Exception as e:  # a recognized header with corrupt fields: plugins raise many types
        raise ImageError(QuarantineReason.UNDECODABLE_IMAGE, f"{path.name}: {type(e).__name__}: {e}")
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ImageError(
            QuarantineReason.IMAGE_TOO_LARGE,
            f"{path.name}: {w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels}",
        )
    if im.mode not in SUPPORTED_MODES:
        im.close()
        raise ImageError(
            QuarantineReason.UNSUPPORTED_IMAGE_MODE,
            f"{path.name}: pixel mode {im.mode!r} has no defined 8-bit RGB view",
        )
    return im


def _orientation(im: Image.Image, name: str) -> int:
    """The EXIF orientation (1 = upright), read without decoding pixels; ImageError if the EXIF is unreadable."""
    # PIL's PNG getexif() decodes the whole image to look for an eXIf chunk after the pixel data: read only
    # what the header (or an earlier load) already found.
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as e:  # training's datasets.Image decoder reads it unguarded: it would fail there too
        raise ImageError(QuarantineReason.UNDECODABLE_IMAGE, f"{name}: unreadable EXIF: {type(e).__name__}: {e}")
    return value if isinstance(value, int) else 1


def _decode(im: Image.Image, path: Path, fast_jpeg: bool) -> None:
    """Decode the whole stream; raise UNDECODABLE_IMAGE on truncation or corruption."""
    try:
        if fast_jpeg and im.format == "JPEG":
            # DCT scaling still walks the entire entropy-coded stream (so truncation is caught)
            # but reconstructs only 1/8 of the pixels: several times faster than a full decode.
            w, h = im.size
            im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
        im.load()
    except Exception as e:  # decoders report corrupt data as OSError, SyntaxError, ValueError, EOFError...
        raise ImageError(QuarantineReason.UNDECODABLE_IMAGE, f"{path.name}: {type(e).__name__}: {e}")


def check_image(
    path: str | os.PathLike, mode: CheckMode = "full", max_pixels: int = DEFAULT_MAX_PIXELS
) -> ImageCheck:
    """Validate one image file: exists, is an image, within max_pixels, and (mode="full") fully decodable."""
    if mode not in ("full", "header"):
        raise ValueError(f"mode must be 'full' or 'header', got {mode!r}")
    path = Path(path)
    try:
        with _open_checked(path, max_pixels) as im:
            (w, h), fmt = im.size, im.format  # before draft() shrinks the size
            if mode == "full":
                _decode(im, path, fast_jpeg=True)
            if _orientation(im, path.name) in _SWAPS_AXES:  # record the size every stage sees: upright
                w, h = h, w
            return ImageCheck(True, width=w, height=h, format=fmt)
    except ImageError as e:
        return ImageCheck(False, e.reason, e.detail)


def check_images(paths: list[Path], mode: CheckMode, max_pixels: int) -> list[ImageCheck]:
    """check_image over a batch: the unit of work sent to a worker process."""
    return [check_image(p, mode, max_pixels) for p in paths]


def as_rgb(im: Image.Image) -> Image.Image:
    """The upright 8-bit RGB view of a decoded image (see the module docstring); ImageError if there is none."""
    name = os.path.basename(getattr(im, "filename", "") or "") or "image"
    if _orientation(im, name) != 1:
        im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in _SIXTEEN_BIT:
        # PIL's own convert clips 16-bit samples at 255 (nearly all white); scale the full range instead.
        grey = np.rint(np.asarray(im).astype(np.float64).clip(0, 65535) / 257.0).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode not in SUPPORTED_MODES:
        raise ImageError(QuarantineReason.UNSUPPORTED_IMAGE_MODE, f"{name}: pixel mode {mode!r} has no 8-bit RGB view")
    if mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")  # also turns a palette's or a single colour's transparency into alpha
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return im.convert("RGB")


def load_rgb(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image at full resolution as ``as_rgb`` sees it, with the same safety checks; raise ImageError."""
    path = Path(path)
    with _open_checked(path, max_pixels) as im:
        _decode(im, path, fast_jpeg=False)
        out = as_rgb(im)
    # Leaving the with-block only closed the file; a memory-mapped decode would still read it, so detach that.
    return im.copy() if out is im and getattr(im, "map", None) is not None else out
