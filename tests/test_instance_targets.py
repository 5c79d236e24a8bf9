"""Three-class targets and the U-Net weight map against hand-computed values."""
import numpy as np
import pytest
from scipy import ndimage

from unetjax.instances import targets as instance_targets
from unetjax.runtime.errors import ConfigError, DataError


def two_touching_squares():
  """Two 4x4 squares side by side, away from the image edge."""
  instances = np.zeros((8, 12), np.int32)
  instances[2:6, 2:6] = 3
  instances[2:6, 6:10] = 8
  return instances


def test_three_class_marks_both_sides_of_a_seam():
  classes = instance_targets.three_class(two_touching_squares())
  expected = np.zeros((8, 12), np.int32)
  expected[2:6, 2:10] = 2  # every pixel of a 4x4 square is on its rim ...
  expected[3:5, 3:5] = 1   # ... but its central 2x2
  expected[3:5, 7:9] = 1
  np.testing.assert_array_equal(classes, expected)
  assert classes.dtype == np.int32


def test_three_class_interiors_of_touching_objects_never_touch():
  rng = np.random.default_rng(0)
  # Voronoi cells of random seeds: every object touches its neighbours.
  seeds = rng.integers(0, 40, size=(12, 2))
  yy, xx = np.mgrid[:40, :40]
  nearest = np.argmin((yy[..., None] - seeds[:, 0]) ** 2
                      + (xx[..., None] - seeds[:, 1]) ** 2, axis=-1)
  instances = nearest + 1
  interior = instance_targets.three_class(instances) == 1
  ids = np.where(interior, instances, 0)
  # Any 8-neighbourhood of an interior pixel holds no other object's interior.
  for dy in (-1, 0, 1):
    for dx in (-1, 0, 1):
      shifted = np.roll(np.roll(ids, dy, axis=0), dx, axis=1)
      clash = (ids > 0) & (shifted > 0) & (shifted != ids)
      clash[[0, -1], :] = clash[:, [0, -1]] = False  # np.roll wraps round
      assert not clash.any()


def test_three_class_boundary_width_two():
  instances = np.zeros((10, 10), np.int32)
  instances[2:8, 2:8] = 1
  classes = instance_targets.three_class(instances, boundary_width=2)
  assert (classes == 2).sum() == 20 + 12
  assert (classes == 1).sum() == 4
  assert (classes[4:6, 4:6] == 1).all()


def test_three_class_rejects_bad_input():
  with pytest.raises(DataError, match="2-D integer"):
    instance_targets.three_class(np.zeros((4, 4), np.float32))
  with pytest.raises(DataError, match=">= 0"):
    instance_targets.three_class(-np.ones((4, 4), np.int32))
  with pytest.raises(ConfigError, match="boundary_width"):
    instance_targets.three_class(np.zeros((4, 4), np.int32), boundary_width=0)


def two_squares_apart(width=60):
  """3x3 squares in rows 2..4: A at columns 1..3, B at columns 8..10."""
  instances = np.zeros((7, width), np.int32)
  instances[2:5, 1:4] = 1
  instances[2:5, 8:11] = 2
  return instances


def test_weight_map_between_two_objects_by_hand():
  instances = two_squares_apart()
  weights = instance_targets.unet_weight_map(instances, w0=10.0, sigma=5.0)
  background, foreground = 7 * 60 - 18, 18
  w_fg = background / foreground  # background weight 1, inverse frequency
  # (3, 5): 2 px right of A's last column 3, 3 px left of B's first column 8.
  assert weights[3, 5] == pytest.approx(1 + 10 * np.exp(-(2 + 3) ** 2 / 50),
                                        rel=1e-6)
  # (0, 6): A's nearest pixel (2, 3): sqrt(4 + 9); B's (2, 8): sqrt(4 + 4).
  d1, d2 = np.sqrt(8), np.sqrt(13)
  assert weights[0, 6] == pytest.approx(
      1 + 10 * np.exp(-(d1 + d2) ** 2 / 50), rel=1e-6)
  # Far from both (B 30 px away): w_c alone, exactly.
  assert weights[3, 40] == 1.0
  # Object pixels: w_c only, the border term is for the background.
  np.testing.assert_allclose(weights[instances > 0], w_fg, rtol=1e-6)
  assert weights.dtype == np.float32 and weights.shape == instances.shape


def test_weight_map_without_class_balance_or_with_a_set_frequency():
  instances = two_squares_apart()
  plain = instance_targets.unet_weight_map(instances, class_balance=False)
  np.testing.assert_array_equal(plain[instances > 0], 1.0)
  assert plain[3, 5] == pytest.approx(1 + 10 * np.exp(-0.5), rel=1e-6)
  quarter = instance_targets.unet_weight_map(instances,
                                             foreground_fraction=0.25)
  np.testing.assert_allclose(quarter[instances > 0], 3.0, rtol=1e-6)


@pytest.mark.parametrize("count", [0, 1])
def test_weight_map_with_fewer_than_two_objects_has_no_border_term(count):
  instances = np.zeros((9, 9), np.int32)
  if count:
    instances[3:6, 3:6] = 4
  weights = instance_targets.unet_weight_map(instances)
  np.testing.assert_array_equal(weights[instances == 0], 1.0)
  if count:
    np.testing.assert_allclose(weights[instances > 0], 72 / 9, rtol=1e-6)


def naive_weight_map(instances, w0, sigma):
  """One full-image distance transform per object, as the paper's formula."""
  ids = [k for k in np.unique(instances) if k]
  distances = np.stack([ndimage.distance_transform_edt(instances != k)
                        for k in ids])
  distances.sort(axis=0)
  border = w0 * np.exp(-(distances[0] + distances[1]) ** 2 / (2 * sigma ** 2))
  fg = instances > 0
  w_c = np.where(fg, (~fg).sum() / fg.sum(), 1.0)
  return w_c + np.where(fg, 0.0, border)


def random_objects(seed, size=64, count=15):
  rng = np.random.default_rng(seed)
  instances = np.zeros((size, size), np.int32)
  yy, xx = np.mgrid[:size, :size]
  for k in range(1, count + 1):
    cy, cx = rng.integers(0, size, 2)
    r = rng.uniform(2, 6)
    instances[((yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2)
              & (instances == 0)] = k
  return instances


@pytest.mark.parametrize("seed", [0, 1])
def test_bounding_box_cutoff_matches_the_naive_weight_map(seed):
  instances = random_objects(seed)
  expected = naive_weight_map(instances, 10.0, 3.0)
  tolerance = 1e-4
  fast = instance_targets.unet_weight_map(instances, w0=10.0, sigma=3.0,
                                          tolerance=tolerance)
  np.testing.assert_allclose(fast, expected, rtol=1e-5, atol=tolerance)
  # The cutoff (3 sqrt(2 ln 1e5) = 14.4 px) does cut: some terms became 0.
  cut = (instances == 0) & (fast == 1.0) & (expected > 1.0)
  assert cut.any()
  exact = instance_targets.unet_weight_map(instances, w0=10.0, sigma=3.0,
                                           tolerance=1e-30)
  np.testing.assert_allclose(exact, expected, rtol=1e-5, atol=1e-30)


def test_weight_map_rejects_bad_options():
  instances = two_squares_apart()
  with pytest.raises(ConfigError, match="sigma"):
    instance_targets.unet_weight_map(instances, sigma=0.0)
  with pytest.raises(ConfigError, match="w0"):
    instance_targets.unet_weight_map(instances, w0=-1.0)
  with pytest.raises(ConfigError, match="foreground_fraction"):
    instance_targets.unet_weight_map(instances, foreground_fraction=1.5)


def test_balanced_class_weights_and_frequencies():
  classes = np.array([[0, 0, 0, 0], [0, 0, 1, 2]])
  frequencies = instance_targets.class_frequencies(classes, 3)
  np.testing.assert_allclose(frequencies, [6 / 8, 1 / 8, 1 / 8])
  np.testing.assert_allclose(
      instance_targets.balanced_class_weights(frequencies), [1, 6, 6])
  np.testing.assert_allclose(
      instance_targets.balanced_class_weights([0.5, 0.5, 0.0]), [1, 1, 0])
  with pytest.raises(DataError, match="0..2"):
    instance_targets.class_frequencies(classes + 1, 3)


def test_separate_touching_clears_the_seam_and_the_weight_map_weighs_it():
  instances = two_touching_squares()   # ids 3 (columns 2..5), 8 (6..9)
  separated = instance_targets.separate_touching(instances)
  expected = instances.copy()
  expected[2:6, 6] = 0                 # the larger id's side of the seam
  np.testing.assert_array_equal(separated, expected)
  both = instance_targets.separate_touching(instances, symmetric=True)
  assert (both[2:6, 5:7] == 0).all() and (both > 0).sum() == 32 - 8
  # Pixels next to the background only are kept: a lone square is unchanged.
  lone = np.where(instances == 3, 3, 0)
  np.testing.assert_array_equal(instance_targets.separate_touching(lone), lone)
  weights = instance_targets.unet_weight_map(separated, class_balance=False)
  # A seam pixel is 1 px from each square: w = 1 + 10 exp(-(1 + 1)^2 / 50).
  np.testing.assert_allclose(weights[2:6, 6], 1 + 10 * np.exp(-4 / 50),
                             rtol=1e-6)
