"""Warwick GlaS (MICCAI 2015 gland segmentation), official release layout.

One folder holding `train_N.bmp` with `train_N_anno.bmp` (85 images),
`testA_N.bmp` + `testA_N_anno.bmp` (60) and `testB_N.bmp` +
`testB_N_anno.bmp` (20): RGB H&E colon histology of varied sizes (about
775x522 down to 567x430). Annotations hold gland instance ids with 0 =
background; they are binarised to gland (1) vs background (0), or kept as
instance ids with `instances=True` (`DataInfo.instances`). File names are
matched whatever their case (`train_1.BMP`, `train_1_anno.BMP`).

Splits: `train` trains; testA is `val`, the split the trainer evaluates
during training and picks the best checkpoint on, and testB is `test`,
evaluated once at the end, so testB is the honest held-out figure.
`val_split='testB'` swaps the two. Training uses random crops, evaluation
whole images.

Storage (`cache=True`, the default): each split's images are read, checked
and stored once, when the split is first used, as examples of their own
sizes (`folders.stored_splits`, under `stored.cache_dir('glas')`) and
streamed; `cache=False` holds each split in memory, padded to its largest
image (see `Split.sizes`).
"""
import os
import re

import numpy as np

from unetjax.data import DataInfo, Dataset, folders
from unetjax.runtime.errors import ConfigError, DataError

DOWNLOAD_HINT = ("download the GlaS release (Warwick-QU) from "
                 "https://warwick.ac.uk/fac/cross_fac/tia/data/glascontest/ "
                 "and pass the folder holding train_1.bmp as --config.data.dir")
_PARTS = ("train", "testA", "testB")


def build(*, dir: str = "", val_split: str = "testA",  # pylint: disable=redefined-builtin
          instances: bool = False, cache: bool = True) -> Dataset:
  if val_split not in ("testA", "testB"):
    raise ConfigError(f"data.val_split={val_split!r}: expected 'testA' or "
                      "'testB'")
  if not dir or not os.path.isdir(dir):
    raise DataError(f"GlaS data folder data.dir={dir!r} does not exist: "
                    f"{DOWNLOAD_HINT}")
  test_split = "testB" if val_split == "testA" else "testA"
  names = {"train": "train", "val": val_split, "test": test_split}
  pairs = {part: official_pairs(dir, part) for part in _PARTS}
  info = DataInfo(name="glas", num_classes=2, in_channels=3,
                  class_names=("background", "gland"), instances=instances)
  to_labels = folders.mask_mapping(None, 2, instances=True) if instances \
      else binarise
  stored_as = ("glas", ["glas", 1, bool(instances)]) if cache else None
  return Dataset(info, {
      split: (lambda p=pairs[part]: folders.load_split(
          p, to_labels, channels=3, stored_as=stored_as))
      for split, part in names.items()})


def official_pairs(directory: str, part: str) -> list[tuple[str, str]]:
  """(image, annotation) paths of one part, in numeric order."""
  pattern = re.compile(rf"{part}_(\d+)\.bmp$", re.IGNORECASE)
  names = sorted(os.listdir(directory))
  by_lower = {}
  for name in names:
    by_lower.setdefault(name.lower(), name)
  numbered = sorted((int(m.group(1)), name) for name in names
                    if (m := pattern.match(name)))
  if not numbered:
    raise DataError(f"{directory}: no {part}_N.bmp images; {DOWNLOAD_HINT}")
  pairs = []
  for _, name in numbered:
    anno = name[:-len(".bmp")] + "_anno.bmp"
    if anno.lower() not in by_lower:
      raise DataError(f"{os.path.join(directory, name)}: no annotation "
                      f"{anno}")
    pairs.append((os.path.join(directory, name),
                  os.path.join(directory, by_lower[anno.lower()])))
  return pairs


def binarise(instances: np.ndarray, path: str) -> np.ndarray:
  """Gland instance ids -> 1, background 0 -> 0."""
  if instances.min() < 0:
    raise DataError(f"{path}: negative instance ids {int(instances.min())}")
  return (instances > 0).astype(np.int32)
