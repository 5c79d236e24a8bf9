"""Image classification sets from TensorFlow Datasets: mnist and friends.

One builder serves every TFDS set with an `image` and a class `label`
(registered: mnist, fashion_mnist, cifar10). The test split is TFDS's own;
validation is the last `val_examples` of TFDS's train split (the classic
55,000 / 5,000 MNIST split by default), training the rest. Images stay
uint8 in memory (cifar10's train split is 150 MB that way, 600 MB as
float32); the input pipeline scales them to [0, 1].

TensorFlow Datasets is imported only when one of these sets is used.
`data.dir` set (mnist, fashion_mnist) reads the original IDX files from
that folder instead, without TFDS (`unetjax.data.mnist_idx`).
"""
import functools
import socket

import numpy as np

from unetjax.data import DataInfo, Dataset, Split
from unetjax.runtime.errors import ConfigError, DataError

_READ_BATCH = 10_000  # examples per read; TFDS mock data can't batch all


_IDX_SETS = ("mnist", "fashion_mnist")


def build(tfds_name: str, *, val_examples: int = 5000, data_dir: str = "",
          download: bool = True, dir: str = "") -> Dataset:  # pylint: disable=redefined-builtin
  """`data_dir` '' is TFDS's default (~/tensorflow_datasets); `dir` a
  folder of IDX files, read instead of TFDS."""
  if not isinstance(val_examples, int) or val_examples < 1:
    raise ConfigError(f"data.val_examples={val_examples!r}: expected a "
                      "positive integer")
  if dir:
    if tfds_name not in _IDX_SETS:
      raise ConfigError(f"data.dir={dir!r}: IDX files are read for "
                        f"{list(_IDX_SETS)}, not {tfds_name!r}")
    from unetjax.data import mnist_idx  # pylint: disable=g-import-not-at-top
    return mnist_idx.build(dir, tfds_name, val_examples=val_examples)
  builder = _tfds().builder(tfds_name, data_dir=data_dir or None)
  info = DataInfo(
      name=tfds_name,
      num_classes=builder.info.features["label"].num_classes,
      in_channels=builder.info.features["image"].shape[-1],
      class_names=tuple(builder.info.features["label"].names))
  read = functools.partial(read_split, builder, download=download)
  train_and_val = functools.cache(lambda: read("train"))
  loaders = {
      "train": lambda: _cut(train_and_val(), val_examples, tfds_name)[0],
      "val": lambda: _cut(train_and_val(), val_examples, tfds_name)[1],
      "test": lambda: read("test"),
  }
  return Dataset(info, loaders)


def read_split(builder, split: str, *, download: bool) -> Split:
  """A whole TFDS split in memory: uint8 images, int32 labels."""
  if download:
    prepare(builder, LOCAL_HINTS.get(builder.name, LOCAL_HINT))
  elif not builder.is_prepared():
    raise DataError(f"TFDS dataset {builder.name!r} is not in "
                    f"{builder.data_dir}; set data.download=True or "
                    "data.data_dir to where it was prepared")
  batches = _tfds().as_numpy(builder.as_dataset(
      split=split, batch_size=_READ_BATCH, as_supervised=True,
      shuffle_files=False))
  images, labels = zip(*batches)
  count = sum(len(batch) for batch in labels)
  return Split(np.concatenate(images), np.concatenate(labels).astype(np.int32),
               tuple(f"{split}_{i:05d}" for i in range(count)))


# Where TFDS fetches from first; unreachable means no download can work.
DOWNLOAD_HOST = ("storage.googleapis.com", 443)
LOCAL_HINT = ("prepare it where there is network (tfds build NAME "
              "--data_dir D) and set data.data_dir=D")
LOCAL_HINTS = {"mnist": "run from local files with data.dir=FOLDER (the "
                        "four MNIST IDX files), or " + LOCAL_HINT}


def offline(timeout: float = 3.0) -> str | None:
  """Why nothing can be downloaded (no network), or None when it can."""
  try:
    socket.create_connection(DOWNLOAD_HOST, timeout=timeout).close()
  except OSError as e:
    return (f"{DOWNLOAD_HOST[0]} is unreachable: "
            f"{e.strerror or type(e).__name__}")
  return None


def prepare(builder, hint: str) -> None:
  """Downloads and prepares a TFDS set unless prepared already; without
  network it fails within seconds with one line, not TFDS's minutes of
  retries."""
  if builder.is_prepared():
    return
  name = builder.name
  reason = offline() if _downloads(builder) else None
  if reason:
    raise DataError(f"TFDS dataset {name!r} is not in {builder.data_dir} and "
                    f"cannot be downloaded ({reason}); "
                    f"{hint.replace('NAME', name)}")
  try:
    builder.download_and_prepare()
  except Exception as e:  # TFDS raises many kinds for a failed download
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    raise DataError(f"TFDS dataset {name!r} could not be downloaded into "
                    f"{builder.data_dir}: {first}; "
                    f"{hint.replace('NAME', name)}") from e


def _downloads(builder) -> bool:
  """Whether download_and_prepare is TFDS's own, which needs the network
  (not a stand-in such as tfds.testing.mock_data's, which reads nothing)."""
  method = getattr(type(builder), "download_and_prepare", None)
  return getattr(method, "__module__", "").startswith("tensorflow_datasets.core")


def _cut(train: Split, val_examples: int, name: str) -> tuple[Split, Split]:
  """(train less its last val_examples, those last val_examples)."""
  if val_examples >= len(train):
    raise ConfigError(f"data.val_examples={val_examples} but TFDS {name!r} "
                      f"has only {len(train)} training examples")
  keep = len(train) - val_examples
  return (Split(train.images[:keep], train.labels[:keep], train.ids[:keep]),
          Split(train.images[keep:], train.labels[keep:], train.ids[keep:]))


@functools.cache
def _tfds():
  from unetjax.runtime.imports import tensorflow  # pylint: disable=g-import-not-at-top
  tensorflow()  # hides GPUs from TensorFlow before TFDS uses it
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


mnist = functools.partial(build, "mnist")
fashion_mnist = functools.partial(build, "fashion_mnist")
cifar10 = functools.partial(build, "cifar10")
