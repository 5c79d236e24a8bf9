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
"""
import os

import numpy as np

from unetjax.data import DataInfo, Dataset, Split, folders, image_io
from unetjax.runtime.errors import ConfigError, DataError

LABEL_VALUES = {0: 0, 255: 1}  # membrane, cell interior
DOWNLOAD_HINT = ("get train-volume.tif and train-labels.tif from "
                 "https://imagej.net/events/isbi-2012-segmentation-challenge "
                 "and pass their folder as --config.data.dir")


def build(*, dir: str = "", val_slices: tuple[int, ...] = (),  # pylint: disable=redefined-builtin
          fold: int = 0, num_folds: int = 6) -> Dataset:
  info = DataInfo(name="isbi2012", num_classes=2, in_channels=1,
                  class_names=("membrane", "cell interior"))
  stack = load_training_stack(dir)
  val = held_out_slices(len(stack), val_slices, fold, num_folds)
  train = [i for i in range(len(stack)) if i not in val]

  def split(indices):
    return lambda: Split(stack.images[indices], stack.labels[indices],
                         tuple(stack.ids[i] for i in indices))
  return Dataset(info, {"train": split(train), "val": split(val)})


def load_training_stack(directory: str) -> Split:
  """All labelled slices, images uint8 and labels 0/1, in stack order."""
  if not directory or not os.path.isdir(directory):
    raise DataError(f"ISBI-2012 data folder data.dir={directory!r} does not "
                    f"exist: {DOWNLOAD_HINT}")
  to_classes = folders.mask_mapping(LABEL_VALUES, num_classes=2)
  volume = os.path.join(directory, "train-volume.tif")
  if os.path.isdir(os.path.join(directory, "train", "images")):
    return folders.load_split(
        folders.paired_files(os.path.join(directory, "train"), "labels"),
        to_classes)
  if not os.path.exists(volume):
    raise DataError(f"{directory}: neither train-volume.tif nor "
                    f"train/images/ found; {DOWNLOAD_HINT}")
  label_path = os.path.join(directory, "train-labels.tif")
  images = image_io.read_stack(volume)
  masks = image_io.read_mask_stack(label_path)
  if masks.shape != images.shape[:3]:
    raise DataError(f"{label_path}: labels of shape {masks.shape} for "
                    f"slices of shape {images.shape[:3]} in {volume}")
  return folders.stack_examples(
      list(images), [to_classes(mask, label_path) for mask in masks],
      [f"slice_{i:02d}" for i in range(len(images))])


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
