"""Per-pixel maps (loss weights, instance ids) move exactly as the labels."""
import ml_collections
import numpy as np
import pytest

from unetjax.data import DataInfo, Dataset, Split, input_pipeline
from unetjax.runtime.config import base_config
from unetjax.runtime.errors import DataError


def _augment_config(**overrides) -> ml_collections.ConfigDict:
  config = base_config().augment
  config.update(overrides)
  return config


def _split(sizes=None):
  """Labels random per pixel; each map a different function of them."""
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 50, (3, 40, 40)).astype(np.int32)
  images = rng.random((3, 40, 40, 1)).astype(np.float32)
  maps = {"weight": labels.astype(np.float32) * 0.5 + 1.0,
          "instances": labels * 7 + 3}
  return Split(images, labels, ("a", "b", "c"), sizes, maps)


@pytest.mark.parametrize("overrides", [
    dict(crop_size=24, flip=True, rot90=True),
    dict(elastic=True, elastic_sigma=6.0, flip=True),
    dict(crop_size=16, elastic=True, rot90=True, brightness=0.2),
])
def test_maps_stay_aligned_with_the_label_through_augmentation(overrides):
  batches = input_pipeline.train_batches(
      _split(), batch_size=3, seed=0, start_step=0,
      augment_config=_augment_config(**overrides))
  moved = 0
  for _ in range(4):
    batch = next(batches)
    np.testing.assert_array_equal(batch["weight"],
                                  batch["label"] * 0.5 + 1.0)
    np.testing.assert_array_equal(batch["instances"], batch["label"] * 7 + 3)
    assert batch["weight"].dtype == np.float32
    moved += not np.array_equal(batch["label"], _split().labels)
  assert moved  # the augmentation did change the labels


def test_maps_reach_evaluation_batches_unchanged():
  split = _split()
  batch = next(input_pipeline.eval_batches(split, batch_size=4))
  np.testing.assert_array_equal(batch["instances"][:3],
                                split.maps["instances"])
  assert batch["mask"].tolist() == [1, 1, 1, 0]


def test_a_map_of_another_shape_is_refused():
  with pytest.raises(DataError, match="'weight' has shape"):
    Split(np.zeros((2, 8, 8, 1)), np.zeros((2, 8, 8), np.int32), ("a", "b"),
          maps={"weight": np.zeros((2, 8, 7))})


def test_select_and_take_keep_maps_with_their_examples():
  split = _split(sizes=np.array([[40, 40], [30, 20], [20, 30]]))
  picked = split.select([2, 0])
  assert picked.ids == ("c", "a")
  np.testing.assert_array_equal(picked.maps["weight"],
                                split.maps["weight"][[2, 0]])
  np.testing.assert_array_equal(picked.sizes, [[20, 30], [40, 40]])
  assert split.take(1).maps["instances"].shape == (1, 40, 40)


def test_a_transformed_dataset_applies_the_transform_once_per_split():
  calls = []

  def transform(split, name):
    calls.append(name)
    return Split(split.images, split.labels * 2, split.ids)
  info = DataInfo("x", 2, 1, ("bg", "fg"))
  labels = np.ones((1, 4, 4), np.int32)
  dataset = Dataset(info, {"train": lambda: Split(
      np.zeros((1, 4, 4, 1)), labels, ("a",))}).transformed(transform)
  assert dataset.split("train").labels.max() == 2  # not checked < 2 again
  dataset.split("train")
  assert calls == ["train"]


def test_size_sorted_eval_batches_cover_every_real_pixel_once():
  rng = np.random.default_rng(0)
  sizes = np.array([[40, 40], [8, 12], [30, 20], [9, 9], [17, 33]])
  labels = np.zeros((5, 40, 40), np.int32)
  for i, (h, w) in enumerate(sizes):
    labels[i, :h, :w] = rng.integers(1, 9, (h, w))
  split = Split(rng.random((5, 40, 40, 1)).astype(np.float32), labels,
                tuple("abcde"), sizes, {"instances": labels * 3})
  seen, shapes = {}, []
  for batch in input_pipeline.eval_batches(split, batch_size=2,
                                           by_size=True, align=8):
    shapes.append(batch["image"].shape[1:3])
    for row in np.flatnonzero(batch["mask"]):
      index = int(batch["index"][row])
      assert index not in seen
      seen[index] = batch["label"][row][batch["valid"][row] > 0]
      np.testing.assert_array_equal(batch["instances"][row],
                                    batch["label"][row] * 3)
  # sorted by area: (9x9, 8x12) -> 16x16, (30x20, 17x33) -> 32x40, 40x40
  assert shapes == [(16, 16), (32, 40), (40, 40)]
  for i, (h, w) in enumerate(sizes):
    np.testing.assert_array_equal(seen[i], labels[i, :h, :w].ravel())
