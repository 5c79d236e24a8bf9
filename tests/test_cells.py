"""The embedded cells data: reproducible, labelled, and not trivially easy."""
import numpy as np
import pytest

from unetjax.data import cells
from unetjax.runtime.errors import ConfigError
from unetjax.tasks import baselines


def test_examples_are_a_pure_function_of_seed_split_and_index():
  a = cells.make_split("val", 3, 32, seed=7)
  b = cells.make_split("val", 5, 32, seed=7)  # a longer split, same prefix
  np.testing.assert_array_equal(a.images, b.images[:3])
  np.testing.assert_array_equal(a.labels, b.labels[:3])
  other = cells.make_split("train", 3, 32, seed=7)
  assert not np.array_equal(a.images, other.images)


def test_images_are_in_range_and_masks_binary_with_both_classes():
  split = cells.make_split("train", 8, 32, seed=0)
  assert split.images.shape == (8, 32, 32, 1)
  assert split.images.dtype == np.float32
  assert 0.0 <= split.images.min() and split.images.max() <= 1.0
  assert set(np.unique(split.labels)) == {0, 1}
  assert 0.05 < split.labels.mean() < 0.6


def test_a_global_otsu_threshold_scores_clearly_below_what_a_unet_reaches():
  # The README's claim: Otsu is clearly below the trained U-Net's >= 0.95.
  dataset = cells.build(image_size=64, num_val=32)
  scores = baselines.otsu_dice(dataset.split("val"))
  assert scores["dice"] < 0.85


def test_otsu_baseline_is_perfect_on_a_clean_two_level_image():
  from unetjax.data import Split  # pylint: disable=g-import-not-at-top
  label = np.zeros((1, 8, 8), np.int32)
  label[0, 2:5, 3:7] = 1
  image = (0.2 + 0.6 * label[..., None]).astype(np.float32)
  scores = baselines.otsu_dice(Split(image, label, ("x",)))
  assert scores == {"dice": 1.0, "dice_per_image": 1.0}


def test_bad_sizes_and_counts_are_rejected():
  with pytest.raises(ConfigError, match="image_size"):
    cells.build(image_size=8)
  with pytest.raises(ConfigError, match="num_val"):
    cells.build(num_val=0)
