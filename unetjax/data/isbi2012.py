"""ISBI-2012 EM segmentation: 30 labelled 512x512 slices of a neural tissue.

Reads either the official release (multi-page TIFFs `train-volume.tif`,
`train-labels.tif`) or a folder of per-slice PNGs (`train/images/NN.png`,
`train/labels/NN.png`). Label 255 = cell interior = class 1 (foreground),
0 = membrane = class 0. Any other label value is an error naming the file.

Thirty slices is all there is, so validation holds out slices of the
training stack: the ones listed in `val_slices`, or else contiguous block
`fold` of `num_folds`. Neighbouring sections look alike, so contiguous
blocks give a more honest estimate than scattered slices. The test stack
has no published labels and is not a split.

Storage (`cache=True`, the default): each slice is stored once as an
example of its own (`stored.py`, under `stored.cache_dir('isbi2012')`,
keyed by the real paths, sizes and modification times of the files it
comes from) and read when the input pipeline asks for it, as DSB and
folders are; `cache=False` holds the stack in memory.
"""
import os

import numpy as np

from unetjax.data import DataInfo, Dataset, folders, image_io, stored
from unetjax.runtime.errors import ConfigError, DataError

LABEL_VALUES = {0: 0, 255: 1}  # membrane, cell interior
DOWNLOAD_HINT = ("get train-volume.tif and train-labels.tif from "
                 "https://imagej.net/events/isbi-2012-segmentation-challenge "
                 "and pass their folder as --config.data.dir")


# What shapes a stored slice besides its files (in the cache key).
_SETTING = ["isbi2012", 1, sorted(LABEL_VALUES.items())]


def build(*, dir: str = "", val_slices: tuple[int, ...] = (),  # pylint: disable=redefined-builtin
          fold: int = 0, num_folds: int = 6, cache: bool = True) -> Dataset:
  info = DataInfo(name="isbi2012", num_classes=2, in_channels=1,
                  class_names=("membrane", "cell interior"))
  stack = load_training_stack(dir, cache)
  val = held_out_slices(len(stack), val_slices, fold, num_folds)
  train = [i for i in range(len(stack)) if i not in val]
  return Dataset(info, {"train": lambda: stack.select(train),
                        "val": lambda: stack.select(val)})


def load_training_stack(directory: str, cache: bool = True):
  """All labelled slices, images uint8 and labels 0/1, in stack order:
  stored (a `stored.StoredSplit`) or, `cache` False, in memory (a
  `Split`)."""
  if not directory or not os.path.isdir(directory):
    raise DataError(f"ISBI-2012 data folder data.dir={directory!r} does not "
                    f"exist: {DOWNLOAD_HINT}")
  to_classes = folders.mask_mapping(LABEL_VALUES, num_classes=2)
  volume = os.path.join(directory, "train-volume.tif")
  if os.path.isdir(os.path.join(directory, "train", "images")):
    return folders.load_split(
        folders.paired_files(os.path.join(directory, "train"), "labels"),
        to_classes, stored_as=("isbi2012", _SETTING) if cache else None)
  if not os.path.exists(volume):
    raise DataError(f"{directory}: neither train-volume.tif nor "
                    f"train/images/ found; {DOWNLOAD_HINT}")
  label_path = os.path.join(directory, "train-labels.tif")
  if cache:
    return _stored_stack(volume, label_path, to_classes)
  images, labels = _read_stacks(volume, label_path, to_classes)
  return folders.stack_examples(list(images), labels, _slice_ids(len(images)))


def _read_stacks(volume: str, label_path: str, to_classes):
  """(float images [N, H, W, C], [class ids [H, W]] * N), checked."""
  images = image_io.read_stack(volume)
  masks = image_io.read_mask_stack(label_path)
  if masks.shape != images.shape[:3]:
    raise DataError(f"{label_path}: labels of shape {masks.shape} for "
                    f"slices of shape {images.shape[:3]} in {volume}")
  return images, [to_classes(mask, label_path) for mask in masks]


def _stored_stack(volume: str, label_path: str, to_classes):
  """The stacks' slices as stored examples: when any is missing, both
  stacks are read and checked once and every missing slice written."""
  root = stored.cache_dir("isbi2012")
  pages = image_io.stack_shape(volume)[0]
  keys = [stored.file_key([volume, label_path], _SETTING + [index])
          for index in range(pages)]
  images = labels = None  # read only when some slice is not stored
  if any(stored.read_meta(os.path.join(root, "examples", key)) is None
         for key in keys):
    images, labels = _read_stacks(volume, label_path, to_classes)
    if len(images) != pages:
      raise DataError(f"{volume}: {len(images)} slices read where its "
                      f"header says {pages}")
  done = stored.store(root, keys, list(range(pages)), lambda index: (
      {"image": stored.stored_image(images[index]), "label": labels[index]},
      None))
  return stored.whole_split(done, _slice_ids(pages), done[0][1]["shape"][2],
                            root)


def _slice_ids(count: int) -> list[str]:
  return [f"slice_{i:02d}" for i in range(count)]


def held_out_slices(count: int, val_slices, fold: int,
                    num_folds: int) -> list[int]:
  """The validation slice indices: `val_slices`, or a contiguous k-fold.

  `fold` and `num_folds` are checked even when `val_slices` replaces them,
  so an impossible fold is never accepted silently."""
  if val_slices:
    if not 0 <= fold < num_folds:  # unused then, but never silently wrong
      raise ConfigError(f"data.fold={fold}, data.num_folds={num_folds} with "
                        f"data.val_slices={tuple(val_slices)}: expected 0 <= "
                        "fold < num_folds")
    bad = [i for i in val_slices if not 0 <= i < count]
    if bad or len(set(val_slices)) == count:
      raise ConfigError(f"data.val_slices={tuple(val_slices)}: expected "
                        f"distinct slice indices in 0..{count - 1}, leaving "
                        "some for training")
    return sorted(set(val_slices))
  if not 2 <= num_folds <= count or not 0 <= fold < num_folds:
    raise ConfigError(f"data.fold={fold}, data.num_folds={num_folds}: "
                      f"expected 2 <= num_folds <= {count} and 0 <= fold < "
                      "num_folds (or set data.val_slices)")
  bounds = np.linspace(0, count, num_folds + 1).round().astype(int)
  return list(range(bounds[fold], bounds[fold + 1]))
