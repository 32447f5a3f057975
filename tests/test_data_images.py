"""The image loader: every file mode to 8-bit RGB with the right pixel values, clear failures."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from prsl.data.images import IN_MEMORY, ImageLoadError, load_images, load_rgb, to_pixels


def saved(image: Image.Image, path: Path, **params) -> Path:
    image.save(path, **params)
    return path


def pixel(image: Image.Image, xy=(0, 0)) -> tuple[int, int, int]:
    assert image.mode == "RGB"
    return image.getpixel(xy)


def noisy_rgb(size: int = 64) -> Image.Image:
    """Incompressible content, so that cutting a file in half really loses pixel data."""
    values = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(values)


# --- mode conversions --------------------------------------------------------------------------


def test_rgb_file_is_returned_unchanged(tmp_path):
    image = noisy_rgb(8)
    loaded = load_rgb(saved(image, tmp_path / "x.png"))
    assert loaded.tobytes() == image.tobytes()


def test_grayscale_l_becomes_equal_channels(tmp_path):
    path = saved(Image.new("L", (3, 2), 77), tmp_path / "gray.png")
    loaded = load_rgb(path)
    assert loaded.size == (3, 2)
    assert pixel(loaded) == (77, 77, 77)


def test_one_bit_image_maps_to_black_and_white(tmp_path):
    image = Image.new("1", (2, 1), 0)
    image.putpixel((1, 0), 1)
    loaded = load_rgb(saved(image, tmp_path / "bw.png"))
    assert pixel(loaded, (0, 0)) == (0, 0, 0)
    assert pixel(loaded, (1, 0)) == (255, 255, 255)


def over_white(value: int, alpha: int) -> int:
    return round(value * alpha / 255 + 255 * (1 - alpha / 255))


@pytest.mark.parametrize("alpha", [0, 128, 255])
def test_la_is_composited_over_white(tmp_path, alpha):
    path = saved(Image.new("LA", (1, 1), (100, alpha)), tmp_path / "la.png")
    expected = over_white(100, alpha)
    assert all(abs(c - expected) <= 1 for c in pixel(load_rgb(path)))


@pytest.mark.parametrize("alpha", [0, 64, 255])
def test_rgba_is_composited_over_white(tmp_path, alpha):
    colour = (200, 10, 60)
    path = saved(Image.new("RGBA", (1, 1), (*colour, alpha)), tmp_path / "rgba.png")
    got = pixel(load_rgb(path))
    for channel, value in zip(got, colour, strict=True):
        assert abs(channel - over_white(value, alpha)) <= 1


def palette_image() -> Image.Image:
    image = Image.new("P", (2, 1), 0)
    image.putpalette([0, 0, 0, 12, 34, 56] + [0] * (254 * 3))
    image.putpixel((1, 0), 1)
    return image


def test_palette_colours_are_preserved(tmp_path):
    loaded = load_rgb(saved(palette_image(), tmp_path / "p.png"))
    assert pixel(loaded, (0, 0)) == (0, 0, 0)
    assert pixel(loaded, (1, 0)) == (12, 34, 56)


@pytest.mark.parametrize("suffix", ["png", "gif"])
def test_palette_transparency_becomes_white(tmp_path, suffix):
    path = saved(palette_image(), tmp_path / f"pt.{suffix}", transparency=0)
    assert Image.open(path).mode == "P"
    loaded = load_rgb(path)
    assert pixel(loaded, (0, 0)) == (255, 255, 255)
    assert pixel(loaded, (1, 0)) == (12, 34, 56)


def test_pa_mode_in_memory_is_composited():
    image = Image.new("PA", (1, 1))
    image.putpalette([90, 80, 70] * 256)
    image.putpixel((0, 0), (0, 0))
    assert pixel(load_rgb(image)) == (255, 255, 255)


@pytest.mark.parametrize("suffix, tolerance", [("tif", 0), ("jpg", 8)])
def test_cmyk_pure_cyan_becomes_cyan(tmp_path, suffix, tolerance):
    path = saved(Image.new("CMYK", (8, 8), (255, 0, 0, 0)), tmp_path / f"cmyk.{suffix}")
    assert Image.open(path).mode == "CMYK"
    got = pixel(load_rgb(path), (4, 4))
    assert all(abs(g - e) <= tolerance for g, e in zip(got, (0, 255, 255), strict=True))


SIXTEEN_BIT = [(0, 0), (257, 1), (32896, 128), (65535, 255), (1000, 4)]


@pytest.mark.parametrize("mode, suffix", [("I;16", "png"), ("I;16", "tif"), ("I;16B", "tif")])
def test_sixteen_bit_files_are_scaled_not_clipped(tmp_path, mode, suffix):
    values = np.array([[v for v, _ in SIXTEEN_BIT]], dtype=np.uint16)
    image = Image.new(mode, (len(SIXTEEN_BIT), 1))
    for x, (value, _) in enumerate(SIXTEEN_BIT):
        image.putpixel((x, 0), value)
    assert np.array_equal(np.asarray(image).astype(np.uint16), values)
    path = saved(image, tmp_path / f"deep.{suffix}")
    loaded = load_rgb(path)
    for x, (_, expected) in enumerate(SIXTEEN_BIT):
        assert pixel(loaded, (x, 0)) == (expected,) * 3


def test_thirty_two_bit_integer_image_is_read_as_sixteen_bit(tmp_path):
    image = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.int32))
    assert image.mode == "I"
    loaded = load_rgb(saved(image, tmp_path / "i32.tif"))
    assert [pixel(loaded, (x, 0))[0] for x in range(3)] == [0, 128, 255]


@settings(max_examples=30, deadline=None)
@given(arrays(np.uint16, st.tuples(st.integers(1, 5), st.integers(1, 5))))
def test_sixteen_bit_scaling_matches_value_over_257(values):
    loaded = np.asarray(load_rgb(Image.fromarray(values)))
    expected = np.floor(values / 257.0 + 0.5).astype(np.uint8)  # 65535 / 255 = 257 exactly
    assert np.array_equal(loaded[..., 0], expected)
    assert np.array_equal(loaded[..., 0], loaded[..., 2])


def test_ycbcr_and_hsv_convert_to_the_same_rgb():
    rgb = Image.new("RGB", (1, 1), (200, 40, 90))
    for mode in ("YCbCr", "HSV"):
        got = pixel(load_rgb(rgb.convert(mode)))
        assert all(abs(g - e) <= 3 for g, e in zip(got, (200, 40, 90), strict=True)), mode


@pytest.mark.parametrize("mode", ["F", "LAB"])
def test_modes_without_safe_conversion_are_load_errors(mode):
    with pytest.raises(ImageLoadError, match=f"unsupported image mode '{mode}'") as info:
        load_rgb(Image.new(mode, (1, 1)))
    assert info.value.path == IN_MEMORY


# --- failures ------------------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageLoadError) as info:
        load_rgb(path)
    assert info.value.path == str(path)
    assert info.value.reason == "file not found"
    assert str(path) in str(info.value)


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_truncated_files_fail_on_load(tmp_path, suffix):
    full = saved(noisy_rgb(), tmp_path / f"full.{suffix}")
    data = full.read_bytes()
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with Image.open(cut) as lazy:  # the header still parses: only decoding reveals the damage
        assert lazy.size == (64, 64)
    with pytest.raises(ImageLoadError) as info:
        load_rgb(cut)
    assert info.value.path == str(cut)
    assert info.value.reason


def test_file_that_is_not_an_image_fails(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(ImageLoadError, match="notes.png"):
        load_rgb(path)


# --- pixels --------------------------------------------------------------------------------------


def test_to_pixels_shape_range_and_exact_values():
    images = [Image.new("RGB", (10, 7), (200, 0, 51)), noisy_rgb(12)]
    pixels = to_pixels(images, (8, 12))
    assert pixels.shape == (2, 3, 8, 12)
    assert pixels.dtype == torch.float32
    assert float(pixels.min()) >= 0.0 and float(pixels.max()) <= 1.0
    assert torch.allclose(pixels[0, :, 3, 5], torch.tensor([200, 0, 51]) / 255.0)


def test_to_pixels_keeps_height_and_width_apart():
    image = Image.new("RGB", (24, 16), (255, 0, 0))  # width 24, height 16
    image.paste((0, 0, 255), (12, 0, 24, 16))  # right half blue
    pixels = to_pixels([image], (8, 12))  # (height, width)
    assert pixels.shape == (1, 3, 8, 12)
    assert torch.allclose(pixels[0, :, 4, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(pixels[0, :, 4, 11], torch.tensor([0.0, 0.0, 1.0]))


def test_to_pixels_at_native_size_is_bytes_over_255():
    image = noisy_rgb(16)
    expected = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0
    assert torch.equal(to_pixels([image], (16, 16))[0], expected)


def test_to_pixels_of_nothing_is_an_empty_batch():
    assert to_pixels([], (4, 5)).shape == (0, 3, 4, 5)


def test_to_pixels_rejects_non_rgb_and_bad_sizes():
    with pytest.raises(ValueError, match=r"images\[0\] has mode 'L'.*load_rgb"):
        to_pixels([Image.new("L", (2, 2))], (2, 2))
    for size in [(0, 4), (4,), (4.0, 4)]:
        with pytest.raises(ValueError, match="size must be \\(height, width\\)"):
            to_pixels([Image.new("RGB", (2, 2))], size)


def test_load_images_skips_and_names_broken_sources(tmp_path, caplog):
    good = saved(Image.new("RGB", (4, 4), (10, 20, 30)), tmp_path / "good.png")
    truncated = tmp_path / "bad.jpg"
    truncated.write_bytes(saved(noisy_rgb(), tmp_path / "whole.jpg").read_bytes()[:300])
    missing = tmp_path / "missing.png"
    in_memory = Image.new("L", (4, 4), 255)
    with caplog.at_level(logging.DEBUG):
        batch = load_images([good, truncated, in_memory, missing], (4, 4))
    assert batch.kept == [0, 2]
    assert batch.pixels.shape == (2, 3, 4, 4)
    assert torch.allclose(batch.pixels[0, :, 0, 0], torch.tensor([10, 20, 30]) / 255.0)
    assert torch.equal(batch.pixels[1], torch.ones(3, 4, 4))
    assert [s.path for s in batch.skipped] == [str(truncated), str(missing)]
    assert batch.skipped[0].reason.startswith("unreadable image (")
    assert batch.skipped[1].reason == "image file not found"
    for path in (truncated, missing):
        assert str(path) in caplog.text


def test_load_images_with_every_source_broken_gives_an_empty_batch(tmp_path):
    batch = load_images([tmp_path / "a.png", tmp_path / "b.png"], (6, 6))
    assert batch.pixels.shape == (0, 3, 6, 6)
    assert batch.kept == []
    assert len(batch.skipped) == 2


def test_lazily_opened_truncated_image_in_memory_is_a_load_error(tmp_path):
    full = saved(noisy_rgb(), tmp_path / "full.png").read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(full[: len(full) // 2])
    with Image.open(cut) as lazy, pytest.raises(ImageLoadError) as info:
        load_rgb(lazy)
    assert info.value.path == IN_MEMORY


def test_load_error_survives_pickling():
    error = pickle.loads(pickle.dumps(ImageLoadError("/data/x.jpg", "file not found")))
    assert (error.path, error.reason) == ("/data/x.jpg", "file not found")
    assert str(error) == "cannot load image /data/x.jpg: file not found"
