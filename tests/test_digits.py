"""The embedded digits set, and the digits and MNIST configs end to end."""
import json
import os

import numpy as np
import pytest

from unetjax.data import digits
from unetjax.runtime.errors import ConfigError
from unetjax.training import experiment as experiment_lib
from unetjax.training import train


@pytest.fixture(scope="module")
def dataset():
  return digits.build()


def test_split_sizes_are_disjoint_and_stratified(dataset):
  splits = {name: dataset.split(name) for name in ("train", "val", "test")}
  assert {k: len(v) for k, v in splits.items()} == {
      "train": 1257, "val": 180, "test": 360}
  ids = [set(split.ids) for split in splits.values()]
  assert len(set.union(*ids)) == 1797
  # 10% of about 180 per class is 18: every class, none twice as common.
  assert np.bincount(splits["val"].labels, minlength=10).tolist() == [18] * 10
  test_counts = np.bincount(splits["test"].labels, minlength=10)
  assert test_counts.min() >= 35 and test_counts.max() <= 37


def test_images_are_28x28_in_unit_range(dataset):
  images = dataset.split("train").images
  assert images.shape[1:] == (28, 28, 1) and images.dtype == np.float32
  assert images.min() == 0.0 and images.max() == 1.0


def test_split_is_fixed_by_the_seed(dataset):
  again = digits.build().split("test").ids
  other = digits.build(seed=1).split("test").ids
  assert again == dataset.split("test").ids
  assert other != again


def test_bilinear_resize_by_hand():
  # 8 -> 28 pixels: output pixel 3 maps to input coordinate
  # (3 + 0.5) * 8 / 28 - 0.5 = 0.5, halfway between input pixels 0 and 1.
  image = np.arange(64, dtype=np.float64).reshape(1, 8, 8) / 64
  resized = digits.resize(image)[0, ..., 0]
  assert resized[3, 3] == pytest.approx(image[0, :2, :2].mean())


@pytest.mark.parametrize("settings, error", [
    (dict(val_fraction=0.0), "data.val_fraction=0.0"),
    (dict(val_fraction=0.5, test_fraction=0.5), "expected < 1"),
])
def test_bad_fractions_are_named(settings, error):
  with pytest.raises(ConfigError, match=error):
    digits.build(**settings)


def _tiny(config):
  config.num_epochs = 0
  config.num_steps = 4
  config.log_every_steps = 2
  config.eval_every_steps = 4
  config.batch_size = 8
  return config


def test_digits_mlp_trains_end_to_end(tmp_path):
  from configs import digits_mlp  # pylint: disable=g-import-not-at-top
  config = _tiny(digits_mlp.get_config())
  config.model.hidden_sizes = (16,)
  final = train.train_and_evaluate(config, str(tmp_path))
  saved = json.loads((tmp_path / "metrics.json").read_text())
  assert saved["test"] == pytest.approx(final["test"])
  assert {f"accuracy_class_{k}" for k in range(10)} <= set(saved["test"])
  assert 0 <= saved["test"]["accuracy"] <= 1 and saved["train_seconds"] > 0
  for name in ("confusion_matrix.png", "learning_curves.png"):
    assert os.path.exists(tmp_path / "plots" / name)


def test_wrong_image_size_for_the_model_fails_before_training():
  from configs import digits_cnn  # pylint: disable=g-import-not-at-top
  config = digits_cnn.get_config()
  config.model.image_size = 32
  with pytest.raises(ConfigError, match="images are 28x28 but model 'cnn'"):
    experiment_lib.build_experiment(config)
