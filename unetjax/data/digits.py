"""scikit-learn's bundled handwritten digits, at MNIST's 28x28.

1,797 real scans (the UCI optical digits: 8x8 pixels, 17 grey levels, about
180 per class) ship inside scikit-learn, so a classification experiment
runs with no download. Each image is resized to 28x28 (bilinear) so the
MNIST MLP and CNN apply unchanged. The train/val/test split is stratified
by class and fixed by `seed`.
"""
import functools

import numpy as np
import skimage.transform
import sklearn.datasets
import sklearn.model_selection

from unetjax.data import DataInfo, Dataset, Split
from unetjax.runtime.errors import ConfigError

IMAGE_SIZE = 28
_GREY_LEVELS = 16  # pixel values are 0..16


def build(*, val_fraction: float = 0.1, test_fraction: float = 0.2,
          seed: int = 0) -> Dataset:
  for key, value in (("val_fraction", val_fraction),
                     ("test_fraction", test_fraction)):
    if not 0 < value < 1:
      raise ConfigError(f"data.{key}={value}: expected 0 < {key} < 1")
  if val_fraction + test_fraction >= 1:
    raise ConfigError(f"data.val_fraction={val_fraction} + data.test_fraction="
                      f"{test_fraction}: expected < 1 to leave training data")
  info = DataInfo(name="digits", num_classes=10, in_channels=1,
                  class_names=tuple(str(d) for d in range(10)))
  splits = functools.cache(lambda: make_splits(val_fraction, test_fraction,
                                               seed))
  loaders = {name: (lambda n=name: splits()[n])
             for name in ("train", "val", "test")}
  return Dataset(info, loaders)


def make_splits(val_fraction: float, test_fraction: float,
                seed: int) -> dict[str, Split]:
  """Stratified, seeded train/val/test splits of all 1,797 images."""
  digits = sklearn.datasets.load_digits()
  indices = np.arange(len(digits.target))
  rest, test = sklearn.model_selection.train_test_split(
      indices, test_size=test_fraction, stratify=digits.target,
      random_state=seed)
  train, val = sklearn.model_selection.train_test_split(
      rest, test_size=val_fraction / (1 - test_fraction),
      stratify=digits.target[rest], random_state=seed)
  images = resize(digits.images / _GREY_LEVELS)
  labels = digits.target.astype(np.int32)
  return {name: Split(images[part], labels[part],
                      tuple(f"digits_{i:04d}" for i in part))
          for name, part in (("train", train), ("val", val), ("test", test))}


def resize(images: np.ndarray) -> np.ndarray:
  """[N, 8, 8] in [0, 1] -> [N, 28, 28, 1] float32, bilinear."""
  resized = skimage.transform.resize(
      images, (len(images), IMAGE_SIZE, IMAGE_SIZE), order=1,
      anti_aliasing=False)
  return resized[..., None].astype(np.float32)
