"""load_image / check_image: upright RGB from any mode, clear reasons for bad files."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dtl_engine.data import check_image, load_image
from dtl_engine.errors import DataError
from image_factory import jpeg_bytes, make_image, png_bytes


def test_rgb_image_loads_unchanged(tmp_path):
    p = make_image(tmp_path / "x.png", index=2, size=(20, 10))
    img = load_image(p)
    assert img.mode == "RGB" and img.size == (20, 10)
    assert np.array_equal(np.asarray(img), np.asarray(Image.open(p)))


def sideways_jpeg(path, height: int, width: int):
    """A photo stored sideways: left half red, right half blue, EXIF "rotate 90° clockwise to view"."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, : width // 2] = (255, 0, 0)
    arr[:, width // 2:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(path, exif=exif, quality=95)
    return path


def test_exif_rotated_photo_comes_out_upright(tmp_path):
    img = load_image(sideways_jpeg(tmp_path / "phone.jpg", 20, 40))
    assert img.size == (20, 40)  # portrait, as the camera meant it
    top, bottom = np.asarray(img)[5, 10], np.asarray(img)[34, 10]
    assert top[0] > 200 and top[2] < 60      # the red half is on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_min_side_decodes_big_jpegs_smaller_but_upright(tmp_path):
    p = sideways_jpeg(tmp_path / "big.jpg", 300, 400)
    full, small = load_image(p), load_image(p, min_side=64)
    assert full.size == (300, 400)
    assert small.size == (75, 100)                      # 1/4 scale still >= 64 on both sides
    assert np.asarray(small)[10, 30][0] > 200           # red on top: still upright
    png = make_image(tmp_path / "big.png", size=(300, 200))
    assert load_image(png, min_side=64).size == (300, 200)   # only JPEGs have a cheap reduced decode


def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path):
    p = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(p)
    assert Image.open(p).mode.startswith("I")
    px = np.asarray(load_image(p))
    assert px.shape == (8, 8, 3)
    assert np.all(np.abs(px.astype(int) - 156) <= 1)  # 40000 / 257, not clipped to 255


def test_rgba_is_composited_on_white(tmp_path):
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., 0] = 255          # red, but...
    arr[:2, :, 3] = 0          # ...fully transparent on top
    arr[2:, :, 3] = 255        # ...opaque below
    p = tmp_path / "alpha.png"
    Image.fromarray(arr, "RGBA").save(p)
    px = np.asarray(load_image(p))
    assert tuple(px[0, 0]) == (255, 255, 255)
    assert tuple(px[3, 0]) == (255, 0, 0)


def test_half_transparent_black_is_gray(tmp_path):
    p = tmp_path / "la.png"
    Image.fromarray(np.dstack([np.zeros((4, 4), np.uint8), np.full((4, 4), 128, np.uint8)]), "LA").save(p)
    px = np.asarray(load_image(p))
    assert np.all(np.abs(px.astype(int) - 127) <= 2)


def test_palette_with_transparency_is_white_where_transparent(tmp_path):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    p = tmp_path / "pal.png"
    img.save(p, transparency=0)
    px = np.asarray(load_image(p))
    assert tuple(px[0, 0]) == (255, 255, 255)
    assert tuple(px[1, 1]) == (0, 255, 0)


@pytest.mark.parametrize("mode", ["L", "P", "1", "CMYK", "I", "F", "LA"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    fmt = {"CMYK": "jpeg", "F": "tiff", "I": "tiff"}.get(mode, "png")
    p = make_image(tmp_path / f"m.{fmt}", index=0, size=(12, 9), fmt=fmt, mode=mode)
    img = load_image(p)
    assert img.mode == "RGB" and img.size == (12, 9)


def test_cmyk_colours_survive(tmp_path):
    p = tmp_path / "print.jpg"
    Image.new("RGB", (8, 8), (220, 30, 30)).convert("CMYK").save(p, quality=95)
    r, g, b = np.asarray(load_image(p))[4, 4].astype(int)
    assert r > 170 and g < 80 and b < 80


def test_first_frame_of_animation(tmp_path):
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:])
    assert np.asarray(load_image(p))[0, 0, 0] > 200


@pytest.mark.parametrize("content, phrase", [
    (b"", r"empty \(0 bytes\)"),                 # the scan's own words, also at load time (Classify a folder)
    (b"plain words", "not an image"),
    (jpeg_bytes((64, 64))[:300], "truncated or corrupt"),
    (png_bytes((64, 64))[:-120], "truncated or corrupt"),
])
def test_bad_files_raise_data_error_with_reason(tmp_path, content, phrase):
    p = tmp_path / "bad.jpg"
    p.write_bytes(content)
    with pytest.raises(DataError, match=phrase) as info:
        load_image(p)
    assert "bad.jpg" in str(info.value)


def test_an_empty_file_has_one_reason_at_scan_and_at_load(tmp_path):
    """The Data step (check_image) and Classify a folder (load_image) name a 0-byte picture alike."""
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(DataError) as info:
        load_image(p)
    assert check_image(p) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="disappeared"):
        load_image(tmp_path / "gone.png")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bomb_is_refused_at_load(tmp_path, monkeypatch):
    p = make_image(tmp_path / "big.png", size=(50, 50))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match="too large"):
        load_image(p)
    assert "too large" in check_image(p)


def test_check_image_accepts_good_and_names_bad(tmp_path):
    good = make_image(tmp_path / "ok.png")
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    assert check_image(good) is None
    assert "not an image" in check_image(bad)
    assert "empty" in check_image(tmp_path / "ok.png", size=0)
