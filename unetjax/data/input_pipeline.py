"""The one `tf.data` pipeline every dataset goes through.

Training order is a pure function of (seed, epoch): example k of the
endless training stream is `permutation(seed, k // n)[k % n]`, and its
augmentation is seeded by (seed, k). Resuming at step s therefore starts
the stream at example s * batch_size and reproduces the uninterrupted run
exactly. Each process reads only its own slice of every global batch.

Variable-size datasets (`Split.sizes` set) are stored padded to a common
size. Training needs `augment.crop_size`: crops are drawn inside each
example's true size. Evaluation runs on the whole padded images and adds
a `valid` map (1 = a real pixel) so tasks score only the real pixels:
every pixel of every image counts once, none of the padding does.

TensorFlow comes from `runtime.imports.tensorflow()`, which hides any GPU
from it so it never takes memory JAX needs.
"""
from typing import Iterator

import ml_collections
import numpy as np

from unetjax.data import Split, augment
from unetjax.runtime.errors import ConfigError
from unetjax.runtime.imports import tensorflow

_MAX_EPOCHS = 2 ** 31 - 1


def _graph(tf, fn):
  """`fn` for `Dataset.map` as written: it branches on config values only
  (tensor branches are explicit `tf.cond`s), so AutoGraph's rewriting of
  its source, and of every function it calls, is time spent for nothing
  (about 1 s of start-up for the default experiment, docs/performance.md)."""
  return tf.autograph.experimental.do_not_convert(fn)


def train_batches(split: Split, *, batch_size: int, seed: int,
                  start_step: int, augment_config: ml_collections.ConfigDict,
                  process_index: int = 0, process_count: int = 1
                  ) -> Iterator[dict[str, np.ndarray]]:
  """This process's part of each global training batch, from start_step on.

  Batches span epoch boundaries, so a dataset smaller than a batch (one
  training image, say) still yields full batches.
  """
  tf = tensorflow()
  _check_crop(split, augment_config.crop_size)
  n = len(split)
  first = start_step * batch_size
  images, labels = tf.constant(split.images), tf.constant(split.labels)
  maps = {name: tf.constant(values) for name, values in split.maps.items()}
  sizes = None if split.sizes is None else tf.constant(split.sizes, tf.int32)

  def epoch(e):
    order = tf.random.experimental.stateless_shuffle(
        tf.range(n, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), e]))
    return tf.data.Dataset.from_tensor_slices(
        (e * n + tf.range(n, dtype=tf.int64), order))

  def load(k, index):
    example = {"image": _as_float(tf, tf.gather(images, index)),
               "label": tf.gather(labels, index),
               **{name: tf.gather(values, index)
                  for name, values in maps.items()}}
    if sizes is not None:
      example["size"] = tf.gather(sizes, index)
    return augment.apply(example, augment_config,
                         tf.stack([tf.constant(seed, tf.int64), k]),
                         maps=tuple(maps))

  local = _local_batch_size(batch_size, process_count)
  ds = (tf.data.Dataset.range(first // n, _MAX_EPOCHS)
        .flat_map(_graph(tf, epoch))
        .skip(first % n)
        .batch(batch_size, drop_remainder=True)
        .map(_graph(tf, lambda k, i: (
            k[process_index * local:(process_index + 1) * local],
            i[process_index * local:(process_index + 1) * local])))
        .unbatch()
        .map(_graph(tf, load), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(local, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE))
  return _numpy_iterator(tf, ds)


def train_batch_shapes(split: Split, *, batch_size: int,
                       augment_config: ml_collections.ConfigDict
                       ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """(shape, dtype) of each entry of the global training batches that
  `train_batches` yields (every process's rows together), worked out
  without TensorFlow, so the train step can be compiled for them while
  TensorFlow is still being imported. Images come as float32; a crop sets
  the height and width of the image and of every per-pixel entry; the
  true `size` of a variable-size example is used by the crop and dropped.
  tests/test_input_shapes.py checks them against real batches.
  """
  height, width = split.images.shape[1:3]
  if augment_config.crop_size:
    height = width = augment_config.crop_size
  pixels = (batch_size, height, width)
  labels = split.labels
  shapes = {"image": (pixels + split.images.shape[3:], np.dtype(np.float32)),
            "label": (pixels if labels.ndim == 3
                      else (batch_size,) + labels.shape[1:], labels.dtype)}
  for name, values in split.maps.items():
    shapes[name] = (pixels, values.dtype)
  return shapes


def eval_batches(split: Split, *, batch_size: int, process_index: int = 0,
                 process_count: int = 1, by_size: bool = False,
                 align: int = 32) -> Iterator[dict[str, np.ndarray]]:
  """The whole split once, as batches of `batch_size` examples.

  The last batch is padded by repeating an example, with `mask` 0 for the
  padding, so padding never counts in a metric. Without `by_size` the
  examples come in order and every batch has the same shape (one compile).

  `by_size` (variable-size splits; models that take any multiple of
  `align`): examples come sorted by their true area and each batch is cut
  to the largest true size in it, rounded up to `align`, so a split of
  mostly small images with a few large ones is not computed at the largest
  size throughout (one compile per distinct batch shape). `index` says
  which example each row is.
  """
  tf = tensorflow()
  n = len(split)
  padded = -(-n // batch_size) * batch_size
  local = _local_batch_size(batch_size, process_count)
  order = np.arange(n)
  sorted_batches = by_size and split.sizes is not None
  if sorted_batches:
    order = np.argsort(split.sizes[:, 0] * split.sizes[:, 1], kind="stable")
  order = np.concatenate([order, np.full(padded - n, order[-1])])
  real = np.arange(padded) < n
  crops = np.tile(split.images.shape[1:3], (padded, 1))
  if sorted_batches:
    for start in range(0, padded, batch_size):
      rows = order[start:start + batch_size]
      crop = -(-split.sizes[rows].max(axis=0) // align) * align
      crops[start:start + batch_size] = np.minimum(
          crop, split.images.shape[1:3])
  positions = np.arange(padded).reshape(-1, process_count, local)
  positions = positions[:, process_index].reshape(-1)
  mask = real[positions].astype(np.float32)
  indices, crops = order[positions], crops[positions].astype(np.int32)
  images, labels = tf.constant(split.images), tf.constant(split.labels)
  maps = {name: tf.constant(values) for name, values in split.maps.items()}
  valid_maps = None if split.sizes is None else tf.constant(
      valid_pixels(split.sizes, split.images.shape[1:3]))

  def load(index, valid):
    example = {"image": _as_float(tf, tf.gather(images, index)),
               "label": tf.gather(labels, index), "mask": valid,
               "index": index,
               **{name: tf.gather(values, index)
                  for name, values in maps.items()}}
    if valid_maps is not None:
      example["valid"] = tf.gather(valid_maps, index)
    return example

  def cut(batch, crop):
    height, width = crop[0, 0], crop[0, 1]
    return {k: v if len(v.shape) < 3 else v[:, :height, :width]
            for k, v in batch.items()}

  ds = tf.data.Dataset.from_tensor_slices((indices, mask))
  ds = ds.map(_graph(tf, load), num_parallel_calls=tf.data.AUTOTUNE)
  ds = tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(crops))
  ds = (ds.batch(local).map(_graph(tf, cut),
                            num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE))
  return _numpy_iterator(tf, ds)


def valid_pixels(sizes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """[N, H, W] uint8 maps, 1 inside each example's true size, 0 in padding."""
  rows = np.arange(shape[0])[None, :, None] < sizes[:, 0, None, None]
  cols = np.arange(shape[1])[None, None, :] < sizes[:, 1, None, None]
  return (rows & cols).astype(np.uint8)


def _check_crop(split: Split, crop_size: int) -> None:
  """Variable-size examples train on crops that fit the smallest one."""
  if split.sizes is None:
    return
  smallest = split.sizes.min(axis=0)
  if not 0 < crop_size <= smallest.min():
    raise ConfigError(
        f"augment.crop_size={crop_size}: this dataset's images vary in size "
        f"(smallest {smallest[0]}x{smallest[1]}), so training needs a crop "
        f"size from 1 to {smallest.min()}")


def _as_float(tf, image):
  if image.dtype == tf.uint8:
    return tf.cast(image, tf.float32) / 255.0
  return tf.cast(image, tf.float32)


def _local_batch_size(batch_size: int, process_count: int) -> int:
  if batch_size % process_count:
    raise ValueError(f"batch size {batch_size} is not divisible by the "
                     f"{process_count} processes")
  return batch_size // process_count


def _numpy_iterator(tf, ds) -> Iterator[dict[str, np.ndarray]]:
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  return ds.with_options(options).as_numpy_iterator()
