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

from unetjax import image_io
from unetjax.datasets import Dataset, DataInfo, Split
from unetjax.errors import ConfigError, DataError

LABEL_VALUES = {0: 0, 255: 1}  # membrane, cell interior
DOWNLOAD_HINT = ("get train-volume.tif and train-labels.tif from "
                 "https://imagej.net/events/isbi-2012-segmentation-challenge "
                 "and pass their folder as --config.data.dir")


def build(*, dir: str = "", val_slices: tuple[int, ...] = (),  # pylint: disable=redefined-builtin
          fold: int = 0, num_folds: int = 6) -> Dataset:
  info = DataInfo(name="isbi2012", num_classes=2, in_channels=1,
                  class_names=("membrane", "cell interior"))
  images, labels = load_training_stack(dir)
  val = held_out_slices(len(images), val_slices, fold, num_folds)
  train = [i for i in range(len(images)) if i not in val]

  def split(indices):
    return lambda: Split(images[indices], labels[indices],
                         tuple(f"slice_{i:02d}" for i in indices))
  return Dataset(info, {"train": split(train), "val": split(val)})


def load_training_stack(directory: str) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, H, W, 1], labels int32 [N, H, W] of 0/1)."""
  if not directory or not os.path.isdir(directory):
    raise DataError(f"ISBI-2012 data folder data.dir={directory!r} does not "
                    f"exist: {DOWNLOAD_HINT}")
  tiff = os.path.join(directory, "train-volume.tif")
  if os.path.exists(tiff):
    label_path = os.path.join(directory, "train-labels.tif")
    images = image_io.read_stack(tiff)
    masks = [(label_path, page)
             for page in image_io.read_mask_stack(label_path)]
  elif os.path.isdir(os.path.join(directory, "train", "images")):
    images, masks = _read_png_slices(os.path.join(directory, "train"))
  else:
    raise DataError(f"{directory}: neither train-volume.tif nor "
                    f"train/images/ found; {DOWNLOAD_HINT}")
  if len(masks) != len(images):
    raise DataError(f"{directory}: {len(images)} image slices but "
                    f"{len(masks)} label slices")
  labels = []
  for (path, mask), image in zip(masks, images):
    if mask.shape != image.shape[:2]:
      raise DataError(f"{path}: label of size {mask.shape} for an image of "
                      f"size {image.shape[:2]}")
    labels.append(image_io.map_mask_values(mask, LABEL_VALUES, path))
  return (np.round(images * 255).astype(np.uint8),
          np.stack(labels).astype(np.int32))


def _read_png_slices(folder: str):
  """Slices paired by file stem from images/ and labels/."""
  image_dir = os.path.join(folder, "images")
  label_dir = os.path.join(folder, "labels")
  stems = sorted(os.path.splitext(f)[0] for f in os.listdir(image_dir)
                 if f.lower().endswith(image_io.IMAGE_SUFFIXES))
  if not stems:
    raise DataError(f"{image_dir}: no images")
  images, masks = [], []
  for stem in stems:
    image_path = image_io.find_partner(image_dir, stem)
    label_path = image_io.find_partner(label_dir, stem)
    if label_path is None:
      raise DataError(f"{image_path}: no label {stem}.* in {label_dir}")
    images.append(image_io.read_image(image_path))
    masks.append((label_path, image_io.read_mask(label_path)))
  return np.stack(images), masks


def held_out_slices(count: int, val_slices, fold: int,
                    num_folds: int) -> list[int]:
  """The validation slice indices: `val_slices`, or a contiguous k-fold."""
  if val_slices:
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
