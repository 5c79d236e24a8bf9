"""MNIST from IDX files: layouts, the split, and every bad file refused."""
import gzip
import os
import struct

import ml_collections
import numpy as np
import pytest

from unetjax import data as datasets
from unetjax.data import mnist_idx
from unetjax.runtime.errors import ConfigError, DataError

REAL = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                    "mnist")


def idx_images(images: np.ndarray) -> bytes:
  count, rows, cols = images.shape
  return struct.pack(">iiii", 2051, count, rows, cols) + images.tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
  return struct.pack(">ii", 2049, len(labels)) + labels.tobytes()


def _files(n_train=12, n_test=4, size=28):
  rng = np.random.default_rng(0)
  files = {}
  for prefix, n in (("train", n_train), ("t10k", n_test)):
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n)  # tells the examples apart
    files[f"{prefix}-images-idx3-ubyte"] = idx_images(images)
    files[f"{prefix}-labels-idx1-ubyte"] = idx_labels(
        (np.arange(n) % 10).astype(np.uint8))
  return files


def write(folder, files, gz=False):
  os.makedirs(folder, exist_ok=True)
  for name, data in files.items():
    if gz:
      with gzip.open(os.path.join(folder, name + ".gz"), "wb") as f:
        f.write(data)
    else:
      with open(os.path.join(folder, name), "wb") as f:
        f.write(data)
  return str(folder)


def _config(folder, val_examples=3):
  config = ml_collections.ConfigDict(dict(data=dict(
      name="mnist", train_examples=0, val_examples=val_examples,
      data_dir="", download=True, dir=str(folder))))
  return config


@pytest.mark.parametrize("layout,gz", [("", False), ("", True),
                                       ("MNIST/raw", False),
                                       ("MNIST/raw", True), ("raw", True)])
def test_layouts_load_the_standard_split(tmp_path, layout, gz):
  write(tmp_path / layout, _files(), gz=gz)
  dataset = datasets.build(_config(tmp_path))
  train, val, test = (dataset.split(s) for s in ("train", "val", "test"))
  assert (len(train), len(val), len(test)) == (9, 3, 4)
  assert train.images.shape == (9, 28, 28, 1)
  assert train.images.dtype == np.uint8
  # validation is the LAST val_examples of the training file, in order
  np.testing.assert_array_equal(val.images[:, 0, 0, 0], [9, 10, 11])
  np.testing.assert_array_equal(val.labels, [9, 0, 1])
  np.testing.assert_array_equal(test.labels, [0, 1, 2, 3])
  assert train.labels.dtype == np.int32
  assert dataset.info.num_classes == 10 and dataset.info.in_channels == 1
  assert test.ids[0] == "test_00000" and val.ids[0] == "train_00009"


def test_uncompressed_wins_over_gz(tmp_path):
  files = _files()
  write(tmp_path, files)
  bad = dict(files)
  bad["train-labels-idx1-ubyte"] = b"junk"
  write(tmp_path, bad, gz=True)
  assert len(datasets.build(_config(tmp_path)).split("train")) == 9


def _corrupt(name, data):
  files = _files()
  files[name] = data(files[name]) if callable(data) else data
  return files


TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
rng = np.random.default_rng(1)
BAD = {
    "images magic": (_corrupt(TRAIN_IMAGES, lambda d: struct.pack(
        ">i", 2049) + d[4:]), TRAIN_IMAGES, "magic number 2049; expected 2051"),
    "labels magic": (_corrupt(TRAIN_LABELS, lambda d: struct.pack(
        ">i", 2051) + d[4:]), TRAIN_LABELS, "magic number 2051; expected 2049"),
    "truncated images": (_corrupt(TRAIN_IMAGES, lambda d: d[:-100]),
                         TRAIN_IMAGES, "truncated"),
    "truncated labels": (_corrupt(TRAIN_LABELS, lambda d: d[:-1]),
                         TRAIN_LABELS, "truncated"),
    "header cut": (_corrupt(TRAIN_IMAGES, lambda d: d[:10]), TRAIN_IMAGES,
                   "10 bytes, shorter than the 16-byte IDX header"),
    "extra bytes": (_corrupt(TRAIN_IMAGES, lambda d: d + b"\0" * 5),
                    TRAIN_IMAGES, "5 bytes past the 12 items"),
    "image size": (_corrupt(TRAIN_IMAGES, idx_images(rng.integers(
        0, 256, (12, 27, 27), dtype=np.uint8))), TRAIN_IMAGES,
                   "images are 27x27; expected 28x28"),
    "label range": (_corrupt(TRAIN_LABELS, idx_labels(np.array(
        [0] * 7 + [10] + [0] * 4, np.uint8))), TRAIN_LABELS,
                    "label 10 at index 7; expected 0..9"),
    "count mismatch": (_corrupt(TRAIN_LABELS, idx_labels(
        np.zeros(11, np.uint8))), TRAIN_LABELS,
                       "holds 11 labels but"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("gz", [False, True])
def test_bad_files_are_one_line_naming_the_file(tmp_path, case, gz):
  files, culprit, message = BAD[case]
  write(tmp_path, files, gz=gz)
  with pytest.raises(DataError) as info:
    datasets.build(_config(tmp_path))
  text = str(info.value)
  assert "\n" not in text
  assert message in text
  assert text.startswith(str(tmp_path / culprit) + (".gz" if gz else ""))


def test_truncated_gzip_and_missing_files(tmp_path):
  write(tmp_path, _files(), gz=True)
  path = tmp_path / (TRAIN_IMAGES + ".gz")
  path.write_bytes(path.read_bytes()[:-30])
  with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: not a "
                     "complete gzip file"):
    datasets.build(_config(tmp_path))
  os.remove(path)
  with pytest.raises(DataError, match="has no train-images-idx3-ubyte"):
    datasets.build(_config(tmp_path))
  with pytest.raises(DataError, match="is not a directory"):
    datasets.build(_config(tmp_path / "nowhere"))


def test_bad_val_examples_and_cifar_dir(tmp_path):
  write(tmp_path, _files())
  with pytest.raises(ConfigError, match="val_examples=12 but .* has only 12"):
    datasets.build(_config(tmp_path, val_examples=12))
  config = _config(tmp_path)
  config.data.name = "cifar10"
  with pytest.raises(ConfigError, match="IDX files are read for"):
    datasets.build(config)


@pytest.mark.skipif(not os.path.isdir(REAL), reason="no ../shared/data/mnist")
def test_the_real_mnist_files():
  dataset = mnist_idx.build(REAL, val_examples=5000)
  train, val, test = (dataset.split(s) for s in ("train", "val", "test"))
  assert (len(train), len(val), len(test)) == (55_000, 5000, 10_000)
  # the first digits of the two files are a 5 and a 7
  assert train.labels[0] == 5 and test.labels[0] == 7
  assert np.bincount(test.labels).tolist() == [
      980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
  assert train.images.max() == 255
