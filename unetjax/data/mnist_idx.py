"""MNIST (or Fashion-MNIST) from the original IDX files, without TFDS.

`data.dir` names a folder holding the four files of the original release,
uncompressed or as the `.gz` forms Keras, TFDS and torchvision download:

  train-images-idx3-ubyte  train-labels-idx1-ubyte
  t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte

directly, or in `raw/` or `MNIST/raw/` under it (torchvision's layout);
LeCun's `train-images.idx3-ubyte` spelling is found too. Where both an
uncompressed file and its `.gz` exist, the uncompressed one is read.

IDX: a big-endian int32 magic (2051 images, 2049 labels), the count (and
rows, cols for images), then one uint8 per pixel or label. Every file is
checked before training: its magic, that it holds exactly the values its
header promises (a truncated or padded file is refused), 28x28 images,
labels 0..9, and as many labels as images; each problem is a one-line
DataError naming the file. The split is the standard one: the 60,000
training images less their last `val_examples` for training, those last
ones for validation, the 10,000 t10k images for testing.
"""
import gzip
import os
import zlib

import numpy as np

from unetjax.data import DataInfo, Dataset, Split
from unetjax.runtime.errors import ConfigError, DataError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
IMAGE_SIZE = 28
NUM_CLASSES = 10
_SUBDIRS = ("", "raw", os.path.join("MNIST", "raw"))


def build(directory: str, name: str = "mnist", *,
          val_examples: int = 5000) -> Dataset:
  """The three splits of the IDX files under `directory`, all checked now."""
  if not isinstance(val_examples, int) or val_examples < 1:
    raise ConfigError(f"data.val_examples={val_examples!r}: expected a "
                      "positive integer")
  if not os.path.isdir(directory):
    raise DataError(f"data.dir={directory!r} is not a directory")
  train = read_split(directory, "train")
  if val_examples >= len(train):
    raise ConfigError(f"data.val_examples={val_examples} but {directory} has "
                      f"only {len(train)} training images")
  test = read_split(directory, "t10k")
  keep = len(train) - val_examples
  splits = {
      "train": Split(train.images[:keep], train.labels[:keep],
                     train.ids[:keep]),
      "val": Split(train.images[keep:], train.labels[keep:], train.ids[keep:]),
      "test": test,
  }
  info = DataInfo(name=name, num_classes=NUM_CLASSES, in_channels=1,
                  class_names=tuple(str(d) for d in range(NUM_CLASSES)))
  return Dataset(info, {k: (lambda s=s: s) for k, s in splits.items()})


def read_split(directory: str, prefix: str) -> Split:
  """`prefix` 'train' or 't10k': its images and labels, checked together."""
  images_path = find_file(directory, f"{prefix}-images", "idx3")
  labels_path = find_file(directory, f"{prefix}-labels", "idx1")
  images = read_images(images_path)
  labels = read_labels(labels_path)
  if len(images) != len(labels):
    raise DataError(f"{labels_path} holds {len(labels)} labels but "
                    f"{images_path} holds {len(images)} images")
  split = "train" if prefix == "train" else "test"
  return Split(images[..., None], labels.astype(np.int32),
               tuple(f"{split}_{i:05d}" for i in range(len(labels))))


def find_file(directory: str, stem: str, kind: str) -> str:
  """The first of `stem-kind-ubyte[.gz]` (or `stem.kind-ubyte`) found."""
  names = [f"{stem}-{kind}-ubyte", f"{stem}.{kind}-ubyte"]
  for subdir in _SUBDIRS:
    for name in names:
      for suffix in ("", ".gz"):
        path = os.path.join(directory, subdir, name + suffix)
        if os.path.isfile(path):
          return path
  raise DataError(f"data.dir={directory!r} has no {names[0]} (nor .gz, nor "
                  "in raw/ or MNIST/raw/); expected the four MNIST IDX files")


def read_images(path: str) -> np.ndarray:
  """[N, 28, 28] uint8 from an IDX3 file."""
  header, data = _read(path, IMAGES_MAGIC, 3)
  count, rows, cols = header
  if (rows, cols) != (IMAGE_SIZE, IMAGE_SIZE):
    raise DataError(f"{path}: images are {rows}x{cols}; expected "
                    f"{IMAGE_SIZE}x{IMAGE_SIZE}")
  return data.reshape(count, rows, cols)


def read_labels(path: str) -> np.ndarray:
  """[N] uint8 from an IDX1 file, every label in 0..9."""
  _, labels = _read(path, LABELS_MAGIC, 1)
  if len(labels) and labels.max() >= NUM_CLASSES:
    bad = int(np.argmax(labels >= NUM_CLASSES))
    raise DataError(f"{path}: label {int(labels[bad])} at index {bad}; "
                    f"expected 0..{NUM_CLASSES - 1}")
  return labels


def _read(path: str, magic: int, ndim: int) -> tuple[tuple[int, ...],
                                                       np.ndarray]:
  """(header dims, uint8 values) of an IDX file, its length checked."""
  raw = _bytes(path)
  header_bytes = 4 * (1 + ndim)
  if len(raw) < header_bytes:
    raise DataError(f"{path}: {len(raw)} bytes, shorter than the "
                    f"{header_bytes}-byte IDX header (truncated?)")
  found, *dims = np.frombuffer(raw, ">i4", count=1 + ndim).tolist()
  if found != magic:
    raise DataError(f"{path}: IDX magic number {found}; expected {magic} "
                    f"({'images' if magic == IMAGES_MAGIC else 'labels'})")
  if min(dims) < 0:
    raise DataError(f"{path}: negative size {dims} in the IDX header")
  expected = int(np.prod(dims))
  values = len(raw) - header_bytes
  if values < expected:
    raise DataError(f"{path}: truncated: the header promises {dims[0]} "
                    f"items ({expected} bytes) but {values} bytes follow")
  if values > expected:
    raise DataError(f"{path}: {values - expected} bytes past the {dims[0]} "
                    "items its header promises")
  return tuple(dims), np.frombuffer(raw, np.uint8, offset=header_bytes)


def _bytes(path: str) -> bytes:
  try:
    if path.endswith(".gz"):
      with gzip.open(path, "rb") as f:
        return f.read()
    with open(path, "rb") as f:
      return f.read()
  except (EOFError, gzip.BadGzipFile, zlib.error) as e:
    raise DataError(f"{path}: not a complete gzip file ({e})") from None
  except OSError as e:
    raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
