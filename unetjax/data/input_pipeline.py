"""The one `tf.data` pipeline every dataset goes through.

Training order is a pure function of (seed, epoch): example k of the
endless training stream is `permutation(seed, k // n)[k % n]`, and its
augmentation is seeded by (seed, k). Resuming at step s therefore starts
the stream at example s * batch_size and reproduces the uninterrupted run
exactly. Each process reads only its own slice of every global batch.

A split is an indexable source of examples (`unetjax.data`). One held in
memory (`Split`) is gathered from tensors; one stored on disk
(`stored.StoredSplit`) is read example by example, a training crop only
its window (the crop's corner is drawn before the read, from the same
seed), and only the examples of this process's part of each batch.
Variable-size datasets need `augment.crop_size` for training: crops are
drawn inside each example's true size. Evaluation pads each batch to its
largest example and adds a `valid` map (1 = a real pixel) so tasks score
only the real pixels: every pixel of every image counts once, none of the
padding does.

Images become model input by `unetjax.data.normalize` (`normalization`:
its `setting`, None for 'scale'), with each image's percentiles computed
once on the whole image (`image_stats`).

TensorFlow comes from `runtime.imports.tensorflow()`, which hides any GPU
from it so it never takes memory JAX needs.
"""
import concurrent.futures
import os
from typing import Iterator

import ml_collections
import numpy as np

from unetjax.data import Split, augment, normalize
from unetjax.runtime.errors import ConfigError
from unetjax.runtime.imports import tensorflow

_MAX_EPOCHS = 2 ** 31 - 1


def _graph(tf, fn):
  """`fn` for `Dataset.map` as written: it branches on config values only
  (tensor branches are explicit `tf.cond`s), so AutoGraph's rewriting of
  its source, and of every function it calls, is time spent for nothing
  (about 1 s of start-up for the default experiment, docs/performance.md)."""
  return tf.autograph.experimental.do_not_convert(fn)


def train_batches(split, *, batch_size: int, seed: int,
                  start_step: int, augment_config: ml_collections.ConfigDict,
                  process_index: int = 0, process_count: int = 1,
                  normalization: dict | None = None
                  ) -> Iterator[dict[str, np.ndarray]]:
  """This process's part of each global training batch, from start_step on.

  Batches span epoch boundaries, so a dataset smaller than a batch (one
  training image, say) still yields full batches.
  """
  tf = tensorflow()
  check_crop(split, augment_config.crop_size)
  n = len(split)
  first = start_step * batch_size
  stats = image_stats(split, normalization)
  stats = None if stats is None else tf.constant(stats)
  read = (_memory_reader(tf, split) if isinstance(split, Split)
          else _stored_reader(tf, split, augment_config.crop_size))

  def epoch(e):
    return tf.data.Dataset.from_tensor_slices(
        (e * n + tf.range(n, dtype=tf.int64), epoch_order(tf, seed, e, n)))

  def load(k, index):
    example_seed = tf.stack([tf.constant(seed, tf.int64), k])
    example, cropped = read(index, example_seed)
    example["image"] = normalize.apply_tf(
        tf, _as_float(tf, example["image"]),
        None if stats is None else tf.gather(stats, index))
    return augment.apply(example, augment_config, example_seed,
                         maps=tuple(split.map_dtypes), cropped=cropped)

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


def epoch_order(tf, seed: int, epoch, n: int):
  """The example indices of training epoch `epoch`, in stream order."""
  return tf.random.experimental.stateless_shuffle(
      tf.range(n, dtype=tf.int64),
      seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)]))


def _memory_reader(tf, split: Split):
  """index -> (the padded example gathered from tensors, not cropped)."""
  images, labels = tf.constant(split.images), tf.constant(split.labels)
  maps = {name: tf.constant(values) for name, values in split.maps.items()}
  sizes = None if split.sizes is None else tf.constant(split.sizes, tf.int32)

  def read(index, unused_seed):
    example = {"image": tf.gather(images, index),
               "label": tf.gather(labels, index),
               **{name: tf.gather(values, index)
                  for name, values in maps.items()}}
    if sizes is not None:
      example["size"] = tf.gather(sizes, index)
    return example, False
  return read


def _stored_reader(tf, split, crop: int):
  """index -> (the example's crop, read from disk: only its window), or
  the whole example when there is no crop (then all share one size)."""
  sizes = tf.constant(split.sizes, tf.int32)
  names = ("image", "label", *split.map_dtypes)
  dtypes = [split.image_dtype, split.label_dtype,
            *split.map_dtypes.values()]
  height, width = (crop, crop) if crop else split.shape

  def read_numpy(index, y0, x0):
    example = split.read(int(index), int(y0), int(x0), height, width)
    return [example[name] for name in names]

  def read(index, seed):
    corner = (augment.crop_corner(tf, seed, crop, tf.gather(sizes, index))
              if crop else tf.zeros([2], tf.int32))
    arrays = tf.numpy_function(read_numpy, [index, corner[0], corner[1]],
                               [tf.as_dtype(d) for d in dtypes],
                               stateful=False)
    example = {}
    for name, values in zip(names, arrays):
      values.set_shape((height, width, split.channels) if name == "image"
                       else (height, width))
      example[name] = values
    return example, bool(crop)
  return read


def train_batch_shapes(split, *, batch_size: int,
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
  height, width = split.shape
  if augment_config.crop_size:
    height = width = augment_config.crop_size
  pixels = (batch_size, height, width)
  shapes = {"image": (pixels + (split.channels,), np.dtype(np.float32)),
            "label": (pixels if split.spatial
                      else (batch_size,) + split.labels.shape[1:],
                      np.dtype(split.label_dtype))}
  for name, dtype in split.map_dtypes.items():
    shapes[name] = (pixels, np.dtype(dtype))
  return shapes


def eval_batches(split, *, batch_size: int, process_index: int = 0,
                 process_count: int = 1, by_size: bool = False,
                 align: int = 32, normalization: dict | None = None
                 ) -> Iterator[dict[str, np.ndarray]]:
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
  indices, mask, crops = _eval_plan(split, batch_size, process_index,
                                    process_count, by_size, align)
  stats = image_stats(split, normalization)
  if not isinstance(split, Split):
    return _stored_eval_batches(split, indices, mask, crops, normalization,
                                stats)
  tf = tensorflow()
  local = _local_batch_size(batch_size, process_count)
  crops = np.repeat(crops, local, axis=0)
  images, labels = tf.constant(split.images), tf.constant(split.labels)
  maps = {name: tf.constant(values) for name, values in split.maps.items()}
  valid_maps = None if split.sizes is None else tf.constant(
      valid_pixels(split.sizes, split.shape))
  stats = None if stats is None else tf.constant(stats)

  def load(index, valid):
    image = normalize.apply_tf(tf, _as_float(tf, tf.gather(images, index)),
                               None if stats is None
                               else tf.gather(stats, index))
    example = {"image": image,
               "label": tf.gather(labels, index), "mask": valid,
               "index": index,
               **{name: tf.gather(values, index)
                  for name, values in maps.items()}}
    if valid_maps is not None:
      example["valid"] = tf.gather(valid_maps, index)
      if stats is not None:  # padding stays 0, as in stored splits
        example["image"] *= tf.cast(example["valid"], tf.float32)[..., None]
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


def _eval_plan(split, batch_size: int, process_index: int,
               process_count: int, by_size: bool, align: int):
  """(this process's example indices, their mask (0 = padding row), the
  (height, width) of each of its batches)."""
  n = len(split)
  padded = -(-n // batch_size) * batch_size
  local = _local_batch_size(batch_size, process_count)
  order = np.arange(n)
  sizes = split.sizes
  sorted_batches = by_size and sizes is not None
  if sorted_batches:
    order = np.argsort(sizes[:, 0] * sizes[:, 1], kind="stable")
  order = np.concatenate([order, np.full(padded - n, order[-1])])
  real = np.arange(padded) < n
  shape = np.array(split.shape)
  crops = np.tile(shape, (padded // batch_size, 1))
  if sorted_batches:
    for b, start in enumerate(range(0, padded, batch_size)):
      rows = order[start:start + batch_size]
      crop = -(-sizes[rows].max(axis=0) // align) * align
      crops[b] = np.minimum(crop, shape)
  positions = np.arange(padded).reshape(-1, process_count, local)
  positions = positions[:, process_index].reshape(-1)
  return (order[positions], real[positions].astype(np.float32),
          crops.astype(np.int32))


def _stored_eval_batches(split, indices, mask, crops, normalization, stats):
  """Eval batches of a stored split, read on a thread one batch ahead of
  the one being computed: each example whole, zero-padded to its batch's
  size, with `valid` when sizes vary."""
  varied = not (split.sizes == split.sizes[0]).all()
  local = len(indices) // len(crops)

  def batch(b):
    rows = range(b * local, (b + 1) * local)
    height, width = (int(v) for v in crops[b])
    out = {"image": np.zeros((local, height, width, split.channels),
                             np.float32),
           "label": np.zeros((local, height, width), split.label_dtype),
           "mask": mask[b * local:(b + 1) * local],
           "index": indices[b * local:(b + 1) * local]}
    for name, dtype in split.map_dtypes.items():
      out[name] = np.zeros((local, height, width), dtype)
    if varied:
      out["valid"] = np.zeros((local, height, width), np.uint8)
    for row, i in enumerate(rows):
      example = split.read(int(indices[i]))
      h, w = example["label"].shape
      out["image"][row, :h, :w] = normalize.apply(
          example["image"], normalization,
          None if stats is None else stats[indices[i]])
      for name in ("label", *split.map_dtypes):
        out[name][row, :h, :w] = example[name]
      if varied:
        out["valid"][row, :h, :w] = 1
    return out

  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    pending = pool.submit(batch, 0) if len(crops) else None
    for b in range(len(crops)):
      current = pending.result()
      pending = pool.submit(batch, b + 1) if b + 1 < len(crops) else None
      yield current


def image_stats(split, normalization: dict | None) -> np.ndarray | None:
  """[N, 2, C] float32 percentiles (low, high) of each example's whole
  image, or None for 'scale'. A stored split keeps them beside each image
  file (one small .npy per setting), computed on first use."""
  if normalization is None or normalization["normalize"] == "scale":
    return None
  if isinstance(split, Split):
    return np.stack([normalize.stats(split.read(i)["image"], normalization)
                     for i in range(len(split))])
  low, high = normalization["percentiles"]

  def one(index):
    path = split.image_path(index)
    cached = f"{path[:-len('.npy')]}.p{low:g}-{high:g}.npy"
    try:
      return np.load(cached)
    except (OSError, ValueError):
      values = normalize.stats(np.load(path, mmap_mode="r"), normalization)
      tmp = f"{cached}.{os.getpid()}.tmp.npy"
      try:
        np.save(tmp, values)
        os.replace(tmp, cached)
      except OSError:
        pass  # only saves time
      return values
  by_file = {}
  for i in range(len(split)):
    by_file.setdefault(split.image_path(i), i)
  from unetjax.data import stored  # pylint: disable=g-import-not-at-top
  computed = dict(zip(by_file, stored.parallel_map(one, by_file.values())))
  # A gray image served as RGB has one column of stats for all three.
  return np.stack([np.broadcast_to(computed[split.image_path(i)],
                                   (2, split.channels))
                   for i in range(len(split))])


def valid_pixels(sizes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """[N, H, W] uint8 maps, 1 inside each example's true size, 0 in padding."""
  rows = np.arange(shape[0])[None, :, None] < sizes[:, 0, None, None]
  cols = np.arange(shape[1])[None, None, :] < sizes[:, 1, None, None]
  return (rows & cols).astype(np.uint8)


def check_crop(split, crop_size: int) -> None:
  """Variable-size examples train on crops that fit the smallest one (the
  pipeline needs one shape per batch). `training/preflight` calls it before
  the first write; the pipeline again, for callers that skip the build."""
  if split.sizes is None or (
      not crop_size and (split.sizes == split.sizes[0]).all()):
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
