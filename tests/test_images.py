"""Image safety: path containment, truncation, non-images and decompression bombs."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile
from PIL.JpegImagePlugin import JpegImageFile

from mdpo_pipeline.core.images import (
    ImageError,
    PathEscapeError,
    check_image,
    load_rgb,
    resolve_image_path,
)
from mdpo_pipeline.core.schemas import QuarantineReason as R


def noisy_jpeg(path, size=(96, 64), progressive=False):
    rng = np.random.default_rng(0)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype("uint8")
    Image.fromarray(arr).save(path, quality=90, progressive=progressive)
    return path


def png_header_only(path, width, height):
    """A tiny PNG whose header declares width x height but carries almost no pixel data."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1), 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------------------------- resolve_image_path


def test_resolve_inside_root(tmp_path):
    (tmp_path / "a").mkdir()
    assert resolve_image_path(tmp_path, "a/x.jpg") == (tmp_path / "a" / "x.jpg").resolve()
    assert resolve_image_path(tmp_path, "./a/x.jpg") == (tmp_path / "a" / "x.jpg").resolve()


@pytest.mark.parametrize(
    "rel", ["../x.jpg", "a/../../x.jpg", "..\\x.jpg", "/etc/passwd", "C:/x.jpg", "", "  ", "a\x00.jpg"]
)
def test_resolve_rejects_escapes(tmp_path, rel):
    with pytest.raises(PathEscapeError) as e:
        resolve_image_path(tmp_path, rel)
    assert e.value.reason is R.PATH_ESCAPE


def test_resolve_rejects_symlink_out_of_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside.jpg"
    root.mkdir()
    noisy_jpeg(outside)
    (root / "link.jpg").symlink_to(outside)
    (root / "inner.jpg").symlink_to(noisy_jpeg(root / "real.jpg"))
    with pytest.raises(PathEscapeError, match="outside"):
        resolve_image_path(root, "link.jpg")
    assert resolve_image_path(root, "inner.jpg") == (root / "real.jpg").resolve()


# ------------------------------------------------------------------------------------------ check_image


def test_good_jpeg_reports_true_size(tmp_path):
    chk = check_image(noisy_jpeg(tmp_path / "a.jpg", size=(97, 65)))
    assert (chk.ok, chk.width, chk.height, chk.format) == (True, 97, 65, "JPEG")  # not the 1/8 draft size


def test_missing_file(tmp_path):
    chk = check_image(tmp_path / "nope.jpg")
    assert (chk.ok, chk.reason) == (False, R.MISSING_IMAGE) and "nope.jpg" in chk.detail


def test_unreadable_names_are_missing_not_crashes(tmp_path):
    assert check_image(tmp_path / ("a" * 300 + ".jpg")).reason is R.MISSING_IMAGE  # ENAMETOOLONG
    (tmp_path / "dir.jpg").mkdir()
    assert check_image(tmp_path / "dir.jpg").reason is R.MISSING_IMAGE


def test_text_file_named_jpg(tmp_path):
    (tmp_path / "x.jpg").write_text("this is not an image\n")
    chk = check_image(tmp_path / "x.jpg")
    assert chk.reason is R.NOT_AN_IMAGE and "x.jpg" in chk.detail


@pytest.mark.parametrize("progressive", [False, True])
def test_truncated_jpeg_detected_by_fast_draft_decode(tmp_path, monkeypatch, progressive):
    data = noisy_jpeg(tmp_path / "a.jpg", size=(256, 192), progressive=progressive).read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    drafts = []
    original = JpegImageFile.draft
    monkeypatch.setattr(JpegImageFile, "draft", lambda self, mode, size: drafts.append(size) or original(self, mode, size))
    chk = check_image(tmp_path / "t.jpg", mode="full")
    assert chk.reason is R.UNDECODABLE_IMAGE and "truncated" in chk.detail
    assert drafts == [(32, 24)]  # the truncation was found by the 1/8-scale decode, not a full one
    # The header alone looks fine: only "full" reads the entropy stream.
    assert check_image(tmp_path / "t.jpg", mode="header").ok


def test_corrupt_png_stream(tmp_path):
    Image.fromarray((np.random.default_rng(1).random((64, 64, 3)) * 255).astype("uint8")).save(tmp_path / "a.png")
    data = bytearray((tmp_path / "a.png").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "c.png").write_bytes(bytes(data))
    assert check_image(tmp_path / "c.png").reason is R.UNDECODABLE_IMAGE


def test_over_max_pixels(tmp_path):
    chk = check_image(noisy_jpeg(tmp_path / "a.jpg", size=(100, 50)), max_pixels=4999)
    assert chk.reason is R.IMAGE_TOO_LARGE and "100x50" in chk.detail
    assert check_image(tmp_path / "a.jpg", max_pixels=5000).ok


def test_bomb_header_rejected_without_decoding(tmp_path, monkeypatch):
    bomb = png_header_only(tmp_path / "bomb.png", 20000, 20000)
    assert bomb.stat().st_size < 1000

    def no_decode(self):
        raise AssertionError("decoded a bomb")

    # Any decode attempt fails the test: the size check must come from the header alone.
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    for max_pixels in (10_000, 89_478_485, 10**12):  # ours, PIL's default, and above PIL's own hard limit
        chk = check_image(bomb, max_pixels=max_pixels)
        assert chk.reason is R.IMAGE_TOO_LARGE, chk


def test_bomb_warning_as_error_is_caught(tmp_path):
    # 100M pixels: above PIL's warning threshold, below its hard error; our limit raised above both.
    bomb = png_header_only(tmp_path / "b.png", 10000, 10000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_image(bomb, max_pixels=10**12).reason is R.IMAGE_TOO_LARGE


def test_pil_globals_untouched(tmp_path):
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    check_image(png_header_only(tmp_path / "b.png", 20000, 20000), max_pixels=10**12)
    check_image(noisy_jpeg(tmp_path / "a.jpg"), max_pixels=10)
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before


def test_bad_mode_rejected(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        check_image(tmp_path / "a.jpg", mode="fast")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- load_rgb


def test_load_rgb_converts_and_detaches(tmp_path):
    Image.new("L", (10, 7), 128).save(tmp_path / "g.png")
    im = load_rgb(tmp_path / "g.png")
    assert (im.mode, im.size, im.getpixel((3, 3))) == ("RGB", (10, 7), (128, 128, 128))


def test_load_rgb_raises_with_reason(tmp_path):
    data = noisy_jpeg(tmp_path / "a.jpg", size=(128, 128)).read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as e:
        load_rgb(tmp_path / "t.jpg")
    assert e.value.reason is R.UNDECODABLE_IMAGE
    with pytest.raises(ImageError) as e:
        load_rgb(tmp_path / "a.jpg", max_pixels=100)
    assert e.value.reason is R.IMAGE_TOO_LARGE
