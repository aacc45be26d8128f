"""Corrupted images: crop bounds, seeding, strategies, the parallel writer, manifest and preview."""

import hashlib
import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import ExifTags, Image

from mdpo_pipeline.pipeline import quality

from mdpo_pipeline.core.corruption import (
    ASPECT_RANGE,
    CROP_AREA_SLACK,
    CROP_SCALES,
    CROP_SLACK_SHARE,
    MANIFEST_SCHEMA,
    PREVIEW_CELL,
    PREVIEW_LABEL_HEIGHT,
    CorruptionConfig,
    CorruptionError,
    corrupt,
    corrupt_images,
    corruption_rng,
    crop_area_bounds,
    crop_area_ok,
    image_filename,
    preview_grid,
    sample_crop,
)
from mdpo_pipeline.core.images import load_rgb

SIZES = [(32, 32), (64, 48), (37, 101), (640, 480)]


def _noise(w, h, seed=0, mode="RGB"):
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr).convert(mode)


@pytest.fixture
def image_set(tmp_path):
    """24 small images of mixed sizes and modes (JPEG RGB, PNG L and RGBA) under tmp_path/root."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    samples = []
    for k in range(24):
        w, h = SIZES[k % 3]
        if k % 6 == 5:
            rel = f"sub/{k:03d}.png"
            _noise(w, h, k, "L" if k % 12 == 5 else "RGBA").save(root / rel)
        else:
            rel = f"sub/{k:03d}.jpg"
            _noise(w, h, k).save(root / rel, quality=90)
        samples.append((f"id/{k:03d}" if k == 7 else f"{k:03d}", rel))  # one id needs sanitizing
    return root, samples


@pytest.mark.parametrize("strategy", sorted(CROP_SCALES))
@pytest.mark.parametrize("size", SIZES)
def test_crop_box_within_area_and_aspect_bounds(strategy, size):
    lo, hi = CROP_SCALES[strategy]
    width, height = size
    areas = []
    for seed in range(300):
        crop = sample_crop(width, height, CROP_SCALES[strategy], corruption_rng(f"s{seed}", strategy, 0))
        x, y, w, h = crop["box"]
        assert not crop["fallback"]
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height
        area = w * h / (width * height)
        assert crop["area_fraction"] == round(area, 6)
        # w and h are each rounded to the nearest pixel: the area may move by at most (w + h) / 2 + 1/4 px.
        tol = ((w + h) / 2 + 0.25) / (width * height)
        assert lo - tol <= area <= hi + tol
        assert (w - 0.5) / (h + 0.5) <= ASPECT_RANGE[1] and (w + 0.5) / (h - 0.5) >= ASPECT_RANGE[0]
        areas.append(area)
    if size == (640, 480):  # large enough that rounding is negligible: the draws span the whole range
        assert min(areas) < lo + 0.1 * (hi - lo) and max(areas) > hi - 0.1 * (hi - lo)


def test_drawn_crops_of_tiny_images_stay_within_the_bounds():
    """Pixel rounding on a few-pixel image can overshoot the range: such draws are redrawn, never kept."""
    for strategy, (lo, hi) in CROP_SCALES.items():
        for width in range(1, 25):
            for height in range(1, 25):
                crop = sample_crop(width, height, (lo, hi), corruption_rng(f"{width}x{height}", strategy, 0))
                if not crop["fallback"]:
                    assert crop_area_ok(crop["area_fraction"], (lo, hi))


def test_crop_falls_back_to_a_central_crop_on_extreme_shapes():
    crop = sample_crop(1000, 2, CROP_SCALES["crop_1_20"], random.Random(0))
    assert crop["fallback"] and crop["tries"] == 10
    assert crop["box"] == [498, 0, 3, 2]  # full height, width at the 4/3 ratio limit, centred


def test_crop_output_is_the_recorded_box_resized():
    img = _noise(64, 48, 3)
    out, params = corrupt(img, "crop_1_20", corruption_rng("x", "crop_1_20", 0))
    x, y, w, h = params["box"]
    expected = img.crop((x, y, x + w, y + h)).resize(img.size, Image.Resampling.BILINEAR)
    assert out.size == img.size and out.tobytes() == expected.tobytes()


def test_every_strategy_keeps_the_size_and_records_json_params():
    img, other = _noise(40, 30, 1), _noise(64, 64, 2)
    for strategy in ("crop_1_20", "crop_20_50", "moco_v2", "random_image"):
        out, params = corrupt(img, strategy, random.Random(5), pool_lookup=lambda rng: ("other.jpg", other))
        assert out.size == img.size and out.mode == "RGB"
        assert json.loads(json.dumps(params)) == params
    assert params == {"other_image": "other.jpg", "other_size": [64, 64]}
    with pytest.raises(ValueError, match="pool_lookup"):
        corrupt(img, "random_image", random.Random(0))
    with pytest.raises(ValueError, match="unknown"):
        corrupt(img, "rotate", random.Random(0))


def test_moco_v2_records_every_step_and_hits_each_branch():
    img = _noise(48, 48, 4)
    branches = set()
    for seed in range(60):
        out, p = corrupt(img, "moco_v2", corruption_rng(str(seed), "moco_v2", 0))
        assert {"box", "area_fraction", "jitter", "grayscale", "blur_sigma", "hflip"} <= set(p)
        lo, hi = 0.2, 1.0
        x, y, w, h = p["box"]
        assert lo - (w + h) / 2 / 48**2 <= w * h / 48**2 <= hi
        if p["jitter"] is not None:
            assert sorted(p["jitter"]["order"]) == ["brightness", "contrast", "hue", "saturation"]
            assert all(0.6 <= p["jitter"][k] <= 1.4 for k in ("brightness", "contrast", "saturation"))
            assert -0.1 <= p["jitter"]["hue"] <= 0.1
        if p["blur_sigma"] is not None:
            assert 0.1 <= p["blur_sigma"] <= 2.0
        if p["grayscale"]:
            r, g, b = np.asarray(out).transpose(2, 0, 1)
            assert (r == g).all() and (g == b).all()
        branches |= {("jitter", p["jitter"] is not None), ("gray", p["grayscale"]), ("flip", p["hflip"])}
        branches.add(("blur", p["blur_sigma"] is not None))
    assert len(branches) == 8  # every optional step both applied and skipped


def test_image_filename_is_safe_and_collision_free():
    assert image_filename("12345", "jpg") == "12345.jpg"
    a, b = image_filename("a/b", "jpg"), image_filename("a_b", "jpg")
    assert a != b and "/" not in a and a.startswith("a_b-")
    assert not image_filename("..", "png").startswith("..")
    with pytest.raises(ValueError):
        image_filename("", "jpg")


def _files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_corrupt_images_writes_a_complete_reproducible_set(image_set, tmp_path):
    root, samples = image_set
    one = corrupt_images(samples, root, tmp_path / "w1", CorruptionConfig(workers=1, seed=3))
    two = corrupt_images(list(reversed(samples)), root, tmp_path / "w2", CorruptionConfig(workers=2, seed=3))
    assert _files(tmp_path / "w1") == _files(tmp_path / "w2")  # same bytes whatever the worker count or order
    assert one.summary == two.summary and two.workers == 2

    table = pq.read_table(tmp_path / "w1" / "manifest.parquet")
    assert table.schema.equals(MANIFEST_SCHEMA) and table.num_rows == len(samples)
    rows = table.to_pylist()
    assert [r["sample_id"] for r in rows] == sorted(s for s, _ in samples)
    sizes = {sid: Image.open(root / rel).size for sid, rel in samples}
    for r in rows:
        data = (tmp_path / "w1" / r["corrupted_image"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
        with Image.open(tmp_path / "w1" / r["corrupted_image"]) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == sizes[r["sample_id"]]
        assert (r["width"], r["height"]) == sizes[r["sample_id"]]
        assert 0.0 < json.loads(r["params"])["area_fraction"] <= 0.2 + 0.05
    assert one.summary["n_images"] == len(samples) and one.summary["fallback_crops"] == 0

    other_seed = corrupt_images(samples, root, tmp_path / "s4", CorruptionConfig(workers=1, seed=4))
    assert all(a["sha256"] != b["sha256"] for a, b in zip(one.rows, other_seed.rows))


def test_png_output_and_random_image_never_picks_itself(image_set, tmp_path):
    root, samples = image_set
    res = corrupt_images(samples, root, tmp_path / "out", CorruptionConfig(strategy="random_image", image_format="png"))
    picks = set()
    for r in res.rows:
        p = json.loads(r["params"])
        assert p["other_image"] != r["source_image"] and (root / p["other_image"]).is_file()
        assert r["corrupted_image"].endswith(".png")
        picks.add(p["other_image"])
    assert len(picks) > len(samples) // 3  # spread over the pool, not one fixed image
    with pytest.raises(ValueError, match="two distinct"):
        corrupt_images(samples[:1], root, tmp_path / "x", CorruptionConfig(strategy="random_image"))


def test_failure_leaves_the_previous_set_intact(image_set, tmp_path, monkeypatch):
    root, samples = image_set
    out = tmp_path / "out"
    corrupt_images(samples, root, out, CorruptionConfig(workers=1))
    before = _files(out)
    # Every sample unreadable (here: over the pixel limit) is a wrong setting, not a data defect: stop.
    with pytest.raises(CorruptionError, match=r"all 24 samples were quarantined \({'image_too_large': 24}\)"):
        corrupt_images(samples, root, out, CorruptionConfig(workers=1, seed=9, max_image_pixels=1000))

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)  # failing to write output is never quarantined
    with pytest.raises(CorruptionError, match="No space left"):
        corrupt_images(samples, root, out, CorruptionConfig(workers=1, seed=9))
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "root"]  # no temp directories left behind


def test_unreadable_images_are_quarantined_not_fatal(image_set, tmp_path):
    root, samples = image_set
    clean = corrupt_images(samples, root, tmp_path / "clean", CorruptionConfig(workers=1))
    assert not clean.quarantine and not (tmp_path / "clean" / "quarantine.parquet").exists()
    assert "n_quarantined" not in clean.summary  # a clean set's summary is what it always was

    data = (root / "sub/000.jpg").read_bytes()
    (root / "sub/trunc.jpg").write_bytes(data[: len(data) // 2])
    (root / "sub/text.jpg").write_text("<html>404</html>")
    bad = [("b-trunc", "sub/trunc.jpg"), ("b-text", "sub/text.jpg"), ("b-gone", "sub/gone.jpg")]
    one = corrupt_images(samples + bad, root, tmp_path / "w1", CorruptionConfig(workers=1))
    two = corrupt_images(samples + bad, root, tmp_path / "w2", CorruptionConfig(workers=2))
    assert _files(tmp_path / "w1") == _files(tmp_path / "w2") and two.quarantine == one.quarantine
    assert [(q["sample_id"], q["reason"]) for q in one.quarantine] == [
        ("b-gone", "missing_image"), ("b-text", "not_an_image"), ("b-trunc", "undecodable_image")]
    assert pq.read_table(tmp_path / "w1" / "quarantine.parquet").to_pylist() == one.quarantine
    assert one.n_read == len(one.rows) + len(one.quarantine) == len(samples) + 3
    s = one.summary
    assert (s["n_read"], s["n_images"], s["n_quarantined"]) == (27, 24, 3)
    assert s["quarantined_by_reason"] == {"missing_image": 1, "not_an_image": 1, "undecodable_image": 1}
    assert s["files"]["quarantine"] == "quarantine.parquet"
    # The good samples are untouched by the bad ones: same manifest rows and image bytes as the clean run.
    assert one.rows == clean.rows
    assert len(list((tmp_path / "w1" / "images").iterdir())) == len(samples)


def _gate_problems(tmp_path, out, sample_ids):
    pairs = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"instruction_id": sorted(sample_ids)}), pairs)
    return quality.corruption_gate(out / "manifest.parquet", pairs, out)


def test_crop_bounds_and_slack_are_the_gates():
    assert quality.CROP_SCALES is CROP_SCALES and quality.crop_area_ok is crop_area_ok


@pytest.mark.parametrize("strategy", sorted(CROP_SCALES))
def test_images_too_small_for_the_crop_range_are_quarantined(tmp_path, strategy):
    """Every image either gets a crop the corruption gate accepts or is quarantined as crop_out_of_bounds."""
    root = tmp_path / "root"
    root.mkdir()
    samples = []
    for w in (1, 2, 3, 4, 6, 9, 16, 300):
        for h in (1, 2, 3, 5, 8, 16):
            _noise(w, h, w * 100 + h).save(root / f"{w}x{h}.png")
            samples.append((f"{w}x{h}", f"{w}x{h}.png"))
    res = corrupt_images(samples, root, tmp_path / "out", CorruptionConfig(strategy=strategy, workers=1))
    quarantined = {q["sample_id"] for q in res.quarantine}
    assert {q["reason"] for q in res.quarantine} == {"crop_out_of_bounds"}
    # No box fits at all: a 2x2 image's smallest box keeps 25 %; at most 4:3, 21x16 px keep 7 % of 300x16.
    impossible = {"crop_1_20": {"1x1", "2x2", "2x1"}, "crop_20_50": {"1x1", "300x16", "16x1"}}[strategy]
    assert impossible <= quarantined and "16x16" not in quarantined and "9x8" not in quarantined
    assert "too small or too elongated" in res.quarantine[0]["detail"]
    passed, details = _gate_problems(tmp_path, tmp_path / "out", {r["sample_id"] for r in res.rows})
    assert passed, details
    # With the quarantined samples wanted too, the gate may object to their absence, never to a crop's area.
    _, details = _gate_problems(tmp_path, tmp_path / "out", [s for s, _ in samples])
    assert set(details["problems"]) <= {"missing_sample", "quarantined_over_share"}
    # No crop at all in moco_v2's wide range is out of bounds, and random_image does not crop.
    moco = corrupt_images(samples, root, tmp_path / "moco", CorruptionConfig(strategy="moco_v2", workers=1))
    assert not moco.quarantine


def test_random_image_draws_again_past_an_unreadable_other(image_set, tmp_path):
    root, samples = image_set
    (root / "sub/zz-broken.jpg").write_text("not an image")
    res = corrupt_images(samples + [("zz", "sub/zz-broken.jpg")], root, tmp_path / "out",
                         CorruptionConfig(strategy="random_image", workers=1))
    assert [(q["sample_id"], q["reason"]) for q in res.quarantine] == [("zz", "not_an_image")]
    assert all(json.loads(r["params"])["other_image"] != "sub/zz-broken.jpg" for r in res.rows)
    assert len(res.rows) == len(samples)


def test_exif_rotated_and_16_bit_sources_are_cropped_as_training_sees_them(tmp_path):
    """The corrupted copy is a crop of the upright, scaled view: the same pixels training gets for the original."""
    root = tmp_path / "root"
    root.mkdir()
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    _noise(40, 30, 1).save(root / "turned.jpg", quality=95, exif=exif)
    Image.fromarray(np.full((30, 40), 257 * 100, np.uint16)).save(root / "deep.png")
    samples = [("turned", "turned.jpg"), ("deep", "deep.png")]
    res = corrupt_images(samples, root, tmp_path / "out", CorruptionConfig(workers=1, image_format="png"))
    rows = {r["sample_id"]: r for r in res.rows}
    assert (rows["turned"]["width"], rows["turned"]["height"]) == (30, 40)  # upright, as ingest records it
    for sid, rel in samples:
        expected, _ = corrupt(load_rgb(root / rel), "crop_1_20", corruption_rng(sid, "crop_1_20", 0))
        with Image.open(tmp_path / "out" / rows[sid]["corrupted_image"]) as out:
            assert out.tobytes() == expected.tobytes()
            assert ExifTags.Base.Orientation not in out.getexif()  # never turned a second time
    with Image.open(tmp_path / "out" / rows["deep"]["corrupted_image"]) as out:
        assert set(np.asarray(out).ravel().tolist()) == {100}  # scaled, where PIL's convert would give 255


def test_bad_samples_are_rejected(image_set, tmp_path):
    root, samples = image_set
    for bad in ([], samples + [samples[0]], [("a", "../etc/passwd.jpg")], [("a", "/abs.jpg")]):
        with pytest.raises(ValueError):
            corrupt_images(bad, root, tmp_path / "out", CorruptionConfig())


def test_preview_grid_is_a_png_of_the_expected_size(image_set, tmp_path):
    root, samples = image_set
    res = corrupt_images(samples, root, tmp_path / "out", CorruptionConfig(workers=1))
    with Image.open(tmp_path / "out" / "preview.png") as im:
        assert im.format == "PNG" and im.size == (8 * PREVIEW_CELL, 2 * PREVIEW_CELL + PREVIEW_LABEL_HEIGHT)
    path = preview_grid(res.rows[:3], root, tmp_path / "out", tmp_path / "p.png", n=8)
    first = res.rows[0]  # sample "000": a 32x32 image, first in id order, so the first column
    cell = (PREVIEW_CELL, PREVIEW_CELL)
    with Image.open(path) as im, Image.open(root / first["source_image"]) as orig:
        assert im.size == (3 * PREVIEW_CELL, 2 * PREVIEW_CELL + PREVIEW_LABEL_HEIGHT)
        # Originals on top, corrupted below, each blown up 4x with NEAREST to fill its cell.
        top = np.asarray(im.crop((0, 0, *cell)))
        assert (top == np.asarray(orig.convert("RGB").resize(cell, Image.Resampling.NEAREST))).all()
        with Image.open(tmp_path / "out" / first["corrupted_image"]) as bad:
            bottom = np.asarray(im.crop((0, PREVIEW_CELL, PREVIEW_CELL, 2 * PREVIEW_CELL)))
            assert (bottom == np.asarray(bad.convert("RGB").resize(cell, Image.Resampling.NEAREST))).all()


@pytest.mark.parametrize(
    "kwargs",
    [{"strategy": "blur"}, {"seed": "0"}, {"workers": -1}, {"image_format": "webp"}, {"max_image_pixels": 0}],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        CorruptionConfig(**kwargs)


# ------------------------------------------------------------------ the crop range on strips and tiny images


def test_crop_slack_never_takes_a_bound_to_zero():
    """0.02 of slack below crop_1_20's 1 % was a bound of -1 %: now each bound moves by at most a tenth of itself."""
    assert crop_area_bounds(CROP_SCALES["crop_1_20"]) == (0.009, 0.22)  # 0.01 - 0.001, 0.2 + 0.02
    assert crop_area_bounds(CROP_SCALES["crop_20_50"]) == (0.18, 0.52)  # 0.2 - 0.02, 0.5 + 0.02
    for scale in CROP_SCALES.values():
        lo, hi = crop_area_bounds(scale)
        assert round(scale[0] * (1 - CROP_SLACK_SHARE), 6) <= lo < scale[0]
        assert scale[1] < hi <= scale[1] + CROP_AREA_SLACK
    # The 1x1 central crop of a 1x20000 strip keeps 0.005 % of it.
    assert not crop_area_ok(round(1 / 20000, 6), CROP_SCALES["crop_1_20"])


def _in_ratio_boxes(width, height):
    """Every (w, h) a crop may have: within the image, the aspect range as pixel rounding allows it."""
    return [(w, h) for h in range(1, height + 1) for w in range(1, width + 1)
            if round(h * ASPECT_RANGE[0]) <= w <= round(h * ASPECT_RANGE[1])]


STRIPS = [(1, n) for n in (2, 4, 5, 50, 100, 111, 112, 300, 20000)] + [(n, 1) for n in (2, 5, 100, 112, 20000)] + [
    (2, n) for n in (3, 50, 200, 300, 400, 1000)] + [(n, 2) for n in (200, 300, 1000)] + [
    (w, h) for w in range(1, 7) for h in range(1, 7)]


@pytest.mark.parametrize("strategy", sorted(CROP_SCALES))
def test_strips_and_tiny_images_get_a_crop_in_range_or_the_nearest_one(strategy):
    """Whatever the shape, a crop is within the bounds; when it is not, no box of the image is, and the crop
    recorded is the nearest one (the sample is then quarantined)."""
    scale = CROP_SCALES[strategy]
    lo, hi = crop_area_bounds(scale)
    for width, height in STRIPS:
        for seed in range(3):
            crop = sample_crop(width, height, scale, corruption_rng(f"{width}x{height}/{seed}", strategy, 0))
            x, y, w, h = crop["box"]
            assert 0 <= x and 0 <= y and x + w <= width and y + h <= height
            if crop_area_ok(crop["area_fraction"], scale):
                continue
            assert crop["fallback"], (width, height, crop)
            shares = [round(bw * bh / (width * height), 6) for bw, bh in _in_ratio_boxes(width, height)]
            assert not any(lo <= a <= hi for a in shares), (width, height, crop)
            nearest = min(max(lo - a, a - hi) for a in shares)
            assert max(lo - crop["area_fraction"], crop["area_fraction"] - hi) == nearest


def test_fallback_takes_an_in_range_box_when_the_central_one_is_not():
    """Draws that always round out of range (a 2x1 box keeps 2/9 > 0.22 of 3x3) leave torchvision's fallback, the
    whole 3x3 image (100 %); the nearest in-ratio box, 1x1, keeps 1/9 = 11 %, within crop_1_20."""

    class Highest(random.Random):
        def uniform(self, a, b):
            return b  # target 9 * 0.2 = 1.8 px at aspect 4/3: w = round(1.55) = 2, h = round(1.16) = 1

    crop = sample_crop(3, 3, CROP_SCALES["crop_1_20"], Highest(0))
    assert crop["fallback"] and crop["box"] == [1, 1, 1, 1] and crop["area_fraction"] == 0.111111


@pytest.mark.parametrize("strategy", sorted(CROP_SCALES))
def test_long_strips_are_quarantined_and_the_gate_refuses_their_crops(tmp_path, strategy):
    root = tmp_path / "root"
    root.mkdir()
    shapes = {"tall": (1, 20000), "wide": (20000, 1), "two": (2, 1000), "ok": (64, 48)}
    for name, (w, h) in shapes.items():
        _noise(w, h, w + h).save(root / f"{name}.png")
    samples = [(name, f"{name}.png") for name in shapes]
    res = corrupt_images(samples, root, tmp_path / "out", CorruptionConfig(strategy=strategy, workers=1))
    assert [r["sample_id"] for r in res.rows] == ["ok"]
    assert {q["sample_id"]: q["reason"] for q in res.quarantine} == dict.fromkeys(("tall", "two", "wide"),
                                                                                 "crop_out_of_bounds")
    detail = {q["sample_id"]: q["detail"] for q in res.quarantine}["tall"]
    assert "1x20000 image: the crop (1x1, fallback=True) keeps 5e-05 of the area, outside" in detail
    passed, details = _gate_problems(tmp_path, tmp_path / "out", ["ok"])
    assert passed, details
    # A manifest row with the 1x1 crop of the strip, as the stage wrote it before: the gate refuses it.
    manifest = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    strip = dict(manifest[0], sample_id="tall", params=json.dumps({"box": [0, 9999, 1, 1], "area_fraction": 5e-05}))
    pq.write_table(pa.Table.from_pylist(manifest + [strip], schema=MANIFEST_SCHEMA),
                   tmp_path / "out" / "manifest.parquet")
    passed, details = _gate_problems(tmp_path, tmp_path / "out", ["ok", "tall"])
    assert not passed and details["problems"]["area_out_of_bounds"] == 1


def test_diffusion_noise_is_the_forward_process_at_step_500_seeded_and_recorded():
    from mdpo_pipeline.core.corruption import DIFFUSION_STEP, corrupt, diffusion_alpha_bar

    # ᾱ_t by hand: Π_{s<=t} (1 − β_s), β_s = 1e-5 + (5e-3 − 1e-5)·σ(−6 + 12·s/999).
    import math

    alpha_bar = 1.0
    for s in range(DIFFUSION_STEP + 1):
        alpha_bar *= 1 - (1e-5 + (5e-3 - 1e-5) / (1 + math.exp(6 - 12 * s / 999)))
    assert diffusion_alpha_bar() == pytest.approx(alpha_bar, rel=1e-12) and 0.74 < alpha_bar < 0.75

    grey = Image.new("RGB", (48, 32), (128, 128, 128))
    a, params = corrupt(grey, "diffusion_noise", random.Random(7))
    b, again = corrupt(grey, "diffusion_noise", random.Random(7))
    assert a.size == grey.size and a.mode == "RGB" and a.tobytes() == b.tobytes() and params == again
    assert params["step"] == DIFFUSION_STEP and params["alpha_bar"] == round(alpha_bar, 6)
    # The noise is N(0, 1 − ᾱ) in [−1, 1] units around √ᾱ·x_0 (σ ≈ 0.505); clipping to [−1, 1], about 2σ here,
    # takes the tails in, so the stored spread is a little below σ (about 0.48).
    x = np.asarray(a, dtype=np.float64) / 127.5 - 1
    x0 = 128 / 127.5 - 1
    assert abs(x.mean() - math.sqrt(alpha_bar) * x0) < 0.02
    assert 0.9 * math.sqrt(1 - alpha_bar) < x.std() < math.sqrt(1 - alpha_bar)
    other, _ = corrupt(grey, "diffusion_noise", random.Random(8))
    assert other.tobytes() != a.tobytes()
