"""Dataset registry and the forms a split comes in.

A dataset builder takes the keyword arguments of `config.data` (less its
name) and returns a `Dataset`: facts about the data (`DataInfo`) and its
splits, each an indexable source of examples. Small sets (MNIST, digits,
the embedded ones) are a `Split` of arrays in memory; sets of images of
their own sizes on disk (DSB 2018) are a `stored.StoredSplit`, one `.npy`
per image, label and pixel map, read lazily through memory maps, a crop
reading only its rows. Both offer `len`, `ids`, `sizes`, `shape`,
`read(i, y0, x0, h, w)` and `select`, and go through one `tf.data`
pipeline (`unetjax.data.input_pipeline`), so order, augmentation, sharding
and exact resume work the same for every dataset. Add a dataset: one
module here and one line below.
"""
import dataclasses
import functools
import hashlib
import inspect
import json
from typing import Callable

import ml_collections
import numpy as np

from unetjax.data import label_checks
from unetjax.runtime import config as config_lib
from unetjax.runtime.errors import ConfigError, DataError
from unetjax.runtime.registry import Registry

DATASETS = Registry("dataset", "data.name", {
    "cells": "unetjax.data.cells:build",
    "digits": "unetjax.data.digits:build",
    "mnist": "unetjax.data.tfds_images:mnist",
    "fashion_mnist": "unetjax.data.tfds_images:fashion_mnist",
    "cifar10": "unetjax.data.tfds_images:cifar10",
    "oxford_iiit_pet": "unetjax.data.pets:build",
    "sample_photos": "unetjax.data.sample_photos:build",
    "isbi2012": "unetjax.data.isbi2012:build",
    "glas": "unetjax.data.glas:build",
    "folders": "unetjax.data.folders:build",
    "dsb2018": "unetjax.data.dsb2018:build",
    "nuclei": "unetjax.data.nuclei:build",
})


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """Facts about a dataset.

  instances: False when `Split.labels` hold class ids 0..num_classes-1;
    True when they hold instance ids (0 = background, 1..n one object each
    within its image, not necessarily consecutive), num_classes then
    counting background and object (2) for models and metrics.
  """
  name: str
  num_classes: int
  in_channels: int
  class_names: tuple[str, ...]
  instances: bool = False


@dataclasses.dataclass(frozen=True)
class Split:
  """One split in memory.

  images: [N, H, W, C], uint8 (0..255) or float32 in [0, 1].
  labels: [N, H, W] int32 class ids for segmentation (instance ids when
    `DataInfo.instances`), [N] for classification.
  ids: a name per example, for per-example reports.
  sizes: [N, 2] true (height, width) of each example when sizes vary;
    images and labels are then zero-padded at the bottom and right to a
    common size, and the pipeline never trains or scores the padding.
  maps: more per-pixel arrays {name: [N, H, W]} that belong to the labels
    (a task's loss weights, the instance ids behind class targets). The
    pipeline carries each through every augmentation exactly as it moves
    the labels (same crop, flips, turns and elastic field, nearest
    neighbour) and adds it to the batch under its name.
  """
  images: np.ndarray
  labels: np.ndarray
  ids: tuple[str, ...]
  sizes: np.ndarray | None = None
  maps: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    n = len(self.images)
    if self.images.ndim != 4:
      raise DataError(f"images have shape {self.images.shape}; expected "
                      "[N, height, width, channels]")
    if len(self.labels) != n or len(self.ids) != n:
      raise DataError(f"{n} images but {len(self.labels)} labels and "
                      f"{len(self.ids)} ids")
    for name, values in self.maps.items():
      if values.shape != self.images.shape[:3]:
        raise DataError(f"per-pixel map {name!r} has shape {values.shape}; "
                        f"expected {self.images.shape[:3]} like the images")

  def __len__(self) -> int:
    return len(self.images)

  # --- the example-source interface it shares with stored.StoredSplit ---

  @property
  def spatial(self) -> bool:
    """Labels per pixel (segmentation), not one per example."""
    return self.labels.ndim == 3

  @property
  def shape(self) -> tuple[int, int]:
    """(height, width) every example is stored at (padded when sizes
    vary)."""
    return tuple(int(v) for v in self.images.shape[1:3])

  @property
  def channels(self) -> int:
    return self.images.shape[3]

  @property
  def image_dtype(self) -> np.dtype:
    return self.images.dtype

  @property
  def label_dtype(self) -> np.dtype:
    return self.labels.dtype

  @property
  def map_dtypes(self) -> dict[str, np.dtype]:
    return {name: values.dtype for name, values in self.maps.items()}

  def read(self, index: int, y0: int = 0, x0: int = 0,
           height: int | None = None, width: int | None = None
           ) -> dict[str, np.ndarray]:
    """Example `index` at its true size (or that region of it), as
    `StoredSplit.read` gives it."""
    true = (self.sizes[index] if self.sizes is not None
            else self.images.shape[1:3])
    height = int(true[0]) - y0 if height is None else height
    width = int(true[1]) - x0 if width is None else width
    rows, cols = slice(y0, y0 + height), slice(x0, x0 + width)
    out = {"image": self.images[index, rows, cols]}
    out["label"] = (self.labels[index, rows, cols] if self.spatial
                    else self.labels[index])
    for name, values in self.maps.items():
      out[name] = values[index, rows, cols]
    return out

  def take(self, count: int) -> "Split":
    return self.select(np.arange(min(count, len(self))))

  def select(self, indices) -> "Split":
    """The examples at `indices`, in that order, with their maps."""
    indices = np.asarray(indices, np.int64)
    return Split(self.images[indices], self.labels[indices],
                 tuple(self.ids[i] for i in indices),
                 None if self.sizes is None else self.sizes[indices],
                 {k: v[indices] for k, v in self.maps.items()})


@dataclasses.dataclass
class Dataset:
  """DataInfo plus a loader per split, each called at most once."""
  info: DataInfo
  loaders: dict[str, Callable[[], Split]]
  _cache: dict[str, Split] = dataclasses.field(default_factory=dict)
  checked: bool = True  # check_labels on each split (not once transformed)

  def split(self, name: str) -> Split:
    if name not in self.loaders:
      raise ConfigError(f"dataset {self.info.name!r} has no split {name!r}; "
                        f"it has {sorted(self.loaders)}")
    if name not in self._cache:
      split = self.loaders[name]()
      if self.checked:
        check_labels(split, self.info, name)
      self._cache[name] = split
    return self._cache[name]

  def split_names(self) -> list[str]:
    return list(self.loaders)

  def has_split(self, name: str) -> bool:
    return name in self.loaders

  def transformed(self, transform: Callable[[Split, str], Split]
                  ) -> "Dataset":
    """The same data with `transform(split, split_name)` applied to each
    split once, after its labels were checked: how a task turns a dataset's
    labels (instance ids, say) into its own targets."""
    def load(name):  # checked, transformed, and only the result is kept
      split = self.loaders[name]()
      if self.checked:
        check_labels(split, self.info, name)
      return apply_transform(split, transform, name)
    return Dataset(self.info, {name: functools.partial(load, name)
                               for name in self.loaders}, checked=False)


def apply_transform(split, transform: Callable[[Split, str], Split],
                    name: str):
  """`transform(split, name)`: on a Split in memory at once; on a stored
  split example by example, the results cached (`stored.transform`)."""
  if isinstance(split, Split):
    return transform(split, name)
  from unetjax.data import stored  # pylint: disable=g-import-not-at-top
  return stored.transform(split, transform, name,
                          transform_key(transform, name))


def transform_key(transform, name: str) -> str:
  """A name for what `transform(split, name)` makes, for the cache of a
  stored split's transformed labels: the task's class and settings (a
  bound method's object) and whether the split trains (tasks keep the
  instance ids of evaluated splits only). Another setting, another key."""
  owner = getattr(transform, "__self__", None)
  what = [getattr(transform, "__qualname__", repr(transform)),
          name == "train",
          sorted((k, repr(v)) for k, v in vars(owner).items())
          if owner is not None else None]
  return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]


def check_labels(split, info: DataInfo, split_name: str) -> None:
  """Fails loudly on class ids outside 0..num_classes-1, or on instance ids
  that are negative or not integers. A stored split's ranges were
  recorded when its files were written."""
  if not len(split):
    raise DataError(f"dataset {info.name!r}: split {split_name!r} is empty")
  if not np.issubdtype(split.label_dtype, np.integer) and (
      info.instances or not isinstance(split, Split)):
    raise DataError(f"dataset {info.name!r}: split {split_name!r} has "
                    f"{split.label_dtype} labels; expected integer instance "
                    "ids")
  low, high = (split.label_range if not isinstance(split, Split)
               else (int(split.labels.min()), int(split.labels.max())))
  if info.instances:
    if low < 0:
      raise DataError(f"dataset {info.name!r}: split {split_name!r} has "
                      f"instance ids down to {low}; expected ids >= 0 "
                      "(0 = background)")
    label_checks.check_instances(split, info.name, split_name)
    return
  if low < 0 or high >= info.num_classes:
    raise DataError(
        f"dataset {info.name!r}: split {split_name!r} has labels in "
        f"[{low}, {high}]; expected class ids 0..{info.num_classes - 1}")


def build(config: ml_collections.ConfigDict) -> Dataset:
  builder = DATASETS.get(config.data.name)
  kwargs = config_lib.section_kwargs(config.data)
  accepted = set(inspect.signature(builder).parameters)
  for key in kwargs:
    if key not in accepted:
      raise ConfigError(f"data.{key} is not an option of dataset "
                        f"{config.data.name!r}; expected one of "
                        f"{sorted(accepted)}")
  return builder(**kwargs)
