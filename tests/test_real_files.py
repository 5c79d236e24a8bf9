"""Real-world image files in a plain images/ + masks/ folder just work.

Each test writes files of the kind found in real data sets: masks with an
opaque alpha channel, images stored sometimes gray and sometimes as RGB
with R = G = B, binary masks with antialiased edges, float masks with NaN,
images past Pillow's decompression-bomb limit.
"""
import os

import numpy as np
import pytest
import tifffile
from conftest import in_memory
from PIL import Image

from unetjax.data import folders, image_io
from unetjax.runtime.errors import ConfigError, DataError


def _save(path, array, mode=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(
      path)


def _binary(size=8, seed=0):
  rng = np.random.default_rng(seed)
  return np.where(rng.random((size, size)) < 0.5, 255, 0).astype(np.uint8)


def _gray(size=8, seed=0):
  return np.random.default_rng(seed + 100).integers(
      0, 256, (size, size), dtype=np.uint8)


@pytest.fixture(params=[True, False], ids=["stored", "in_memory"])
def use_cache(request):
  """The folders loader's two forms: stored on disk (the default) and in
  memory; each test expects the same contents from both."""
  return request.param


def _split(data, name, use_cache):  # pylint: disable=redefined-outer-name
  return in_memory(data.split(name), stored_expected=use_cache)


def _opaque(array):
  return np.dstack([array, np.full(array.shape[:2], 255, np.uint8)])


def test_masks_with_an_opaque_alpha_channel_are_read_as_their_values(
    tmp_path, use_cache):
  mask = _binary()
  _save(str(tmp_path / "images" / "a.png"), _gray())
  _save(str(tmp_path / "masks" / "a.png"), _opaque(mask), "LA")
  _save(str(tmp_path / "images" / "b.png"), _gray(seed=1))
  _save(str(tmp_path / "masks" / "b.png"), _opaque(np.dstack([mask] * 3)),
        "RGBA")
  data = folders.build(dir=str(tmp_path), mask_values={0: 0, 255: 1},
                       val_fraction=0.5, cache=use_cache)
  np.testing.assert_array_equal(_split(data, "train", use_cache).labels[0],
                                mask // 255)
  np.testing.assert_array_equal(_split(data, "val", use_cache).labels[0],
                                mask // 255)


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_a_mask_with_a_transparent_alpha_channel_says_so(tmp_path, mode):
  mask = _binary()
  pixels = _opaque(mask if mode == "LA" else np.dstack([mask] * 3))
  pixels[0, 0, -1] = 40
  _save(str(tmp_path / "m.png"), pixels, mode)
  with pytest.raises(DataError, match=r"m.png: mask with a transparent alpha "
                     r"channel \(alpha down to 40 of 255\)"):
    image_io.read_mask(str(tmp_path / "m.png"))


def test_gray_gray_alpha_and_rgb_with_equal_channels_load_as_one_gray_set(
    tmp_path, use_cache):
  grays = [_gray(seed=i) for i in range(3)]
  _save(str(tmp_path / "images" / "a.png"), grays[0])  # L
  _save(str(tmp_path / "images" / "b.png"), _opaque(grays[1]), "LA")
  _save(str(tmp_path / "images" / "c.png"), np.dstack([grays[2]] * 3))
  for stem in "abc":
    _save(str(tmp_path / "masks" / f"{stem}.png"), _binary() // 255)
  data = folders.build(dir=str(tmp_path), val_fraction=0.34, cache=use_cache)
  assert data.info.in_channels == 1
  train, val = _split(data, "train", use_cache), _split(data, "val", use_cache)
  assert train.images.dtype == np.uint8
  np.testing.assert_array_equal(train.images[..., 0], np.stack(grays[:2]))
  np.testing.assert_array_equal(val.images[0, ..., 0], grays[2])


def _colour_and_gray(tmp_path):
  colour = np.zeros((8, 8, 3), np.uint8)
  colour[..., 0], colour[..., 1], colour[..., 2] = 200, 100, 10
  _save(str(tmp_path / "images" / "a.png"), colour)
  _save(str(tmp_path / "images" / "b.png"), _gray())
  _save(str(tmp_path / "images" / "c.png"), np.dstack([_gray(seed=2)] * 3))
  for stem in "abc":
    _save(str(tmp_path / "masks" / f"{stem}.png"), _binary() // 255)
  return colour


def test_colour_among_stored_gray_needs_data_channels_to_convert(tmp_path,
                                                                use_cache):
  colour = _colour_and_gray(tmp_path)
  with pytest.raises(DataError, match=r"images/b.png: a gray image where "
                     r".*images/a.png is in colour; set data.channels=3"):
    folders.build(dir=str(tmp_path), val_fraction=0.34, cache=use_cache)
  rgb = folders.build(dir=str(tmp_path), channels=3, val_fraction=0.34,
                      cache=use_cache)
  assert rgb.info.in_channels == 3
  np.testing.assert_array_equal(_split(rgb, "train", use_cache).images[0],
                                colour)
  np.testing.assert_array_equal(_split(rgb, "train", use_cache).images[1],
                                np.dstack([_gray()] * 3))
  gray = folders.build(dir=str(tmp_path), channels=1, val_fraction=0.34,
                       cache=use_cache)
  # 0.299 * 200 + 0.587 * 100 + 0.114 * 10 = 119.64 -> 120
  assert (_split(gray, "train", use_cache).images[0] == 120).all()
  np.testing.assert_array_equal(
      _split(gray, "val", use_cache).images[0, ..., 0], _gray(seed=2))
  with pytest.raises(ConfigError, match="data.channels=2"):
    folders.build(dir=str(tmp_path), channels=2)


def test_colour_with_rgb_equal_channel_images_stays_rgb(tmp_path, use_cache):
  colour = _colour_and_gray(tmp_path)
  os.remove(tmp_path / "images" / "b.png")
  os.remove(tmp_path / "masks" / "b.png")
  data = folders.build(dir=str(tmp_path), val_fraction=0.5, cache=use_cache)
  assert data.info.in_channels == 3
  np.testing.assert_array_equal(_split(data, "train", use_cache).images[0],
                                colour)
  # Stored, its R = G = B image is one channel on disk, served as RGB.
  np.testing.assert_array_equal(_split(data, "val", use_cache).images[0],
                                np.dstack([_gray(seed=2)] * 3))


def test_antialiased_binary_masks_are_thresholded_and_the_error_says_how(
    tmp_path, use_cache):
  mask = np.zeros((8, 8), np.uint8)
  mask[:, 4:] = 255
  mask[:, 3], mask[0, 4], mask[1, 4], mask[2, 2] = 122, 188, 13, 34
  for stem in "ab":
    _save(str(tmp_path / "images" / f"{stem}.png"), _gray())
    _save(str(tmp_path / "masks" / f"{stem}.png"), mask)
  with pytest.raises(DataError, match=r"a.png: mask values \[0, 13, 34, 122, "
                     r"188, 255\] found; .*data.mask_threshold"):
    folders.build(dir=str(tmp_path), val_fraction=0.5, cache=use_cache)
  data = folders.build(dir=str(tmp_path), mask_threshold=127,
                       val_fraction=0.5, cache=use_cache)
  expected = np.zeros((8, 8), np.int32)
  expected[:, 4:] = 1
  expected[1, 4] = 0  # 13 is below the threshold, 188 above
  np.testing.assert_array_equal(_split(data, "train", use_cache).labels[0],
                                expected)


@pytest.mark.parametrize("kwargs, message", [
    (dict(mask_threshold=127, num_classes=3), "data.mask_threshold=127 with "
     "data.num_classes=3"),
    (dict(mask_threshold="half"), "data.mask_threshold=half"),
    (dict(mask_threshold=float("nan")), "data.mask_threshold=nan"),
    (dict(mask_threshold=127, mask_values={0: 0, 255: 1}),
     "data.mask_values and data.mask_threshold are both set"),
    (dict(instances=True, mask_threshold=127),
     "data.mask_threshold and data.instances are both set"),
    (dict(pad_to_multiple=0), "data.pad_to_multiple=0: expected an integer"),
    (dict(pad_to_multiple=-32), "data.pad_to_multiple=-32"),
])
def test_impossible_mask_and_padding_options_are_config_errors(
    tmp_path, kwargs, message):
  with pytest.raises(ConfigError, match=message):
    folders.build(dir=str(tmp_path), **kwargs)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_non_finite_mask_value_is_called_non_finite(tmp_path, value):
  mask = np.zeros((8, 8), np.float32)
  mask[3, 3] = value
  tifffile.imwrite(tmp_path / "m.tif", mask)
  with pytest.raises(DataError, match=r"m.tif: mask holds non-finite values"):
    image_io.read_mask(str(tmp_path / "m.tif"))


def test_images_past_pillows_decompression_bomb_limit_are_read(
    tmp_path, monkeypatch):
  from PIL import Image as pil  # pylint: disable=g-import-not-at-top
  image, mask = _gray(64), _binary(64) // 255
  _save(str(tmp_path / "big.png"), image)
  _save(str(tmp_path / "big_mask.png"), mask)
  # 64 x 64 = 4,096 pixels is past twice this limit: Pillow alone raises
  # DecompressionBombError, as it does for a real 20,000 x 20,000 slide.
  monkeypatch.setattr(pil, "MAX_IMAGE_PIXELS", 1000)
  with pytest.raises(pil.DecompressionBombError):
    pil.open(tmp_path / "big.png")
  monkeypatch.setattr(pil, "MAX_IMAGE_PIXELS", 1000)
  np.testing.assert_array_equal(
      image_io.read_image(str(tmp_path / "big.png"))[..., 0],
      image.astype(np.float32) / 255)
  monkeypatch.setattr(pil, "MAX_IMAGE_PIXELS", 1000)
  np.testing.assert_array_equal(
      image_io.read_mask(str(tmp_path / "big_mask.png")), mask)
