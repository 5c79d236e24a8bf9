"""The one `tf.data` pipeline every dataset goes through.

Training order is a pure function of (seed, epoch): example k of the
endless training stream is `permutation(seed, k // n)[k % n]`, and its
augmentation is seeded by (seed, k). Resuming at step s therefore starts
the stream at example s * batch_size and reproduces the uninterrupted run
exactly. Each process reads only its own slice of every global batch.

TensorFlow is imported here only; any GPU is hidden from it so it never
takes memory JAX needs.
"""
import functools
from typing import Iterator

import ml_collections
import numpy as np

from unetjax import augment
from unetjax.datasets import Split

_MAX_EPOCHS = 2 ** 31 - 1


@functools.cache
def tensorflow():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  return tf


def train_batches(split: Split, *, batch_size: int, seed: int,
                  start_step: int, augment_config: ml_collections.ConfigDict,
                  process_index: int = 0, process_count: int = 1
                  ) -> Iterator[dict[str, np.ndarray]]:
  """This process's part of each global training batch, from start_step on.

  Batches span epoch boundaries, so a dataset smaller than a batch (one
  training image, say) still yields full batches.
  """
  tf = tensorflow()
  n = len(split)
  first = start_step * batch_size
  images, labels = tf.constant(split.images), tf.constant(split.labels)

  def epoch(e):
    order = tf.random.experimental.stateless_shuffle(
        tf.range(n, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), e]))
    return tf.data.Dataset.from_tensor_slices(
        (e * n + tf.range(n, dtype=tf.int64), order))

  def load(k, index):
    example = {"image": _as_float(tf, tf.gather(images, index)),
               "label": tf.gather(labels, index)}
    return augment.apply(example, augment_config,
                         tf.stack([tf.constant(seed, tf.int64), k]))

  local = _local_batch_size(batch_size, process_count)
  ds = (tf.data.Dataset.range(first // n, _MAX_EPOCHS)
        .flat_map(epoch)
        .skip(first % n)
        .batch(batch_size, drop_remainder=True)
        .map(lambda k, i: (k[process_index * local:(process_index + 1) * local],
                           i[process_index * local:(process_index + 1) * local]))
        .unbatch()
        .map(load, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(local, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE))
  return _numpy_iterator(tf, ds)


def eval_batches(split: Split, *, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """The whole split once, in order, as fixed-size batches.

  The last batch is padded by repeating example 0, with `mask` 0 for the
  padding, so every batch has the same shape (one compile) and padding
  never counts in a metric.
  """
  tf = tensorflow()
  n = len(split)
  padded = -(-n // batch_size) * batch_size
  local = _local_batch_size(batch_size, process_count)
  positions = np.arange(padded).reshape(-1, process_count, local)
  positions = positions[:, process_index].reshape(-1)
  mask = (positions < n).astype(np.float32)
  indices = np.where(positions < n, positions, 0)
  images, labels = tf.constant(split.images), tf.constant(split.labels)

  def load(index, valid):
    return {"image": _as_float(tf, tf.gather(images, index)),
            "label": tf.gather(labels, index), "mask": valid,
            "index": index}

  ds = (tf.data.Dataset.from_tensor_slices((indices, mask))
        .map(load, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(local)
        .prefetch(tf.data.AUTOTUNE))
  return _numpy_iterator(tf, ds)


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
