"""Colour photos that ship with scikit-image and scikit-learn, as crops.

The embedded stand-in for Oxford pets in the colorization experiment: ten
RGB pictures (an astronaut, a cat, coffee, a rocket, a motorcycle, a
Chinese temple, a flower, stained tissue, a retina, the Hubble deep field)
need no download. Each is scaled so its shorter side is `image_scale`
pixels; training crops come from the left part of every picture and
validation crops from the right `val_fraction`, so no validation pixel is
ever trained on. Labels are unused (one dummy class): colorization derives
its targets from the image.
"""
import functools

import numpy as np
from skimage import data, transform

from unetjax.data import DataInfo, Dataset, Split
from unetjax.runtime.errors import ConfigError

_SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket",
                   "immunohistochemistry", "retina", "hubble_deep_field")


def build(*, crop_size: int = 64, image_scale: int = 256,
          val_fraction: float = 0.3, num_train: int = 512, num_val: int = 64,
          seed: int = 0) -> Dataset:
  if not 0 < val_fraction < 1:
    raise ConfigError(f"data.val_fraction={val_fraction}: expected 0 < x < 1")
  if crop_size < 1 or crop_size > val_fraction * image_scale:
    raise ConfigError(
        f"data.crop_size={crop_size}: expected 1 up to val_fraction * "
        f"image_scale = {val_fraction * image_scale:g} (the validation strip)")
  if num_train < 1 or num_val < 1:
    raise ConfigError(f"data.num_train={num_train}, data.num_val={num_val}: "
                      "expected >= 1")
  info = DataInfo(name="sample_photos", num_classes=1, in_channels=3,
                  class_names=("photo",))

  def loader(split, count):
    return lambda: make_split(split, count, crop_size, image_scale,
                              val_fraction, seed)

  return Dataset(info, {"train": loader("train", num_train),
                        "val": loader("val", num_val)})


@functools.cache
def photos(image_scale: int) -> tuple[np.ndarray, ...]:
  """The bundled colour photos, shorter side `image_scale`, uint8 RGB."""
  from sklearn.datasets import load_sample_images  # pylint: disable=g-import-not-at-top
  pictures = [getattr(data, name)() for name in _SKIMAGE_PHOTOS]
  pictures.append(data.stereo_motorcycle()[0])
  pictures.extend(load_sample_images().images)
  return tuple(_rescale(picture, image_scale) for picture in pictures)


def _rescale(picture: np.ndarray, shorter_side: int) -> np.ndarray:
  scale = shorter_side / min(picture.shape[:2])
  scaled = transform.rescale(picture, scale, channel_axis=-1,
                             anti_aliasing=scale < 1)
  return np.round(scaled * 255).astype(np.uint8)


def make_split(split: str, count: int, crop_size: int, image_scale: int,
               val_fraction: float, seed: int) -> Split:
  """`count` random crops spread evenly over the photos' split regions."""
  rng = np.random.default_rng((seed, split == "val"))
  pictures = photos(image_scale)
  crops, ids = [], []
  for i in range(count):
    picture = pictures[i % len(pictures)]
    height, width = picture.shape[:2]
    boundary = int(round(width * (1 - val_fraction)))
    left_range = (boundary, width) if split == "val" else (0, boundary)
    top = rng.integers(0, height - crop_size + 1)
    left = rng.integers(left_range[0], left_range[1] - crop_size + 1)
    crops.append(picture[top:top + crop_size, left:left + crop_size])
    ids.append(f"{split}_photo{i % len(pictures)}_{top}_{left}")
  return Split(np.stack(crops), np.zeros(count, np.int32), tuple(ids))
