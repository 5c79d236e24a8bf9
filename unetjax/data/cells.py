"""Synthetic fluorescence-microscopy-like cells, generated from a seed.

Each image holds touching, overlapping blobs of varied size, shape,
brightness and texture, with debris that is not a cell, blur, noise and
strongly uneven illumination. The illumination is what defeats a global
threshold: a dim cell in a dark corner is darker than the background in a
bright one. Every image is a pure function of (seed, split, index).
"""
import numpy as np
from scipy import ndimage

from unetjax.data import DataInfo, Dataset, Split
from unetjax.runtime.errors import ConfigError

_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def build(*, image_size: int = 64, num_train: int = 256, num_val: int = 32,
          num_test: int = 32, seed: int = 0,
          border_width: int = 0) -> Dataset:
  """border_width > 0 adds a third class, like the Oxford pet trimap: the
  band of that many pixels either side of each cell outline."""
  if image_size < 16:
    raise ConfigError(f"data.image_size={image_size}: expected >= 16")
  if border_width < 0:
    raise ConfigError(f"data.border_width={border_width}: expected >= 0")
  counts = {"train": num_train, "val": num_val, "test": num_test}
  for split, count in counts.items():
    if count < 1:
      raise ConfigError(f"data.num_{split}={count}: expected >= 1")
  class_names = ("background", "cell") + (
      ("cell border",) if border_width else ())
  info = DataInfo(name="cells", num_classes=len(class_names), in_channels=1,
                  class_names=class_names)
  loaders = {split: (lambda s=split: make_split(s, counts[s], image_size,
                                                seed, border_width))
             for split in counts}
  return Dataset(info, loaders)


def make_split(split: str, count: int, size: int, seed: int,
               border_width: int = 0) -> Split:
  pairs = [make_example(np.random.default_rng((seed, _SPLIT_CODES[split], i)),
                        size) for i in range(count)]
  images = np.stack([image for image, _ in pairs])[..., None]
  labels = np.stack([trimap(label, border_width) if border_width else label
                     for _, label in pairs]).astype(np.int32)
  ids = tuple(f"{split}_{i:05d}" for i in range(count))
  return Split(images.astype(np.float32), labels, ids)


def make_example(rng: np.random.Generator,
                 size: int) -> tuple[np.ndarray, np.ndarray]:
  """One (image in [0, 1], binary mask) pair."""
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
  signal = np.zeros((size, size), np.float32)
  mask = np.zeros((size, size), bool)
  scale = size / 64
  for _ in range(rng.integers(4, 10)):
    cell = _ellipse(rng, yy, xx, radius=rng.uniform(4, 10) * scale / size)
    texture = ndimage.gaussian_filter(rng.normal(size=(size, size)), 1.5)
    brightness = rng.uniform(0.35, 1.0)
    signal = np.maximum(signal, cell * brightness * (1 + 0.6 * texture))
    mask |= cell > 0.5
  for _ in range(rng.integers(2, 7)):  # bright debris: small, not cells
    speck = _ellipse(rng, yy, xx, radius=rng.uniform(0.8, 1.6) * scale / size)
    signal = np.maximum(signal, speck * rng.uniform(0.6, 1.0))
  illumination = _illumination(rng, yy, xx)
  background = 0.35 * illumination
  image = background + signal * illumination * 0.9
  image = ndimage.gaussian_filter(image, rng.uniform(0.6, 1.4))
  image += rng.normal(scale=rng.uniform(0.03, 0.08), size=image.shape)
  return np.clip(image, 0, 1).astype(np.float32), mask


def trimap(mask: np.ndarray, width: int) -> np.ndarray:
  """0 background, 1 cell, 2 within `width` pixels of a cell outline."""
  outer = ndimage.binary_dilation(mask, iterations=width)
  inner = ndimage.binary_erosion(mask, iterations=width, border_value=1)
  return np.where(outer & ~inner, 2, mask.astype(np.int32))


def _ellipse(rng, yy, xx, radius: float) -> np.ndarray:
  """A soft-edged ellipse of random position, elongation and angle."""
  cy, cx = rng.uniform(0.05, 0.95, size=2)
  angle = rng.uniform(0, np.pi)
  stretch = rng.uniform(0.7, 1.4)
  dy, dx = yy - cy, xx - cx
  u = (dx * np.cos(angle) + dy * np.sin(angle)) / (radius * stretch)
  v = (-dx * np.sin(angle) + dy * np.cos(angle)) / (radius / stretch)
  r = np.sqrt(u ** 2 + v ** 2)
  return np.clip((1.15 - r) / 0.3, 0, 1).astype(np.float32)


def _illumination(rng, yy, xx) -> np.ndarray:
  """A smooth field from about 0.3 to 1: vignetting plus a tilted lamp."""
  cy, cx = rng.uniform(-0.2, 1.2, size=2)
  falloff = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / rng.uniform(0.2, 0.6))
  return (0.3 + 0.7 * falloff).astype(np.float32)
