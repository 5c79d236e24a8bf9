"""Augmentation keeps image and mask aligned; variable sizes train and score
only real pixels."""
import ml_collections
import numpy as np
import pytest

from unetjax.data import DataInfo, Split, augment, input_pipeline
from unetjax.runtime import imports
from unetjax.runtime.config import base_config
from unetjax.runtime.errors import ConfigError
from unetjax.tasks.segmentation import BinarySegmentation


def _config(**overrides) -> ml_collections.ConfigDict:
  config = base_config().augment
  config.update(overrides)
  return config


def _augment(image, label, config, seed=0, size=None):
  tf = imports.tensorflow()
  example = {"image": tf.constant(image, tf.float32),
             "label": tf.constant(label, tf.int32)}
  if size is not None:
    example["size"] = tf.constant(size, tf.int32)
  out = augment.apply(example, config, tf.constant([seed, 7], tf.int64))
  return out["image"].numpy(), out["label"].numpy()


def _blocks(size=48, block=8, seed=0):
  """A random 0/1 label of block x block squares."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 2, (size // block, size // block))
  return np.kron(coarse, np.ones((block, block), int))


def test_crops_flips_and_turns_move_image_and_mask_together():
  label = np.random.default_rng(0).integers(0, 2, (32, 32))  # iid pixels
  config = _config(crop_size=20, flip=True, rot90=True)
  outcomes = set()
  for seed in range(8):
    image, out = _augment(label[..., None], label, config, seed)
    assert image.shape == (20, 20, 1) and out.shape == (20, 20)
    np.testing.assert_array_equal(image[..., 0], out)  # any shift breaks it
    outcomes.add(out.tobytes())
  assert len(outcomes) == 8  # the draws differ from seed to seed


def test_elastic_deformation_moves_mask_with_image():
  label = _blocks()
  config = _config(elastic=True, elastic_grid=3, elastic_sigma=6.0)
  image, out = _augment(label[..., None], label, config)
  agreement = np.mean((image[..., 0] > 0.5) == out)
  assert agreement > 0.97
  # The field really moved things: without the deformation applied to the
  # mask, the same comparison fails, so the check above is not vacuous.
  assert np.mean((image[..., 0] > 0.5) == label) < 0.9
  assert np.mean(out == label) < 0.9


def test_elastic_masks_are_resampled_nearest_not_blended():
  label = _blocks() * 5
  config = _config(elastic=True, elastic_sigma=10.0)
  _, out = _augment(label[..., None] / 5.0, label, config, seed=3)
  assert set(np.unique(out)) == {0, 5}


def test_augmentation_is_a_pure_function_of_the_seed():
  label = _blocks()
  config = _config(crop_size=32, flip=True, rot90=True, elastic=True,
                   brightness=0.2, contrast=0.2)
  first = _augment(label[..., None] * 0.5, label, config, seed=5)
  again = _augment(label[..., None] * 0.5, label, config, seed=5)
  other = _augment(label[..., None] * 0.5, label, config, seed=6)
  np.testing.assert_array_equal(first[0], again[0])
  np.testing.assert_array_equal(first[1], again[1])
  assert not np.array_equal(first[0], other[0])


def test_crops_of_padded_examples_stay_inside_the_true_size():
  image = np.zeros((64, 64, 1), np.float32)
  image[:20, :24] = 1.0  # the real pixels; the rest is padding
  config = _config(crop_size=16)
  for seed in range(12):
    out, _ = _augment(image, image[..., 0].astype(int), config, seed,
                      size=(20, 24))
    assert out.min() == 1.0


@pytest.mark.parametrize("overrides,match", [
    (dict(elastic=True, elastic_grid=1), "elastic_grid"),
    (dict(elastic=True, elastic_sigma=0.0), "elastic_sigma"),
    (dict(crop_size=40), "crop_size"),
])
def test_impossible_settings_are_config_errors(overrides, match):
  with pytest.raises(ConfigError, match=match):
    augment.validate(_config(**overrides), 32, 32)


def _padded_split():
  """Two examples, 16x24 and 24x16, padded to 32x32; padding labelled 1."""
  rng = np.random.default_rng(0)
  images = rng.random((2, 32, 32, 1)).astype(np.float32)
  labels = np.ones((2, 32, 32), np.int32)
  labels[0, :16, :24] = rng.integers(0, 2, (16, 24))
  labels[1, :24, :16] = rng.integers(0, 2, (24, 16))
  return Split(images, labels, ("a", "b"), np.array([[16, 24], [24, 16]]))


def test_variable_size_training_needs_a_crop_that_fits_every_example():
  for crop in (0, 17):
    with pytest.raises(ConfigError, match="smallest 16x16"):
      input_pipeline.train_batches(_padded_split(), batch_size=2, seed=0,
                                   start_step=0,
                                   augment_config=_config(crop_size=crop))


def test_variable_size_training_order_resumes_exactly():
  split = _padded_split()

  def batches(start):
    it = input_pipeline.train_batches(split, batch_size=2, seed=1,
                                      start_step=start,
                                      augment_config=_config(crop_size=8))
    return [next(it) for _ in range(4 - start)]
  full, resumed = batches(0), batches(2)
  for a, b in zip(full[2:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])


def test_evaluation_scores_every_real_pixel_and_no_padding():
  split = _padded_split()
  batch = next(input_pipeline.eval_batches(split, batch_size=2))
  np.testing.assert_array_equal(batch["valid"].sum(axis=(1, 2)), [384, 384])
  task = BinarySegmentation(info=DataInfo("x", 2, 1, ("bg", "fg")))
  logits = np.full((2, 32, 32, 1), 5.0, np.float32)  # all foreground
  _, padded = task.loss_and_outputs(logits, batch)
  for i, (h, w) in enumerate(split.sizes):
    crop = {"label": split.labels[i:i + 1, :h, :w]}
    _, alone = task.loss_and_outputs(logits[i:i + 1, :h, :w], crop)
    for key in ("loss", "accuracy", "dice_num", "dice_den", "union"):
      np.testing.assert_allclose(padded[key][i], alone[key][0], rtol=1e-6)
