"""Safe image access: path containment under a data root, and validation that never decodes a bomb.

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

from PIL import Image, UnidentifiedImageError

from mdpo_pipeline.core.schemas import QuarantineReason

#: PIL's default decompression-bomb threshold (about 0.25 GB of 24-bit pixels).
DEFAULT_MAX_PIXELS = 89_478_485

CheckMode = Literal["full", "header"]


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
    return im


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
            return ImageCheck(True, width=w, height=h, format=fmt)
    except ImageError as e:
        return ImageCheck(False, e.reason, e.detail)


def check_images(paths: list[Path], mode: CheckMode, max_pixels: int) -> list[ImageCheck]:
    """check_image over a batch: the unit of work sent to a worker process."""
    return [check_image(p, mode, max_pixels) for p in paths]


def load_rgb(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image at full resolution as RGB, with the same safety checks; raise ImageError."""
    path = Path(path)
    with _open_checked(path, max_pixels) as im:
        _decode(im, path, fast_jpeg=False)
        return im.convert("RGB")  # always a new, file-independent image, so closing the file is safe
