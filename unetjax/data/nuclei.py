"""Real fluorescence nuclei shipped in the package (the default experiment).

80 gray 256x256 images from the 2018 Data Science Bowl stage 1 training
set (CC0; see `nuclei_data/ATTRIBUTION`), each with its instance map
(16-bit PNG, 0 = background, 1..n one nucleus each), chosen by
`scripts/make_nuclei_subset.py` for many touching nuclei and varied
magnification. `Split.labels` hold instance ids (`DataInfo.instances`).
The split options work as for `dsb2018`: a seeded shuffle of the sorted
image ids, `test_fraction` test, `val_fraction` val, the rest train.
"""
import csv
import importlib.resources
import os

import numpy as np

from unetjax.data import DataInfo, Dataset, dsb2018, folders, image_io
from unetjax.runtime.errors import DataError

SIZE = 256


def data_dir() -> str:
  return str(importlib.resources.files("unetjax.data") / "nuclei_data")


def image_ids() -> list[str]:
  """The shipped ids, from manifest.csv."""
  path = os.path.join(data_dir(), "manifest.csv")
  if not os.path.exists(path):
    raise DataError(f"{path}: missing; the package was installed without its "
                    "nuclei data (reinstall unetjax)")
  with open(path, newline="") as f:
    return sorted(row["id"] for row in csv.DictReader(f))


def build(*, val_fraction: float = 0.1, test_fraction: float = 0.1,
          split_seed: int = 0) -> Dataset:
  splits = dsb2018.split_ids(image_ids(), val_fraction, test_fraction,
                             split_seed)
  info = DataInfo(name="nuclei", num_classes=2, in_channels=1,
                  class_names=dsb2018.CLASS_NAMES, instances=True)
  return Dataset(info, {name: (lambda ids=ids: load(ids))
                        for name, ids in splits.items()})


def load(ids: list[str]):
  """A Split of the given shipped images, uint8 images and int32 ids."""
  images, labels = [], []
  for image_id in ids:
    image_path = os.path.join(data_dir(), "images", f"{image_id}.png")
    label_path = os.path.join(data_dir(), "instances", f"{image_id}.png")
    pixels = image_io.read_pixels(image_path)
    instances = image_io.read_mask(label_path)
    if pixels.shape != (SIZE, SIZE, 1) or pixels.dtype != np.uint8 or (
        instances.shape != (SIZE, SIZE)):
      raise DataError(f"{image_path}: expected a 256x256 8-bit gray image "
                      "with a 256x256 instance map")
    images.append(pixels)
    labels.append(instances)
  return folders.stack_examples(images, labels, tuple(ids))
