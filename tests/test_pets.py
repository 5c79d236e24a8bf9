"""Oxford-IIIT Pet under tfds.testing.mock_data, and all three pets configs
trained end to end on it.

The default mock fills `segmentation_mask` with random bytes, which the
loader must reject. The other tests generate their own mock examples: as
the default mock does, image and mask get unrelated random sizes, but mask
values are drawn from the trimap's 1..3 so the loader accepts them.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from unetjax.data import pets
from unetjax.runtime.errors import DataError
from unetjax.training import train

_NUM_EXAMPLES = 6


def _mock_pets(self, *args, **kwargs):
  """Trimap-valued examples whose image and mask sizes differ."""
  del args, kwargs
  rng = np.random.default_rng(0)

  def examples():
    for i in range(_NUM_EXAMPLES):
      yield {"image": rng.integers(0, 256, (47 + i, 39, 3), np.uint8),
             "segmentation_mask": rng.integers(1, 4, (8, 16 + i, 1), np.uint8),
             "file_name": f"pet_{i}.jpg", "label": i % 37, "species": i % 2,
             "head_bbox": np.zeros(4, np.float32)}

  return tf.data.Dataset.from_generator(
      examples, output_signature=self.info.features.get_tensor_spec())


@pytest.fixture(name="mock_pets")
def fixture_mock_pets():
  with tfds.testing.mock_data(as_dataset_fn=_mock_pets):
    yield


def test_random_mock_masks_are_rejected_not_clipped():
  with tfds.testing.mock_data(num_examples=2):
    dataset = pets.build(image_size=16)
    with pytest.raises(DataError, match="expected trimap values 1, 2, 3"):
      dataset.split("train")


def test_loader_resizes_image_and_mask_independently(mock_pets):
  del mock_pets
  split = pets.build(image_size=32).split("val")
  assert split.images.shape == (_NUM_EXAMPLES, 32, 32, 3)
  assert split.images.dtype == np.uint8
  assert split.labels.shape == (_NUM_EXAMPLES, 32, 32)
  # Nearest neighbour invents no class: 1..3 map to exactly 0..2.
  assert set(np.unique(split.labels)) == {0, 1, 2}
  assert split.ids[0] == "pet_0.jpg"
  # An 8x16 mask resized to 32x32 repeats each row 4 and each column 2 times.
  np.testing.assert_array_equal(split.labels[0, ::4, ::2],
                                split.labels[0, 3::4, 1::2])
  binary = pets.build(image_size=32, binary=True).split("val")
  np.testing.assert_array_equal(binary.labels, split.labels == 0)


def _tiny(config, **model):
  """A config shrunk to 32x32 images and two steps with one eval."""
  config.data.image_size = 32
  config.model.update(model)
  config.update(dict(batch_size=2, eval_batch_size=4, num_epochs=0,
                     num_steps=2, log_every_steps=1, eval_every_steps=2,
                     num_sample_images=2))
  return config


@pytest.mark.parametrize("name,model,metric", [
    ("pets_unet", dict(depth=2, features=4), "mean_iou"),
    ("pets_fcn32", dict(width=2), "iou_border"),
    ("pets_colorize", dict(depth=2, features=4, skip=False), "psnr"),
])
def test_pets_configs_train_end_to_end(mock_pets, tmp_path, name, model,
                                       metric):
  del mock_pets
  config = _tiny(__import__(f"configs.{name}", fromlist=["x"]).get_config(),
                 **model)
  workdir = str(tmp_path / name)
  final = train.train_and_evaluate(config, workdir)
  assert np.isfinite(final["val"][metric]) and np.isfinite(final["test"]["loss"])
  with open(os.path.join(workdir, "metrics.json")) as f:
    assert json.load(f)["step"] == 2
  assert {"samples.png", "learning_curves.png"} <= set(
      os.listdir(os.path.join(workdir, "plots")))
