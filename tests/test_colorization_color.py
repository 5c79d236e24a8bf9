"""unetjax.tasks.color against scikit-image's rgb2lab / lab2rgb."""
import numpy as np
import pytest
from skimage import color as skcolor

from unetjax.tasks import color


@pytest.fixture(name="rgb")
def fixture_rgb():
  rng = np.random.default_rng(0)
  pixels = rng.uniform(size=(40, 40, 3))
  pixels[0, :8] = [[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1],
                   [0.01, 0.02, 0.03], [1, 1, 0], [0.5, 0.5, 0.5]]
  return pixels


def test_rgb_to_lab_matches_skimage(rgb):
  np.testing.assert_allclose(color.rgb_to_lab(rgb), skcolor.rgb2lab(rgb),
                             atol=2e-3)


def test_lab_to_rgb_matches_skimage(rgb):
  lab = skcolor.rgb2lab(rgb)
  np.testing.assert_allclose(color.lab_to_rgb(lab), skcolor.lab2rgb(lab),
                             atol=1e-4)


def test_round_trip(rgb):
  np.testing.assert_allclose(color.lab_to_rgb(color.rgb_to_lab(rgb)), rgb,
                             atol=1e-4)


def test_out_of_gamut_lab_clips_to_valid_rgb():
  rgb = np.asarray(color.lab_to_rgb(np.array([[50.0, 127.0, -127.0],
                                               [100.0, -128.0, 127.0]])))
  assert rgb.min() >= 0 and rgb.max() <= 1


def test_gray_is_lightness_in_unit_range(rgb):
  gray = np.asarray(color.rgb_to_gray(rgb))
  assert gray.shape == (40, 40, 1)
  np.testing.assert_allclose(gray[..., 0], skcolor.rgb2lab(rgb)[..., 0] / 100,
                             atol=2e-5)
  assert gray[0, 0, 0] == pytest.approx(0) and gray[0, 1, 0] == pytest.approx(
      1, abs=1e-5)
