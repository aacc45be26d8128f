"""Image safety: path containment, truncation, non-images and decompression bombs."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageFile, ImageOps
from PIL.JpegImagePlugin import JpegImageFile

from mdpo_pipeline.core.images import (
    ImageError,
    PathEscapeError,
    as_rgb,
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


# ------------------------------------------------------------------------- as_rgb: one view for every stage


def exif_jpeg(path, size=(40, 30), orientation=6):
    """A noisy JPEG stored sideways: pixels `size`, EXIF saying how to turn them upright."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    noisy = (np.random.default_rng(2).random((size[1], size[0], 3)) * 255).astype("uint8")
    Image.fromarray(noisy).save(path, quality=95, exif=exif)
    return path


@pytest.mark.parametrize("orientation, upright", [(1, (40, 30)), (3, (40, 30)), (6, (30, 40)), (8, (30, 40))])
def test_exif_orientation_applied_once_and_sizes_recorded_upright(tmp_path, orientation, upright):
    path = exif_jpeg(tmp_path / "o.jpg", orientation=orientation)
    for mode in ("full", "header"):
        chk = check_image(path, mode=mode)
        assert (chk.width, chk.height) == upright, mode
    im = load_rgb(path)
    assert im.size == upright
    with Image.open(path) as raw:
        raw = raw.convert("RGB")
        assert im.tobytes() == ImageOps.exif_transpose(raw).tobytes()
    assert as_rgb(im).tobytes() == im.tobytes()  # the tag is gone: a second pass is a no-op


def test_training_decoder_then_as_rgb_equals_load_rgb(tmp_path):
    """Training reads originals with datasets.Image(); followed by as_rgb it sees exactly what corruption crops."""
    datasets = pytest.importorskip("datasets")
    files = [exif_jpeg(tmp_path / "r.jpg", orientation=6)]
    Image.fromarray(np.full((6, 5), 40000, np.uint16)).save(tmp_path / "g16.png")
    pal = Image.new("P", (5, 4), 1)
    pal.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.save(tmp_path / "p.png", transparency=0)
    files += [tmp_path / "g16.png", tmp_path / "p.png"]
    for path in files:
        decoded = datasets.Image().decode_example({"path": str(path), "bytes": None})
        assert as_rgb(decoded).tobytes() == load_rgb(path).tobytes(), path.name
    # Orientation alone already agrees without as_rgb: datasets applies the EXIF turn itself.
    decoded = datasets.Image().decode_example({"path": str(files[0]), "bytes": None})
    assert decoded.convert("RGB").tobytes() == load_rgb(files[0]).tobytes()


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_sixteen_bit_scaled_not_clipped(tmp_path, mode):
    values = np.array([[0, 257, 257 * 100, 40000, 65535]], np.uint16)
    im = Image.fromarray(values) if mode == "I;16" else Image.fromarray(values.astype(np.int32))
    assert im.mode == mode
    path = tmp_path / ("g.png" if mode == "I;16" else "g.tif")  # PNG cannot hold 32-bit "I"
    im.save(path)
    with Image.open(path) as back:
        assert back.mode == mode
    out = np.asarray(load_rgb(path))
    assert out.shape == (1, 5, 3) and (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert out[0, :, 0].tolist() == [0, 1, 100, 156, 255]  # 40000 / 257 = 155.6; PIL's convert gives 255
    assert np.asarray(im.convert("RGB"))[0, 3, 0] == 255  # what clipping would have done


def test_palette_and_alpha_composited_over_white(tmp_path):
    pal = Image.new("P", (3, 1), 1)
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.save(tmp_path / "t.png", transparency=0)  # index 0 transparent
    assert np.asarray(load_rgb(tmp_path / "t.png"))[0].tolist() == [[255, 255, 255], [200, 100, 50], [200, 100, 50]]
    pal.save(tmp_path / "o.png")  # no transparency: plain palette colours
    assert np.asarray(load_rgb(tmp_path / "o.png"))[0, 0].tolist() == [10, 20, 30]
    la = Image.fromarray(np.array([[[100, 0], [100, 255], [100, 128]]], np.uint8), "LA")
    la.save(tmp_path / "la.png")
    got = np.asarray(load_rgb(tmp_path / "la.png"))[0, :, 0].tolist()
    assert got[:2] == [255, 100] and abs(got[2] - (100 * 128 + 255 * 127) / 255) <= 1


def test_cmyk_jpeg_converts(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    with Image.open(tmp_path / "c.jpg") as im:
        assert im.mode == "CMYK"
    assert check_image(tmp_path / "c.jpg").ok
    r, g, b = load_rgb(tmp_path / "c.jpg").getpixel((4, 4))
    assert r > 240 and g < 15 and b < 15  # pure red, not an inverted or clipped colour


def test_float_images_are_an_unsupported_mode(tmp_path):
    Image.new("F", (4, 4), 0.5).save(tmp_path / "f.tif")
    for mode in ("full", "header"):
        chk = check_image(tmp_path / "f.tif", mode=mode)
        assert chk.reason is R.UNSUPPORTED_IMAGE_MODE and "'F'" in chk.detail
    with pytest.raises(ImageError) as e:
        load_rgb(tmp_path / "f.tif")
    assert e.value.reason is R.UNSUPPORTED_IMAGE_MODE
    with pytest.raises(ImageError):
        as_rgb(Image.new("F", (2, 2)))
