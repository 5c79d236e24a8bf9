"""Training-time augmentation as stateless TensorFlow ops.

Each example's random draws come from its own seed (derived from the run
seed and the example's position in the training stream), so augmentation
is reproducible and survives resume. Geometric changes are applied to
image and mask together; masks are never interpolated (nearest neighbour).

Examples of a variable-size dataset in memory arrive padded to a common
size with their true size in `example['size']`; random crops are drawn
inside that true size, so padding is never trained on. Examples stored on
disk are read already cropped (`crop_corner` says where, from the same
seed), so only the crop's rows are read; the other draws are the same.
"""
import ml_collections

from unetjax.runtime.errors import ConfigError


def validate(config: ml_collections.ConfigDict, height: int,
             width: int) -> None:
  """Rejects settings that cannot apply to images of this size."""
  if config.crop_size < 0 or config.crop_size > min(height, width):
    raise ConfigError(f"augment.crop_size={config.crop_size}: expected 0 (no "
                      f"crop) up to the image size {height}x{width}")
  out_h = config.crop_size or height
  out_w = config.crop_size or width
  if config.rot90 and out_h != out_w:
    raise ConfigError(f"augment.rot90 needs square images or crops; images "
                      f"are {height}x{width}: set augment.crop_size")
  if not 0 <= config.brightness <= 1 or not 0 <= config.contrast <= 1:
    raise ConfigError(f"augment.brightness={config.brightness} and "
                      f"augment.contrast={config.contrast}: expected 0..1")
  if config.elastic and (config.elastic_grid < 2
                         or config.elastic_sigma <= 0):
    raise ConfigError(f"augment.elastic_grid={config.elastic_grid} and "
                      f"augment.elastic_sigma={config.elastic_sigma}: "
                      "expected a grid of >= 2 points and sigma > 0 pixels")


def apply(example: dict, config: ml_collections.ConfigDict, seed,
          maps: tuple[str, ...] = (), cropped: bool = False) -> dict:
  """Augments one {'image': [H, W, C] float, 'label': ...} example.

  `maps` name more [H, W] entries of the example (loss weights, instance
  ids) that move exactly as a spatial label does. `cropped`: the example
  was read as the crop `crop_corner(seed, ...)` gives, so it is not cut
  again.
  """
  from unetjax.runtime.imports import tensorflow  # pylint: disable=g-import-not-at-top
  tf = tensorflow()
  image = example["image"]
  spatial_label = len(example["label"].shape) == 2
  # Every per-pixel companion of the image, as [H, W, 1]: moved together.
  names = (("label",) if spatial_label else ()) + tuple(maps)
  planes = [example[name][..., None] for name in names]
  seeds = tf.random.experimental.stateless_split(seed, num=7)
  if config.crop_size and not cropped:
    size = example.get("size", tf.shape(image)[:2])
    image, planes = _random_crop(tf, seeds[0], config.crop_size, size,
                                 image, planes)
  if config.elastic and planes:
    image, planes = elastic_deform(tf, seeds[6], image, planes,
                                   config.elastic_grid, config.elastic_sigma)
  if config.flip:
    image, planes = _maybe(tf, seeds[1], tf.image.flip_left_right, image,
                           planes)
    image, planes = _maybe(tf, seeds[2], tf.image.flip_up_down, image,
                           planes)
  if config.rot90:
    turns = tf.random.stateless_uniform([], seeds[3], 0, 4, dtype=tf.int32)
    image = tf.image.rot90(image, turns)
    planes = [tf.image.rot90(plane, turns) for plane in planes]
  if config.brightness:
    image = tf.image.stateless_random_brightness(image, config.brightness,
                                                 seeds[4])
  if config.contrast:
    image = tf.image.stateless_random_contrast(
        image, 1 - config.contrast, 1 + config.contrast, seeds[5])
  if config.brightness or config.contrast:
    image = tf.clip_by_value(image, 0.0, 1.0)
  example = {k: v for k, v in example.items() if k != "size"}
  moved = {name: plane[..., 0] for name, plane in zip(names, planes)}
  return {**example, "image": image, **moved}


def crop_corner(tf, seed, crop: int, size):
  """(row, column) of the top-left corner of the random crop that `apply`
  draws for an example of true `size` from `seed`: for reading just that
  window from disk."""
  seeds = tf.random.experimental.stateless_split(seed, num=7)
  return _corner(tf, seeds[0], crop, size)


def _corner(tf, seed, crop: int, size):
  return tf.random.stateless_uniform(
      [2], seed, minval=0, maxval=tf.int32.max, dtype=tf.int32) % (
          tf.cast(size, tf.int32) - crop + 1)


def _random_crop(tf, seed, crop: int, size, image, planes):
  """The same random crop x crop window of the image and each [H, W, 1]
  plane, inside `size`."""
  corner = _corner(tf, seed, crop, size)

  def cut(x):
    x = x[corner[0]:corner[0] + crop, corner[1]:corner[1] + crop]
    return tf.ensure_shape(x, [crop, crop, x.shape[-1]])
  return cut(image), [cut(plane) for plane in planes]


def elastic_deform(tf, seed, image, planes, grid: int, sigma: float):
  """Elastic deformation as in the U-Net paper, one field for all.

  Displacements drawn from N(0, sigma^2) pixels on a grid x grid lattice
  are interpolated bicubically to every pixel; the image is resampled
  bilinearly and each label plane ([H, W, 1]: the label, loss weights,
  instance ids) by nearest neighbour at the same displaced coordinates
  (clamped at the border).
  """
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  coarse = tf.random.stateless_normal([1, grid, grid, 2], seed) * sigma
  field = tf.image.resize(coarse, [height, width], method="bicubic")[0]
  rows, cols = tf.meshgrid(tf.range(height, dtype=tf.float32),
                           tf.range(width, dtype=tf.float32), indexing="ij")
  y = tf.clip_by_value(rows + field[..., 0], 0.0,
                       tf.cast(height - 1, tf.float32))
  x = tf.clip_by_value(cols + field[..., 1], 0.0,
                       tf.cast(width - 1, tf.float32))
  nearest = tf.cast(tf.stack([tf.round(y), tf.round(x)], axis=-1), tf.int32)
  planes = [tf.gather_nd(plane, nearest) for plane in planes]
  return _bilinear(tf, image, y, x), planes


def _bilinear(tf, image, y, x):
  """image sampled at float coordinates (y, x), each inside the image."""
  y0, x0 = tf.floor(y), tf.floor(x)
  wy, wx = (y - y0)[..., None], (x - x0)[..., None]
  y1 = tf.minimum(y0 + 1, tf.cast(tf.shape(image)[0] - 1, tf.float32))
  x1 = tf.minimum(x0 + 1, tf.cast(tf.shape(image)[1] - 1, tf.float32))

  def at(yy, xx):
    return tf.gather_nd(image, tf.cast(tf.stack([yy, xx], -1), tf.int32))
  top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
  bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
  return top * (1 - wy) + bottom * wy


def _maybe(tf, seed, op, image, planes):
  """Applies `op` to the image and every plane with probability 1/2."""
  flip = tf.random.stateless_uniform([], seed) < 0.5
  image = tf.cond(flip, lambda: op(image), lambda: image)
  planes = [tf.cond(flip, lambda p=p: op(p), lambda p=p: p) for p in planes]
  return image, planes
