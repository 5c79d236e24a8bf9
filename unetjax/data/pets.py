"""Oxford-IIIT Pet (TFDS `oxford_iiit_pet`): photos of cats and dogs with
a trimap per pixel, the standard multi-class segmentation benchmark.

The trimap is stored as 1 pet, 2 background, 3 border (the uncertain band
around the outline) and loaded as classes 0, 1, 2. `binary=True` gives pet
(1) against everything else (0), border included. Images and masks are
resized independently to `image_size` squared (aspect ratio not kept, as
in the TensorFlow segmentation tutorial), images bilinearly with
antialiasing, masks with nearest neighbour so no class is invented. The
validation split is the last `val_percent`% of TFDS's train split; TFDS's
test split is the test set. Needs the TFDS download (about 800 MB) once.
"""
import numpy as np

from unetjax.data import DataInfo, Dataset, Split, tfds_images
from unetjax.runtime.errors import ConfigError, DataError

TRIMAP_NAMES = ("pet", "background", "border")
_STORED_VALUES = (1, 2, 3)
LOCAL_HINT = ("prepare it where there is network (tfds build NAME "
              "--data_dir D) and set data.data_dir=D, or train on your own "
              "files with data.name='folders', data.dir=FOLDER (images/ and "
              "masks/)")


def build(*, image_size: int = 128, binary: bool = False,
          val_percent: int = 10, data_dir: str = "") -> Dataset:
  if image_size < 8:
    raise ConfigError(f"data.image_size={image_size}: expected >= 8")
  if not isinstance(val_percent, int) or not 0 < val_percent < 100:
    raise ConfigError(f"data.val_percent={val_percent!r}: expected an "
                      "integer percentage of the train split, 1..99")
  names = ("rest", "pet") if binary else TRIMAP_NAMES
  info = DataInfo(name="oxford_iiit_pet", num_classes=len(names),
                  in_channels=3, class_names=names)
  tfds_splits = {"train": f"train[:{100 - val_percent}%]",
                 "val": f"train[{100 - val_percent}%:]", "test": "test"}

  def loader(tfds_split):
    return lambda: load_split(tfds_split, image_size, binary, data_dir)

  return Dataset(info, {name: loader(split)
                        for name, split in tfds_splits.items()})


def load_split(tfds_split: str, image_size: int, binary: bool,
               data_dir: str) -> Split:
  """One TFDS split resized into memory: uint8 images, int32 class maps."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from unetjax.runtime.imports import tensorflow  # pylint: disable=g-import-not-at-top
  tf = tensorflow()
  size = [image_size, image_size]

  def resize(example):
    image = tf.image.resize(example["image"], size, antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    mask = tf.image.resize(example["segmentation_mask"], size,
                           method="nearest")[..., 0]
    return image, tf.cast(mask, tf.int32), example["file_name"]

  builder = tfds.builder("oxford_iiit_pet", data_dir=data_dir or None)
  tfds_images.prepare(builder, LOCAL_HINT)
  ds = builder.as_dataset(split=tfds_split)
  ds = ds.map(resize, num_parallel_calls=tf.data.AUTOTUNE).batch(256)
  images, masks, names = [], [], []
  for image, mask, name in ds.as_numpy_iterator():
    images.append(image)
    masks.append(mask)
    names.extend(n.decode() for n in name)
  masks = np.concatenate(masks)
  check_trimap(masks, names, tfds_split)
  labels = (masks == 1) if binary else masks - 1
  return Split(np.concatenate(images), labels.astype(np.int32), tuple(names))


def check_trimap(masks: np.ndarray, names: list[str], tfds_split: str) -> None:
  """Fails on any value but 1, 2, 3: a wrong mask must not train silently."""
  bad = ~np.isin(masks, _STORED_VALUES)
  if bad.any():
    first = int(np.argmax(bad.reshape(len(masks), -1).any(axis=1)))
    values = sorted(set(np.unique(masks[bad]).tolist()))[:8]
    raise DataError(
        f"oxford_iiit_pet {tfds_split!r}: segmentation_mask of "
        f"{names[first]} holds {values}; expected trimap values 1, 2, 3")
